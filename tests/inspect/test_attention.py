"""Attention weights of every layer, read through the model's own encoder layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.support.models import random_images
from vitcli.inspect.attention import AttentionExtractor, attention_weights, token_layout


def manual_layer_0(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Layer 0's softmax(q k^T / sqrt(d)) in float64 numpy from the layer's variables."""
    block = model.get_layer("encoderblock_0")
    tokens = np.asarray(keras.Model(model.input, block.input)(images), np.float64)
    mean = tokens.mean(-1, keepdims=True)
    variance = tokens.var(-1, keepdims=True)
    normed = (tokens - mean) / np.sqrt(variance + 1e-6)
    normed = normed * block.norm_0.gamma.numpy() + block.norm_0.beta.numpy()
    attention = block.attention
    query = np.einsum("btd,dhk->bhtk", normed, attention.query.kernel.numpy())
    query += attention.query.bias.numpy()[None, :, None, :]
    key = np.einsum("btd,dhk->bhtk", normed, attention.key.kernel.numpy())
    key += attention.key.bias.numpy()[None, :, None, :]
    logits = query @ key.transpose(0, 1, 3, 2) / np.sqrt(query.shape[-1])
    logits -= logits.max(-1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


def test_every_layer_has_row_stochastic_weights(tiny_model):
    images = random_images(32, batch=3)
    attention = attention_weights(tiny_model, images, batch_size=2)
    assert attention.shape == (6, 3, 3, 17, 17) and attention.dtype == np.float32
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    assert (attention >= 0).all()


def test_layer_0_equals_a_manual_computation(tiny_model):
    images = random_images(32, batch=2, seed=3)
    attention = attention_weights(tiny_model, images)
    np.testing.assert_allclose(attention[0], manual_layer_0(tiny_model, images), atol=1e-5)


def test_the_model_itself_is_unchanged(tiny_model):
    images = random_images(32, batch=2, seed=4)
    before = np.asarray(tiny_model(images))
    AttentionExtractor(tiny_model)(images)
    np.testing.assert_array_equal(np.asarray(tiny_model(images)), before)
    assert [layer.name for layer in tiny_model.layers][-1] == "head"


def test_a_saved_and_loaded_model(tiny_model, tiny_model_file):
    loaded = keras.saving.load_model(tiny_model_file)
    images = random_images(32, batch=1, seed=5)
    np.testing.assert_allclose(attention_weights(loaded, images),
                               attention_weights(tiny_model, images), atol=1e-6)


@pytest.mark.parametrize("kind", ["gap", "hybrid"])
def test_gap_and_hybrid_models(kind, hybrid_model):
    import vitcli

    model = hybrid_model if kind == "hybrid" else vitcli.build_model(
        "vit-mu8", num_classes=3, image_size=32, classifier="gap")
    layout = token_layout(model)
    attention = attention_weights(model, random_images(32, batch=2))
    tokens = layout.num_prefix_tokens + layout.num_patches
    assert attention.shape[-2:] == (tokens, tokens)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    if kind == "hybrid":  # stride 8 (ResNet stem 4, one more stage 2) x patch 1: 4 x 4 grid
        assert (layout.num_prefix_tokens, layout.grid_size, layout.patch_pixels) == (1, 4, 8.0)
    else:
        assert (layout.num_prefix_tokens, layout.grid_size) == (0, 4)
