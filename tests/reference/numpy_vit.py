"""Independent plain-numpy reference of the ViT forward pass (plain and BiT-hybrid).

Written from the facts in docs/reference.md (§1, §3 and §4) only; it shares no code with
`vitcli` and imports no deep-learning framework, so parity tests compare two separate
implementations. Everything is computed in float64, in eval mode (no dropout).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LAYER_NORM_EPS = 1e-6
GROUP_NORM_EPS = 1e-6
GROUP_NORM_GROUPS = 32
STD_CONV_EPS = 1e-5

_BLOCK = "Transformer/encoderblock_{}/"
_ATTENTION = "MultiHeadDotProductAttention_1/"
_MLP = "MlpBlock_3/"
_POSEMB = "Transformer/posembed_input/pos_embedding"
_UNIT_KEY = re.compile(r"^block(\d+)/unit(\d+)/")
_ENCODER_BLOCK_KEY = re.compile(r"^Transformer/encoderblock_(\d+)/")


# ---------------------------------------------------------------------------------------------
# Elementary operations
# ---------------------------------------------------------------------------------------------


def normalise_pixels(images: np.ndarray) -> np.ndarray:
    """Map raw [0, 255] pixels to [-1, 1] as the reference does (no mean/std normalisation)."""
    return np.asarray(images, dtype=np.float64) / 127.5 - 1.0


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """LayerNorm over the last axis with biased variance and epsilon 1e-6."""
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * scale + bias


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU in its tanh approximation (the reference's form, not the exact erf one)."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along one axis."""
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def dense(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Dense layer with an (in, out) kernel."""
    return x @ kernel + bias


# ---------------------------------------------------------------------------------------------
# Convolution, pooling and normalisation for the stem and the patch embedding (NHWC, HWIO)
# ---------------------------------------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow/XLA SAME padding (before, after): the odd extra pixel goes after."""
    out = -(-size // stride)  # ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: np.ndarray, window: tuple[int, int], stride: int, value: float = 0.0):
    """Pad the two spatial axes of an NHWC array for a SAME window op."""
    top, bottom = same_padding(x.shape[1], window[0], stride)
    left, right = same_padding(x.shape[2], window[1], stride)
    pads = ((0, 0), (top, bottom), (left, right), (0, 0))
    return np.pad(x, pads, mode="constant", constant_values=value)


def _windows(x: np.ndarray, window: tuple[int, int], stride: int) -> np.ndarray:
    """All (kh, kw) windows of an already padded NHWC array at the given stride.

    Shape (B, H_out, W_out, C, kh, kw); the result is a strided view, no copy.
    """
    return sliding_window_view(x, window, axis=(1, 2))[:, ::stride, ::stride]


def conv2d(x: np.ndarray, kernel: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """2-D convolution (cross-correlation) of NHWC input with an HWIO kernel, no bias."""
    kh, kw = kernel.shape[:2]
    if padding == "SAME":
        x = pad_same(x, (kh, kw), stride)
    elif padding != "VALID":
        raise ValueError(f"unknown padding {padding!r}")
    return np.einsum("bhwcij,ijco->bhwo", _windows(x, (kh, kw), stride), kernel, optimize=True)


def max_pool_same(x: np.ndarray, window: int = 3, stride: int = 2) -> np.ndarray:
    """Max-pool with SAME padding; padding is -inf so it never wins the max."""
    x = pad_same(x, (window, window), stride, value=-np.inf)
    return _windows(x, (window, window), stride).max(axis=(-2, -1))


def standardize_kernel(kernel: np.ndarray) -> np.ndarray:
    """Weight standardisation per output channel over the (H, W, in) axes, biased std."""
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    std = kernel.std(axis=(0, 1, 2), keepdims=True)
    return (kernel - mean) / (std + STD_CONV_EPS)


def std_conv(x: np.ndarray, kernel: np.ndarray, stride: int = 1) -> np.ndarray:
    """Weight-standardised SAME convolution without bias, as in the BiT stem."""
    return conv2d(x, standardize_kernel(kernel), stride, "SAME")


def group_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """GroupNorm (32 contiguous channel groups, eps 1e-6) then per-channel scale and bias."""
    b, h, w, c = x.shape
    groups = x.reshape(b, h, w, GROUP_NORM_GROUPS, c // GROUP_NORM_GROUPS)
    mean = groups.mean(axis=(1, 2, 4), keepdims=True)
    var = groups.var(axis=(1, 2, 4), keepdims=True)
    normed = ((groups - mean) / np.sqrt(var + GROUP_NORM_EPS)).reshape(b, h, w, c)
    # Checkpoints may store these as (1, 1, 1, C).
    return normed * np.reshape(scale, -1) + np.reshape(bias, -1)


def relu(x: np.ndarray) -> np.ndarray:
    """Rectified linear unit."""
    return np.maximum(x, 0.0)


# ---------------------------------------------------------------------------------------------
# ResNet (BiT, v1 bottleneck) stem
# ---------------------------------------------------------------------------------------------


def _sub(params: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under `prefix`, with the prefix stripped from their keys."""
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def resnet_layout(params: Mapping[str, np.ndarray]) -> list[int]:
    """Units per stage read from the `block{s}/unit{u}/` keys (empty for a stem-only model)."""
    units: dict[int, set[int]] = {}
    for key in params:
        match = _UNIT_KEY.match(key)
        if match:
            units.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    stages = sorted(units)
    if stages != list(range(1, len(stages) + 1)):
        raise ValueError(f"ResNet stages are not numbered 1..n: {stages}")
    layout = []
    for s in stages:
        if sorted(units[s]) != list(range(1, len(units[s]) + 1)):
            raise ValueError(f"units of block{s} are not numbered 1..n: {sorted(units[s])}")
        layout.append(len(units[s]))
    return layout


def bottleneck_unit(p: Mapping[str, np.ndarray], x: np.ndarray, stride: int) -> np.ndarray:
    """v1 bottleneck unit: 1x1 -> 3x3 (strided) -> 1x1, projected or identity shortcut."""
    y = relu(group_norm(std_conv(x, p["conv1/kernel"]), p["gn1/scale"], p["gn1/bias"]))
    y = relu(group_norm(std_conv(y, p["conv2/kernel"], stride), p["gn2/scale"], p["gn2/bias"]))
    y = group_norm(std_conv(y, p["conv3/kernel"]), p["gn3/scale"], p["gn3/bias"])
    if "conv_proj/kernel" in p:
        shortcut = std_conv(x, p["conv_proj/kernel"], stride)
        shortcut = group_norm(shortcut, p["gn_proj/scale"], p["gn_proj/bias"])
    else:
        shortcut = x
    return relu(shortcut + y)


def resnet_stem(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Root (7x7/2 conv, GN, ReLU, 3x3/2 max-pool) followed by the bottleneck stages."""
    x = std_conv(x, params["conv_root/kernel"], stride=2)
    x = relu(group_norm(x, params["gn_root/scale"], params["gn_root/bias"]))
    x = max_pool_same(x, window=3, stride=2)
    for s, num_units in enumerate(resnet_layout(params), start=1):
        for u in range(1, num_units + 1):
            # Only the first unit of stages after the first downsamples.
            stride = 2 if (s > 1 and u == 1) else 1
            x = bottleneck_unit(_sub(params, f"block{s}/unit{u}/"), x, stride)
    return x


# ---------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------


def multi_head_attention(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Self-attention; `p` holds query/key/value/out kernels and biases in the Flax layout."""
    q = np.einsum("btd,dhk->bthk", x, p["query/kernel"]) + p["query/bias"]
    k = np.einsum("btd,dhk->bthk", x, p["key/kernel"]) + p["key/bias"]
    v = np.einsum("btd,dhk->bthk", x, p["value/kernel"]) + p["value/bias"]
    head_dim = q.shape[-1]
    logits = np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(head_dim)
    weights = softmax(logits, axis=-1)
    attended = np.einsum("bhqs,bshk->bqhk", weights, v)
    return np.einsum("bthk,hkd->btd", attended, p["out/kernel"]) + p["out/bias"]


def mlp_block(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Dense -> tanh-GELU -> Dense."""
    h = gelu_tanh(dense(x, p["Dense_0/kernel"], p["Dense_0/bias"]))
    return dense(h, p["Dense_1/kernel"], p["Dense_1/bias"])


def encoder_block(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Pre-norm block: x + MHA(LN0(x)), then x + MLP(LN2(x))."""
    y = layer_norm(x, p["LayerNorm_0/scale"], p["LayerNorm_0/bias"])
    x = x + multi_head_attention(y, _sub(p, _ATTENTION))
    y = layer_norm(x, p["LayerNorm_2/scale"], p["LayerNorm_2/bias"])
    return x + mlp_block(y, _sub(p, _MLP))


def encoder_depth(params: Mapping[str, np.ndarray]) -> int:
    """Number of encoder blocks, checking they are numbered 0..L-1."""
    indices = sorted({int(m.group(1)) for k in params if (m := _ENCODER_BLOCK_KEY.match(k))})
    if indices != list(range(len(indices))):
        raise ValueError(f"encoder blocks are not numbered 0..L-1: {indices}")
    return len(indices)


def patch_embed(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Patch conv (kernel = stride = P, VALID, bias), flattened row-major to (B, N, D)."""
    kernel = params["embedding/kernel"]
    x = conv2d(x, kernel, stride=kernel.shape[0], padding="VALID") + params["embedding/bias"]
    b, h, w, d = x.shape
    return x.reshape(b, h * w, d)


def _as_float64(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copy every array to float64 so the whole pass runs in double precision."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def forward(params: Mapping[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Logits (B, num_classes) of raw NHWC [0, 255] images for an official-layout checkpoint."""
    p = _as_float64(params)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be NHWC, got shape {images.shape}")
    x = normalise_pixels(images)
    if "conv_root/kernel" in p:
        x = resnet_stem(p, x)
    x = patch_embed(p, x)
    if "cls" in p:
        cls = np.broadcast_to(p["cls"].reshape(1, 1, -1), (x.shape[0], 1, x.shape[2]))
        x = np.concatenate([cls, x], axis=1)
    posemb = p[_POSEMB]
    if posemb.shape[1] != x.shape[1]:
        raise ValueError(f"position embedding has {posemb.shape[1]} rows, tokens: {x.shape[1]}")
    x = x + posemb  # added to every token, the class token included
    for i in range(encoder_depth(p)):
        x = encoder_block(x, _sub(p, _BLOCK.format(i)))
    x = layer_norm(x, p["Transformer/encoder_norm/scale"], p["Transformer/encoder_norm/bias"])
    x = x[:, 0] if "cls" in p else x.mean(axis=1)
    if "pre_logits/kernel" in p:
        x = np.tanh(dense(x, p["pre_logits/kernel"], p["pre_logits/bias"]))
    return dense(x, p["head/kernel"], p["head/bias"])


# ---------------------------------------------------------------------------------------------
# Random checkpoints for parity tests
# ---------------------------------------------------------------------------------------------


class _Draw:
    """Random float32 arrays scaled to keep activations well-conditioned."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def normal(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        """Normal(0, std) array; never exactly zero in practice."""
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    def kernel(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        """Kernel with variance 1/fan_in so outputs keep the input's scale."""
        return self.normal(shape, 1.0 / math.sqrt(fan_in))

    def scale(self, shape: tuple[int, ...]) -> np.ndarray:
        """Norm scale near one."""
        return (1.0 + self.normal(shape, 0.1)).astype(np.float32)

    def bias(self, shape: tuple[int, ...]) -> np.ndarray:
        """Small non-zero bias."""
        return self.normal(shape, 0.1)


def _add_norm(out: dict, draw: _Draw, name: str, channels: int) -> None:
    """Add `{name}/scale` and `{name}/bias`."""
    out[f"{name}/scale"] = draw.scale((channels,))
    out[f"{name}/bias"] = draw.bias((channels,))


def _random_stem(draw: _Draw, in_channels: int, layers: tuple[int, ...], width_factor: int):
    """Hybrid stem arrays and the channel count it outputs."""
    out: dict[str, np.ndarray] = {}
    width = 64 * width_factor
    out["conv_root/kernel"] = draw.kernel((7, 7, in_channels, width), 49 * in_channels)
    _add_norm(out, draw, "gn_root", width)
    channels = width
    for s, num_units in enumerate(layers, start=1):
        features = width * 2 ** (s - 1)
        for u in range(1, num_units + 1):
            prefix = f"block{s}/unit{u}/"
            out[prefix + "conv1/kernel"] = draw.kernel((1, 1, channels, features), channels)
            out[prefix + "conv2/kernel"] = draw.kernel((3, 3, features, features), 9 * features)
            out[prefix + "conv3/kernel"] = draw.kernel((1, 1, features, 4 * features), features)
            for gn, c in (("gn1", features), ("gn2", features), ("gn3", 4 * features)):
                _add_norm(out, draw, prefix + gn, c)
            # The shape changes (channels or stride) exactly in the first unit of each stage.
            if u == 1:
                shape = (1, 1, channels, 4 * features)
                out[prefix + "conv_proj/kernel"] = draw.kernel(shape, channels)
                _add_norm(out, draw, prefix + "gn_proj", 4 * features)
            channels = 4 * features
    return out, channels


def _random_block(draw: _Draw, prefix: str, d: int, heads: int, mlp_dim: int) -> dict:
    """One encoder block's arrays."""
    out: dict[str, np.ndarray] = {}
    head_dim = d // heads
    _add_norm(out, draw, prefix + "LayerNorm_0", d)
    _add_norm(out, draw, prefix + "LayerNorm_2", d)
    att = prefix + _ATTENTION
    for name in ("query", "key", "value"):
        out[f"{att}{name}/kernel"] = draw.kernel((d, heads, head_dim), d)
        out[f"{att}{name}/bias"] = draw.bias((heads, head_dim))
    out[att + "out/kernel"] = draw.kernel((heads, head_dim, d), d)
    out[att + "out/bias"] = draw.bias((d,))
    mlp = prefix + _MLP
    out[mlp + "Dense_0/kernel"] = draw.kernel((d, mlp_dim), d)
    out[mlp + "Dense_0/bias"] = draw.bias((mlp_dim,))
    out[mlp + "Dense_1/kernel"] = draw.kernel((mlp_dim, d), mlp_dim)
    out[mlp + "Dense_1/bias"] = draw.bias((d,))
    return out


def stem_stride(resnet_layers: tuple[int, ...] | None) -> int:
    """Total downsampling of the hybrid stem (1 for a plain ViT)."""
    if resnet_layers is None:
        return 1
    return 4 * 2 ** max(len(resnet_layers) - 1, 0)


def random_checkpoint(
    seed: int,
    *,
    hidden_size: int,
    depth: int,
    num_heads: int,
    mlp_dim: int,
    patch_size: int,
    image_size: int,
    num_classes: int,
    classifier: str = "token",
    representation_size: int | None = None,
    resnet_layers: tuple[int, ...] | None = None,
    resnet_width_factor: int = 1,
    in_channels: int = 3,
) -> dict[str, np.ndarray]:
    """A random, all-non-zero float32 checkpoint in the official ViT .npz layout."""
    if classifier not in ("token", "gap"):
        raise ValueError(f"classifier must be 'token' or 'gap', got {classifier!r}")
    if hidden_size % num_heads:
        raise ValueError("hidden_size must be a multiple of num_heads")
    reduction = patch_size * stem_stride(resnet_layers)
    if image_size % reduction:
        raise ValueError(f"image_size {image_size} is not a multiple of {reduction}")
    grid = image_size // reduction
    draw = _Draw(seed)
    d = hidden_size
    params: dict[str, np.ndarray] = {}

    embed_in = in_channels
    if resnet_layers is not None:
        stem, embed_in = _random_stem(draw, in_channels, tuple(resnet_layers), resnet_width_factor)
        params.update(stem)
    fan_in = patch_size * patch_size * embed_in
    params["embedding/kernel"] = draw.kernel((patch_size, patch_size, embed_in, d), fan_in)
    params["embedding/bias"] = draw.bias((d,))

    num_tokens = grid * grid
    if classifier == "token":
        # Same scale as the patch embeddings so a misplaced class token shows in the logits.
        params["cls"] = draw.normal((1, 1, d), 0.5)
        num_tokens += 1
    params[_POSEMB] = draw.normal((1, num_tokens, d), 0.5)

    for i in range(depth):
        params.update(_random_block(draw, _BLOCK.format(i), d, num_heads, mlp_dim))
    _add_norm(params, draw, "Transformer/encoder_norm", d)

    features = d
    if representation_size is not None:
        params["pre_logits/kernel"] = draw.kernel((d, representation_size), d)
        params["pre_logits/bias"] = draw.bias((representation_size,))
        features = representation_size
    params["head/kernel"] = draw.kernel((features, num_classes), features)
    params["head/bias"] = draw.bias((num_classes,))
    return params
