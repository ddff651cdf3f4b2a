"""The formats vitcli itself reads back: Keras' `.keras` and the reference `.npz` layout."""

from __future__ import annotations

from pathlib import Path

import keras

from vitcli.weights.checkpoint import save_npz


def write_keras(model: keras.Model, path: Path) -> dict:
    """The whole model (architecture and weights) as a `.keras` archive."""
    model.save(path)
    return {"loads_with": "vitcli.load_checkpoint or keras.saving.load_model"}


def write_npz(model: keras.Model, path: Path) -> dict:
    """The weights in the paper's checkpoint layout, loadable by vitcli and the reference code."""
    save_npz(model, path)
    return {"loads_with": "vitcli.load_checkpoint (the architecture is read from the arrays)"}
