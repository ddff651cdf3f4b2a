"""Mixed precision: fp32, bf16 (mixed_bfloat16) or fp16 (mixed_float16 + dynamic loss
scaling). LayerNorm, GroupNorm, the attention softmax and the head stay float32 in every
policy (vitcli.models.layers). `auto`: bf16 on TPU, fp16 on GPU; on a CPU bf16 where it
multiplies bfloat16 natively (AMX-BF16 or AVX512-BF16), else fp32.

Why the CPU rule (measured, README "Mixed precision"): with native bfloat16 matmuls vitcli's
bf16 training ran 1.2-1.7x faster than fp32 (an AMD Zen 4 with AVX512-BF16; an Intel CPU
with AMX) at the same accuracy on the bundled data; without them TensorFlow emulates bfloat16
matmuls at about a quarter of the fp32 rate, so bf16 is 2-4x slower there."""

from __future__ import annotations

import functools
from pathlib import Path

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


NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo's names, best first


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where there is no such file)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def native_bf16_feature() -> str | None:
    """'amx_bf16' or 'avx512_bf16' when this CPU multiplies bfloat16 natively, else None."""
    flags = cpu_flags()
    return next((flag for flag in NATIVE_BF16_FLAGS if flag in flags), None)


def resolve_precision(name: str, device: str) -> str:
    """`auto` picks bf16 on TPU (native), fp16 on GPU (tensor cores), and on a CPU bf16 where
    it has native bfloat16 matmuls, else fp32."""
    if name not in PRECISIONS:
        raise VitcliError(f"unknown precision '{name}'", hint=f"use {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    if device == "cpu":
        return "bf16" if native_bf16_feature() else "fp32"
    return {"tpu": "bf16", "gpu": "fp16"}[device]


def dtype_policy(precision: str) -> str:
    return _POLICIES[precision]


def wrap_optimizer(optimizer, precision: str):
    """fp16 needs dynamic loss scaling; bf16 has float32's range and does not."""
    if precision == "fp16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def base_optimizer(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def resolve_jit(jit: bool | str, device: str) -> bool:
    """Whether the whole training step is XLA-compiled. `auto`: on TPU (TPUStrategy compiles
    it anyway); off on a CPU, where measured (benchmarks/profile.md) the whole-step XLA
    trained slower than vitcli's compiled LayerNorm/GELU kernels around oneDNN's matmuls
    (vit-ti16 18.5 vs 20.1 img/s, vit-s16 6.4 vs 7.1) and added 4-5 s to the first step;
    off on a GPU, where it is not measured."""
    if isinstance(jit, bool):
        return jit
    return device == "tpu"


def describe_compute(precision_setting: str, precision: str, jit_setting: bool | str,
                     jit: bool, device: str) -> str:
    """The plan's line on precision and XLA, with why when vitcli chose them."""
    why = ""
    if precision_setting == "auto" and device != "cpu":
        why = f" (auto on {device.upper()})"
    elif precision_setting == "auto":
        feature = native_bf16_feature()
        why = (f" (auto: this CPU has {feature})" if feature
               else " (auto: this CPU has no native bfloat16 matmul)")
    xla = f"whole-step XLA {'on' if jit else 'off'}"
    if jit_setting == "auto":
        xla += f" (auto on {device.upper()})"
    return f"compute: {precision}{why}; {xla}; LayerNorm and GELU as compiled kernels"
