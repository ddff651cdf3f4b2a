"""Running and looking into models: random inputs, logits, weights by path, nested layers,
random non-zero weights, and the tiny models of the inspection tests."""

from __future__ import annotations

import math

import keras
import numpy as np

from vitcli.config import ModelConfig, ResNetConfig

# Logits of vitcli against the numpy reference: float32 Keras vs float64 numpy; measured 4e-7
# to 3.2e-6.
PARITY_TOLERANCE = 1e-5

# The inspection tests' models: a registry variant and a hybrid, both at 32 px.
TINY_VARIANT = "vit-mu8"  # 6 layers, 3 heads, 4 x 4 patches at 32 pixels
TINY_IMAGE_SIZE = 32
TINY_HYBRID = ModelConfig(hidden_size=32, depth=2, num_heads=4, mlp_dim=64, patch_size=1,
                          image_size=32, num_classes=3, resnet=ResNetConfig(layers=(1, 1)))


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """The exact GELU (Keras' default), which the reference does NOT use."""
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def random_images(image_size: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Float32 NHWC pixels uniform in [0, 255]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, (batch, image_size, image_size, 3)).astype(np.float32)


def logits(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images, training=False))


def weights_by_path(model: keras.Model) -> dict[str, np.ndarray]:
    return {variable.path: np.asarray(variable.numpy()) for variable in model.weights}


def nested_layers(model) -> list[keras.layers.Layer]:
    """Every layer inside `model`, nested sub-layers included."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def randomise_weights(layer: keras.layers.Layer, seed: int = 1) -> None:
    """Non-zero weights everywhere, so zero-initialised ones (class token, gn3, the head) also
    count: norm scales near 1, everything else near 0."""
    rng = np.random.default_rng(seed)
    layer.set_weights([1.0 + 0.3 * rng.standard_normal(weight.shape).astype(np.float32)
                       if weight.path.endswith("gamma")
                       else 0.3 * rng.standard_normal(weight.shape).astype(np.float32)
                       for weight in layer.weights])
