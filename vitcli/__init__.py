"""vitcli: the Vision Transformer of "An Image is Worth 16x16 Words", in Keras 3.

Public API (imported lazily, so `vitcli --help` does not wait for TensorFlow):
`build_model`, `load_checkpoint`, `save_npz`, `resize_posemb`, `decode_variant`, and
`train_steps` (vitcli's own training step on batches you give).
"""

from vitcli import _environment  # noqa: F401  (sets backend defaults before any Keras import)

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "vitcli.api",
    "load_checkpoint": "vitcli.weights.checkpoint",
    "load_checkpoint_with_report": "vitcli.weights.checkpoint",
    "save_npz": "vitcli.weights.checkpoint",
    "resize_posemb": "vitcli.weights.posemb",
    "decode_variant": "vitcli.models.registry",
    "train_steps": "vitcli.train.scripting",
    "VitcliError": "vitcli.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vitcli' has no attribute '{name}'")
