"""Layer-wise learning-rate decay (docs/reference.md, "Training"): every variable's multiplier
is the formula's (head 1, encoder block i of L F^(L - i), embeddings and a hybrid's stem
F^(L + 1)), the optimizer holds exactly those, one step moves every variable by
-lr x multiplier x gradient (SGD, also under the fp16 loss-scale wrapper) or by
-lr x multiplier x (direction + weight decay x w) (AdamW), and F = 1 changes nothing."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import vitcli
from tests.reference.numpy_vit import random_checkpoint
from tests.support.checkpoints import TINY_VIT
from tests.support.models import TINY_HYBRID, random_images
from vitcli.config import FINETUNE_DEFAULTS, TrainConfig
from vitcli.models.vit import build_vit
from vitcli.train.groups import trained_variables
from vitcli.train.optim import ReferenceAdamW, ReferenceSGD, make_optimizer
from vitcli.train.precision import wrap_optimizer
from vitcli.train.step import make_train_step
from vitcli.weights.checkpoint import model_arrays, model_from_arrays

DECAY = 0.5
BATCH, CLASSES = 6, 3
NO_EFFECT = "key/bias"  # its exact gradient is zero (softmax ignores a shift of all keys)


def expected_multipliers(depth: int, decay: float) -> dict[str, float]:
    """The formula, by top-level layer name: written out, not computed by vitcli's rule."""
    embeddings = decay ** (depth + 1)
    table = {"embedding": embeddings, "cls": embeddings, "posembed_input": embeddings,
             "conv_root": embeddings, "gn_root": embeddings, "block1": embeddings,
             "block2": embeddings, "encoder_norm": 1.0, "pre_logits": 1.0, "head": 1.0}
    table.update({f"encoderblock_{index}": decay ** (depth - index) for index in range(depth)})
    return table


def tiny_model(seed: int = 3, representation_size=None):
    arrays = random_checkpoint(seed, num_classes=CLASSES, representation_size=representation_size,
                               **TINY_VIT)
    return model_from_arrays(arrays)[0]


def one_batch(seed: int = 0):
    images = random_images(TINY_VIT["image_size"], batch=BATCH, seed=seed)
    labels = np.eye(CLASSES, dtype=np.float32)[np.arange(BATCH) % CLASSES]
    return images, labels


def gradients(model, images, labels) -> dict[str, np.ndarray]:
    """The mean cross-entropy's gradient, by variable path, computed here with a tape."""
    with tf.GradientTape() as tape:
        logits = tf.cast(model(images, training=True), tf.float32)
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    return {variable.path: np.asarray(grad, np.float64)
            for variable, grad in zip(model.trainable_variables, grads, strict=True)}


def one_step(model, optimizer, variables, images, labels) -> dict[str, np.ndarray]:
    """Runs vitcli's training step once (no clipping); returns each variable's change."""
    before = {variable.path: variable.numpy().astype(np.float64)
              for variable in model.trainable_variables}
    step = make_train_step(model, optimizer, tf.distribute.get_strategy(), global_batch=BATCH,
                           grad_clip_norm=None, variables=variables)
    step(iter(tf.data.Dataset.from_tensors((images, labels)).repeat()))
    return {variable.path: variable.numpy().astype(np.float64) - before[variable.path]
            for variable in model.trainable_variables}


def assert_moved_by(delta: np.ndarray, expected: np.ndarray, path: str) -> None:
    """`delta` equals `expected` to float32 round-off, and its scale (a least-squares fit)
    to 1e-3, which tells multipliers a factor of F apart."""
    np.testing.assert_allclose(delta, expected, rtol=1e-3, atol=2e-7, err_msg=path)
    if np.abs(expected).max() > 1e-5:
        scale = float(np.sum(delta * expected) / np.sum(expected * expected))
        assert scale == pytest.approx(1.0, rel=1e-3), path


@pytest.mark.parametrize("kind", ["plain", "pre_logits", "hybrid"])
def test_multipliers_follow_the_formula(kind):
    keras.utils.clear_session()
    model = {"plain": lambda: tiny_model(),
             "pre_logits": lambda: tiny_model(representation_size=16),
             "hybrid": lambda: build_vit(TINY_HYBRID)}[kind]()
    depth = 2
    want = expected_multipliers(depth, DECAY)
    groups = trained_variables(model, TrainConfig(layer_decay=DECAY))
    assert groups.variables == model.trainable_variables and not groups.frozen
    optimizer = make_optimizer(TrainConfig(layer_decay=DECAY, learning_rate=0.1, warmup_steps=0),
                               10, groups.multipliers)
    optimizer.build(groups.variables)
    for variable, held in zip(groups.variables, optimizer.variable_multipliers, strict=True):
        expected = want[variable.path.split("/")[0]]
        assert held == pytest.approx(expected, rel=1e-12), variable.path
        assert groups.multipliers.get(variable.path, 1.0) == held
    assert sorted(set(optimizer.variable_multipliers)) == [DECAY**3, DECAY**2, DECAY, 1.0]
    if kind == "hybrid":
        assert any(path.startswith("block1/unit1/") for path in groups.multipliers)


def assert_each_moved_by_its_rate(model, optimizer, variables, images, labels, grads):
    """After one plain step at rate 0.1: w1 - w0 = -0.1 x the layer's multiplier x g."""
    deltas = one_step(model, optimizer, variables, images, labels)
    want = expected_multipliers(2, DECAY)
    for path, delta in deltas.items():
        if not path.endswith(NO_EFFECT):
            assert_moved_by(delta, -0.1 * want[path.split("/")[0]] * grads[path], path)


def test_one_sgd_step_moves_each_variable_by_its_rate():
    """Momentum 0, a constant rate, no clipping: w1 - w0 = -lr x multiplier x g."""
    keras.utils.clear_session()
    model = tiny_model()
    images, labels = one_batch()
    grads = gradients(model, images, labels)
    groups = trained_variables(model, TrainConfig(layer_decay=DECAY))
    optimizer = ReferenceSGD(0.1, momentum=0.0, rate_multipliers=groups.multipliers)
    optimizer.build(groups.variables)
    assert_each_moved_by_its_rate(model, optimizer, groups.variables, images, labels, grads)


def test_loss_scale_wrapper_keeps_the_multipliers():
    """fp16's LossScaleOptimizer unscales exactly (a power of two) and hands the update to
    the wrapped optimizer, multipliers included."""
    keras.utils.clear_session()
    model = tiny_model(seed=4)
    images, labels = one_batch(seed=1)
    grads = gradients(model, images, labels)
    groups = trained_variables(model, TrainConfig(layer_decay=DECAY))
    optimizer = wrap_optimizer(ReferenceSGD(0.1, momentum=0.0,
                                            rate_multipliers=groups.multipliers), "fp16")
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    optimizer.build(groups.variables)
    assert min(optimizer.inner_optimizer.variable_multipliers) == DECAY**3
    assert_each_moved_by_its_rate(model, optimizer, groups.variables, images, labels, grads)


def test_adamw_scales_the_whole_update_weight_decay_included():
    """First Adam step: direction = g / (|g| + eps); kernels also decay by 0.1 x w. Both are
    scaled by the variable's multiplier (vitcli's choice, as BEiT's and MAE's AdamW)."""
    keras.utils.clear_session()
    model = tiny_model(seed=5)
    images, labels = one_batch(seed=2)
    grads = gradients(model, images, labels)
    start = {variable.path: variable.numpy().astype(np.float64)
             for variable in model.trainable_variables}
    groups = trained_variables(model, TrainConfig(layer_decay=DECAY))
    optimizer = ReferenceAdamW(0.01, weight_decay=0.1, rate_multipliers=groups.multipliers)
    optimizer.build(groups.variables)
    deltas = one_step(model, optimizer, groups.variables, images, labels)
    want = expected_multipliers(2, DECAY)
    for path, delta in deltas.items():
        if path.endswith(NO_EFFECT):
            continue
        direction = grads[path] / (np.abs(grads[path]) + 1e-8)
        if path.endswith("/kernel"):
            direction = direction + 0.1 * start[path]
        expected = -0.01 * want[path.split("/")[0]] * direction
        # Where |g| is near epsilon the direction is ill-conditioned: compare the rest.
        settled = np.abs(grads[path]) > 1e-6
        assert_moved_by(delta[settled], expected[settled], path)


def test_decay_one_changes_nothing_bit_for_bit():
    batches = [one_batch(seed) for seed in range(3)]
    batches = [(images, labels.argmax(axis=1)) for images, labels in batches]
    results = []
    for settings in ({}, {"layer_decay": 1.0}):
        keras.utils.clear_session()
        model = tiny_model(seed=6)
        losses = vitcli.train_steps(model, batches, learning_rate=0.05, warmup_steps=1,
                                    **settings)
        results.append((losses, model_arrays(model)))
    (losses, arrays), (same_losses, same_arrays) = results
    np.testing.assert_array_equal(losses, same_losses)
    for key, value in arrays.items():
        np.testing.assert_array_equal(same_arrays[key], value, err_msg=key)
    assert trained_variables(tiny_model(), FINETUNE_DEFAULTS).multipliers == {}
