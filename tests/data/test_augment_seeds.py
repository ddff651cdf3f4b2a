"""RandAugment, random erasing, MixUp and CutMix draw only from (run seed, example position):
an example is augmented the same wherever its stream was started, and the pasted or erased
boxes are what the labels and settings say."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tests.support.images import batches, make_folder
from vitcli.config import DataConfig
from vitcli.data import augment, pipeline
from vitcli.data.sources import open_source

COUNTS = {"a": 5, "b": 4, "c": 5}  # 14 images: the streams below cross epoch boundaries
SIZE = 16
ALL_ON = dict(randaugment=True, random_erasing=0.5, mixup=0.4, cutmix=1.0)
OPS = {"randaugment": dict(randaugment=True), "random_erasing": dict(random_erasing=0.5),
       "mixup": dict(mixup=0.4), "cutmix": dict(cutmix=1.0), "all": ALL_ON}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment") / "data"
    make_folder(root, COUNTS)
    config = DataConfig(source=str(root), val_split="0", train_crop="resize")
    return open_source(config).split("train"), config


def examples(split, config, count, start=0, **options):
    """The first `count` (image, target) examples of the stream started at `start`."""
    dataset = pipeline.train_dataset(split, config, image_size=SIZE, batch_size=1, num_classes=3,
                                     seed=3, start_example=start, **options)
    return [(images[0], labels[0]) for images, labels in batches(dataset, count)]


def assert_same(got, want):
    for (image, target), (want_image, want_target) in zip(got, want, strict=True):
        np.testing.assert_array_equal(image, want_image)
        np.testing.assert_array_equal(target, want_target)


@pytest.mark.parametrize("name", OPS)
def test_an_example_is_augmented_the_same_wherever_the_stream_starts(name, split):
    split, plain = split
    config = dataclasses.replace(plain, **OPS[name])
    uninterrupted = examples(split, config, 20)
    unaugmented = examples(split, plain, 20)
    assert any(not np.array_equal(a[0], b[0])
               for a, b in zip(uninterrupted, unaugmented, strict=True))
    for start in (1, 14):  # the second of a MixUp/CutMix pair; the first, in the next epoch
        assert_same(examples(split, config, 5, start=start), uninterrupted[start:start + 5])


@pytest.mark.parametrize("name", ["mixup", "all"])
def test_sharded_pipelines_resume_their_own_examples(name, split):
    split, plain = split
    config = dataclasses.replace(plain, **OPS[name])
    for pipeline_id in (0, 1):
        context = tf.distribute.InputContext(num_input_pipelines=2,
                                             input_pipeline_id=pipeline_id)
        uninterrupted = examples(split, config, 10, input_context=context)
        # positions pipeline_id, +2, +4, ...: a start of 6 (or 7) resumes at its 3rd example,
        # the second of its pair
        resumed = examples(split, config, 5, start=6, input_context=context)
        assert_same(resumed, uninterrupted[3:8])


def test_mixed_targets_stay_distributions(split):
    split, plain = split
    targets = np.stack([target for _, target in
                        examples(split, dataclasses.replace(plain, **ALL_ON), 40)])
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    assert (targets.max(axis=1) < 1).mean() > 0.5  # most were mixed with another class or id


def pair(first: float, second: float) -> tf.Tensor:
    """Two constant (S, S, 3) images, told apart by their value."""
    return tf.stack([tf.fill([SIZE, SIZE, 3], first), tf.fill([SIZE, SIZE, 3], second)])


@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_cutmix_weighs_the_labels_by_the_pasted_area_exactly(alpha):
    mix = tf.function(augment.mix_pair(0.0, alpha, seed=7))
    targets = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    fractions = []
    for first in range(0, 200, 2):
        images, mixed = mix(tf.constant([first, first + 1], tf.int64), pair(10.0, 200.0),
                            targets)
        mixed = mixed.numpy()
        for index, other in ((0, 200.0), (1, 10.0)):
            pasted = np.all(images[index].numpy() == other, axis=-1)
            rows, columns = np.flatnonzero(pasted.any(1)), np.flatnonzero(pasted.any(0))
            if pasted.any():  # one box: the rectangle spanned by the pasted pixels, all pasted
                assert pasted[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1].all()
                assert pasted.sum() == len(rows) * len(columns)
            fraction = pasted.mean()
            assert mixed[index, 1 - index] == pytest.approx(fraction, abs=1e-6)
            assert mixed[index, index] == pytest.approx(1 - fraction, abs=1e-6)
            fractions.append(fraction)
    assert 0 < np.mean(fractions) < 1 and np.std(fractions) > 0.05


def test_mixup_mixes_pixels_and_labels_by_one_weight():
    mix = tf.function(augment.mix_pair(0.5, 0.0, seed=7))
    targets = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    for first in range(0, 40, 2):
        images, mixed = mix(tf.constant([first, first + 1], tf.int64), pair(10.0, 200.0),
                            targets)
        for index in (0, 1):
            own = float(mixed[index, index])
            other = 200.0 if index == 0 else 10.0
            expected = own * (10.0 if index == 0 else 200.0) + (1 - own) * other
            np.testing.assert_allclose(images[index], expected, rtol=1e-5)


def erased(probability: float, count: int, seed: int = 0):
    """(image, erased pixel mask) of `count` positions of a random image in [1, 254]."""
    augmentation = augment.example_augmentation(DataConfig(random_erasing=probability), seed)
    image = tf.constant(np.random.default_rng(0).uniform(1, 254, (32, 48, 3)), tf.float32)
    results = tf.data.Dataset.range(count).map(lambda position: augmentation(image, position))
    image = image.numpy()
    return image, [np.any(out != image, axis=-1) for out in results.as_numpy_iterator()]


def test_random_erasing_erases_one_box_within_the_scale_and_nothing_else():
    image, masks = erased(1.0, 100)
    height, width = image.shape[:2]
    low, high = augment.ERASING_SCALE
    # Each side is sqrt(u) of the image's (u in the scale), rounded to whole pixels.
    smallest = (np.sqrt(low) * height - 1) * (np.sqrt(low) * width - 1) / (height * width)
    largest = (np.sqrt(high) * height + 1) * (np.sqrt(high) * width + 1) / (height * width)
    for mask in masks:
        rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert mask.sum() == len(rows) * len(columns)  # a full rectangle...
        assert mask[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1].all()  # ...and only it
        assert smallest <= mask.mean() <= largest


def test_random_erasing_probability():
    _, masks = erased(0.25, 400)
    rate = np.mean([mask.any() for mask in masks])
    assert abs(rate - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 400)
    _, never = erased(0.0, 20)
    assert not any(mask.any() for mask in never)
