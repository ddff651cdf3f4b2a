"""The export tests' tiny random ViT, its labels, and what serving must answer for it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from vitcli.config import ModelConfig
from vitcli.data import ops

TINY = ModelConfig(hidden_size=32, depth=2, num_heads=4, mlp_dim=64, patch_size=8,
                   image_size=32, num_classes=5, name="tiny_export")
# A space and a non-ASCII letter: labels are UTF-8 lines, not identifiers.
LABELS = ["cat", "dog", "sea lion", "bird", "Känguru"]
TOP_K = 3


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def keras_probabilities(model, pixels: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(model(pixels, training=False)))


def random_pixels(batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (batch, TINY.image_size, TINY.image_size, 3)).astype(np.float32)


def encoded_test_images() -> list[bytes]:
    """An RGB PNG, a grayscale PNG and a JPEG, none of them at the model's size."""
    rng = np.random.default_rng(7)
    rgb, gray, photo = (rng.integers(0, 256, shape, dtype=np.uint8)
                        for shape in ((45, 37, 3), (20, 60, 1), (32, 32, 3)))
    return [tf.io.encode_png(rgb).numpy(), tf.io.encode_png(gray).numpy(),
            tf.io.encode_jpeg(photo, quality=90).numpy()]


def served_pixels(encoded: list[bytes], eval_crop: str = "resize") -> np.ndarray:
    """What serving must feed the model: the evaluation pipeline's decode and resize."""
    transform = ops.eval_transform(eval_crop, TINY.image_size)
    return np.stack([transform(ops.decode_image(image)).numpy() for image in encoded])


def run_python(script: str, *arguments: str) -> subprocess.CompletedProcess:
    """Runs `script` in a fresh interpreter (CPU only), failing the test with its stderr."""
    environment = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3")
    finished = subprocess.run([sys.executable, "-c", script, *arguments], capture_output=True,
                              text=True, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished
