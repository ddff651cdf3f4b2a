"""Gradient accumulation over more micro-batches than tf.data allows iterator calls in one
traced function without autograph (32): the automatic batch plan splits the recipes' batch of
4,096 into 64 micro-batches of 64 on a CPU, the default of `vitcli pretrain` with no --batch."""

from __future__ import annotations

import keras
import numpy as np

import vitcli
from tests.reference.numpy_vit import random_checkpoint
from tests.support.checkpoints import TINY_VIT
from tests.support.models import random_images
from vitcli.weights.checkpoint import model_arrays, model_from_arrays

CLASSES, BATCH, MICRO_BATCHES = 3, 40, 40


def trained(accum_steps: int):
    """Three SGD steps on the same batches: (losses, final weights). (SGD, as Adam's update
    of a near-zero gradient element turns float32 summation order into a step of up to the
    learning rate.)"""
    keras.utils.clear_session()
    model = model_from_arrays(random_checkpoint(5, num_classes=CLASSES, **TINY_VIT))[0]
    batches = [(random_images(TINY_VIT["image_size"], batch=BATCH, seed=seed),
                np.arange(BATCH) % CLASSES) for seed in range(3)]
    losses = vitcli.train_steps(model, batches, recipe="finetune", learning_rate=0.1,
                                warmup_steps=0, accum_steps=accum_steps)
    return losses, model_arrays(model)


def test_forty_micro_batches_train_like_the_whole_batch():
    whole_losses, whole = trained(1)
    losses, weights = trained(MICRO_BATCHES)
    np.testing.assert_allclose(losses, whole_losses, rtol=0, atol=1e-5)
    assert set(weights) == set(whole)
    for key, want in whole.items():
        np.testing.assert_allclose(weights[key], want, rtol=0, atol=1e-5, err_msg=key)
    # the steps moved the weights well beyond the tolerance: the comparison says something
    start = random_checkpoint(5, num_classes=CLASSES, **TINY_VIT)
    assert max(float(np.max(np.abs(whole[key] - start[key]))) for key in start) > 1e-3
