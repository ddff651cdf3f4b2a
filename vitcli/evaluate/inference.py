"""Running a model over a finite dataset, batch by batch, in graph mode."""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

_FORWARD_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forward_function(model):
    """The compiled inference call (training=False) of `model`, traced once and reused."""
    if model not in _FORWARD_FUNCTIONS:
        @tf.function(reduce_retracing=True)
        def forward(images):
            return model(images, training=False)

        _FORWARD_FUNCTIONS[model] = forward
    return _FORWARD_FUNCTIONS[model]


def collect_logits(model, dataset, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, K), labels (N,)) over a dataset of (images, labels) batches."""
    forward = forward_function(model)
    logits, labels = [], []
    for images, batch_labels in dataset:
        logits.append(np.asarray(forward(images), dtype=np.float32))
        labels.append(batch_labels.numpy())
        if progress:
            progress(len(batch_labels))
    if not logits:
        return np.zeros((0, model.output_shape[-1]), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(logits), np.concatenate(labels)
