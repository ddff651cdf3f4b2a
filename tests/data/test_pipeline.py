"""The tf.data pipelines: deterministic, resumable and shardable training streams, and an eval
stream that sees every example once."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.support.images import batches, labels_and_ids, make_folder
from tests.support.tfds import TINY_TFDS
from vitcli.config import DataConfig
from vitcli.data import pipeline
from vitcli.data.sources import open_source

COUNTS = {"a": 5, "b": 4, "c": 5}  # 14 images: batches of 4 cross epoch boundaries
BATCH = 4


@pytest.fixture
def folder(tmp_path):
    labels = make_folder(tmp_path / "data", COUNTS)
    return str(tmp_path / "data"), labels


def train_split(kind: str, folder, tiny_tfds_dir):
    """The train split of the requested kind of source, with the config it needs."""
    if kind == "tfds":  # sequential: 27 examples read in permuted blocks of 8
        config = DataConfig(source=f"tfds:{TINY_TFDS}", data_dir=tiny_tfds_dir, shuffle_buffer=8,
                            train_crop="inception")
    else:
        config = DataConfig(source=folder[0], val_split="0", cache=kind == "folder+cache",
                            train_crop="inception")
    return open_source(config).split("train"), config


def train(split, config, seed=0, batch_size=BATCH, **options):
    return pipeline.train_dataset(split, config, image_size=8, batch_size=batch_size,
                                  num_classes=3, seed=seed, **options)


def stream_ids(split, config, count, seed=0, **options) -> list[int]:
    """The ids of the first `count` examples of the training stream (no crop, no flip)."""
    config = DataConfig(**{**config.__dict__, "train_crop": "resize"})
    dataset = train(split, config, seed=seed, batch_size=1, **options)
    return [labels_and_ids(images)[1][0] for images, _ in batches(dataset, count)]


def test_train_batches(folder):
    split, config = train_split("folder", folder, None)
    images, labels = batches(train(split, config), 1)[0]
    assert images.shape == (BATCH, 8, 8, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert labels.shape == (BATCH, 3) and labels.dtype == np.float32
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
    image_labels, image_ids = labels_and_ids(images)
    assert image_labels == labels.argmax(axis=1).tolist()
    assert image_labels == [folder[1][example_id] for example_id in image_ids]


@pytest.mark.parametrize("kind", ["folder", "tfds"])
def test_same_seed_same_batches_other_seed_other_batches(kind, folder, tiny_tfds_dir):
    split, config = train_split(kind, folder, tiny_tfds_dir)
    first = batches(train(split, config, seed=5), 3)
    again = batches(train(split, config, seed=5), 3)
    other = batches(train(split, config, seed=6), 3)
    for (images, labels), (same_images, same_labels) in zip(first, again, strict=True):
        np.testing.assert_array_equal(images, same_images)
        np.testing.assert_array_equal(labels, same_labels)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("kind", ["folder", "folder+cache", "tfds"])
def test_resume_yields_exactly_the_uninterrupted_batches(kind, folder, tiny_tfds_dir):
    split, config = train_split(kind, folder, tiny_tfds_dir)
    assert config.train_crop == "inception"  # random crop + flip, from the position's seed
    uninterrupted = batches(train(split, config, seed=1), 12)
    for resumed_at in (3, 7):  # mid-epoch, and a later epoch
        resumed = batches(train(split, config, seed=1, start_example=resumed_at * BATCH), 4)
        expected = uninterrupted[resumed_at:resumed_at + len(resumed)]
        for (images, labels), (expected_images, expected_labels) in zip(resumed, expected,
                                                                        strict=True):
            np.testing.assert_array_equal(images, expected_images)
            np.testing.assert_array_equal(labels, expected_labels)


@pytest.mark.parametrize("kind", ["folder", "tfds"])
def test_every_epoch_is_a_new_permutation(kind, folder, tiny_tfds_dir):
    split, config = train_split(kind, folder, tiny_tfds_dir)
    count = split.num_examples
    ids = stream_ids(split, config, 2 * count)
    first, second = ids[:count], ids[count:]
    assert sorted(first) == sorted(second) and len(set(first)) == count
    assert first != second
    assert first != sorted(first)


@pytest.mark.parametrize("kind", ["folder", "tfds"])
def test_sharded_pipelines_split_the_stream(kind, folder, tiny_tfds_dir):
    split, config = train_split(kind, folder, tiny_tfds_dir)
    count = split.num_examples
    whole = stream_ids(split, config, 2 * count)
    shards = []
    for pipeline_id in (0, 1):
        context = tf.distribute.InputContext(num_input_pipelines=2,
                                             input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        shards.append(stream_ids(split, config, count, input_context=context))
    # Pipeline p takes the positions p, p + 2, p + 4, ... of the one stream.
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]
    # So within the first epoch (positions < count) the two are disjoint and cover the data.
    first_epoch = shards[0][: (count + 1) // 2], shards[1][: count // 2]
    assert not set(first_epoch[0]) & set(first_epoch[1])
    assert sorted(first_epoch[0] + first_epoch[1]) == sorted(whole[:count])
    assert len(set(whole[:count])) == count
    # Resuming a shard at a global position continues its own part of the stream.
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    assert stream_ids(split, config, 3, start_example=6, input_context=context) == whole[7:13:2]


def test_sharded_steps_cover_the_global_batch(folder):
    split, config = train_split("folder", folder, None)
    single = batches(train(split, config, batch_size=2 * BATCH), 3)
    per_pipeline = [batches(train(split, config, input_context=tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=pipeline_id)), 3) for pipeline_id in (0, 1)]
    for step, (images, _) in enumerate(single):
        worker_ids = [labels_and_ids(per_pipeline[p][step][0])[1] for p in (0, 1)]
        assert sorted(worker_ids[0] + worker_ids[1]) == sorted(labels_and_ids(images)[1])


def test_eval_sees_every_example_once_in_order(folder):
    source = open_source(DataConfig(source=folder[0], val_split="0"))
    split = source.split("train")
    for config in (DataConfig(), DataConfig(eval_crop="center", cache=True)):
        dataset = pipeline.eval_dataset(split, config, image_size=8, batch_size=BATCH)
        sizes, ids, labels = [], [], []
        for images, batch_labels in dataset:
            assert images.dtype == tf.float32 and batch_labels.dtype == tf.int32
            sizes.append(int(images.shape[0]))
            image_labels, image_ids = labels_and_ids(np.asarray(images))
            assert image_labels == batch_labels.numpy().tolist()
            ids += image_ids
            labels += image_labels
        assert sizes == [4, 4, 4, 2]  # no drop_remainder
        assert ids == sorted(folder[1])  # the split's fixed order: class, then path
        assert labels == [folder[1][example_id] for example_id in ids]


@pytest.mark.parametrize("crop", ["resize", "center"])
def test_other_train_crops(crop, folder):
    split, config = train_split("folder", folder, None)
    config = DataConfig(source=config.source, val_split="0", train_crop=crop)
    images, labels = batches(train(split, config), 1)[0]
    assert images.shape == (BATCH, 8, 8, 3)
    assert labels_and_ids(images)[0] == labels.argmax(axis=1).tolist()


def test_rand_augment_and_mix_up(folder):
    split, config = train_split("folder", folder, None)
    config = DataConfig(source=config.source, val_split="0", randaugment=True, mixup=0.8)
    for images, labels in batches(train(split, config, batch_size=8), 3):
        assert images.shape == (8, 8, 8, 3) and images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 255.0
        assert labels.shape == (8, 3) and labels.dtype == np.float32
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert (labels.max(axis=1) < 1.0).any()  # some labels were mixed


def test_a_file_broken_after_indexing_does_not_stop_training(folder):
    split, config = train_split("folder", folder, None)
    with open(split.files[0], "wb") as file:
        file.write(b"broken")
    for images, _ in batches(train(split, config), 8):  # more than two epochs
        assert images.shape == (BATCH, 8, 8, 3)
    evaluated = pipeline.eval_dataset(split, config, image_size=8, batch_size=BATCH)
    assert sum(int(labels.shape[0]) for _, labels in evaluated) == split.num_examples - 1


def test_negative_start_is_refused(folder):
    split, config = train_split("folder", folder, None)
    with pytest.raises(ValueError):
        train(split, config, start_example=-1)
