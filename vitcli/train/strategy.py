"""Picks the tf.distribute strategy. The training step is written for any strategy."""

from __future__ import annotations

import tensorflow as tf

from vitcli.errors import VitcliError

STRATEGIES = ("auto", "default", "mirrored")


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """`auto`: MirroredStrategy with more than one GPU, else the default (one device)."""
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise VitcliError(f"unknown strategy '{name}'", hint=f"use one of {', '.join(STRATEGIES)}")
