"""Preprocessing as small named TensorFlow ops (big_vision `pp/` style).

The same ops run in the tf.data pipelines and inside the exported serving graph, so
training and serving cannot drift. Images stay float32 pixels in [0, 255]: the model
normalises to [-1, 1] itself. Random ops are stateless and take an explicit (2,) seed,
so that an example's augmentation depends only on (run seed, example index) and a
resumed run sees exactly the data an uninterrupted one would.
"""

from __future__ import annotations

import tensorflow as tf

from vitcli.config import EVAL_CROPS, image_shape
from vitcli.errors import VitcliError

INCEPTION_AREA_RANGE = (0.05, 1.0)
INCEPTION_ASPECT_RANGE = (3 / 4, 4 / 3)
CENTER_CROP_FRACTION = 0.875


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Any format TensorFlow decodes (JPEG, PNG, BMP, GIF's first frame) -> uint8 RGB (H, W, 3).

    Grayscale is repeated to three channels and alpha is dropped.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# Every `size` below is a number (square) or a (height, width) pair (config.image_shape).


def resize(image: tf.Tensor, size) -> tf.Tensor:
    """Bilinear resize to (size, size), or to (height, width), as the reference's evaluation
    does; float32 [0, 255]."""
    height, width = image_shape(size)
    resized = tf.image.resize(tf.cast(image, tf.float32), [height, width], method="bilinear")
    resized = tf.clip_by_value(resized, 0.0, 255.0)
    resized.set_shape([height, width, 3])  # static shape for Keras layers and serving graphs
    return resized


def resize_small_center_crop(image: tf.Tensor, size,
                             crop_fraction: float = CENTER_CROP_FRACTION) -> tf.Tensor:
    """Resize the shorter side to size / crop_fraction, then take the central size x size crop.
    For a (height, width) size: the smallest scale at which the image covers (height, width) /
    crop_fraction, then the central height x width crop (the same for a square size)."""
    height, width = image_shape(size)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    if height == width:
        scale = (height / crop_fraction) / tf.reduce_min(shape)
    else:
        scale = tf.reduce_max(tf.constant([height / crop_fraction, width / crop_fraction],
                                          tf.float32) / shape)
    new_shape = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    image = tf.image.resize(tf.cast(image, tf.float32), new_shape, method="bilinear")
    top = (new_shape[0] - height) // 2
    left = (new_shape[1] - width) // 2
    cropped = tf.clip_by_value(image[top:top + height, left:left + width], 0.0, 255.0)
    cropped.set_shape([height, width, 3])
    return cropped


def inception_crop(image: tf.Tensor, size, seed: tf.Tensor) -> tf.Tensor:
    """A random crop covering 5%-100% of the area with aspect ratio 3/4-4/3, resized to size.
    For a (height, width) size the aspect range is scaled by width / height, so that crops
    keep about the output's shape."""
    height, width = image_shape(size)
    aspect = INCEPTION_ASPECT_RANGE if height == width else \
        tuple(ratio * width / height for ratio in INCEPTION_ASPECT_RANGE)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([0, 0, 4], tf.float32), seed=seed,
        area_range=INCEPTION_AREA_RANGE, aspect_ratio_range=aspect,
        min_object_covered=0.0, use_image_if_no_bounding_boxes=True,
    )
    return resize(tf.slice(image, begin, crop_size), size)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def label_target(label: tf.Tensor, num_classes: int) -> tf.Tensor:
    """The float32 target vector of a label: one-hot of a class index, or a multi-hot vector
    (multi-label data) as it is."""
    if label.shape.rank == 0:
        return tf.one_hot(label, num_classes, dtype=tf.float32)
    return tf.cast(label, tf.float32)


def example_seed(run_seed: int, index: tf.Tensor, salt: int = 0) -> tf.Tensor:
    """A (2,) stateless seed that depends only on the run seed, the example index and a salt."""
    return tf.stack([tf.cast(run_seed * 1000003 + salt, tf.int64), tf.cast(index, tf.int64)])


def train_transform(crop: str, size):
    """(image uint8, seed) -> float32 (size, size, 3) (or (height, width, 3)): `inception`
    crop + flip, or plain resize."""
    def transform(image, seed):
        if crop == "inception":
            crop_seed, flip_seed = tf.unstack(
                tf.random.experimental.stateless_split(seed, num=2))
            return random_flip(inception_crop(image, size, crop_seed), flip_seed)
        if crop == "resize":
            return resize(image, size)
        return resize_small_center_crop(image, size)

    return transform


def eval_transform(crop: str, size):
    """image uint8 -> float32 (size, size, 3) (or (height, width, 3)): `resize` (the
    reference's) or `center`."""
    if crop not in EVAL_CROPS:  # never a silent resize
        raise VitcliError(f"unknown evaluation crop '{crop}'", hint=f"use {', '.join(EVAL_CROPS)}")
    if crop == "center":
        return lambda image: resize_small_center_crop(image, size)
    return lambda image: resize(image, size)
