"""Assigns checkpoint arrays to a model's weights by name (never by position), strictly."""

from __future__ import annotations

import numpy as np

from vitcli.errors import VitcliError
from vitcli.weights.npz import KeyMap


def _listing(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_keys(arrays: dict[str, np.ndarray], rows: KeyMap, *,
               keep_initialised: frozenset[str] = frozenset()) -> None:
    """Refuses archives with arrays missing or left over for the model described by `rows`."""
    expected = {key for key, _ in rows}
    missing = sorted(key for key in expected if key not in arrays and key not in keep_initialised)
    unexpected = sorted(set(arrays) - expected)
    if missing:
        raise VitcliError(f"checkpoint lacks {len(missing)} arrays the model needs: "
                          f"{_listing(missing)}")
    if unexpected:
        raise VitcliError(f"checkpoint has {len(unexpected)} arrays this model does not use: "
                          f"{_listing(unexpected)}")


def assign_arrays(model, arrays: dict[str, np.ndarray], rows: KeyMap, *,
                  keep_initialised: frozenset[str] = frozenset()) -> None:
    """Copies `arrays` into `model` along `rows`.

    Every array must have a weight and every weight an array (except the checkpoint keys in
    `keep_initialised`, e.g. a new head); shapes must match. Anything else is refused whole,
    before a single weight changes.
    """
    check_keys(arrays, rows, keep_initialised=keep_initialised)
    variables = {variable.path: variable for variable in model.weights}
    pairs = []
    for key, path in rows:
        if key in keep_initialised:
            continue
        variable = variables[path]
        if tuple(arrays[key].shape) != tuple(variable.shape):
            raise VitcliError(f"shape mismatch for '{key}': checkpoint {arrays[key].shape}, "
                              f"model {tuple(variable.shape)}")
        pairs.append((variable, arrays[key]))
    for variable, array in pairs:
        variable.assign(np.asarray(array, dtype=variable.dtype))


def read_arrays(model, rows: KeyMap) -> dict[str, np.ndarray]:
    """The model's weights under their checkpoint keys."""
    variables = {variable.path: variable for variable in model.weights}
    return {key: np.asarray(variables[path].numpy()) for key, path in rows}
