"""Running a model over a finite dataset, batch by batch, in graph mode."""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

_FORWARD_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forward_function(model):
    """The compiled inference call (training=False) of `model`: traced once per image shape
    and dtype for any batch size (a last partial batch is not traced again)."""
    if model not in _FORWARD_FUNCTIONS:
        @tf.function(autograph=False)
        def forward(images):
            return model(images, training=False)

        traced = {}

        def call(images):
            images = tf.convert_to_tensor(images)
            key = (tuple(images.shape[1:]), images.dtype)
            if key not in traced:
                spec = tf.TensorSpec((None, *key[0]), key[1])
                traced[key] = forward.get_concrete_function(spec)
            return traced[key](images)

        call.traced_function = forward  # its tracing count, for tests
        _FORWARD_FUNCTIONS[model] = call
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
