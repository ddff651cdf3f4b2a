"""The distributed training step: `strategy.run` over micro-batches, explicit reductions.

Written against tf.distribute directly (not `Model.fit`), so one code path serves the
default, mirrored, multi-worker and TPU strategies (Keras 3.15's `fit` fails under
MultiWorkerMirroredStrategy, keras-team/keras#20585).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def per_example_loss(labels: tf.Tensor, logits: tf.Tensor, label_smoothing: float,
                     loss: str = "softmax") -> tf.Tensor:
    """Softmax cross-entropy against (possibly mixed) one-hot labels, in float32; with
    `loss="sigmoid"` the sigmoid cross-entropy of every class against (multi-hot) labels,
    summed over the classes (big_vision's sigmoid_xent, the paper's pre-training loss).
    Label smoothing moves every target towards 1/classes in both."""
    logits = tf.cast(logits, tf.float32)
    if label_smoothing:
        classes = tf.cast(tf.shape(labels)[-1], tf.float32)
        labels = labels * (1.0 - label_smoothing) + label_smoothing / classes
    if loss == "sigmoid":
        return tf.reduce_sum(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=-1)
    return tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def classification_loss(model: keras.Model, label_smoothing: float = 0.0,
                        loss: str = "softmax"):
    """The default `batch_loss` of `make_train_step` (softmax): summed cross-entropy of the
    logits; `loss="sigmoid"` for multi-label training."""
    def batch_loss(images, labels, seed):
        logits = model(images, training=True)
        return tf.reduce_sum(per_example_loss(labels, logits, label_smoothing, loss))

    return batch_loss


SEED_STATE = "seed_generator_state"  # the variable of a Keras seed generator (Dropout's)


def reseed(states: list, key: tf.Tensor) -> None:
    """Restarts Keras seed generators (their `SEED_STATE` variables) at states drawn from the
    (2,) stateless `key`, one per generator."""
    starts = tf.random.stateless_uniform([len(states)], key, minval=None, maxval=None,
                                         dtype=tf.int64)
    for state, start in zip(states, tf.unstack(starts), strict=True):
        state.assign(tf.cast(tf.stack([start, 0]), state.dtype))


def _loss_scale(optimizer):
    """The dynamic loss scale of a LossScaleOptimizer (fp16), else None."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.dynamic_scale
    return None


def make_train_step(model: keras.Model, optimizer, strategy: tf.distribute.Strategy, *,
                    global_batch: int, accum_steps: int = 1, grad_clip_norm: float | None = 1.0,
                    label_smoothing: float = 0.0, jit: bool = False, batch_loss=None,
                    variables=None, seed: int = 0):
    """A tf.function taking a distributed iterator; one call = one optimizer step.

    Each replica sums the gradients of `accum_steps` micro-batches (loss scaled by
    1/global_batch), the sum is all-reduced across replicas, clipped by its global norm,
    and handed to the optimizer divided by the replica count (the optimizer sums again).
    Under fp16 the loss is multiplied by the dynamic loss scale and the clipping threshold
    with it (clipping commutes with scaling); the LossScaleOptimizer unscales and skips
    non-finite steps. Returns the mean loss over the global batch. The returned function's
    `steps_done` variable counts calls (the data position), skipped fp16 steps included.

    `batch_loss(images, labels, seed)` returns a micro-batch's summed loss (default: the
    classification loss of `model`); `seed` is a (2,) int64 (step, replica x micro-batch
    slot), unique to the micro-batch, from which random objectives (masked patch
    prediction) draw stateless numbers that a resumed run draws again identically.

    `variables` (default: all of `model.trainable_variables`) are those differentiated and
    updated, the list the optimizer was built on; the others (frozen) are left alone.

    Keras' Dropout layers (dropout, and stochastic depth: vitcli.models.layers.EncoderBlock)
    draw from seed generators whose state advances with every draw and is not part of a
    checkpoint. Before each micro-batch the step restarts every one of the model's at a state
    drawn from (run `seed`, step, slot), so their masks depend on nothing else and a resumed
    run draws them again identically. (They depend on the slot: on how the global batch is
    split over replicas and micro-batches, as they always did.)
    """
    variables = model.trainable_variables if variables is None else list(variables)
    scale = _loss_scale(optimizer)
    batch_loss = batch_loss or classification_loss(model, label_smoothing)
    seed_states = [variable for variable in model.variables if variable.name == SEED_STATE]

    def micro_batch_seed(index):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        slot = tf.cast(replica, tf.int64) * accum_steps + index
        return tf.stack([tf.cast(steps_done, tf.int64), slot])

    def micro_batch_gradients(images, labels, index):
        slot_seed = micro_batch_seed(index)
        if seed_states:
            reseed(seed_states, tf.random.experimental.stateless_fold_in(
                slot_seed, tf.constant(seed, tf.int64)))
        with tf.GradientTape() as tape:
            loss = batch_loss(images, labels, slot_seed) / global_batch
            scaled = loss * tf.cast(scale, tf.float32) if scale is not None else loss
        return loss, tape.gradient(scaled, variables)

    def gradients_of(micro_batches):
        if len(micro_batches) == 1:
            (images, labels), = micro_batches
            loss, gradients = micro_batch_gradients(images, labels, tf.constant(0, tf.int64))
            return [tf.cast(gradient, variable.dtype)
                    for gradient, variable in zip(gradients, variables, strict=True)], loss
        # A loop, not an unrolled sequence: one micro-batch at a time (an unrolled graph
        # runs their forward passes side by side, keeping all their activations), and one
        # copy of the step's graph however many micro-batches there are.
        images = tf.stack([images for images, _ in micro_batches])
        labels = tf.stack([labels for _, labels in micro_batches])

        def body(index, loss_sum, *totals):
            loss, gradients = micro_batch_gradients(images[index], labels[index], index)
            return (index + 1, loss_sum + loss,
                    *[total + tf.cast(gradient, total.dtype)
                      for total, gradient in zip(totals, gradients, strict=True)])

        zeros = [tf.zeros(variable.shape, variable.dtype) for variable in variables]
        _, loss_sum, *gradients = tf.while_loop(
            lambda index, *_: index < len(micro_batches), body,
            (tf.constant(0, tf.int64), tf.constant(0.0), *zeros), parallel_iterations=1)
        return gradients, loss_sum

    def replica_step(micro_batches):
        gradients, loss_sum = gradients_of(micro_batches)
        context = tf.distribute.get_replica_context()
        gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        if grad_clip_norm:
            threshold = grad_clip_norm * (tf.cast(scale, tf.float32) if scale is not None else 1.0)
            gradients, _ = tf.clip_by_global_norm(gradients, threshold)
        replicas = tf.cast(context.num_replicas_in_sync, tf.float32)
        optimizer.apply_gradients(
            zip([gradient / replicas for gradient in gradients], variables, strict=True))
        return loss_sum

    with strategy.scope():
        steps_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_done")
    # Plain Python control flow only (the loops above are explicit tf.while_loop): without
    # autograph's conversion of every call the first trace is shorter (vit-ti16: 3.0-3.6 s
    # instead of 3.7-5.5 s, benchmarks/profile.md).
    compiled_replica_step = tf.autograph.experimental.do_not_convert(
        tf.function(replica_step, jit_compile=True, autograph=False) if jit else replica_step)

    # Autograph on for these few lines alone (the replica step above is excluded): tf.data
    # refuses more than 32 iterator calls in a function traced without it, and the batch
    # plan may take 64 micro-batches a step (the recipes' 4,096 in 64s on a CPU).
    @tf.function
    def train_step(iterator):
        micro_batches = [next(iterator) for _ in range(accum_steps)]
        losses = strategy.run(compiled_replica_step, args=(micro_batches,))
        steps_done.assign_add(1)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    train_step.steps_done = steps_done
    return train_step
