"""Every vitcli layer through the battery, then each layer's numbers against the numpy reference."""

from __future__ import annotations

import inspect
import math

import keras
import numpy as np
import pytest

from tests.reference import numpy_vit as nv
from tests.support.layers import check_layer
from tests.support.models import gelu_erf, randomise_weights
from vitcli.models import layers as vit_layers
from vitcli.models import resnet as resnet_layers
from vitcli.models.layers import (
    ClassToken,
    EncoderBlock,
    LayerNorm,
    MlpBlock,
    MultiHeadSelfAttention,
    PatchEmbedding,
    PositionEmbedding,
    SinCosPositionEmbedding,
    TokenPooling,
)
from vitcli.models.resnet import BottleneckUnit, ResNetStage, StdConv

# name: (a fresh layer, an input shape)
BATTERY_CASES = {
    "patch_embedding": (lambda: PatchEmbedding(32, 4), (2, 16, 16, 3)),
    "class_token": (lambda: ClassToken(), (2, 5, 32)),
    "position_embedding": (lambda: PositionEmbedding(), (2, 5, 32)),
    "sincos_position_embedding": (lambda: SinCosPositionEmbedding(1), (2, 17, 32)),
    "attention": (lambda: MultiHeadSelfAttention(4), (2, 5, 32)),
    "attention_with_dropout": (lambda: MultiHeadSelfAttention(2, dropout=0.1), (2, 5, 32)),
    "mlp": (lambda: MlpBlock(64, dropout=0.1), (2, 5, 32)),
    "encoder_block": (lambda: EncoderBlock(4, 64, dropout=0.1, attention_dropout=0.1), (2, 5, 32)),
    "layer_norm": (lambda: LayerNorm(dtype="float32"), (2, 5, 32)),
    "token_pooling": (lambda: TokenPooling("token"), (2, 5, 32)),
    "gap_pooling": (lambda: TokenPooling("gap"), (2, 5, 32)),
    "std_conv": (lambda: StdConv(32, 3, strides=2), (2, 9, 9, 16)),
    "bottleneck_projected": (lambda: BottleneckUnit(32, strides=2), (2, 8, 8, 64)),
    "bottleneck_identity": (lambda: BottleneckUnit(32), (2, 4, 4, 128)),
    "resnet_stage": (lambda: ResNetStage(2, 32, first_stride=2), (2, 8, 8, 64)),
}


def numpy_params(layer) -> dict[str, np.ndarray]:
    """A layer's weights in the reference's naming: path without the layer, gamma/beta ->
    scale/bias."""
    renames = {"gamma": "scale", "beta": "bias"}
    params = {}
    for variable in layer.weights:
        parts = variable.path.split("/")[1:]
        parts[-1] = renames.get(parts[-1], parts[-1])
        params["/".join(parts)] = np.asarray(variable.numpy(), dtype=np.float64)
    return params


def built(layer, input_shape, seed=1):
    """`layer` built for `input_shape` with random non-zero weights, and a random input."""
    inputs = np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    layer(inputs)
    randomise_weights(layer, seed + 1)
    return layer, inputs


def defined_layer_classes() -> set[type]:
    return {
        cls for module in (vit_layers, resnet_layers)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, keras.layers.Layer) and cls.__module__ == module.__name__
    }


@pytest.mark.parametrize("case", BATTERY_CASES)
def test_layer_passes_the_battery(case, tmp_path):
    make, input_shape = BATTERY_CASES[case]
    check_layer(make(), input_shape, tmp_path)


def test_battery_covers_every_layer_class():
    covered = {type(make()) for make, _ in BATTERY_CASES.values()}
    assert defined_layer_classes() <= covered


def test_patch_embedding_is_the_reference_valid_conv_flattened_row_major():
    layer, images = built(PatchEmbedding(24, 4), (2, 12, 16, 3))
    params = {f"embedding/{key}": value for key, value in numpy_params(layer).items()}
    expected = nv.patch_embed(params, images.astype(np.float64))
    assert expected.shape == (2, 3 * 4, 24)
    np.testing.assert_allclose(layer(images), expected, atol=1e-5)


def test_class_token_goes_first_and_position_embedding_reaches_it():
    tokens = np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)
    cls_layer, posemb_layer = ClassToken(), PositionEmbedding()
    posemb_layer(cls_layer(tokens))  # builds both
    randomise_weights(cls_layer)
    randomise_weights(posemb_layer, seed=2)
    output = np.asarray(posemb_layer(cls_layer(tokens)))
    cls = cls_layer.cls.numpy()
    posemb = posemb_layer.pos_embedding.numpy()
    assert cls.shape == (1, 1, 8) and posemb.shape == (1, 5, 8)
    np.testing.assert_allclose(output[:, 0], np.broadcast_to(cls[0] + posemb[0, :1], (2, 8)),
                               atol=1e-6)
    np.testing.assert_allclose(output[:, 1:], tokens + posemb[:, 1:], atol=1e-6)


def test_fresh_class_token_is_zero():
    layer = ClassToken()
    layer(np.ones((1, 3, 8), np.float32))
    np.testing.assert_array_equal(layer.cls.numpy(), 0.0)


def test_attention_matches_reference():
    layer, tokens = built(MultiHeadSelfAttention(4), (2, 7, 32))
    expected = nv.multi_head_attention(tokens.astype(np.float64), numpy_params(layer))
    np.testing.assert_allclose(layer(tokens), expected, atol=1e-5)


def test_attention_weights_are_the_reference_softmax():
    layer, tokens = built(MultiHeadSelfAttention(2), (2, 5, 16))
    _, weights = layer(tokens, return_attention=True)
    p = numpy_params(layer)
    query = np.einsum("btd,dhk->bthk", tokens, p["query/kernel"]) + p["query/bias"]
    key = np.einsum("btd,dhk->bthk", tokens, p["key/kernel"]) + p["key/bias"]
    expected = nv.softmax(np.einsum("bqhk,bshk->bhqs", query, key) / math.sqrt(8))
    assert weights.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(weights, expected, atol=1e-6)


def test_attention_weights_stay_float32_under_mixed_bfloat16():
    layer, tokens = built(MultiHeadSelfAttention(4, dtype="mixed_bfloat16"), (2, 6, 32))
    output, weights = layer(tokens, return_attention=True)
    assert output.dtype == "bfloat16"
    assert weights.dtype == "float32"
    np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0, atol=1e-6)


def test_mlp_block_uses_tanh_gelu_not_erf():
    # Identity kernels and zero biases make the block compute GELU(x) + nothing else.
    width = 64
    layer = MlpBlock(width)
    x = np.linspace(-4.0, 4.0, 2 * width, dtype=np.float32).reshape(1, 2, width)
    layer(x)
    eye, zeros = np.eye(width, dtype=np.float32), np.zeros(width, np.float32)
    layer.set_weights([eye, zeros, eye, zeros])
    output = np.asarray(layer(x), dtype=np.float64)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(output, nv.gelu_tanh(x64), atol=2e-6)
    assert np.abs(output - gelu_erf(x64)).max() > 1e-4  # the two forms differ by up to ~5e-4


def test_mlp_block_matches_reference():
    layer, tokens = built(MlpBlock(48), (2, 5, 16))
    expected = nv.mlp_block(tokens.astype(np.float64), numpy_params(layer))
    np.testing.assert_allclose(layer(tokens), expected, atol=1e-5)


def test_fresh_mlp_biases_are_tiny_normal():
    layer = MlpBlock(512)
    layer(np.ones((1, 1, 256), np.float32))
    for bias in (layer.dense_0.bias.numpy(), layer.dense_1.bias.numpy()):
        assert np.abs(bias).max() < 1e-4
        assert 0.5e-6 < bias.std() < 2e-6  # normal(stddev 1e-6), not zeros


def test_encoder_block_matches_reference_with_epsilon_1e6():
    # Tokens with variance 1e-4: a LayerNorm epsilon of 1e-3 (Keras' default) would shrink
    # the normalised values ~3x, far outside the tolerance.
    layer, tokens = built(EncoderBlock(4, 64), (2, 6, 32))
    tokens = (0.01 * tokens).astype(np.float32)
    expected = nv.encoder_block(tokens.astype(np.float64), numpy_params(layer))
    np.testing.assert_allclose(layer(tokens), expected, atol=2e-5)


def test_encoder_block_returns_its_attention_weights():
    layer, tokens = built(EncoderBlock(2, 32), (1, 4, 16))
    output, weights = layer(tokens, return_attention=True)
    np.testing.assert_array_equal(output, layer(tokens))
    assert weights.shape == (1, 2, 4, 4)


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_token_pooling(classifier):
    tokens = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    expected = tokens[:, 0] if classifier == "token" else tokens.mean(axis=1)
    np.testing.assert_allclose(TokenPooling(classifier)(tokens), expected, atol=1e-6)


def test_token_pooling_refuses_unknown_classifier():
    with pytest.raises(ValueError, match="classifier"):
        TokenPooling("map")


@pytest.mark.parametrize(("size", "kernel_size", "strides"), [(9, 3, 2), (8, 7, 2), (5, 1, 1)])
def test_std_conv_matches_reference_same_padding(size, kernel_size, strides):
    layer, images = built(StdConv(32, kernel_size, strides), (2, size, size, 8))
    expected = nv.std_conv(images.astype(np.float64), numpy_params(layer)["kernel"], strides)
    np.testing.assert_allclose(layer(images), expected, rtol=1e-5, atol=2e-5)


def test_std_conv_ignores_kernel_scale_and_offset_per_output_channel():
    layer, images = built(StdConv(32, 3), (1, 6, 6, 4))
    before = np.asarray(layer(images))
    kernel = layer.kernel.numpy()
    layer.kernel.assign(kernel * np.linspace(0.5, 4.0, 32) + np.linspace(-1.0, 1.0, 32))
    np.testing.assert_allclose(layer(images), before, atol=1e-3)


@pytest.mark.parametrize(("channels", "strides"), [(64, 2), (64, 1), (128, 1)])
def test_bottleneck_unit_matches_reference(channels, strides):
    layer, images = built(BottleneckUnit(32, strides), (2, 8, 8, channels))
    params = numpy_params(layer)
    assert ("conv_proj/kernel" in params) == (channels != 128 or strides != 1)
    expected = nv.bottleneck_unit(params, images.astype(np.float64), strides)
    np.testing.assert_allclose(layer(images), expected, atol=5e-5)


def test_fresh_bottleneck_zero_initialises_only_gn3_scale():
    layer = BottleneckUnit(32, 2)
    layer(np.ones((1, 8, 8, 64), np.float32))
    scales = {name: getattr(layer, name).gamma.numpy() for name in ("gn1", "gn2", "gn3", "gn_proj")}
    np.testing.assert_array_equal(scales.pop("gn3"), 0.0)
    for scale in scales.values():
        np.testing.assert_array_equal(scale, 1.0)


def test_resnet_stage_strides_only_in_its_first_unit():
    layer, images = built(ResNetStage(2, 32, first_stride=2), (2, 8, 8, 64))
    params = numpy_params(layer)
    expected = images.astype(np.float64)
    for unit, stride in (("unit1/", 2), ("unit2/", 1)):
        unit_params = {k[len(unit):]: v for k, v in params.items() if k.startswith(unit)}
        expected = nv.bottleneck_unit(unit_params, expected, stride)
    assert expected.shape == (2, 4, 4, 128)
    assert "unit2/conv_proj/kernel" not in params
    np.testing.assert_allclose(layer(images), expected, atol=1e-4)
