"""The formats vitcli itself reads back: Keras' `.keras` and the reference `.npz` layout.

Both are checked by loading them as vitcli does (`load_checkpoint`) and agree with the Keras
model to float32 round-off: the same kernels run the same graph.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from vitcli.export.record import ExportFormat, as_numpy

if TYPE_CHECKING:
    import keras


def write_keras(model: keras.Model, path: Path) -> dict:
    """The whole model (architecture and weights) as a `.keras` archive."""
    model.save(path)
    return {"loads_with": "vitcli.load_checkpoint or keras.saving.load_model"}


def write_npz(model: keras.Model, path: Path) -> dict:
    """The weights in the paper's checkpoint layout, loadable by vitcli and the reference code."""
    from vitcli.weights.checkpoint import save_npz

    save_npz(model, path)
    return {"loads_with": "vitcli.load_checkpoint (the architecture is read from the arrays)"}


def run_vitcli_checkpoint(path: str, inputs: dict) -> dict:
    """`.keras` and `.npz`: what vitcli itself loads, called on the pixels."""
    from vitcli.weights.checkpoint import load_checkpoint

    model = load_checkpoint(path)
    return {"pixels/load_checkpoint/logits": as_numpy(model(inputs["pixels"], training=False))}


def _zip_names(path: Path) -> list[str]:
    if not zipfile.is_zipfile(path):
        return []
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def is_vitcli_keras(path: Path) -> bool:
    """A `.keras` archive of a vitcli model (its config names vitcli's registered layers)."""
    if "config.json" not in _zip_names(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return b'"vitcli>' in archive.read("config.json")


def is_reference_npz(path: Path) -> bool:
    """An `.npz` in the reference layout."""
    return any(name.startswith("Transformer/encoder_norm/") for name in _zip_names(path))


KERAS = ExportFormat(name="keras", title=".keras", suffix=".keras", tolerance=1e-4,
                     write=write_keras, run=run_vitcli_checkpoint, recognises=is_vitcli_keras)
NPZ = ExportFormat(name="npz", title=".npz", suffix=".npz", tolerance=1e-4,
                   write=write_npz, run=run_vitcli_checkpoint, recognises=is_reference_npz)
