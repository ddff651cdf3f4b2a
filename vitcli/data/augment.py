"""Training augmentations that draw only from (run seed, example position), as the crops do.

Every random number an example's augmentation uses comes from stateless ops seeded by
`ops.example_seed(seed, position, salt)`, so what an example becomes never depends on when,
where or in which order it is computed, and a resumed run sees exactly the data the
uninterrupted one saw (vitcli.data.pipeline).

- RandAugment (Cubuk et al. 2020) and random erasing (Zhong et al. 2020) are Keras' own layers,
  given a `SeedStream` of the example's seed in place of their seed generators. Keras'
  RandAugment ignores the seed it is given (it always draws from its own generator), so
  `SeededRandAugment` overrides that one method; its sub-layers take the seed as given.
- MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) mix each example with its neighbour in
  the stream: a pipeline's examples 2m and 2m+1 form a pair, whatever the batch size, the
  number of replicas or micro-batches, or where the stream was started. Each example of a pair
  draws its own mixing weight (and, with both on, which of the two) from its own seed. Keras'
  MixUp and CutMix layers mix within a batch through a random permutation (an example may
  draw itself) and CutMix weights the labels by its fractional box rather than the pixels it
  pasted, so these two are written here.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vitcli.config import DataConfig
from vitcli.data import ops

# Salts separating each augmentation's seeds from the crop's (0) and the shuffle's (1).
RANDAUGMENT_SALT = 2
ERASING_SALT = 3
MIXING_SALT = 4
PIXEL_RANGE = (0.0, 255.0)
# Random erasing's box: each side a fraction sqrt(u) of the image's, u uniform in this range
# (Keras' RandomErasing default; its area is then within the range too).
ERASING_SCALE = (0.02, 0.33)


class SeedStream(keras.random.SeedGenerator):
    """A Keras seed generator without state: its k-th draw is `seed` folded with k.

    Keras' random ops accept a seed generator and call `next()` once per draw; a layer makes
    its draws in a fixed order, so each one gets a seed that depends only on `seed` and its
    place in that order. (No variable is created: the stream lives inside a tf.data map.)
    """

    def __init__(self, seed: tf.Tensor):
        # Not super().__init__(), which would create the state variable this one does without.
        self.name = "seed_stream"
        self.seed = seed
        self.draws = 0

    def next(self, ordered=True):
        seed = tf.random.experimental.stateless_fold_in(self.seed, self.draws)
        self.draws += 1
        return seed


class SeededRandAugment(keras.layers.RandAugment):
    """Keras' RandAugment, drawing its choice of ops and their magnitudes from `seed`."""

    def get_random_transformation(self, data, training=True, seed=None):
        if not training or seed is None:
            return super().get_random_transformation(data, training=training, seed=seed)
        choices = self.backend.random.randint((self.num_ops,), 0, len(self._AUGMENT_LAYERS),
                                              seed=seed)
        transforms = {name: getattr(self, name).get_random_transformation(
            data, training=True, seed=seed) for name in self._AUGMENT_LAYERS}
        return {"transforms": transforms, "layer_idxes": choices}


def example_augmentation(config: DataConfig, seed: int):
    """(image float32 (S, S, 3), position) -> image: RandAugment, then random erasing, each as
    configured; the identity when neither is on."""
    steps = []
    if config.randaugment:
        steps.append((SeededRandAugment(value_range=PIXEL_RANGE, dtype="float32"),
                      RANDAUGMENT_SALT))
    if config.random_erasing > 0:
        probability = config.random_erasing  # (p, p): Keras draws the probability from it
        steps.append((keras.layers.RandomErasing(
            factor=(probability, probability), scale=ERASING_SCALE, value_range=PIXEL_RANGE,
            dtype="float32"), ERASING_SALT))

    def augment(image, position):
        for layer, salt in steps:
            stream = SeedStream(ops.example_seed(seed, position, salt=salt))
            transformation = layer.get_random_transformation(image, training=True, seed=stream)
            image = layer.transform_single_image(image, transformation)
            image = tf.clip_by_value(tf.cast(image, tf.float32), *PIXEL_RANGE)
        return image

    return augment


def mixes(config: DataConfig) -> bool:
    return config.mixup > 0 or config.cutmix > 0


def pair_start(start_example: int, shard: int, num_shards: int) -> tuple[int, int]:
    """(where the stream starts, how many of its examples to skip after mixing): a shard's
    examples pair up as its 2m-th and (2m+1)-th, so a stream starting at the second of a pair
    starts one example earlier and drops it once mixed."""
    first = start_example + (shard - start_example) % num_shards  # this shard's first
    if (first // num_shards) % 2:
        return first - num_shards, 1
    return start_example, 0


def mixed(dataset: tf.data.Dataset, config: DataConfig, seed: int,
          skip: int = 0) -> tf.data.Dataset:
    """(position, image, target) examples -> (image, target), each mixed with its pair's other
    example by MixUp or CutMix when they are on."""
    if not mixes(config):
        return dataset.map(lambda position, image, target: (image, target))
    mix = mix_pair(config.mixup, config.cutmix, seed)
    pairs = dataset.batch(2, drop_remainder=True).map(mix, num_parallel_calls=tf.data.AUTOTUNE,
                                                      deterministic=True)
    return pairs.unbatch().skip(skip)


def beta(alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """One Beta(alpha, alpha) draw from a stateless seed (a ratio of two Gamma draws)."""
    gammas = tf.random.stateless_gamma([2], seed, alpha=alpha)
    total = gammas[0] + gammas[1]
    # Both Gammas can underflow to zero for a small alpha: the Beta is then 0 or 1 in equal
    # measure, and 0.5 stands in for that rare draw.
    return tf.where(total > 0, gammas[0] / tf.maximum(total, 1e-30), 0.5)


def cutmix_box(size: tuple[int, int], weight: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A boolean (H, W, 1) box of about (1 - weight) of the image, centred uniformly and
    clipped to the image (timm's rand_bbox)."""
    height, width = size
    ratio = tf.sqrt(1.0 - weight)
    cut = tf.cast(tf.stack([height * ratio, width * ratio]), tf.int32)
    centre = tf.cast(tf.random.stateless_uniform([2], seed) * [height, width], tf.int32)
    low = tf.clip_by_value(centre - cut // 2, 0, [height, width])
    high = tf.clip_by_value(centre + cut // 2, 0, [height, width])
    rows = tf.range(height)[:, None, None]
    columns = tf.range(width)[None, :, None]
    return (rows >= low[0]) & (rows < high[0]) & (columns >= low[1]) & (columns < high[1])


def mix_pair(mixup: float, cutmix: float, seed: int):
    """(positions (2,), images (2, S, S, 3), targets (2, C)) -> (images, targets): each example
    mixed with the other, by MixUp or CutMix (one of the two, chosen per example with equal
    probability, when both are on). The mixed target weighs the partner by exactly the
    fraction of the image that comes from it (CutMix: its pasted pixels)."""
    def mix_one(position, image, target, other_image, other_target):
        choice_seed, weight_seed, box_seed = tf.unstack(tf.random.experimental.stateless_split(
            ops.example_seed(seed, position, salt=MIXING_SALT), num=3))
        if cutmix > 0:
            box = cutmix_box(image.shape[:2], beta(cutmix, weight_seed), box_seed)
            cut_image = tf.where(box, other_image, image)
            pasted = tf.reduce_mean(tf.cast(box, tf.float32))  # the pasted fraction
        if mixup > 0:
            weight = beta(mixup, weight_seed)
            mixed_image = weight * image + (1.0 - weight) * other_image
            mixed_weight = weight
        if mixup > 0 and cutmix > 0:
            use_cutmix = tf.random.stateless_uniform([], choice_seed) < 0.5
            image = tf.where(use_cutmix, cut_image, mixed_image)
            own = tf.where(use_cutmix, 1.0 - pasted, mixed_weight)
        elif cutmix > 0:
            image, own = cut_image, 1.0 - pasted
        else:
            image, own = mixed_image, mixed_weight
        target = own * target + (1.0 - own) * other_target
        return tf.clip_by_value(image, *PIXEL_RANGE), target

    def mix(positions, images, targets):
        first = mix_one(positions[0], images[0], targets[0], images[1], targets[1])
        second = mix_one(positions[1], images[1], targets[1], images[0], targets[0])
        return (tf.stack([first[0], second[0]]), tf.stack([first[1], second[1]]))

    return mix
