"""What every export format declares: one `ExportFormat` in the format's own module, listed
once in `vitcli.export.formats`, from which dispatch, verification, replacement checks and the
CLI read everything they know about it.

A format module must stay cheap to import: the CLI reads the registry before TensorFlow
starts, and the fresh verification process imports every format module but runs only one
format's runner. So a format imports Keras, TensorFlow or its converter inside its functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 256


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its name, where it goes, how it is written, run and recognised."""

    name: str  # the value of `vitcli export --format`
    title: str  # how messages and help name it: "SavedModel", "ONNX"
    suffix: str  # of the file it writes; "" for a versioned folder
    tolerance: float  # max |difference| of its probabilities to the Keras model's
    # write(model, path) -> a description of what was written; with `serves_images` also
    # write(model, path, labels=..., eval_crop=..., top_k=..., scores=..., threshold=...).
    write: Callable[..., dict]
    # run(artefact path, inputs) -> outputs, in the fresh process (`vitcli.export.verify`
    # describes both dictionaries).
    run: Callable[[str, dict], dict]
    # Whether an existing file is an export of this format by its content (so it may be
    # replaced without --overwrite); None for a versioned format.
    recognises: Callable[[Path], bool] | None = None
    # Written as a numbered version folder inside a base folder (TF Serving's layout)
    # rather than as one file.
    versioned: bool = False
    # The artefact holds the serving graph: it decodes encoded images (eval_crop) and returns
    # top-k labels (and a multi-label model's labels above the threshold); so its writer
    # takes labels, eval_crop, top_k, scores and threshold, and its verification feeds
    # encoded images too.
    serves_images: bool = False


def as_numpy(value):
    """A runner's output as a numpy array that `.npz` stores without pickling: strings come
    back from the runtimes as object arrays of bytes."""
    import numpy as np

    array = np.asarray(value)
    return array.astype(bytes) if array.dtype == object else array


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first `size` bytes of a file, where formats put their identifiers."""
    with open(path, "rb") as handle:
        return handle.read(size)
