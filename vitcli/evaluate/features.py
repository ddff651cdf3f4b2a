"""The frozen representation of a trained classifier, as few-shot probes read it."""

from __future__ import annotations

import keras


def feature_model(model: keras.Model) -> keras.Model:
    """The frozen representation used by few-shot probes: pre-logits if present, else the
    pooled (post-norm) token."""
    names = [layer.name for layer in model.layers]
    layer = model.get_layer("pre_logits" if "pre_logits" in names else "pooling")
    return keras.Model(model.input, layer.output, name=f"{model.name}_features")
