"""Position-embedding resize (docs/reference.md §5): against scipy.ndimage.zoom, and end to end
through `load_checkpoint(..., image_size=...)` against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import vitcli
from tests.reference.numpy_vit import forward
from tests.support.checkpoints import CHECKPOINT_SHAPES, POSEMB_KEY, official_checkpoint
from tests.support.checks import vitcli_error
from tests.support.models import PARITY_TOLERANCE, logits, random_images


def random_posemb(grid: int, prefix: int = 1, width: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, prefix + grid * grid, width)).astype(np.float32)


def zoomed(posemb: np.ndarray, new_grid, prefix: int = 1) -> np.ndarray:
    """The reference resize: scipy.ndimage.zoom order 1 on the (g, g, D) grid, class slot kept."""
    height, width = (new_grid, new_grid) if isinstance(new_grid, int) else new_grid
    table = posemb[0].astype(np.float64)
    old = int(np.sqrt(table.shape[0] - prefix))
    grid = table[prefix:].reshape(old, old, -1)
    grid = ndimage.zoom(grid, (height / old, width / old, 1), order=1)
    assert grid.shape[:2] == (height, width)
    return np.concatenate([table[:prefix], grid.reshape(height * width, -1)])[None]


@pytest.mark.parametrize(("old", "new"), [
    (14, 24), (7, 12), (16, 28), (12, 7), (4, 6), (7, (6, 10)), (3, (5, 2)),
])
def test_resize_matches_scipy_zoom(old, new):
    posemb = random_posemb(old)
    resized = vitcli.resize_posemb(posemb, new)
    np.testing.assert_allclose(resized, zoomed(posemb, new), atol=1e-6)


def test_resize_copies_class_slot_unchanged():
    posemb = random_posemb(7, width=16)
    resized = vitcli.resize_posemb(posemb, 12)
    assert resized.shape == (1, 1 + 144, 16) and resized.dtype == np.float32
    np.testing.assert_array_equal(resized[:, 0], posemb[:, 0])


def test_resize_keeps_the_four_corners():
    # Align-corners sampling: corner embeddings survive exactly (half-pixel resizing would not).
    posemb = random_posemb(5, prefix=0)
    resized = vitcli.resize_posemb(posemb, 9, num_prefix_tokens=0)
    old, new = posemb[0].reshape(5, 5, -1), resized[0].reshape(9, 9, -1)
    for i, j in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        np.testing.assert_allclose(new[i, j], old[i, j], atol=1e-6)


def test_resize_without_prefix_tokens():
    posemb = random_posemb(4, prefix=0)
    resized = vitcli.resize_posemb(posemb, 6, num_prefix_tokens=0)
    np.testing.assert_allclose(resized, zoomed(posemb, 6, prefix=0), atol=1e-6)


def test_resize_accepts_a_2d_table():
    posemb = random_posemb(4)
    np.testing.assert_array_equal(vitcli.resize_posemb(posemb[0], 6),
                                  vitcli.resize_posemb(posemb, 6)[0])


def test_resize_to_the_same_grid_is_identity():
    posemb = random_posemb(6)
    np.testing.assert_allclose(vitcli.resize_posemb(posemb, 6), posemb, atol=1e-7)


def test_non_square_source_is_refused():
    posemb = np.zeros((1, 1 + 12, 8), np.float32)  # 12 patch tokens: no square grid
    message = vitcli_error(vitcli.resize_posemb, posemb, 6)
    assert "12" in message and "square" in message


# -- end to end through load_checkpoint --------------------------------------------------------


@pytest.mark.parametrize(("image_size", "grid"), [(96, 6), (112, 7), (32, 2)])
def test_loading_at_another_resolution_matches_reference(image_size, grid, checkpoint_file):
    params = official_checkpoint("grid4")
    model, report = vitcli.load_checkpoint_with_report(checkpoint_file("grid4"),
                                                       image_size=image_size)
    posemb = model.get_layer("posembed_input").pos_embedding.numpy()
    assert posemb.shape == (1, 1 + grid * grid, 32)
    np.testing.assert_array_equal(posemb, vitcli.resize_posemb(params[POSEMB_KEY], grid))
    np.testing.assert_allclose(posemb, zoomed(params[POSEMB_KEY], grid), atol=1e-6)

    resized = {**params, POSEMB_KEY: zoomed(params[POSEMB_KEY], grid)}
    images = random_images(image_size)
    np.testing.assert_allclose(logits(model, images), forward(resized, images),
                               atol=PARITY_TOLERANCE)
    assert any(f"position embeddings 4x4 -> {grid}x{grid}" in line for line in report.lines())


def test_hybrid_loads_at_another_resolution(checkpoint_file):
    # Hybrid (1, 1): stem stride 8, patch 1; 64 px is an 8x8 grid, 80 px a 10x10 one.
    params = official_checkpoint("hybrid")
    model = vitcli.load_checkpoint(checkpoint_file("hybrid"), image_size=80)
    resized = {**params, POSEMB_KEY: zoomed(params[POSEMB_KEY], 10)}
    images = random_images(80)
    np.testing.assert_allclose(logits(model, images), forward(resized, images),
                               atol=PARITY_TOLERANCE)


def test_gap_model_resizes_without_a_class_slot(checkpoint_file):
    # gap at 48 px with patch 16 is a 3x3 grid and has no class slot.
    params = official_checkpoint("gap")
    model = vitcli.load_checkpoint(checkpoint_file("gap"), image_size=80)
    expected = zoomed(params[POSEMB_KEY], 5, prefix=0)
    np.testing.assert_allclose(model.get_layer("posembed_input").pos_embedding.numpy(), expected,
                               atol=1e-6)


def test_same_resolution_reports_nothing(checkpoint_file):
    size = CHECKPOINT_SHAPES["grid4"]["image_size"]
    _, report = vitcli.load_checkpoint_with_report(checkpoint_file("grid4"), image_size=size)
    assert report.lines() == []


def test_resolution_not_divisible_by_patch_is_refused(checkpoint_file):
    message = vitcli_error(vitcli.load_checkpoint, checkpoint_file("grid4"), image_size=100)
    assert "100" in message and "16" in message and "patch" in message
