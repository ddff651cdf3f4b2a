"""Stochastic depth (--drop-path): each encoder block's residual branches are dropped whole, per
example, with a rate growing linearly over the blocks; kept ones are scaled by 1 / (1 - rate);
inference and a rate of 0 are the reference's model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.support.models import random_images, randomise_weights
from vitcli.config import ModelConfig
from vitcli.models.layers import EncoderBlock
from vitcli.models.vit import build_vit, config_from_model

CONFIG = ModelConfig(hidden_size=16, depth=5, num_heads=2, mlp_dim=32, patch_size=8,
                     image_size=16, num_classes=3)


def blocks(model) -> list[EncoderBlock]:
    return [model.get_layer(f"encoderblock_{index}") for index in range(CONFIG.depth)]


def test_the_rate_grows_linearly_from_zero_to_the_given_one():
    model = build_vit(CONFIG.replace(drop_path=0.2))
    np.testing.assert_allclose([block.drop_path for block in blocks(model)],
                               [0.0, 0.05, 0.1, 0.15, 0.2])
    assert config_from_model(model).drop_path == pytest.approx(0.2)
    restored = keras.Model.from_config(model.get_config())
    assert [block.drop_path for block in blocks(restored)] == \
        [block.drop_path for block in blocks(model)]


def test_rate_zero_is_the_reference_model_and_inference_ignores_the_rate():
    plain, dropping = build_vit(CONFIG), build_vit(CONFIG.replace(drop_path=0.5))
    assert [weight.path for weight in plain.weights] == \
        [weight.path for weight in dropping.weights]
    # A rate of 0 adds no state: the model's variables are the reference model's weights.
    assert len(plain.variables) == len(plain.weights)
    randomise_weights(plain)
    dropping.set_weights(plain.get_weights())
    images = random_images(16, batch=4)
    reference = np.asarray(plain(images, training=False))
    np.testing.assert_array_equal(np.asarray(plain(images, training=True)), reference)
    np.testing.assert_allclose(np.asarray(dropping(images, training=False)), reference,
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(dropping(images, training=True)), reference, atol=1e-4)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_branches_are_dropped_per_example_at_the_rate_and_kept_ones_scaled(rate):
    """Every example's training output is one of the four outcomes (each branch kept and
    scaled by 1 / (1 - rate), or dropped), and each branch is dropped about `rate` of the time."""
    block = EncoderBlock(num_heads=2, mlp_dim=32, drop_path=rate)
    tokens = np.random.default_rng(0).standard_normal((4000, 3, 16)).astype(np.float32)
    block.build(tokens.shape)
    randomise_weights(block)
    scale = 1.0 / (1.0 - rate)

    def attention(x):
        return np.asarray(block.attention(block.norm_0(x)))

    def mlp(x):
        return np.asarray(block.mlp(block.norm_2(x)))

    outcomes = {}
    for attention_kept in (False, True):
        middle = tokens + scale * attention(tokens) if attention_kept else tokens
        for mlp_kept in (False, True):
            outcomes[attention_kept, mlp_kept] = \
                middle + scale * mlp(middle) if mlp_kept else middle
    trained = np.asarray(block(tokens, training=True))
    matches = {outcome: np.all(np.isclose(trained, expected, rtol=1e-4, atol=1e-4), axis=(1, 2))
               for outcome, expected in outcomes.items()}
    assert np.all(np.sum(list(matches.values()), axis=0) == 1)  # exactly one outcome each
    sigma = np.sqrt(rate * (1 - rate) / len(tokens))
    for branch in (0, 1):
        dropped = sum(matches[outcome] for outcome in outcomes if not outcome[branch])
        assert abs(dropped.mean() - rate) < 4 * sigma
