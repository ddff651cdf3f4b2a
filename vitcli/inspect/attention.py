"""Every layer's attention weights, read from a vitcli model through its own encoder layers.

The model's graph is left as it is (its normal forward pass stays as fast as before): an
`AttentionExtractor` is built on demand and calls the model's own `encoderblock_{i}` layers
with `return_attention=True`, so the weights come from the same code that computes logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from vitcli.errors import VitcliError
from vitcli.models.vit import config_from_model

DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens sit in the sequence and how large a patch is in pixels."""

    num_prefix_tokens: int  # 1 with a class token, 0 for gap models
    grid_size: int  # patches per side (per column: the grid's height)
    patch_pixels: float  # pixels per patch side (the patch size times the ResNet stride)
    grid_columns: int | None = None  # a non-square grid's patches per row; None: grid_size

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, columns) of the patch grid, in token order (row-major)."""
        return self.grid_size, self.grid_size if self.grid_columns is None else self.grid_columns

    @property
    def num_patches(self) -> int:
        rows, columns = self.grid_shape
        return rows * columns


def _attending(model: keras.Model):
    """The model's config; a pure ResNet (no attention, no patch tokens) is refused."""
    config = config_from_model(model)
    if config.is_resnet:
        raise VitcliError(f"the model ({model.name}) is a pure ResNet: it has no attention "
                          "or patch tokens to inspect", hint="inspect a ViT (vit-* or a hybrid)")
    return config


def token_layout(model: keras.Model) -> TokenLayout:
    """The token layout of a model built by `build_model` (plain, gap or hybrid, square or
    not)."""
    config = _attending(model)
    rows, columns = config.grid_shape
    return TokenLayout(num_prefix_tokens=config.num_prefix_tokens, grid_size=rows,
                       patch_pixels=config.image_shape[0] / rows,
                       grid_columns=None if rows == columns else columns)


class AttentionExtractor(keras.Model):
    """images -> a list with each encoder layer's weights (batch, heads, queries, keys), float32."""

    def __init__(self, model: keras.Model, **kwargs):
        super().__init__(name=f"{model.name}_attention", **kwargs)
        depth = _attending(model).depth
        self.blocks = [model.get_layer(f"encoderblock_{index}") for index in range(depth)]
        # Everything before the first block (rescale, stem, embedding, class token, positions),
        # as a view on the model's own graph.
        self.stem = keras.Model(model.input, self.blocks[0].input, name="tokens")

    def call(self, images, training=False):
        tokens = self.stem(images, training=training)
        weights = []
        for block in self.blocks:
            tokens, layer_weights = block(tokens, training=training, return_attention=True)
            weights.append(layer_weights)
        return weights


def attention_weights(model: keras.Model, images: np.ndarray,
                      batch_size: int = DEFAULT_BATCH_SIZE,
                      extractor: AttentionExtractor | None = None) -> np.ndarray:
    """(layers, images, heads, tokens, tokens) float32 attention of float pixels in [0, 255]."""
    extractor = extractor or AttentionExtractor(model)
    batches = []
    for start in range(0, len(images), batch_size):
        layers = extractor(np.asarray(images[start:start + batch_size], np.float32),
                           training=False)
        batches.append(np.stack([np.asarray(weights, np.float32) for weights in layers]))
    return np.concatenate(batches, axis=1)
