"""vitcli's own training step on batches a script gives: the `vitcli.train_steps` API.

The same optimizer, schedule, clipping, accumulation and distribution code as
`vitcli finetune` / `vitcli pretrain`, without the data pipeline and the run directory:
for notebooks, experiments and the tests that check training against a numpy reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from vitcli.config import TrainConfig, check_train_config, train_defaults
from vitcli.errors import VitcliError
from vitcli.train.defaults import learning_rate_for, warmup_for
from vitcli.train.groups import trained_variables
from vitcli.train.loop import ensure_built
from vitcli.train.optim import make_optimizer
from vitcli.train.step import make_train_step

RECIPES = ("finetune", "pretrain")
# Settings of TrainConfig that describe a whole run rather than its step.
_RUN_ONLY = {"steps", "epochs", "batch_size", "seed", "log_every", "eval_every",
             "checkpoint_every", "ema_decay", "default_warmup"}


def step_config(recipe: str, settings: dict) -> TrainConfig:
    """The recipe's defaults (config.py) with `settings` (TrainConfig field names) applied."""
    if recipe not in RECIPES:
        raise VitcliError(f"unknown recipe '{recipe}'", hint=f"use {' or '.join(RECIPES)}")
    known = {field.name for field in dataclasses.fields(TrainConfig)} - _RUN_ONLY
    unknown = sorted(set(settings) - known)
    if unknown:
        raise VitcliError(f"unknown training setting(s) {', '.join(unknown)}",
                          hint=f"known: {', '.join(sorted(known))}")
    # A script's batches are already in memory: accumulate only when asked to.
    settings = {"accum_steps": 1, **settings}
    config = dataclasses.replace(train_defaults(recipe, "classification"), **settings)
    check_train_config(config)
    return config


def _derived(config: TrainConfig, batch_size: int, total_steps: int) -> TrainConfig:
    """The learning rate and warm-up a run of this batch and length gets by default, as on
    the command line (vitcli.train.defaults)."""
    config = dataclasses.replace(config, batch_size=batch_size, steps=total_steps)
    rate, _ = learning_rate_for(config)
    warmup, _ = warmup_for(config, total_steps)
    return dataclasses.replace(config, learning_rate=rate, warmup_steps=warmup)


def _as_arrays(batches: Iterable, num_classes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Checks the batches: same size, NHWC pixels, integer labels or (B, classes) targets."""
    arrays = []
    for index, (images, labels) in enumerate(batches):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise VitcliError(f"batch {index}: images must be (B, H, W, 3), got {images.shape}")
        if labels.ndim == 1:
            if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or \
                    labels.max() >= num_classes:
                raise VitcliError(f"batch {index}: labels must be integers in "
                                  f"0..{num_classes - 1}")
            labels = np.eye(num_classes, dtype=np.float32)[labels]
        if labels.shape != (len(images), num_classes):
            raise VitcliError(f"batch {index}: labels must be (B,) or (B, {num_classes}), "
                              f"got {labels.shape}")
        arrays.append((images.astype(np.float32), labels.astype(np.float32)))
    if not arrays:
        raise VitcliError("no batches given")
    if len({len(images) for images, _ in arrays}) > 1:
        raise VitcliError("all batches must have the same size (it is the global batch)")
    return arrays


def _distributed_micro_batches(arrays, strategy, accum_steps: int):
    """One global micro-batch (batch / accum_steps images) per element, each split evenly
    across the strategy's replicas."""
    batch = len(arrays[0][0])
    replicas = strategy.num_replicas_in_sync
    if batch % (accum_steps * replicas):
        raise VitcliError(f"batch of {batch} is not divisible by accum_steps {accum_steps} "
                          f"x {replicas} replicas")
    images = np.concatenate([images for images, _ in arrays])
    labels = np.concatenate([labels for _, labels in arrays])
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.batch(batch // accum_steps, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))


def train_steps(model, batches: Iterable, *, recipe: str = "finetune",
                total_steps: int | None = None, strategy: tf.distribute.Strategy | None = None,
                jit: bool = False, **settings) -> np.ndarray:
    """Runs one optimizer step per batch on `model` (updated in place); returns the losses.

    `batches`: (images, labels) pairs of one size, images NHWC pixels in [0, 255] (uint8 or
    float), labels integer classes (B,) or target distributions (B, classes). `recipe`
    picks the defaults: "finetune" (the reference's SGD, momentum 0.9, clipping at 1.0) or
    "pretrain" (Adam with decoupled weight decay 0.1, linear decay); `settings` override
    them by `TrainConfig` name, e.g. `learning_rate`, `warmup_steps`, `schedule`,
    `accum_steps`, `momentum_dtype`, `grad_clip_norm`, `weight_decay`, `label_smoothing`,
    `layer_decay`, `freeze` (frozen variables are left exactly as they are).
    The schedule spans `total_steps` (default: the number of batches); without
    `learning_rate` the recipe's rate is scaled to the batch size and without `warmup_steps`
    the recipe's warm-up is capped at a tenth of the steps, as for the CLI. Each loss is the
    batch's mean cross-entropy before its update. A model built under a `strategy`'s scope
    is trained on all its replicas. A fresh optimizer is made on every call.
    """
    config = step_config(recipe, settings)
    arrays = _as_arrays(batches, int(model.output_shape[-1]))
    total_steps = len(arrays) if total_steps is None else total_steps
    if total_steps < 1:
        raise VitcliError(f"total_steps must be at least 1, got {total_steps}")
    config = _derived(config, len(arrays[0][0]), total_steps)
    strategy = strategy or tf.distribute.get_strategy()
    groups = trained_variables(model, config)  # layer_decay, freeze
    with strategy.scope():
        optimizer = make_optimizer(config, total_steps, groups.multipliers)
        ensure_built(optimizer, model, groups.variables)
    step = make_train_step(model, optimizer, strategy, global_batch=len(arrays[0][0]),
                           accum_steps=config.accum_steps,
                           grad_clip_norm=config.grad_clip_norm,
                           label_smoothing=config.label_smoothing, jit=jit,
                           variables=groups.variables)
    iterator = _distributed_micro_batches(arrays, strategy, config.accum_steps)
    return np.array([float(step(iterator)) for _ in arrays])
