"""Exports a Keras ViT as a TF Serving SavedModel, .keras, TFLite, ONNX or reference .npz.

Every export is written beside its destination, reloaded and checked against the Keras
model in a fresh process, and only then renamed into place. Each format is one module
behind the registry in `vitcli.export.formats`. `export_model` is imported lazily, so that
`python -m vitcli.export.verify` (the fresh process) loads only what the format it checks
needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ExportResult:
    """What an export wrote and how closely the reloaded artefact matched the Keras model."""

    format: str
    path: Path  # for a versioned format (savedmodel): PATH/<version>
    max_abs_diff: float  # on probabilities, measured in a fresh process; NaN if not verified
    details: dict = field(default_factory=dict)


__all__ = ["ExportResult", "export_model"]


def __getattr__(name: str):
    if name == "export_model":
        from vitcli.export.dispatch import export_model

        return export_model
    raise AttributeError(f"module 'vitcli.export' has no attribute '{name}'")
