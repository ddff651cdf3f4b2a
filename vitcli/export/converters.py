"""What the TFLite and ONNX exports share: the model behind a `pixels` input with
`probabilities` and `logits` outputs by name (which the converters turn into their
signatures), and a context that keeps the converters' log chatter out of vitcli's output."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import numpy as np

PIXELS_INPUT = "pixels"
OUTPUTS = ("probabilities", "logits")


def with_named_outputs(model: keras.Model) -> keras.Model:
    """A functional wrapper around `model` (sharing its weights) with named float32 outputs."""
    pixels = keras.Input(model.input_shape[1:], name=PIXELS_INPUT)
    # float32 layers: under a mixed policy the converted graph still returns float32.
    logits = keras.layers.Activation("linear", name="logits", dtype="float32")(model(pixels))
    probabilities = keras.layers.Softmax(name="probabilities", dtype="float32")(logits)
    wrapper = keras.Model(pixels, {"probabilities": probabilities, "logits": logits},
                          name=f"{model.name}_classifier")
    # Keras' ONNX export refuses a model that has never been called.
    wrapper(np.zeros((1, *model.input_shape[1:]), np.float32))
    return wrapper


@contextmanager
def quiet_converter() -> Iterator[None]:
    """Silences Python warnings and TensorFlow's logger (meta-graph and deprecation notices
    that say "probably safe to ignore") while a converter runs; errors still raise."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
