"""Fixtures for the data tests: real image folders written to tmp_path, a tiny real
tensorflow-datasets builder, and readers that recover each example's label and id.

Every generated image carries its identity in its colours: red = 10 + 20 * label, green = the
example's id (both constant over the image, so any crop or resize keeps them), blue = noise
seeded by the id (so crops and flips change the pixels).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

TINY_TFDS = "vitcli_test_digits"
TINY_TFDS_CLASSES = ["zero", "one", "two"]
TINY_TFDS_COUNTS = {"train": 30, "test": 9}


def image_array(label: int, example_id: int, size: int = 16) -> np.ndarray:
    """uint8 (size, size, 3): red encodes the label, green the id, blue is noise."""
    pixels = np.empty((size, size, 3), np.uint8)
    pixels[..., 0] = 10 + 20 * label
    pixels[..., 1] = example_id
    pixels[..., 2] = np.random.default_rng(example_id).integers(0, 256, (size, size))
    return pixels


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def make_folder(root: Path, counts: dict[str, int], *, first_id: int = 0, fmt: str = "PNG",
                suffix: str = ".png") -> dict[int, int]:
    """Writes root/<class>/<id><suffix> for `counts` images per class (classes labelled in sorted
    order) and returns {id: label}."""
    labels = {}
    example_id = first_id
    for label, name in enumerate(sorted(counts)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for _ in range(counts[name]):
            pixels = image_array(label, example_id)
            (root / name / f"{example_id:03d}{suffix}").write_bytes(encode(pixels, fmt))
            labels[example_id] = label
            example_id += 1
    return labels


def labels_and_ids(images: np.ndarray) -> tuple[list[int], list[int]]:
    """(labels, ids) read back from a batch of images made by `image_array`."""
    red = np.rint(images[..., 0].mean(axis=(1, 2)))
    green = np.rint(images[..., 1].mean(axis=(1, 2)))
    return [int(value) for value in (red - 10) // 20], [int(value) for value in green]


def batches(dataset, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(images), np.asarray(labels)) for images, labels in dataset.take(count)]


@pytest.fixture(autouse=True)
def vitcli_home(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own cache root (outside its tmp_path, which holds the data), so index
    caches never leak between tests."""
    home = tmp_path_factory.mktemp("vitcli-home")
    monkeypatch.setenv("VITCLI_HOME", str(home))
    return home


class VitcliTestDigits(tfds.core.GeneratorBasedBuilder):
    """A tiny, real tensorflow-datasets builder whose images are `image_array`s (ids from 0 in
    train, from 100 in test)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(16, 16, 3)),
            "label": tfds.features.ClassLabel(names=TINY_TFDS_CLASSES),
        }))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(TINY_TFDS_COUNTS["train"], 0),
                "test": self._generate_examples(TINY_TFDS_COUNTS["test"], 100)}

    def _generate_examples(self, count: int, first_id: int):
        for offset in range(count):
            example_id = first_id + offset
            label = example_id % len(TINY_TFDS_CLASSES)
            yield example_id, {"image": image_array(label, example_id), "label": label}


@pytest.fixture(scope="session")
def tiny_tfds_dir(tmp_path_factory) -> str:
    """A data_dir in which the tiny builder is really prepared (no network involved)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    VitcliTestDigits(data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


@pytest.fixture(scope="session")
def mnist_metadata_dir(tmp_path_factory) -> str:
    """A data_dir holding only mnist's metadata (12 train and 12 test examples), so that under
    `tfds.testing.mock_data` mnist counts as prepared and its splits are known."""
    data_dir = tmp_path_factory.mktemp("mnist-metadata")
    builder = tfds.builder("mnist", data_dir=str(data_dir))
    splits = [tfds.core.SplitInfo(
        name=name, shard_lengths=[12], num_bytes=0,
        filename_template=tfds.core.ShardedFileTemplate(
            data_dir=builder.data_dir, dataset_name="mnist", split=name,
            filetype_suffix="tfrecord"))
        for name in ("train", "test")]
    builder.info.set_splits(tfds.core.SplitDict(splits))
    Path(builder.data_dir).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_dir)
    return str(data_dir)
