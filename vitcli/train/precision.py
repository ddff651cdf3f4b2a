"""Mixed precision: fp32, bf16 (mixed_bfloat16) or fp16 (mixed_float16 + dynamic loss
scaling). LayerNorm, GroupNorm, the attention softmax and the head stay float32 in every
policy (vitcli.models.layers). `auto`: bf16 on TPU, fp16 on GPU, fp32 on CPU."""

from __future__ import annotations

import keras
import tensorflow as tf

from vitcli.errors import VitcliError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def resolve_precision(name: str, strategy: tf.distribute.Strategy) -> str:
    if name not in PRECISIONS:
        raise VitcliError(f"unknown precision '{name}'", hint=f"use {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "bf16"
    return "fp16" if tf.config.list_logical_devices("GPU") else "fp32"


def dtype_policy(precision: str) -> str:
    return _POLICIES[precision]


def wrap_optimizer(optimizer, precision: str):
    """fp16 needs dynamic loss scaling; bf16 has float32's range and does not."""
    if precision == "fp16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def base_optimizer(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)
