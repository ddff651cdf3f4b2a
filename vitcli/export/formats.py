"""The one registry of export formats. Each format is one module declaring its
`ExportFormat` (`vitcli.export.record`); adding a format is that module and one entry here.
Importing this loads no TensorFlow (see `vitcli.export.record`)."""

from __future__ import annotations

from vitcli.errors import VitcliError
from vitcli.export import native, onnx, savedmodel, tflite
from vitcli.export.record import ExportFormat

# In the order help and messages list them.
FORMATS: dict[str, ExportFormat] = {fmt.name: fmt for fmt in (
    savedmodel.FORMAT,
    native.KERAS,
    tflite.FORMAT,
    onnx.FORMAT,
    native.NPZ,
)}


def get_format(name: str) -> ExportFormat:
    """The format called `name`; an unknown one is refused in one line."""
    if name not in FORMATS:
        raise VitcliError(f"unknown export format '{name}'; use one of {', '.join(FORMATS)}")
    return FORMATS[name]
