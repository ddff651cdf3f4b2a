"""Tiny models and images for the inspection tests."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import vitcli
from vitcli.config import ModelConfig, ResNetConfig
from vitcli.models.vit import build_vit

TINY_VARIANT = "vit-mu8"  # 6 layers, 3 heads, 4 x 4 patches at 32 pixels
TINY_IMAGE_SIZE = 32
TINY_HYBRID = ModelConfig(hidden_size=32, depth=2, num_heads=4, mlp_dim=64, patch_size=1,
                          image_size=32, num_classes=3, resnet=ResNetConfig(layers=(1, 1)))


@pytest.fixture(scope="session")
def tiny_model():
    return vitcli.build_model(TINY_VARIANT, num_classes=3, image_size=TINY_IMAGE_SIZE)


@pytest.fixture(scope="session")
def tiny_model_file(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    tiny_model.save(path)
    return path


@pytest.fixture(scope="session")
def hybrid_model():
    return build_vit(TINY_HYBRID)


def write_png(path, height: int, width: int, seed: int) -> None:
    """A smooth colour gradient plus a bright square, so overlays have something to show."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    pixels = np.stack([rows * 255 / height, columns * 255 / width,
                       np.full((height, width), 90.0)], axis=-1)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    pixels[top:top + height // 3, left:left + width // 3] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """DIR/<class>/<i>.png: two classes of three non-square images each."""
    root = tmp_path_factory.mktemp("images")
    for label, name in enumerate(("left", "right")):
        for index in range(3):
            write_png(root / name / f"{index}.png", 40, 30, seed=10 * label + index)
    return root
