"""Attention rollout (docs/reference.md §8; Abnar & Zuidema 2020): where the output looks.

Each layer's attention is averaged over heads; the identity is added for the residual
connection and the rows renormalised; the layers are multiplied from the first up. The map
of an image is the class token's row over the patches, or for gap models (which pool every
token) the mean over the query rows.
"""

from __future__ import annotations

import numpy as np

from vitcli.inspect.attention import TokenLayout


def attention_rollout(attention: np.ndarray) -> np.ndarray:
    """(layers, ..., heads, T, T) -> (..., T, T): how much each output token draws on each input."""
    attention = np.asarray(attention, np.float64)
    averaged = attention.mean(axis=-3)
    tokens = averaged.shape[-1]
    residual = averaged + np.eye(tokens)
    residual /= residual.sum(axis=-1, keepdims=True)
    rollout = np.broadcast_to(np.eye(tokens), residual.shape[1:]).copy()
    for layer in residual:
        # Later layers act on the mixture the earlier ones produced: left-multiply.
        rollout = layer @ rollout
    return rollout


def token_map(matrix: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """(..., T, T) -> (..., grid rows, grid columns): the class-token row (or the mean row of
    a gap model)
    over the patch keys."""
    if layout.num_prefix_tokens:
        row = matrix[..., 0, layout.num_prefix_tokens:]
    else:
        row = matrix.mean(axis=-2)
    return row.reshape(*row.shape[:-1], *layout.grid_shape)


def rollout_maps(attention: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """(layers, images, heads, T, T) -> (images, grid, grid) rollout maps."""
    return token_map(attention_rollout(attention), layout)


def layer_maps(attention: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """(layers, images, heads, T, T) -> (images, layers, grid, grid): each layer's head-mean
    class-token attention."""
    maps = token_map(np.asarray(attention, np.float64).mean(axis=2), layout)
    return np.swapaxes(maps, 0, 1)
