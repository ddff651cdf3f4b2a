"""The training losses: softmax is unchanged (bit for bit) by the sigmoid option; the sigmoid
cross-entropy (summed over classes, label smoothing towards 1/classes) equals a numpy
computation written here; the run picks sigmoid for multi-label data and refuses softmax."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tests.support.checkpoints import TINY_VIT
from tests.support.checks import vitcli_error
from tests.support.models import randomise_weights
from vitcli.config import ModelConfig, RunConfig
from vitcli.models.vit import build_vit
from vitcli.train.defaults import loss_for
from vitcli.train.start_model import objective_for_run
from vitcli.train.step import per_example_loss

RNG = np.random.default_rng(0)
LOGITS = tf.constant(RNG.normal(0, 3, (6, 5)), tf.float32)
ONE_HOT = tf.one_hot([0, 3, 4, 1, 1, 2], 5)
MULTI_HOT = tf.constant((RNG.random((6, 5)) < 0.4).astype(np.float32))


def numpy_sigmoid_loss(logits, labels, smoothing=0.0) -> np.ndarray:
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
    labels = labels * (1 - smoothing) + smoothing / labels.shape[-1]
    probability = 1 / (1 + np.exp(-logits))
    return -(labels * np.log(probability) + (1 - labels) * np.log(1 - probability)).sum(-1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_is_bit_identical_to_before(smoothing):
    labels = ONE_HOT * (1 - smoothing) + smoothing / 5
    expected = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=LOGITS).numpy()
    np.testing.assert_array_equal(per_example_loss(ONE_HOT, LOGITS, smoothing).numpy(), expected)
    np.testing.assert_array_equal(per_example_loss(ONE_HOT, LOGITS, smoothing, "softmax"),
                                  expected)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("labels", [MULTI_HOT, ONE_HOT], ids=["multi-hot", "one-hot"])
def test_sigmoid_cross_entropy_equals_numpy(labels, smoothing):
    got = per_example_loss(labels, LOGITS, smoothing, "sigmoid").numpy()
    np.testing.assert_allclose(got, numpy_sigmoid_loss(LOGITS, labels, smoothing), rtol=1e-6)


def test_a_sigmoid_run_trains_on_the_summed_sigmoid_loss():
    model = build_vit(ModelConfig(**TINY_VIT, num_classes=5))
    randomise_weights(model, seed=2)
    config = RunConfig(train=dataclasses.replace(RunConfig().train, loss="sigmoid"))
    trained, batch_loss = objective_for_run(model, config)
    assert trained is model and batch_loss is not None
    images = tf.constant(RNG.uniform(0, 255, (6, 16, 16, 3)), tf.float32)
    logits = model(images, training=True)  # no dropout: training=True is deterministic
    loss = batch_loss(images, MULTI_HOT, tf.constant([0, 0], tf.int64)).numpy()
    assert loss == pytest.approx(numpy_sigmoid_loss(logits, MULTI_HOT).sum(), rel=1e-5)
    assert objective_for_run(model, RunConfig())[1] is None  # softmax: the step's own default


def test_the_loss_follows_the_data_and_softmax_is_refused_on_multi_label_data():
    assert loss_for(None, False)[0] == "softmax"
    assert loss_for(None, True) == ("sigmoid", "sigmoid cross-entropy (multi-label data)")
    assert loss_for("sigmoid", False)[0] == "sigmoid"
    assert "--loss softmax needs one label per image" in vitcli_error(loss_for, "softmax", True)
