"""Principal components of the patch-embedding filters."""

from __future__ import annotations

import numpy as np
import pytest

from vitcli.errors import VitcliError
from vitcli.inspect.filters import as_rgb, embedding_filters, principal_components


def random_kernel(size: int = 4, filters: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(size, size, 3, filters))


def test_components_are_orthonormal_and_ordered_by_variance():
    components, variance = principal_components(random_kernel(), 28)
    assert components.shape == (28, 4, 4, 3)
    flat = components.reshape(28, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(28), atol=1e-10)
    assert (np.diff(variance) <= 1e-15).all() and 0 < variance.sum() <= 1 + 1e-12


def test_the_first_component_is_the_direction_of_largest_spread():
    rng = np.random.default_rng(1)
    direction = rng.normal(size=4 * 4 * 3)
    direction /= np.linalg.norm(direction)
    spread = rng.normal(size=30) * 10
    filters = spread[:, None] * direction + rng.normal(size=(30, 48)) * 0.01 + 3.0
    kernel = filters.T.reshape(4, 4, 3, 30)
    components, variance = principal_components(kernel, 3)
    assert abs(components[0].ravel() @ direction) == pytest.approx(1.0, abs=1e-4)
    assert variance[0] > 0.99


def test_the_count_is_capped_at_the_directions_the_filters_span():
    components, _ = principal_components(random_kernel(filters=5), 28)
    assert len(components) == 4  # 5 centred filters span at most 4 directions


def test_filters_of_the_tiny_model(tiny_model):
    kernel = embedding_filters(tiny_model)
    assert kernel.shape == (8, 8, 3, 96)
    flat = principal_components(kernel)[0].reshape(28, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(28), atol=1e-10)


def test_hybrids_are_refused_in_one_line(hybrid_model):
    with pytest.raises(VitcliError, match="hybrid") as caught:
        embedding_filters(hybrid_model)
    assert "\n" not in str(caught.value)


def test_as_rgb_puts_zero_at_mid_grey():
    rgb = as_rgb(np.array([[[-2.0, 0.0, 1.0]]]))
    np.testing.assert_allclose(rgb, [[[0.0, 0.5, 0.75]]])
    np.testing.assert_allclose(as_rgb(np.zeros((2, 2, 3))), 0.5)
