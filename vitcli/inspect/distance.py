"""Mean attention distance (docs/reference.md §8, paper Fig. 7 right): how far each head looks.

For each query patch, the pixel distance between its centre and every key patch's centre is
averaged with the attention weights; that is averaged over queries and images. The class
token has no position, so its row and column are left out, and each query's weights over the
patches are renormalised: a head that mostly attends to the class token still reports how
far it looks among the patches, rather than a distance shrunk towards zero.
"""

from __future__ import annotations

import numpy as np

from vitcli.inspect.attention import TokenLayout


def patch_centres(layout: TokenLayout) -> np.ndarray:
    """(patches, 2) pixel coordinates (row, column) of each patch centre, in token order."""
    grid_rows, grid_columns = layout.grid_shape
    rows, columns = np.meshgrid(np.arange(grid_rows), np.arange(grid_columns), indexing="ij")
    grid = np.stack([rows.ravel(), columns.ravel()], axis=-1).astype(np.float64)
    return (grid + 0.5) * layout.patch_pixels


def patch_distances(layout: TokenLayout) -> np.ndarray:
    """(patches, patches) Euclidean pixel distance between patch centres."""
    centres = patch_centres(layout)
    return np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)


def per_image_distances(attention: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """(layers, images, heads, T, T) -> (layers, images, heads): mean distance over queries."""
    prefix = layout.num_prefix_tokens
    patches = np.asarray(attention, np.float64)[..., prefix:, prefix:]
    totals = patches.sum(axis=-1, keepdims=True)
    weights = np.divide(patches, totals, out=np.zeros_like(patches), where=totals > 0)
    return (weights * patch_distances(layout)).sum(axis=-1).mean(axis=-1)


def mean_attention_distance(attention: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """(layers, images, heads, T, T) -> (layers, heads) mean attention distance in pixels."""
    return per_image_distances(attention, layout).mean(axis=1)
