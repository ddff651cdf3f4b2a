"""Training checkpoints: model and optimizer variables plus the step, in one .npz.

A plain archive written atomically (temporary file + rename) rather than a
tf.train.Checkpoint: it restores into any strategy's variables and a kill at any
moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vitcli.errors import VitcliError
from vitcli.weights.npz import read_npz, write_npz

STATE_FILE = "state.npz"


def _storable(variable) -> np.ndarray:
    """The variable's value; bfloat16 (momentum kept as the reference does) is widened to
    float32, exactly, because numpy's .npz has no bfloat16 type."""
    value = np.asarray(variable.numpy())
    return value.astype(np.float32) if value.dtype.name == "bfloat16" else value


def save_state(directory: Path, model, optimizer, extra: dict) -> Path:
    arrays = {f"model/{variable.path}": _storable(variable) for variable in model.weights}
    arrays.update({f"optimizer/{index:05d}": _storable(variable)
                   for index, variable in enumerate(optimizer.variables)})
    arrays["extra"] = np.frombuffer(json.dumps(extra).encode(), dtype=np.uint8)
    return write_npz(Path(directory) / STATE_FILE, arrays)


def has_state(directory: Path) -> bool:
    return (Path(directory) / STATE_FILE).is_file()


def restore_state(directory: Path, model, optimizer) -> dict:
    """Loads a `save_state` checkpoint into a model and a built optimizer; returns `extra`."""
    arrays = read_npz(Path(directory) / STATE_FILE)
    variables = {f"model/{variable.path}": variable for variable in model.weights}
    variables.update({f"optimizer/{index:05d}": variable
                      for index, variable in enumerate(optimizer.variables)})
    if set(variables) != set(arrays) - {"extra"}:
        raise VitcliError(f"checkpoint in {directory} does not match this model/optimizer",
                          hint="resume with the same settings, or start a new --out")
    for key, variable in variables.items():
        variable.assign(arrays[key])  # a widened bfloat16 narrows back exactly
    return json.loads(arrays["extra"].tobytes().decode())
