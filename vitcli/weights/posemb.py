"""Position-embedding resize for a new resolution (docs/reference.md §5).

Align-corners bilinear interpolation, exactly what the reference's
`scipy.ndimage.zoom(grid, (g_new/g_old, g_new/g_old, 1), order=1)` computes; the
class-token slot is copied unchanged. `tf.image.resize` (half-pixel) would differ.
"""

from __future__ import annotations

import math

import numpy as np

from vitcli.errors import VitcliError


def _as_pair(grid: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (grid, grid) if isinstance(grid, (int, np.integer)) else grid
    if height < 1 or width < 1:
        raise VitcliError(f"position-embedding grid must be positive, got {grid}")
    return int(height), int(width)


def square_grid(num_patch_tokens: int) -> int:
    """The side of a square token grid with `num_patch_tokens` cells."""
    side = math.isqrt(num_patch_tokens)
    if side * side != num_patch_tokens:
        raise VitcliError(f"{num_patch_tokens} position embeddings do not form a square grid")
    return side


def _interpolate_axis(values: np.ndarray, new_size: int, axis: int) -> np.ndarray:
    """Linear interpolation along `axis` at positions linspace(0, old - 1, new) (align corners)."""
    old_size = values.shape[axis]
    positions = np.linspace(0.0, old_size - 1, new_size)
    lower = np.clip(np.floor(positions).astype(int), 0, old_size - 1)
    upper = np.minimum(lower + 1, old_size - 1)
    weight_shape = [1] * values.ndim
    weight_shape[axis] = new_size
    weight = (positions - lower).reshape(weight_shape)
    return (np.take(values, lower, axis=axis) * (1.0 - weight)
            + np.take(values, upper, axis=axis) * weight)


def resize_posemb(posemb: np.ndarray, new_grid: int | tuple[int, int], *,
                  num_prefix_tokens: int = 1,
                  old_grid: int | tuple[int, int] | None = None) -> np.ndarray:
    """Resizes a (1, prefix + g*g, D) or (prefix + g*g, D) table to `new_grid` (int or (h, w)).

    The table's own grid is square unless `old_grid` (int or (h, w)) says otherwise."""
    posemb = np.asarray(posemb)
    table = posemb[0] if posemb.ndim == 3 else posemb
    prefix, patches = table[:num_prefix_tokens], table[num_prefix_tokens:]
    if old_grid is None:
        old_height = old_width = square_grid(patches.shape[0])
    else:
        old_height, old_width = _as_pair(old_grid)
        if old_height * old_width != patches.shape[0]:
            raise VitcliError(f"{patches.shape[0]} position embeddings do not form a "
                              f"{old_height}x{old_width} grid")
    new_height, new_width = _as_pair(new_grid)
    grid = patches.reshape(old_height, old_width, -1).astype(np.float64)
    grid = _interpolate_axis(grid, new_height, axis=0)
    grid = _interpolate_axis(grid, new_width, axis=1)
    resized = np.concatenate([prefix, grid.reshape(new_height * new_width, -1).astype(table.dtype)])
    return resized[None] if posemb.ndim == 3 else resized
