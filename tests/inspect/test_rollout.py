"""Attention rollout against hand-computed values on constructed attention patterns."""

from __future__ import annotations

import numpy as np

from vitcli.inspect.attention import TokenLayout
from vitcli.inspect.rollout import attention_rollout, layer_maps, rollout_maps, token_map

TOKEN_LAYOUT = TokenLayout(num_prefix_tokens=1, grid_size=2, patch_pixels=16.0)
GAP_LAYOUT = TokenLayout(num_prefix_tokens=0, grid_size=2, patch_pixels=16.0)


def constant_attention(matrix: np.ndarray, layers: int, images: int = 1, heads: int = 2):
    return np.broadcast_to(matrix, (layers, images, heads, *matrix.shape)).copy()


def test_identity_attention_rolls_out_to_the_identity():
    attention = constant_attention(np.eye(5), layers=4)
    np.testing.assert_allclose(attention_rollout(attention)[0], np.eye(5), atol=1e-12)


def test_uniform_attention_rolls_out_to_the_closed_form():
    tokens, layers = 5, 3
    attention = constant_attention(np.full((tokens, tokens), 1 / tokens), layers)
    # Each layer is (U + I) / 2 with U the uniform matrix; U @ U = U, so L layers give
    # I / 2^L + (1 - 2^-L) U.  Also checked against a plain matrix power.
    uniform = np.full((tokens, tokens), 1 / tokens)
    expected = np.eye(tokens) / 2**layers + (1 - 2.0**-layers) * uniform
    np.testing.assert_allclose(np.linalg.matrix_power((uniform + np.eye(tokens)) / 2, layers),
                               expected, atol=1e-12)
    np.testing.assert_allclose(attention_rollout(attention)[0], expected, atol=1e-12)
    # The class-token map: row 0 over the 4 patches, 1/8 * 7/5 each for 3 layers.
    np.testing.assert_allclose(rollout_maps(attention, TOKEN_LAYOUT)[0],
                               np.full((2, 2), (1 - 2.0**-layers) / tokens), atol=1e-12)


def test_heads_are_averaged_and_layers_multiply_later_on_the_left():
    first = np.array([[1.0, 0.0], [0.0, 1.0]])
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    # Layer 0: head mean of identity and swap = uniform 1/2; layer 1: pure swap.
    attention = np.stack([np.stack([first, swap]), np.stack([swap, swap])])[:, None]
    layer_0 = (np.full((2, 2), 0.5) + np.eye(2)) / 2
    layer_1 = (swap + np.eye(2)) / 2
    np.testing.assert_allclose(attention_rollout(attention)[0], layer_1 @ layer_0, atol=1e-12)


def test_rows_of_a_rollout_sum_to_one():
    rng = np.random.default_rng(0)
    attention = rng.random((3, 2, 4, 5, 5))
    attention /= attention.sum(-1, keepdims=True)
    np.testing.assert_allclose(attention_rollout(attention).sum(-1), 1.0, atol=1e-12)


def test_maps_take_the_class_row_or_the_mean_row_in_grid_order():
    matrix = np.arange(25, dtype=float).reshape(5, 5)
    np.testing.assert_array_equal(token_map(matrix, TOKEN_LAYOUT), [[1, 2], [3, 4]])
    gap = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_array_equal(token_map(gap, GAP_LAYOUT), [[6, 7], [8, 9]])


def test_layer_maps_are_per_image_per_layer_head_means():
    attention = np.zeros((2, 3, 2, 5, 5))
    attention[1, 2, 0, 0, 4] = 1.0  # layer 1, image 2, head 0: class token -> last patch
    maps = layer_maps(attention, TOKEN_LAYOUT)
    assert maps.shape == (3, 2, 2, 2)
    assert maps[2, 1, 1, 1] == 0.5 and maps.sum() == 0.5
