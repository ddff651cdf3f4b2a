"""tf.data pipelines: an endless, resumable, shardable training stream and a one-pass eval stream.

The training stream is a sequence of example positions g = 0, 1, 2, ...; position g belongs to
epoch g // N (N examples in the split) and is augmented with `ops.example_seed(seed, g)`, so
what an example becomes depends only on (seed, g), never on when or where it is computed.

- Shuffling. A split with a file list (image folders, or any split with `config.cache`) maps
  position g to example `index_shuffle(g % N)`, a full random permutation per epoch seeded by
  (seed, epoch). A sequential tensorflow-datasets split is read in order, cut into blocks of
  `config.shuffle_buffer` examples (blocks never cross an epoch), and each block is permuted
  with a seed of (seed, block number).
- Resuming. `start_example=n` starts the stream at position n: with a file list nothing is
  read for the skipped positions; a sequential split skips whole epochs for free and reads
  (without decoding) at most one epoch's records.
- Packed data (vitcli.data.packed_source) without `config.cache` is read shard by shard:
  each epoch permutes the shard order, groups of shards are read interleaved, and the epoch
  is block-shuffled as above; resuming skips whole epochs and shard groups unread, and with
  at least P shards each of P pipelines reads only its own shards.
- Sharding. With an InputContext of P pipelines, pipeline p takes the positions g with
  g % P == p. Step s of P pipelines with batch B then covers exactly positions
  [s*P*B, (s+1)*P*B): the same examples as one pipeline with the global batch P*B.
  `start_example` counts positions of the whole stream (steps * global batch).
- Caching. `config.cache` reads every encoded image into memory once (the stream then gathers
  from memory, which also gives a sequential source the full per-epoch shuffle); the eval
  stream caches with tf.data.
- Augmentation. RandAugment, random erasing, MixUp and CutMix (vitcli.data.augment) draw
  from (seed, g) too; MixUp and CutMix mix each example with its pair in the pipeline's stream
  (its 2m-th and (2m+1)-th examples), so they do not depend on batching, and a stream starting
  at the second of a pair starts one example earlier and drops that one once it is mixed.
- Not exact: a file that became undecodable after it was indexed is dropped
  (`ignore_errors`), which shifts the batches (and the MixUp/CutMix pairs) after it by one
  example. Packed data is not filtered so: a damaged shard stops the stream with an error
  (tf.errors.DataLossError) rather than silently losing its records.
"""

from __future__ import annotations

import tensorflow as tf

from vitcli.config import DataConfig, image_shape
from vitcli.data import augment, ops
from vitcli.data.sources import Split
from vitcli.errors import VitcliError

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_SALT = 1  # separates the shuffle seeds from the augmentation seeds (salt 0)
MAX_POSITION = 2**62


def train_dataset(split: Split, config: DataConfig, *, image_size, batch_size: int,
                  num_classes: int, seed: int, start_example: int = 0,
                  input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Endless shuffled, augmented batches: (float32 (B, S, S, 3) in [0, 255], float32 targets
    (B, C): one-hot, or multi-hot for multi-label data)."""
    if split.num_examples <= 0:
        raise VitcliError(f"the {split.name} split has no examples to train on")
    shard, num_shards = _shard(input_context)
    first, paired_skip = (augment.pair_start(start_example, shard, num_shards)
                          if augment.mixes(config) else (start_example, 0))
    stream = example_stream(split, config, seed=seed, start_example=first,
                            shard=shard, num_shards=num_shards)
    transform = ops.train_transform(config.train_crop, image_size)
    augmentation = augment.example_augmentation(config, seed)

    def prepare(position, encoded, label):
        image = transform(ops.decode_image(encoded), ops.example_seed(seed, position))
        # The crop's slice loses the static shape that batching and Keras layers need.
        image = tf.ensure_shape(image, [*image_shape(image_size), 3])
        return position, augmentation(image, position), ops.label_target(label, num_classes)

    dataset = stream.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    if not split.shards:  # packed data: a damaged shard is an error, never skipped records
        dataset = dataset.ignore_errors()  # files are checked when indexed; a safety net
    dataset = augment.mixed(dataset, config, seed, skip=paired_skip)  # -> (image, target)
    dataset = dataset.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE,
                            deterministic=True)
    return dataset.prefetch(AUTOTUNE)


def eval_dataset(split: Split, config: DataConfig, *, image_size,
                 batch_size: int) -> tf.data.Dataset:
    """Every example once, in order: (float32 (B, S, S, 3) in [0, 255], int32 labels (B,), or
    multi-hot (B, C) for multi-label data); the last batch may be smaller."""
    transform = ops.eval_transform(config.eval_crop, image_size)
    examples = split.examples()
    if config.cache:
        examples = examples.cache()

    def prepare(encoded, label):
        image = transform(ops.decode_image(encoded))
        return tf.ensure_shape(image, [*image_shape(image_size), 3]), label

    dataset = examples.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    if not split.shards:
        # A file that breaks after it was indexed is dropped rather than ending the evaluation
        # (packed data was checked when packed: a damaged shard is an error).
        dataset = dataset.ignore_errors()
    return dataset.batch(batch_size, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(
        AUTOTUNE)


def example_stream(split: Split, config: DataConfig, *, seed: int, start_example: int = 0,
                   shard: int = 0, num_shards: int = 1) -> tf.data.Dataset:
    """Endless (position int64, encoded image, label) from `start_example` on, this shard only."""
    if start_example < 0:
        raise ValueError(f"start_example must be >= 0, got {start_example}")
    if split.random_access or config.cache:
        keys, labels, load = _table(split, config.cache)
        return _indexed_stream(keys, labels, load, seed, start_example, shard, num_shards)
    if split.shards:  # packed data: shards in a permuted order, each pipeline its own
        from vitcli.data.packed_source import packed_stream  # it builds on sources.py

        return packed_stream(split, config, seed=seed, start_example=start_example,
                             shard=shard, num_shards=num_shards)
    stream = _sequential_stream(split, min(config.shuffle_buffer, split.num_examples), seed,
                                start_example)
    if num_shards > 1:
        # A sequential source cannot jump: every pipeline reads all records, decodes its own.
        stream = stream.filter(lambda position, *_: position % num_shards == shard)
    return stream


def _shard(input_context: tf.distribute.InputContext | None) -> tuple[int, int]:
    if input_context is None:
        return 0, 1
    return input_context.input_pipeline_id, input_context.num_input_pipelines


def _table(split: Split, cache: bool):
    """(keys, labels, load) with load(key) -> encoded bytes: file paths and read_file, or with
    `cache` the encoded images themselves, read into memory once."""
    if not cache:
        return (tf.constant(split.files, tf.string), tf.constant(split.labels, tf.int32),
                tf.io.read_file)
    encoded, labels = split.examples().batch(split.num_examples).get_single_element()
    return encoded, labels, tf.identity


def _indexed_stream(keys, labels, load, seed: int, start: int, shard: int,
                    num_shards: int) -> tf.data.Dataset:
    """Positions from `start` (this shard's only), each looked up in its epoch's permutation."""
    count = tf.cast(tf.shape(labels)[0], tf.int64)
    first = start + (shard - start) % num_shards  # this shard's first position >= start

    def lookup(position):
        epoch, offset = position // count, position % count
        shuffle_seed = ops.example_seed(seed, epoch, salt=SHUFFLE_SALT)
        index = tf.random.experimental.index_shuffle(offset, shuffle_seed, count - 1)
        return position, load(tf.gather(keys, index)), tf.gather(labels, index)

    positions = tf.data.Dataset.range(first, MAX_POSITION, num_shards)
    return positions.map(lookup, num_parallel_calls=AUTOTUNE, deterministic=True)


def _sequential_stream(split: Split, block_size: int, seed: int, start: int) -> tf.data.Dataset:
    """Blocks of `block_size` records read in order, each permuted by (seed, block number)."""
    count = split.num_examples
    blocks_per_epoch = -(-count // block_size)
    epoch, offset = divmod(start, count)
    block_in_epoch, within_block = divmod(offset, block_size)
    examples = split.examples()
    first_epoch = examples.skip(block_in_epoch * block_size).batch(block_size)
    blocks = first_epoch.concatenate(examples.batch(block_size).repeat())

    def permute(block_number, block):
        encoded, labels = block
        size = tf.shape(labels, out_type=tf.int64)[0]
        shuffle_seed = ops.example_seed(seed, block_number, salt=SHUFFLE_SALT)
        order = tf.random.experimental.index_shuffle(tf.range(size), shuffle_seed, size - 1)
        block_epoch, block_index = block_number // blocks_per_epoch, block_number % blocks_per_epoch
        positions = block_epoch * count + block_index * block_size + tf.range(size)
        return positions, tf.gather(encoded, order), tf.gather(labels, order)

    first_block = epoch * blocks_per_epoch + block_in_epoch
    stream = blocks.enumerate(first_block).map(permute, num_parallel_calls=AUTOTUNE,
                                               deterministic=True)
    return stream.unbatch().skip(within_block)
