"""Picks the tf.distribute strategy, and says who is the chief. The training step is
written for any strategy (vitcli.train.step).

- default: one device.
- mirrored: all local GPUs (or, with no GPU, the logical CPU devices; set
  VITCLI_CPU_DEVICES=N to split the CPU into N for testing the distributed path).
- multi-worker: MultiWorkerMirroredStrategy over the machines of $TF_CONFIG.
- tpu: TPUStrategy on --tpu ADDRESS (a TPU VM: "local"; a pod or node: its name/grpc URL).
- auto: tpu when --tpu or $TPU_NAME is given, multi-worker when $TF_CONFIG names more than
  one task, mirrored with more than one GPU, else default. (It never probes for a TPU
  unasked: a resolver without one looks for a GCE metadata server and waits.)
"""

from __future__ import annotations

import contextlib
import json
import os

import tensorflow as tf

from vitcli.config import STRATEGIES  # declared once, with the setting
from vitcli.errors import VitcliError

CPU_DEVICES_VARIABLE = "VITCLI_CPU_DEVICES"


def configure_cpu_devices() -> None:
    """Splits the CPU into $VITCLI_CPU_DEVICES logical devices (before TF initialises)."""
    count = int(os.environ.get(CPU_DEVICES_VARIABLE, "0") or 0)
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        # Once TF has initialised its devices they cannot change: keep them then.
        with contextlib.suppress(RuntimeError):
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def _cluster_size() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
    return sum(len(tasks) for tasks in cluster.values())


def resolve_name(name: str, tpu: str | None) -> str:
    if name not in STRATEGIES:
        raise VitcliError(f"unknown strategy '{name}'", hint=f"use one of {', '.join(STRATEGIES)}")
    if name != "auto":
        return name
    if tpu or os.environ.get("TPU_NAME"):
        return "tpu"
    if _cluster_size() > 1:
        return "multi-worker"
    return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"


def _tpu_strategy(address: str | None) -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=address or os.environ.get("TPU_NAME"))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise VitcliError(f"no TPU found at '{address or os.environ.get('TPU_NAME')}': "
                          f"{str(error).splitlines()[0]}",
                          hint="on a TPU VM pass --tpu local; else --strategy default") from error
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(name: str = "auto", tpu: str | None = None) -> tf.distribute.Strategy:
    name = resolve_name(name, tpu)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        configure_cpu_devices()
        gpus = tf.config.list_logical_devices("GPU")
        devices = [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi-worker":
        if _cluster_size() < 1:
            raise VitcliError("--strategy multi-worker needs $TF_CONFIG describing the cluster",
                              hint="see the README's two-machine example")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes the run directory: the `chief` task, or worker 0 without one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
