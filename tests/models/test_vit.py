"""The whole model: numerical parity with the numpy reference, the details of docs/reference.md
§1.5 on a built model, and mixed precision."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import vitcli
from tests.reference.numpy_vit import forward, gelu_tanh
from tests.support.checkpoints import CHECKPOINT_SHAPES, PARITY_KINDS, official_checkpoint
from tests.support.checks import vitcli_error
from tests.support.models import PARITY_TOLERANCE, gelu_erf, logits, nested_layers, random_images
from vitcli.models.layers import MultiHeadSelfAttention

# Largest |mixed - float32| logit difference measured on the PARITY_KINDS checkpoints (logits
# up to ~2 in size): mixed_bfloat16 0.009-0.0235 (largest: token), mixed_float16 0.0010-0.0022
# (largest: hybrid). The tolerances leave about 2x margin.
MIXED_TOLERANCE = {"mixed_bfloat16": 5e-2, "mixed_float16": 5e-3}


@pytest.fixture(scope="module")
def fresh_model():
    """A freshly initialised Ti/16 (12 blocks, D=192) at 64 px: a 4x4 grid, 17 tokens."""
    keras.utils.set_random_seed(0)
    return vitcli.build_model("vit-ti16", num_classes=10, image_size=64)


def sublayers_of_type(model, cls):
    return [layer for layer in nested_layers(model) if isinstance(layer, cls)]


# -- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*PARITY_KINDS, "hybrid_wide"])
def test_loaded_checkpoint_matches_numpy_reference(kind, checkpoint_file):
    model = vitcli.load_checkpoint(checkpoint_file(kind))
    images = random_images(CHECKPOINT_SHAPES[kind]["image_size"])
    expected = forward(official_checkpoint(kind), images)
    assert np.abs(expected).max() > 0.1  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(logits(model, images), expected, rtol=0, atol=PARITY_TOLERANCE)


def test_parity_distinguishes_images(checkpoint_file):
    # Guards the parity test against a model that ignores its input.
    model = vitcli.load_checkpoint(checkpoint_file("token"))
    images = random_images(32, batch=2)
    out = logits(model, images)
    assert np.abs(out[0] - out[1]).max() > 1e-2


# -- docs/reference.md §1.5 details on a built model --------------------------------------


def test_every_layer_norm_has_epsilon_1e6(fresh_model):
    norms = sublayers_of_type(fresh_model, keras.layers.LayerNormalization)
    assert len(norms) == 2 * 12 + 1
    assert {norm.epsilon for norm in norms} == {1e-6}


def test_every_group_norm_has_32_groups_and_epsilon_1e6(checkpoint_file):
    model = vitcli.load_checkpoint(checkpoint_file("hybrid"))
    norms = sublayers_of_type(model, keras.layers.GroupNormalization)
    assert len(norms) == 1 + 2 * 4  # gn_root, then gn1-3 and gn_proj in each one-unit stage
    assert {(norm.groups, norm.epsilon) for norm in norms} == {(32, 1e-6)}


def test_gelu_is_the_tanh_form_inside_the_model(fresh_model):
    mlp = fresh_model.get_layer("encoderblock_0").mlp
    tokens = np.random.default_rng(0).standard_normal((1, 3, 192)).astype(np.float32)
    hidden = np.asarray(mlp.dense_0(tokens), dtype=np.float64)
    kernel, bias = mlp.dense_1.kernel.numpy(), mlp.dense_1.bias.numpy()
    output = np.asarray(mlp(tokens))
    np.testing.assert_allclose(output, gelu_tanh(hidden) @ kernel + bias, atol=1e-5)
    assert np.abs(output - (gelu_erf(hidden) @ kernel + bias)).max() > 5e-5


def test_class_token_and_position_embedding_shapes(fresh_model):
    assert fresh_model.get_layer("cls").cls.shape == (1, 1, 192)
    assert fresh_model.get_layer("posembed_input").pos_embedding.shape == (1, 17, 192)


def test_pixels_are_rescaled_to_minus_one_one_inside_the_model(fresh_model):
    # Through the patch conv: 127.5 must map to 0 (only the bias is left), 255 to +1, 0 to -1.
    embedding = fresh_model.get_layer("embedding")
    embed = keras.Model(fresh_model.input, embedding.output)
    kernel_sum = embedding.kernel.numpy().sum(axis=(0, 1, 2))
    bias = embedding.bias.numpy()
    for pixel, sign in ((127.5, 0.0), (255.0, 1.0), (0.0, -1.0)):
        tokens = np.asarray(embed(np.full((1, 64, 64, 3), pixel, np.float32)))
        np.testing.assert_allclose(tokens[0], np.tile(sign * kernel_sum + bias, (16, 1)),
                                   atol=1e-4)


def test_fresh_head_and_class_token_are_zero(fresh_model):
    head = fresh_model.get_layer("head")
    np.testing.assert_array_equal(head.kernel.numpy(), 0.0)
    np.testing.assert_array_equal(head.bias.numpy(), 0.0)
    np.testing.assert_array_equal(fresh_model.get_layer("cls").cls.numpy(), 0.0)


def test_fresh_position_embedding_is_normal_with_stddev_002(fresh_model):
    posemb = fresh_model.get_layer("posembed_input").pos_embedding.numpy()
    assert 0.017 < posemb.std() < 0.023  # 3264 samples: the estimate's spread is ~1.2%
    assert abs(posemb.mean()) < 0.003


def test_fresh_patch_conv_is_lecun_normal(fresh_model):
    kernel = fresh_model.get_layer("embedding").kernel.numpy()
    fan_in = 16 * 16 * 3
    assert kernel.std() == pytest.approx(1 / math.sqrt(fan_in), rel=0.1)


def test_fresh_attention_kernels_are_xavier_uniform_over_d_by_d(fresh_model):
    # Flax sees a (D, H, D/H) kernel as a (D, D) matrix: bound sqrt(6 / (D + D)).
    attention = fresh_model.get_layer("encoderblock_0").attention
    bound = math.sqrt(6 / (192 + 192))
    for projection in (attention.query, attention.key, attention.value, attention.out):
        kernel = projection.kernel.numpy()
        assert np.abs(kernel).max() <= bound
        assert np.abs(kernel).max() > 0.95 * bound
        np.testing.assert_array_equal(projection.bias.numpy(), 0.0)


def test_fresh_mlp_kernels_are_xavier_uniform_and_biases_tiny(fresh_model):
    mlp = fresh_model.get_layer("encoderblock_0").mlp
    bound = math.sqrt(6 / (192 + 768))
    for dense in (mlp.dense_0, mlp.dense_1):
        kernel = dense.kernel.numpy()
        assert 0.95 * bound < np.abs(kernel).max() <= bound
        assert np.abs(dense.bias.numpy()).max() < 1e-4
        assert np.any(dense.bias.numpy() != 0)


def test_image_size_not_a_multiple_of_the_patch_is_refused():
    message = vitcli_error(vitcli.build_model, "vit-ti16", image_size=100)
    assert "100" in message and "16" in message and "patch" in message


def test_hybrid_image_size_not_a_multiple_of_the_stem_stride_is_refused():
    message = vitcli_error(vitcli.build_model, "r-vit-ti16", image_size=48)  # stride 4 * 8 = 32
    assert "48" in message and "32" in message


def test_negative_num_classes_is_refused():
    vitcli_error(vitcli.build_model, "vit-ti16", num_classes=-1, image_size=32)


# -- mixed precision ---------------------------------------------------------------------------


def assert_sensitive_parts_are_float32(model):
    for layer in nested_layers(model):
        if isinstance(layer, (keras.layers.LayerNormalization, keras.layers.GroupNormalization)):
            assert layer.compute_dtype == "float32", layer.name
    for name in ("head", "pre_logits", "pooling"):
        if any(layer.name == name for layer in model.layers):
            assert model.get_layer(name).compute_dtype == "float32", name
    assert all(variable.dtype == "float32" for variable in model.weights)


@pytest.mark.parametrize("policy", list(MIXED_TOLERANCE))
@pytest.mark.parametrize("kind", PARITY_KINDS)
def test_mixed_precision_model_stays_close_to_float32(kind, policy, checkpoint_file):
    images = random_images(CHECKPOINT_SHAPES[kind]["image_size"])
    full = logits(vitcli.load_checkpoint(checkpoint_file(kind)), images)
    model = vitcli.load_checkpoint(checkpoint_file(kind), dtype=policy)
    assert model.get_layer("encoderblock_0").compute_dtype == policy.removeprefix("mixed_")
    assert_sensitive_parts_are_float32(model)
    mixed = model(images)
    assert mixed.dtype == "float32"
    assert np.isfinite(np.asarray(mixed)).all()
    assert np.abs(np.asarray(mixed) - full).max() < MIXED_TOLERANCE[policy]


def test_global_mixed_bfloat16_policy_is_followed(checkpoint_file):
    images = random_images(64)
    full = logits(vitcli.load_checkpoint(checkpoint_file("hybrid")), images)
    keras.config.set_dtype_policy("mixed_bfloat16")  # restored by the conftest fixture
    model = vitcli.load_checkpoint(checkpoint_file("hybrid"))
    assert model.get_layer("block1").compute_dtype == "bfloat16"
    assert_sensitive_parts_are_float32(model)
    assert np.abs(logits(model, images) - full).max() < MIXED_TOLERANCE["mixed_bfloat16"]


def test_build_model_with_mixed_bfloat16_dtype():
    model = vitcli.build_model("vit-ti16", num_classes=3, image_size=32, dtype="mixed_bfloat16")
    assert model.get_layer("embedding").compute_dtype == "bfloat16"
    assert_sensitive_parts_are_float32(model)
    output = model(random_images(32))
    assert output.dtype == "float32" and np.isfinite(np.asarray(output)).all()


def test_mixed_model_attention_weights_are_float32(checkpoint_file):
    model = vitcli.load_checkpoint(checkpoint_file("token"), dtype="mixed_bfloat16")
    block = model.get_layer("encoderblock_1")
    attention = block.attention
    assert isinstance(attention, MultiHeadSelfAttention)
    tokens = keras.ops.cast(np.random.default_rng(0).standard_normal((2, 17, 32)), "bfloat16")
    _, weights = attention(tokens, return_attention=True)
    assert weights.dtype == "float32"
    np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0, atol=1e-6)
