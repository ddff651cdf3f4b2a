"""Training checkpoints: model and optimizer variables plus the step, in one .npz.

A plain archive written atomically (temporary file + rename) rather than a
tf.train.Checkpoint: it restores into any strategy's variables and a kill at any
moment leaves the previous checkpoint intact. The last two are kept (`state.npz`, and
`state.prev.npz` before it), so a latest one damaged afterwards (a disk error, a partial
copy) still leaves one to resume from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vitcli.errors import VitcliError
from vitcli.files import write_atomically
from vitcli.storage import copy_file, location
from vitcli.weights.npz import read_npz

STATE_FILE = "state.npz"
PREVIOUS_FILE = "state.prev.npz"
STATE_FILES = (STATE_FILE, PREVIOUS_FILE)


class _Storable:
    """A variable's value, read only when np.savez writes it: savez converts its values one
    at a time, so the checkpoint never holds a second copy of the whole training state in
    memory (2.4 GB for ViT-L/16 with SGD). bfloat16 (momentum kept as the reference does)
    is widened to float32, exactly, because numpy's .npz has no bfloat16 type."""

    def __init__(self, variable):
        self.variable = variable

    def __array__(self, dtype=None, copy=None):
        value = np.asarray(self.variable.numpy())
        value = value.astype(np.float32) if value.dtype.name == "bfloat16" else value
        return value if dtype is None else value.astype(dtype)


def _variables(model, optimizer) -> dict:
    variables = {f"model/{variable.path}": variable for variable in model.weights}
    variables.update({f"optimizer/{index:05d}": variable
                      for index, variable in enumerate(optimizer.variables)})
    return variables


def save_state(directory: Path, model, optimizer, extra: dict) -> Path:
    """Writes a checkpoint as `state.npz`; the one it replaces becomes `state.prev.npz`,
    only once the new one is complete."""
    arrays = {key: _Storable(variable) for key, variable in _variables(model, optimizer).items()}
    arrays["extra"] = np.frombuffer(json.dumps(extra).encode(), dtype=np.uint8)
    latest, previous = location(directory) / STATE_FILE, location(directory) / PREVIOUS_FILE

    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    def keep_previous() -> None:
        # A kill between this rename and the next leaves only state.prev.npz: still resumable.
        if latest.exists():
            latest.replace(previous)

    return write_atomically(latest, write, before_replace=keep_previous)


def has_state(directory: Path) -> bool:
    return any((location(directory) / name).is_file() for name in STATE_FILES)


def _read(path: Path) -> tuple[dict, dict]:
    """(arrays, extra) of one checkpoint; a damaged one is a VitcliError."""
    arrays = read_npz(path)
    try:
        extra = json.loads(arrays.pop("extra").tobytes().decode())
        int(extra["step"])
    except (KeyError, ValueError, TypeError) as error:
        raise VitcliError(f"'{path}' has no readable step ({type(error).__name__})") from error
    return arrays, extra


def _readable(directory: Path) -> tuple[Path, dict, dict, list[str]]:
    """The newest checkpoint that reads: (path, arrays, extra, lines about damaged ones)."""
    damaged = []
    for name in STATE_FILES:
        path = location(directory) / name
        if not path.is_file():
            continue
        try:
            return (path, *_read(path), damaged)
        except VitcliError as error:
            damaged.append(error.message)
    raise VitcliError(f"no readable checkpoint in {directory}: {'; '.join(damaged)}",
                      hint="start the run again with --overwrite, or choose another --out")


def restore_state(directory: Path, model, optimizer, repair: bool = False) -> tuple[dict, list]:
    """Loads the newest readable checkpoint into a model and a built optimizer; returns its
    `extra` and warnings. A damaged `state.npz` falls back to `state.prev.npz`, which with
    `repair` (the chief, the only writer) is then copied over it, so that the next
    checkpoint keeps a good one as the previous."""
    path, arrays, extra, damaged = _readable(directory)
    variables = _variables(model, optimizer)
    # Optimizer variables are stored by index: other settings (another --freeze: fewer or
    # more slots) show as other keys or other shapes.
    if set(variables) != set(arrays) or any(
            tuple(arrays[key].shape) != tuple(variable.shape)
            for key, variable in variables.items()):
        raise VitcliError(f"checkpoint in {directory} does not match this model/optimizer",
                          hint="resume with the same settings (e.g. --config RUN/config.yaml), "
                          "or start a new --out")
    for key, variable in variables.items():
        variable.assign(arrays[key])  # a widened bfloat16 narrows back exactly
    warnings = [f"warning: {line}; resuming from {path.name} (step {extra['step']})"
                for line in damaged]
    if damaged and repair:  # a copy: other workers may be reading state.prev.npz right now
        write_atomically(location(directory) / STATE_FILE,
                         lambda temporary: copy_file(path, temporary))
    return extra, warnings
