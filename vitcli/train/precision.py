"""Mixed precision: fp32, bf16 (mixed_bfloat16) or fp16 (mixed_float16 + dynamic loss
scaling). LayerNorm, GroupNorm, the attention softmax and the head stay float32 in every
policy (vitcli.models.layers). `auto`: bf16 on TPU, fp16 on GPU, fp32 on CPU."""

from __future__ import annotations

import keras
import tensorflow as tf

from vitcli.config import PRECISIONS  # declared once, with the setting
from vitcli.errors import VitcliError

_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def device_kind(strategy: tf.distribute.Strategy) -> str:
    """'tpu', 'gpu' or 'cpu': what the strategy's replicas run on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def resolve_precision(name: str, device: str) -> str:
    """`auto` picks bf16 on TPU (native), fp16 on GPU (tensor cores), fp32 on CPU."""
    if name not in PRECISIONS:
        raise VitcliError(f"unknown precision '{name}'", hint=f"use {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    return {"tpu": "bf16", "gpu": "fp16"}.get(device, "fp32")


def dtype_policy(precision: str) -> str:
    return _POLICIES[precision]


def wrap_optimizer(optimizer, precision: str):
    """fp16 needs dynamic loss scaling; bf16 has float32's range and does not."""
    if precision == "fp16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def base_optimizer(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)
