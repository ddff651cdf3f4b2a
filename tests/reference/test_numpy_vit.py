"""Self-checks of the numpy ViT reference, each against an independent computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tests.reference import numpy_vit as nv

SMALL = dict(hidden_size=32, depth=2, num_heads=4, mlp_dim=64, num_classes=5)


def naive_conv_same(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """Loop convolution that skips out-of-range taps instead of padding the input."""
    b, h, w, _ = x.shape
    kh, kw, _, cout = kernel.shape
    out_h, out_w = math.ceil(h / stride), math.ceil(w / stride)
    top = max((out_h - 1) * stride + kh - h, 0) // 2
    left = max((out_w - 1) * stride + kw - w, 0) // 2
    out = np.zeros((b, out_h, out_w, cout))
    for i, j, di, dj in itertools.product(range(out_h), range(out_w), range(kh), range(kw)):
        r, c = i * stride - top + di, j * stride - left + dj
        if 0 <= r < h and 0 <= c < w:
            out[:, i, j] += x[:, r, c] @ kernel[di, dj]
    return out


def reference_layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """LayerNorm written out with sums rather than mean/var."""
    n = x.shape[-1]
    mean = x.sum(-1, keepdims=True) / n
    var = ((x - mean) ** 2).sum(-1, keepdims=True) / n
    return (x - mean) / np.sqrt(var + 1e-6) * scale + bias


def test_same_padding_puts_the_odd_pixel_after():
    assert nv.same_padding(8, 3, 2) == (0, 1)
    assert nv.same_padding(7, 3, 2) == (1, 1)
    assert nv.same_padding(64, 7, 2) == (2, 3)
    assert nv.same_padding(8, 1, 2) == (0, 0)


@pytest.mark.parametrize(
    ("size", "k", "stride"), [(7, 3, 2), (8, 3, 2), (9, 7, 2), (10, 7, 2), (5, 3, 1), (6, 1, 2)]
)
def test_conv_same_matches_loop(size, k, stride):
    rng = np.random.default_rng(size * 10 + k)
    x = rng.standard_normal((2, size, size + 1, 3))
    kernel = rng.standard_normal((k, k, 3, 4))
    np.testing.assert_allclose(
        nv.conv2d(x, kernel, stride, "SAME"), naive_conv_same(x, kernel, stride), atol=1e-12
    )


def test_conv_same_by_hand():
    # 4x4 input, 3x3 ones kernel, stride 2: padding is (0, 1) so windows start at 0 and 2.
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    out = nv.conv2d(x, np.ones((3, 3, 1, 1)), 2, "SAME")[0, :, :, 0]
    g = x[0, :, :, 0]
    expected = [[g[0:3, 0:3].sum(), g[0:3, 2:4].sum()], [g[2:4, 0:3].sum(), g[2:4, 2:4].sum()]]
    np.testing.assert_allclose(out, expected)


def test_patch_conv_valid_equals_patch_matmul():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 12, 8, 3))
    kernel = rng.standard_normal((4, 4, 3, 5))
    patches = x.reshape(2, 3, 4, 2, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 3, 2, 48)
    np.testing.assert_allclose(
        nv.conv2d(x, kernel, 4, "VALID"), patches @ kernel.reshape(48, 5), atol=1e-12
    )


def test_max_pool_same_by_hand():
    # All values negative, so zero padding would win the border windows.
    x = -(np.arange(16.0) + 1).reshape(1, 4, 4, 1)
    out = nv.max_pool_same(x, 3, 2)[0, :, :, 0]
    np.testing.assert_array_equal(out, [[-1.0, -3.0], [-9.0, -11.0]])
    # 5x5: padding (1, 1), windows centred on 0, 2, 4.
    y = -(np.arange(25.0) + 1).reshape(1, 5, 5, 1)
    out = nv.max_pool_same(y, 3, 2)[0, :, :, 0]
    np.testing.assert_array_equal(out, [[-1.0, -2.0, -4.0], [-6.0, -7.0, -9.0], [-16, -17, -19]])


def test_weight_standardisation_per_output_channel():
    rng = np.random.default_rng(2)
    w = rng.normal(0.3, 2.0, (3, 3, 8, 6))
    s = nv.standardize_kernel(w)
    for o in range(6):
        channel = s[..., o].ravel()
        assert abs(channel.mean()) < 1e-12
        assert abs(np.sqrt((channel**2).mean()) - 1.0) < 1e-4  # biased std


def test_group_norm_normalises_each_group():
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, (2, 5, 4, 64))
    out = nv.group_norm(x, np.ones((1, 1, 1, 64)), np.zeros((1, 1, 1, 64)))
    for b, g in itertools.product(range(2), range(32)):
        group = out[b, :, :, 2 * g : 2 * g + 2].ravel()
        assert abs(group.mean()) < 1e-12
        assert abs(group.var() - 1.0) < 1e-5
    # Scale and bias are per channel, applied after normalising.
    scale, bias = rng.standard_normal(64), rng.standard_normal(64)
    np.testing.assert_allclose(nv.group_norm(x, scale, bias), out * scale + bias, atol=1e-12)


def test_layer_norm_by_hand():
    out = nv.layer_norm(np.array([1.0, -1.0]), np.ones(2), np.zeros(2))
    np.testing.assert_allclose(out, [1 / math.sqrt(1 + 1e-6), -1 / math.sqrt(1 + 1e-6)])


def test_gelu_is_tanh_form_not_erf():
    x = np.linspace(-6, 6, 2001)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    diff = np.abs(nv.gelu_tanh(x) - exact).max()
    assert 1e-4 < diff < 1e-3


def _random_attention(rng, d=8, heads=2):
    k = d // heads
    p = {}
    for name in ("query", "key", "value"):
        p[f"{name}/kernel"] = rng.standard_normal((d, heads, k))
        p[f"{name}/bias"] = rng.standard_normal((heads, k))
    p["out/kernel"] = rng.standard_normal((heads, k, d))
    p["out/bias"] = rng.standard_normal(d)
    return p


def test_attention_matches_per_head_loop():
    rng = np.random.default_rng(4)
    d, heads = 8, 2
    p = _random_attention(rng, d, heads)
    x = rng.standard_normal((2, 5, d)) * 0.5
    expected = np.zeros_like(x)
    for b, h in itertools.product(range(2), range(heads)):
        q = x[b] @ p["query/kernel"][:, h] + p["query/bias"][h]
        k = x[b] @ p["key/kernel"][:, h] + p["key/bias"][h]
        v = x[b] @ p["value/kernel"][:, h] + p["value/bias"][h]
        scores = np.exp(q @ k.T / math.sqrt(d // heads))
        weights = scores / scores.sum(axis=1, keepdims=True)
        expected[b] += weights @ v @ p["out/kernel"][h]
    expected += p["out/bias"]
    np.testing.assert_allclose(nv.multi_head_attention(x, p), expected, atol=1e-12)


def test_attention_with_zero_query_key_is_uniform_average():
    rng = np.random.default_rng(5)
    p = _random_attention(rng)
    for name in ("query", "key"):
        p[f"{name}/kernel"][:] = 0
        p[f"{name}/bias"][:] = 0
    x = rng.standard_normal((2, 6, 8))
    v = np.einsum("btd,dhk->bthk", x, p["value/kernel"]) + p["value/bias"]
    mean_v = v.mean(axis=1, keepdims=True)
    expected = np.einsum("bthk,hkd->btd", mean_v, p["out/kernel"]) + p["out/bias"]
    np.testing.assert_allclose(
        nv.multi_head_attention(x, p), np.broadcast_to(expected, x.shape), atol=1e-12
    )


@pytest.mark.parametrize(
    ("classifier", "representation_size"), [("token", None), ("gap", None), ("token", 16)]
)
def test_model_with_silent_blocks_is_norm_of_embeddings(classifier, representation_size):
    params = nv.random_checkpoint(
        6,
        patch_size=4,
        image_size=16,
        classifier=classifier,
        representation_size=representation_size,
        **SMALL,
    )
    for key in params:
        if "/out/" in key or "/Dense_1/" in key:
            params[key] = np.zeros_like(params[key])
    p = {k: v.astype(np.float64) for k, v in params.items()}
    images = np.random.default_rng(7).uniform(0, 255, (2, 16, 16, 3))

    x = images / 127.5 - 1
    patches = x.reshape(2, 4, 4, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 16, 48)
    tokens = patches @ p["embedding/kernel"].reshape(48, -1) + p["embedding/bias"]
    if classifier == "token":
        tokens = np.concatenate([np.repeat(p["cls"], 2, axis=0), tokens], axis=1)
    tokens = tokens + p["Transformer/posembed_input/pos_embedding"]
    normed = reference_layer_norm(
        tokens, p["Transformer/encoder_norm/scale"], p["Transformer/encoder_norm/bias"]
    )
    pooled = normed[:, 0] if classifier == "token" else normed.mean(axis=1)
    if representation_size:
        pooled = np.tanh(pooled @ p["pre_logits/kernel"] + p["pre_logits/bias"])
    expected = pooled @ p["head/kernel"] + p["head/bias"]
    np.testing.assert_allclose(nv.forward(params, images), expected, atol=1e-10)


def test_bottleneck_with_identity_shortcut_and_zero_gn3_is_relu():
    rng = np.random.default_rng(8)
    p = {
        "conv1/kernel": rng.standard_normal((1, 1, 64, 32)),
        "conv2/kernel": rng.standard_normal((3, 3, 32, 32)),
        "conv3/kernel": rng.standard_normal((1, 1, 32, 64)),
    }
    for gn, c in (("gn1", 32), ("gn2", 32), ("gn3", 64)):
        p[f"{gn}/scale"], p[f"{gn}/bias"] = np.ones(c), np.zeros(c)
    p["gn3/scale"] = np.zeros(64)  # the reference's zero-initialised residual branch
    x = rng.standard_normal((1, 6, 6, 64))
    np.testing.assert_allclose(nv.bottleneck_unit(p, x, 1), np.maximum(x, 0), atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "tokens"),
    [
        (dict(patch_size=8, image_size=32), 17),
        (dict(patch_size=8, image_size=32, classifier="gap"), 16),
        (dict(patch_size=8, image_size=32, representation_size=24), 17),
        (dict(patch_size=1, image_size=64, resnet_layers=(1, 1)), 65),
        (dict(patch_size=4, image_size=64, resnet_layers=()), 17),
        (dict(patch_size=2, image_size=64, resnet_layers=(2,)), 65),
    ],
)
def test_random_checkpoint_is_nonzero_float32_and_well_conditioned(kwargs, tokens):
    params = nv.random_checkpoint(9, **kwargs, **SMALL)
    for key, value in params.items():
        assert value.dtype == np.float32, key
        assert np.all(value != 0), key
    assert params["Transformer/posembed_input/pos_embedding"].shape == (1, tokens, 32)
    size = kwargs["image_size"]
    images = np.random.default_rng(10).uniform(0, 255, (2, size, size, 3))
    logits = nv.forward(params, images)
    assert logits.shape == (2, 5)
    assert np.all(np.isfinite(logits))
    assert 0.1 < logits.std() < 10
    assert np.abs(logits[0] - logits[1]).max() > 1e-3  # different images, different logits


def test_hybrid_stem_layout_and_strides():
    params = nv.random_checkpoint(11, patch_size=1, image_size=64, resnet_layers=(2, 1), **SMALL)
    assert nv.resnet_layout(params) == [2, 1]
    assert "block1/unit2/conv_proj/kernel" not in params
    assert params["block2/unit1/conv_proj/kernel"].shape == (1, 1, 256, 512)
    assert params["embedding/kernel"].shape == (1, 1, 512, 32)
    p = {k: v.astype(np.float64) for k, v in params.items()}
    x = np.random.default_rng(12).standard_normal((1, 64, 64, 3))
    assert nv.resnet_stem(p, x).shape == (1, 8, 8, 512)  # stem stride 8 with two stages
