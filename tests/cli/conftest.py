"""Fixtures of the CLI tests: a private cache root per module, a small trained run, a random
run directory, and folders of images (good, misnamed, unusable) to evaluate and predict on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.reference.numpy_vit import random_checkpoint
from tests.support.checkpoints import TINY_VIT
from tests.support.cli import invoke
from tests.support.images import (
    COLOUR_CLASSES,
    write_black_png,
    write_colour_folder,
    write_colour_splits,
    write_gradient_folder,
)
from vitcli.config import ModelConfig
from vitcli.models.vit import build_vit


@pytest.fixture(scope="module", autouse=True)
def vitcli_home(tmp_path_factory):
    """The index caches of each module's folders stay in its own home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITCLI_HOME", str(tmp_path_factory.mktemp("vitcli-home")))
        yield


@pytest.fixture(scope="session")
def colour_split_folder(tmp_path_factory):
    """DIR/{train,test}/<colour>/..., test drawn with another seed."""
    return write_colour_splits(tmp_path_factory.mktemp("colour-splits"), train=12, test=6)


@pytest.fixture(scope="session")
def trained_run(colour_split_folder, tmp_path_factory):
    """A run directory of the tiny ViT fine-tuned 30 steps on `colour_split_folder`."""
    weights = tmp_path_factory.mktemp("w") / "tiny.npz"
    np.savez(weights, **random_checkpoint(2, num_classes=4, **TINY_VIT))
    out = tmp_path_factory.mktemp("runs") / "colours"
    result = invoke("finetune", "--weights", weights, "--data", colour_split_folder,
                    "--steps", 30, "--batch", 12, "--lr", 0.05, "--warmup", 3, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A run directory's model.keras (a random one-block ViT, 3 classes, 16 px: quick to load
    and trace) and labels.txt."""
    directory = tmp_path_factory.mktemp("run")
    config = ModelConfig(**dict(TINY_VIT, depth=1), num_classes=3)
    build_vit(config).save(directory / "model.keras")
    (directory / "labels.txt").write_text("".join(f"{name}\n" for name in COLOUR_CLASSES))
    return directory


@pytest.fixture(scope="session")
def plain_folder(tmp_path_factory) -> Path:
    return write_colour_folder(tmp_path_factory.mktemp("plain") / "colours", per_class=5)


@pytest.fixture(scope="session")
def split_folder(tmp_path_factory) -> Path:
    return write_colour_splits(tmp_path_factory.mktemp("splits") / "colours", train=4, test=2)


@pytest.fixture(scope="session")
def mixed_folder(tmp_path_factory) -> Path:
    """Images of every kind, misnamed and nested, next to files that are not usable images."""
    root = tmp_path_factory.mktemp("mixed") / "photos"
    write_colour_folder(root / "nested", per_class=1)
    picture = Image.new("RGB", (20, 20), (200, 30, 30))
    picture.save(root / "top.png")  # directly in the folder: used by predict
    picture.save(root / "photo.webp")
    picture.save(root / "really-a-png.jpg", "PNG")
    (root / "notes.txt").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    write_black_png(root / "huge.png", 12000, 12000)  # never decoded
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """DIR/<class>/<i>.png: two classes of three non-square images each."""
    return write_gradient_folder(tmp_path_factory.mktemp("images"))
