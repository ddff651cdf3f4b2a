"""The numbers behind the position-embedding figure, on a table of 2-D sinusoids."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vitcli.inspect.posemb import cosine_similarity_grid, grid_embeddings

GRID = 6
# Every frequency times the largest offset (GRID - 1) stays below pi, so each cosine term,
# and with it the similarity, falls monotonically with the row and column offsets.
FREQUENCIES = np.array([0.12, 0.2, 0.31, 0.45, 0.6])


def sinusoid_table(grid: int = GRID) -> np.ndarray:
    """(grid, grid, 4F): sin and cos of row * w and column * w for each frequency w."""
    rows, columns = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    parts = [function(axis[..., None] * FREQUENCIES) for axis in (rows, columns)
             for function in (np.sin, np.cos)]
    return np.concatenate(parts, axis=-1)


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(values)).astype(float) for values in (first, second)]
    return float(np.corrcoef(*ranks)[0, 1])


@pytest.fixture(scope="module")
def similarity():
    return cosine_similarity_grid(sinusoid_table())


def test_the_similarity_is_the_closed_form(similarity):
    # sin a sin b + cos a cos b = cos(a - b): the mean over the 2F terms of cos(w * offset).
    for (i, j), (k, m) in itertools.product(np.ndindex(GRID, GRID), repeat=2):
        expected = (np.cos(FREQUENCIES * (i - k)).sum() + np.cos(FREQUENCIES * (j - m)).sum())
        assert similarity[i, j, k, m] == pytest.approx(expected / (2 * len(FREQUENCIES)))


def test_each_position_is_most_similar_to_itself_and_symmetric(similarity):
    flat = similarity.reshape(GRID * GRID, GRID * GRID)
    np.testing.assert_allclose(np.diag(flat), 1.0, atol=1e-12)
    np.testing.assert_allclose(flat, flat.T, atol=1e-12)
    assert (flat.argmax(axis=1) == np.arange(GRID * GRID)).all()
    assert (flat - np.eye(GRID * GRID) < 1 - 1e-3).all()  # strictly below 1 elsewhere


def test_similarity_falls_with_grid_distance(similarity):
    positions = list(np.ndindex(GRID, GRID))
    for query in positions:
        offsets = [np.abs(np.subtract(key, query)) for key in positions]
        values = [similarity[(*query, *key)] for key in positions]
        # Further in both row and column (one strictly) is always less similar.
        for (near, near_value), (far, far_value) in itertools.product(
                zip(offsets, values, strict=True), repeat=2):
            if (near <= far).all() and (near < far).any():
                assert near_value > far_value
        distances = [np.linalg.norm(offset) for offset in offsets]
        assert spearman(np.array(distances), np.array(values)) < -0.95


def test_grid_embeddings_drop_the_class_token_and_keep_row_major_order(tiny_model):
    table = sinusoid_table(4)  # the tiny model has a 4 x 4 grid
    layer = tiny_model.get_layer("posembed_input")
    original = layer.pos_embedding.numpy()
    width = original.shape[-1]
    padded = np.zeros((4, 4, width))
    padded[..., :table.shape[-1]] = table
    class_row = np.full((1, width), 9.0)
    layer.pos_embedding.assign(np.concatenate([class_row, padded.reshape(16, width)])[None])
    try:
        np.testing.assert_allclose(grid_embeddings(tiny_model), padded, atol=1e-6)
        similarity = cosine_similarity_grid(grid_embeddings(tiny_model))
        np.testing.assert_allclose(similarity, cosine_similarity_grid(table), atol=1e-6)
    finally:
        layer.pos_embedding.assign(original)


def test_a_zero_embedding_has_similarity_zero_not_nan():
    table = sinusoid_table(2)
    table[0, 0] = 0.0
    similarity = cosine_similarity_grid(table)
    assert np.isfinite(similarity).all() and similarity[0, 0, 1, 1] == 0.0
