"""Principal components of the patch-embedding filters (docs/reference.md §8, paper Fig. 7 left).

Each of the D filters of the patch embedding is a P x P x 3 patch of pixel weights; the
leading principal components of that set look like the basis functions of a
low-dimensional representation of each patch's fine structure.
"""

from __future__ import annotations

import keras
import numpy as np

from vitcli.errors import VitcliError

DEFAULT_COMPONENTS = 28  # as many as the paper shows
RGB_CHANNELS = 3


def embedding_filters(model: keras.Model) -> np.ndarray:
    """The (P, P, 3, D) patch-embedding kernel; a one-line error for hybrids, whose embedding
    sees ResNet features rather than pixels."""
    if "embedding" not in [layer.name for layer in model.layers]:
        raise VitcliError(f"the model ({model.name}) is a pure ResNet: it has no patch "
                          "embedding filters", hint="inspect a plain ViT (vit-*) for filters")
    kernel = np.asarray(model.get_layer("embedding").kernel, np.float64)
    size, _, channels, _ = kernel.shape
    if channels != RGB_CHANNELS:
        raise VitcliError(
            f"embedding filters do not apply to hybrid models: this one's patch embedding is a "
            f"{size}x{size} projection of {channels} ResNet feature channels, not of RGB pixels",
            hint="inspect a plain ViT (vit-*) for filters")
    return kernel


def principal_components(kernel: np.ndarray, count: int = DEFAULT_COMPONENTS
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(count, P, P, C) orthonormal leading components of the filters (flattened, centred) and
    the fraction of the filters' variance each explains."""
    size, _, channels, num_filters = kernel.shape
    filters = np.asarray(kernel, np.float64).reshape(size * size * channels, num_filters).T
    centred = filters - filters.mean(axis=0)
    # After centring D filters span at most D - 1 directions; more would be noise.
    available = min(num_filters - 1, filters.shape[1])
    if count < 1 or available < 1:
        raise VitcliError(f"cannot take {count} components of {num_filters} filters",
                          hint=f"ask for 1 to {max(available, 1)}")
    _, singular_values, directions = np.linalg.svd(centred, full_matrices=False)
    count = min(count, available)
    variance = singular_values**2 / max(float((singular_values**2).sum()), 1e-300)
    return directions[:count].reshape(count, size, size, channels), variance[:count]


def as_rgb(component: np.ndarray) -> np.ndarray:
    """A component scaled to [0, 1] with zero at mid-grey, so positive and negative weights
    stay distinguishable and no single channel's sign is hidden."""
    largest = float(np.abs(component).max())
    return 0.5 + 0.5 * component / largest if largest > 0 else np.full(component.shape, 0.5)
