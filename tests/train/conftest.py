"""Tiny image folders and checkpoints for the training tests."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.reference.numpy_vit import random_checkpoint

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
TINY_VIT = dict(hidden_size=32, depth=2, num_heads=4, mlp_dim=64, patch_size=8, image_size=16)


def write_colour_folder(root, per_class: int = 12, size: int = 16, seed: int = 0):
    """DIR/<colour>/<i>.png: noisy solid colours, separable by a linear probe."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            noise = rng.integers(-25, 25, size=(size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("colours") / "data")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.npz"
    np.savez(path, **random_checkpoint(1, num_classes=7, representation_size=32, **TINY_VIT))
    return path
