"""What a finished or interrupted run directory holds: trained weights, the step of a
checkpoint, the optimizer's arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import vitcli

# The attention key bias changes no output (softmax ignores a shift shared by all keys): its
# exact gradient is zero, so it only collects float32 round-off, which Adam (pre-training)
# scales up to steps of the learning rate, differently for each order of summation.
NO_EFFECT = "key/bias"


def trained_weights(path: Path) -> dict[str, np.ndarray]:
    """The weights of the model at `path` by variable path, the `NO_EFFECT` ones left out."""
    return {weight.path: weight.numpy() for weight in vitcli.load_checkpoint(path).weights
            if not weight.path.endswith(NO_EFFECT)}


def assert_same_weights(got: Path, want: Path, atol: float = 1e-5) -> None:
    """The models at `got` and `want` hold the same weights (to rtol 1e-4 and `atol`)."""
    got, want = trained_weights(got), trained_weights(want)
    assert set(got) == set(want)
    for path, value in want.items():
        np.testing.assert_allclose(got[path], value, rtol=1e-4, atol=atol, err_msg=path)


def checkpoint_step(path: Path) -> int:
    """The step of a training checkpoint: a state .npz, or a run directory's latest."""
    if path.is_dir():
        path = path / "checkpoints" / "state.npz"
    with np.load(path) as state:
        return json.loads(state["extra"].tobytes())["step"]


def optimizer_arrays(run: Path) -> list[np.ndarray]:
    """The optimizer's arrays in a run directory's latest checkpoint."""
    with np.load(run / "checkpoints" / "state.npz") as state:
        return [state[key] for key in state.files if key.startswith("optimizer/")]
