"""Running a model over a finite dataset, batch by batch, in graph mode: on one device as it
is, or under a tf.distribute strategy with several replicas as one distributed step per batch.

The distributed path pads every batch with zeros to the global batch (the batch size rounded
up to a multiple of the replicas, so every replica gets an equal share of one static shape)
and gives each row its example's index (-1 for padding). The model's outputs, the riding
values (labels) and the indices are gathered over all replicas; the padding is dropped and
the rows are put back in index order, checked to be every example once, in order.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

_FORWARD_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DISTRIBUTED_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forward_function(model):
    """The compiled inference call (training=False) of `model`: traced once per image shape
    and dtype for any batch size (a last partial batch is not traced again)."""
    if model not in _FORWARD_FUNCTIONS:
        @tf.function(autograph=False)
        def forward(images):
            return model(images, training=False)

        traced = {}

        def call(images):
            images = tf.convert_to_tensor(images)
            key = (tuple(images.shape[1:]), images.dtype)
            if key not in traced:
                spec = tf.TensorSpec((None, *key[0]), key[1])
                traced[key] = forward.get_concrete_function(spec)
            return traced[key](images)

        call.traced_function = forward  # its tracing count, for tests
        _FORWARD_FUNCTIONS[model] = call
    return _FORWARD_FUNCTIONS[model]


def is_distributed(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether inference needs `strategy.run`: more than one replica, or a TPU (whose
    replicas only run what strategy.run compiles for them)."""
    return strategy is not None and (strategy.num_replicas_in_sync > 1
                                     or isinstance(strategy, tf.distribute.TPUStrategy))


def global_batch_size(batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """`batch_size` rounded up to a multiple of the replicas: equal shares for all."""
    replicas = strategy.num_replicas_in_sync
    return -(-batch_size // replicas) * replicas


def _split(batch):
    """(images, the value riding along or None): a dataset element of images, or a tuple."""
    return (batch[0], batch[1]) if isinstance(batch, tuple) else (batch, None)


def padded_batches(dataset: tf.data.Dataset, global_batch: int) -> tf.data.Dataset:
    """(images, riding value, int32 example indices) batches of exactly `global_batch` rows:
    zeros after the last example, index -1 there. The input's batches are at most that."""
    def pad(tensor, padding, value=0):
        paddings = [[0, padding]] + [[0, 0]] * (tensor.shape.rank - 1)
        padded = tf.pad(tensor, paddings, constant_values=tf.cast(value, tensor.dtype))
        return tf.ensure_shape(padded, [global_batch, *tensor.shape[1:]])

    def step(offset, batch):
        images, riding = _split(batch)
        count = tf.shape(images)[0]
        tf.debugging.assert_less_equal(count, global_batch, "a batch over the global batch")
        padding = global_batch - count
        indices = pad(offset + tf.range(count), padding, -1)
        riding = pad(riding, padding) if riding is not None else indices
        return offset + count, (pad(images, padding), riding, indices)

    padded = dataset.scan(tf.constant(0, tf.int32), step)
    options = tf.data.Options()
    # Shard by batch whatever the source reads (multi-worker): every worker runs every step.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return padded.with_options(options)


def _distributed_step(model, strategy: tf.distribute.Strategy):
    """The compiled step: the model on each replica's share, then outputs, riding values and
    indices gathered over every replica (all workers' too)."""
    cached = _DISTRIBUTED_STEPS.get(model)
    if cached is not None and cached[0] is strategy:
        return cached[1]

    @tf.function(autograph=False)
    def step(images, riding, indices):
        outputs = strategy.run(lambda shard: model(shard, training=False), args=(images,))
        return tuple(strategy.gather(value, axis=0) for value in (outputs, riding, indices))

    _DISTRIBUTED_STEPS[model] = (strategy, step)
    return step


def _distributed_outputs(model, dataset, strategy, batch_size: int):
    """batch_outputs for several replicas (see the module's docstring)."""
    batches = padded_batches(dataset, global_batch_size(batch_size, strategy))
    step = _distributed_step(model, strategy)
    expected = 0  # the next example's index
    for batch in strategy.experimental_distribute_dataset(batches):
        outputs, riding, indices = (value.numpy() for value in step(*batch))
        kept = np.flatnonzero(indices >= 0)
        kept = kept[np.argsort(indices[kept], kind="stable")]
        if not np.array_equal(indices[kept], np.arange(expected, expected + len(kept))):
            raise RuntimeError(f"distributed inference lost or repeated examples after "
                               f"{expected}: got indices {indices[kept].tolist()}")
        expected += len(kept)
        yield outputs[kept], riding[kept]


def batch_outputs(model, dataset, *, strategy: tf.distribute.Strategy | None = None,
                  batch_size: int | None = None):
    """(outputs, riding values) per batch of `dataset`, in its order: the model's outputs for
    the batch's images and what rides along with them (labels; None for a dataset of images).

    With a strategy of several replicas (`is_distributed`) each batch runs as one distributed
    step; `batch_size` (the dataset's) is then required. Otherwise the model runs as it is.
    """
    if not is_distributed(strategy):
        forward = forward_function(model)
        for batch in dataset:
            images, riding = _split(batch)
            yield forward(images).numpy(), None if riding is None else riding.numpy()
        return
    if batch_size is None:
        raise ValueError("distributed inference needs the dataset's batch size")
    yield from _distributed_outputs(model, dataset, strategy, batch_size)


def collect_logits(model, dataset, progress=None, *, strategy=None,
                   batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, K), labels (N,)) over a dataset of (images, labels) batches; `strategy`
    and `batch_size` as for `batch_outputs`."""
    logits, labels = [], []
    for batch_logits, batch_labels in batch_outputs(model, dataset, strategy=strategy,
                                                    batch_size=batch_size):
        logits.append(np.asarray(batch_logits, dtype=np.float32))
        labels.append(batch_labels)
        if progress:
            progress(len(batch_labels))
    if not logits:
        return np.zeros((0, model.output_shape[-1]), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(logits), np.concatenate(labels)
