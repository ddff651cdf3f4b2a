"""Mean attention distance against hand-computed values on constructed attention patterns."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vitcli.inspect.attention import TokenLayout
from vitcli.inspect.distance import mean_attention_distance, patch_centres

PATCH = 16.0


def with_class_token(patches: np.ndarray, class_weight: float = 0.0) -> np.ndarray:
    """(P, P) patch attention -> (P+1, P+1) with a class token taking `class_weight` of each
    row (and a class-token row of its own)."""
    size = len(patches) + 1
    full = np.zeros((size, size))
    full[0] = 1.0 / size
    full[1:, 0] = class_weight
    full[1:, 1:] = patches * (1 - class_weight)
    return full


def as_attention(matrix: np.ndarray, layers: int = 2, images: int = 3, heads: int = 2):
    return np.broadcast_to(matrix, (layers, images, heads, *matrix.shape)).copy()


def test_patch_centres_are_in_row_major_token_order():
    layout = TokenLayout(1, 2, PATCH)
    np.testing.assert_array_equal(patch_centres(layout), [[8, 8], [8, 24], [24, 8], [24, 24]])


def test_identity_attention_has_distance_zero():
    layout = TokenLayout(1, 3, PATCH)
    distances = mean_attention_distance(as_attention(with_class_token(np.eye(9))), layout)
    np.testing.assert_allclose(distances, 0.0, atol=1e-12)
    assert distances.shape == (2, 2)


def test_uniform_attention_on_a_2x2_grid_by_hand():
    # From any corner of a 2x2 grid: 0, P, P and P*sqrt(2), averaged: P (2 + sqrt 2) / 4.
    layout = TokenLayout(1, 2, PATCH)
    attention = as_attention(np.full((5, 5), 1 / 5))  # the class token's share is dropped
    expected = PATCH * (2 + math.sqrt(2)) / 4
    np.testing.assert_allclose(mean_attention_distance(attention, layout), expected, rtol=1e-12)


def test_uniform_attention_on_a_3x3_grid_matches_a_loop_over_pairs():
    cells = list(itertools.product(range(3), range(3)))
    expected = np.mean([math.dist(a, b) for a in cells for b in cells]) * PATCH
    layout = TokenLayout(0, 3, PATCH)
    attention = as_attention(np.full((9, 9), 1 / 9))
    np.testing.assert_allclose(mean_attention_distance(attention, layout), expected, rtol=1e-12)


@pytest.mark.parametrize("class_weight", [0.0, 0.7])
def test_attending_to_a_neighbour_is_one_patch_away(class_weight):
    grid = 4
    patches = np.zeros((grid * grid, grid * grid))
    for row, column in itertools.product(range(grid), range(grid)):
        # The right neighbour; the last column has none and looks left instead.
        target = column + 1 if column + 1 < grid else column - 1
        patches[row * grid + column, row * grid + target] = 1.0
    attention = as_attention(with_class_token(patches, class_weight))
    distances = mean_attention_distance(attention, TokenLayout(1, grid, PATCH))
    np.testing.assert_allclose(distances, PATCH, rtol=1e-12)


def test_heads_and_layers_are_kept_apart_and_images_averaged():
    layout = TokenLayout(0, 2, PATCH)
    attention = np.zeros((2, 2, 2, 4, 4))
    attention[...] = np.eye(4)  # distance 0 ...
    attention[1, 0, 1] = np.eye(4)[[3, 2, 1, 0]]  # ... except layer 1, head 1, image 0: diagonal
    distances = mean_attention_distance(attention, layout)
    expected = np.zeros((2, 2))
    expected[1, 1] = PATCH * math.sqrt(2) / 2  # one of the two images
    np.testing.assert_allclose(distances, expected, atol=1e-12)
