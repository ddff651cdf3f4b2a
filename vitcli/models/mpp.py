"""Masked patch prediction (docs/reference.md §6.4): the ViT's own layers, with some patch
embeddings corrupted, and a mean-colour head on every patch's output token.

Corruption happens right after the patch embedding, before the class token and the position
embeddings are added (as BERT corrupts token embeddings, not their positions): a corrupted
patch keeps its place in the grid and loses only its content. Which patches are corrupted,
and how, is an input (a plan of `modes` and `sources`), so the model itself is deterministic
and the training step draws the plan with stateless seeds.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from vitcli.errors import VitcliError
from vitcli.models.layers import NUMERICALLY_SENSITIVE_DTYPE, serializable

# What happens to each patch: left alone, replaced by the [mask] embedding, replaced by
# another patch's embedding, or chosen for prediction but kept as it is.
UNTOUCHED, MASKED, REPLACED, KEPT = 0, 1, 2, 3
MASK_EMBEDDING_STDDEV = 0.02  # like the position embeddings (docs/reference.md §1.5)


@serializable
class PatchCorruption(layers.Layer):
    """Applies a corruption plan to patch embeddings (B, N, D).

    Inputs `[embeddings, modes, sources]`: modes (B, N) int32 of UNTOUCHED/MASKED/REPLACED/KEPT
    and sources (B, N) int32, the patch (of the same image) whose original embedding a
    REPLACED patch takes. The learned [mask] embedding is this layer's one weight.
    """

    def build(self, input_shape):
        self.mask_embedding = self.add_weight(
            name="mask_embedding", shape=(input_shape[0][-1],),
            initializer=keras.initializers.RandomNormal(stddev=MASK_EMBEDDING_STDDEV),
        )

    def call(self, inputs):
        embeddings, modes, sources = inputs
        sources = ops.cast(sources, "int32")[..., None]
        others = ops.take_along_axis(embeddings, ops.broadcast_to(sources, ops.shape(embeddings)),
                                     axis=1)
        mask = ops.cast(self.mask_embedding, embeddings.dtype)
        modes = ops.cast(modes, "int32")[..., None]
        corrupted = ops.where(modes == REPLACED, others, embeddings)
        return ops.where(modes == MASKED, mask, corrupted)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def _token_layers(vit: keras.Model) -> list[layers.Layer]:
    """The ViT's layers between the patch embedding and the pooling, in order."""
    names = [layer.name for layer in vit.layers]
    start, stop = names.index("embedding") + 1, names.index("pooling")
    return vit.layers[start:stop]


def build_mpp_model(vit: keras.Model, num_classes: int = 512) -> keras.Model:
    """A model sharing `vit`'s layers: (pixels, modes, sources) -> logits (B, N, num_classes)
    of every patch's mean colour, from its output token after `encoder_norm`.

    It adds only the corruption layer (`mpp_corruption`, the [mask] embedding) and the head
    (`mpp_head`, zero-initialised like the classification head); `vit`'s pooling, pre-logits
    and head are not part of it.
    """
    if "embedding" not in [layer.name for layer in vit.layers]:
        raise VitcliError(f"masked patch prediction needs a ViT: '{vit.name}' has no patch "
                          "embedding (a pure ResNet?)", hint="pre-train it with the "
                          "classification objective")
    embedding = vit.get_layer("embedding")
    num_patches = embedding.output.shape[1]
    modes = keras.Input((num_patches,), dtype="int32", name="modes")
    sources = keras.Input((num_patches,), dtype="int32", name="sources")
    tokens = PatchCorruption(name="mpp_corruption", dtype=embedding.dtype_policy)(
        [embedding.output, modes, sources])
    for layer in _token_layers(vit):
        tokens = layer(tokens)
    prefix = tokens.shape[1] - num_patches  # the class token, if any
    patches = tokens[:, prefix:]
    logits = layers.Dense(num_classes, kernel_initializer="zeros", name="mpp_head",
                          dtype=NUMERICALLY_SENSITIVE_DTYPE)(patches)
    return keras.Model([vit.input, modes, sources], logits, name=f"{vit.name}_mpp")
