"""vitcli's inference call: one trace for every batch size, the model's own values."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import vitcli
from tests.support.models import random_images
from vitcli.evaluate.inference import collect_logits, forward_function


def test_a_last_partial_batch_is_not_traced_again_and_values_are_the_models():
    model = vitcli.build_model("vit-mu8", num_classes=3, image_size=16)
    images = random_images(16, batch=10, seed=3)
    batches = tf.data.Dataset.from_tensor_slices((images, np.arange(10) % 3)).batch(4)
    logits, labels = collect_logits(model, batches)  # batches of 4, 4 and 2
    assert forward_function(model).traced_function.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(logits, model(images, training=False), atol=1e-5)
    np.testing.assert_array_equal(labels, np.arange(10) % 3)
    forward_function(model)(images[:7].astype(np.float64))  # another dtype: its own trace
    assert forward_function(model).traced_function.experimental_get_tracing_count() == 2
