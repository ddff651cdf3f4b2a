"""tensorflow-datasets sources: a tiny dataset really prepared on disk, and mnist through
`tfds.testing.mock_data`; never the network."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.support.checks import vitcli_error
from tests.support.images import labels_and_ids, make_folder, upload_folder
from tests.support.tfds import TINY_TFDS, TINY_TFDS_CLASSES, TINY_TFDS_COUNTS
from vitcli.config import DataConfig
from vitcli.data import pipeline
from vitcli.data.sources import open_source


def tiny(data_dir, **settings):
    return open_source(DataConfig(source=f"tfds:{TINY_TFDS}", data_dir=data_dir, **settings))


def test_prepared_dataset_splits_and_class_names(tiny_tfds_dir):
    source = tiny(tiny_tfds_dir)
    assert source.description == f"tfds:{TINY_TFDS}"
    assert source.class_names == TINY_TFDS_CLASSES and source.skipped == []
    # The default val_split "0.1" carves 3 of the 30 train examples off its end.
    assert {name: split.num_examples for name, split in source.splits.items()} == {
        "train": 27, "val": 3, "test": TINY_TFDS_COUNTS["test"]}
    encoded, label = next(iter(source.split("train").examples()))
    assert encoded.dtype == tf.string and label.dtype == tf.int32
    assert encoded.numpy().startswith(b"\x89PNG")  # SkipDecoding keeps tfds' encoded PNG


def test_carved_splits_are_disjoint_and_decode_with_their_labels(tiny_tfds_dir):
    source = tiny(tiny_tfds_dir)
    seen = {}
    for name in ("train", "val", "test"):
        dataset = pipeline.eval_dataset(source.split(name), DataConfig(), image_size=8,
                                        batch_size=7)
        labels, ids = [], []
        for images, batch_labels in dataset:
            image_labels, image_ids = labels_and_ids(np.asarray(images))
            assert image_labels == batch_labels.numpy().tolist()
            labels += image_labels
            ids += image_ids
        assert labels == [example_id % 3 for example_id in ids]
        seen[name] = ids
    assert sorted(seen["train"] + seen["val"]) == list(range(30))
    assert sorted(seen["test"]) == list(range(100, 109))


def test_split_strings(tiny_tfds_dir):
    source = tiny(tiny_tfds_dir, train_split="train[:80%]", val_split="train[80%:]",
                  test_split="")
    assert {name: split.num_examples for name, split in source.splits.items()} == {
        "train": 24, "val": 6}
    source = tiny(tiny_tfds_dir, val_split="validation")
    assert "val" not in source.splits and source.split("train").num_examples == 30
    message = vitcli_error(source.split, "val")
    assert "'validation' is not a split" in message and "train, test" in message
    message = vitcli_error(tiny, tiny_tfds_dir, train_split="train[:50%]")
    assert "cannot hold out 0.1" in message


def test_unprepared_dataset_fails_at_once(tmp_path):
    started = time.monotonic()
    message = vitcli_error(open_source, DataConfig(source="tfds:mnist", data_dir=str(tmp_path)))
    assert time.monotonic() - started < 10  # not tfds' minutes of download retries
    assert "tfds:mnist is not prepared" in message and "--download" in message
    assert "cannot open tfds:no_such_dataset_xyz" in vitcli_error(
        open_source, DataConfig(source="tfds:no_such_dataset_xyz", data_dir=str(tmp_path)))


def test_download_prepares(tmp_path):
    source = tiny(str(tmp_path), download=True)
    assert source.split("test").num_examples == TINY_TFDS_COUNTS["test"]


def test_not_an_image_classification_dataset_fails_before_any_download(tmp_path):
    message = vitcli_error(open_source, DataConfig(source="tfds:imdb_reviews",
                                                   data_dir=str(tmp_path), download=True))
    assert "not an image classification dataset" in message
    assert not any(tmp_path.iterdir())


def test_mock_data_mnist_yields_encoded_images_the_pipeline_decodes(mnist_metadata_dir):
    with tfds.testing.mock_data(num_examples=12, data_dir=mnist_metadata_dir):
        source = open_source(DataConfig(source="tfds:mnist", val_split="0"))
        assert source.class_names == [str(digit) for digit in range(10)]
        assert source.split("train").num_examples == 12
        encoded, label = next(iter(source.split("train").examples()))
        # mock_data encodes its random 28x28x1 images to PNG when a decoder is given.
        assert encoded.dtype == tf.string and encoded.numpy().startswith(b"\x89PNG")
        assert 0 <= int(label) < 10
        train = pipeline.train_dataset(source.split("train"), DataConfig(), image_size=8,
                                       batch_size=4, num_classes=10, seed=0)
        images, labels = next(iter(train))
        assert images.shape == (4, 8, 8, 3) and labels.shape == (4, 10)
        np.testing.assert_array_equal(images[..., 0], images[..., 2])  # gray became RGB
        evaluated = pipeline.eval_dataset(source.split("test"), DataConfig(), image_size=8,
                                          batch_size=5)
        assert [int(labels.shape[0]) for _, labels in evaluated] == [5, 5, 2]


def test_folder_and_tfds_give_the_same_example_types(tmp_path, tiny_tfds_dir):
    make_folder(tmp_path, {"a": 2})
    folder = open_source(DataConfig(source=str(tmp_path), val_split="0")).split("train")
    tfds_split = tiny(tiny_tfds_dir).split("train")
    assert folder.examples().element_spec == tfds_split.examples().element_spec


def test_a_data_dir_on_cloud_storage_reads_like_the_local_one(tiny_tfds_dir, gcs_root):
    """--data-dir gs://...: tensorflow-datasets reads through TensorFlow's file system (here
    the local Cloud Storage emulator) and gives the same examples as the local folder."""
    remote = upload_folder(Path(tiny_tfds_dir), f"{gcs_root}/tfds")
    for name in ("train", "val", "test"):
        want = list(tiny(tiny_tfds_dir).split(name).examples().as_numpy_iterator())
        got = list(tiny(str(remote)).split(name).examples().as_numpy_iterator())
        assert [(bytes(image), int(label)) for image, label in got] == \
            [(bytes(image), int(label)) for image, label in want]
