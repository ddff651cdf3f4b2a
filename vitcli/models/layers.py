"""Keras 3 layers of the Vision Transformer, exact to the reference code (docs/reference.md §1).

Sub-layers and weights carry the reference's module names (`LayerNorm_0`,
`MultiHeadDotProductAttention_1`, `MlpBlock_3/Dense_0`, ...) so that a Keras weight
path reads like the checkpoint key it comes from. LayerNorm, softmax and the head
run in float32 under mixed precision: they are where bf16/fp16 lose accuracy.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from vitcli.models import fused

LAYER_NORM_EPSILON = 1e-6
NUMERICALLY_SENSITIVE_DTYPE = "float32"


def serializable(cls):
    return keras.saving.register_keras_serializable(package="vitcli")(cls)


@serializable
class LayerNorm(layers.LayerNormalization):
    """Keras' LayerNormalization over the last axis (same weights `gamma`/`beta`, the same
    values to float32 round-off) as one compiled kernel (vitcli.models.fused): normalises in
    float32 whatever the input's dtype and returns the input's dtype; in training its
    hand-written gradient keeps only the input and two per-token statistics."""

    def __init__(self, epsilon: float = LAYER_NORM_EPSILON, **kwargs):
        kwargs.setdefault("autocast", False)  # the cast happens inside, after the save
        super().__init__(axis=-1, epsilon=epsilon, **kwargs)

    def call(self, inputs, training=None):
        return fused.layer_norm(inputs, self.gamma, self.beta, self.epsilon,
                                training=bool(training))

    def get_config(self):  # always the last axis, with scale and offset
        return {**layers.Layer.get_config(self), "epsilon": self.epsilon}


def layer_norm(name: str) -> LayerNorm:
    """The reference's LayerNorm: epsilon 1e-6 (Keras' default is 1e-3), computed in float32."""
    return LayerNorm(name=name, dtype=NUMERICALLY_SENSITIVE_DTYPE)


def xavier_uniform_for(fan_in: int, fan_out: int) -> keras.initializers.Initializer:
    """Flax's xavier_uniform on a multi-axis kernel, which sees it as a (fan_in, fan_out) matrix.

    Spelled out rather than left to Keras' GlorotUniform, whose fans for a 3-D kernel depend
    on how the layer presents its shape.
    """
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return keras.initializers.RandomUniform(-limit, limit)


@serializable
class PatchEmbedding(layers.Layer):
    """Conv with kernel = stride = patch size (VALID, with bias), flattened row-major to tokens."""

    def __init__(self, hidden_size: int, patch_size: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.patch_size = patch_size

    def build(self, input_shape):
        kernel_shape = (self.patch_size, self.patch_size, input_shape[-1], self.hidden_size)
        self.kernel = self.add_weight(
            name="kernel", shape=kernel_shape, initializer="lecun_normal"
        )
        self.bias = self.add_weight(name="bias", shape=(self.hidden_size,), initializer="zeros")

    def call(self, images):
        patches = ops.conv(images, self.kernel, strides=self.patch_size, padding="valid")
        patches = patches + self.bias
        _, height, width, channels = patches.shape
        return ops.reshape(patches, (-1, height * width, channels))

    def compute_output_shape(self, input_shape):
        grid_h = input_shape[1] // self.patch_size
        grid_w = input_shape[2] // self.patch_size
        return (input_shape[0], grid_h * grid_w, self.hidden_size)

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size,
                "patch_size": self.patch_size}


@serializable
class ClassToken(layers.Layer):
    """Prepends the learned class token (zero-initialised, shape (1, 1, D))."""

    def build(self, input_shape):
        self.cls = self.add_weight(name="cls", shape=(1, 1, input_shape[-1]), initializer="zeros")

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        cls = ops.broadcast_to(ops.cast(self.cls, tokens.dtype), (batch, 1, tokens.shape[-1]))
        return ops.concatenate([cls, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] + 1, input_shape[2])


@serializable
class PositionEmbedding(layers.Layer):
    """Adds a learned (1, N, D) table to every token, the class token included."""

    def build(self, input_shape):
        self.pos_embedding = self.add_weight(
            name="pos_embedding",
            shape=(1, input_shape[1], input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, tokens):
        return tokens + ops.cast(self.pos_embedding, tokens.dtype)


def sincos2d_table(grid_height: int, grid_width: int, width: int,
                   temperature: float = 10_000.0) -> np.ndarray:
    """big_vision's fixed 2-D sine-cosine table (grid_height * grid_width, width), float64,
    tokens row-major (docs/reference.md §1.6): with y the row and x the column of a token
    and omega_k = 1 / temperature^(k / (width/4 - 1)), k < width/4, the row is
    [sin(x omega), cos(x omega), sin(y omega), cos(y omega)]."""
    quarter = width // 4
    omega = 1.0 / temperature ** (np.arange(quarter) / (quarter - 1))
    rows, columns = np.mgrid[:grid_height, :grid_width]
    x = columns.reshape(-1, 1) * omega
    y = rows.reshape(-1, 1) * omega
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)


@serializable
class SinCosPositionEmbedding(layers.Layer):
    """Adds the fixed 2-D sine-cosine table (not a weight: never trained, not in checkpoints)
    to the patch tokens; the `num_prefix_tokens` in front (the class token) get none, as in
    big_vision, which adds it before prepending the class token. The grid is the square of
    the patch tokens, so a model built at another resolution has the table of its own grid.
    `pos_embedding` is the (1, N, D) float32 table added, zero rows for the prefix."""

    def __init__(self, num_prefix_tokens: int = 1, grid_shape=None, **kwargs):
        super().__init__(**kwargs)
        self.num_prefix_tokens = num_prefix_tokens
        # a non-square model's (grid height, grid width); None: the square of the tokens
        self.grid_shape = None if grid_shape is None else tuple(int(n) for n in grid_shape)

    def build(self, input_shape):
        patches, width = input_shape[1] - self.num_prefix_tokens, input_shape[2]
        rows, columns = self.grid_shape or (math.isqrt(patches),) * 2
        if rows * columns != patches or width % 4 or width < 8:
            raise ValueError(f"sincos2d position embeddings need a square grid and a width "
                             f"that is a multiple of 4 (at least 8), got {patches} tokens of "
                             f"width {width}")
        table = np.concatenate([np.zeros((self.num_prefix_tokens, width)),
                                sincos2d_table(rows, columns, width)])
        self.pos_embedding = table[None].astype(np.float32)

    def call(self, tokens):
        return tokens + ops.cast(self.pos_embedding, tokens.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_prefix_tokens": self.num_prefix_tokens,
                "grid_shape": self.grid_shape}


@serializable
class MultiHeadSelfAttention(layers.Layer):
    """Self-attention with the reference's kernel layout: q/k/v (D, H, D/H), out (H, D/H, D).

    The softmax runs in float32. `call(..., return_attention=True)` also returns the
    attention weights (batch, heads, queries, keys) for the inspection figures.
    """

    def __init__(self, num_heads: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_dropout = layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        hidden = input_shape[-1]
        head_dim = hidden // self.num_heads
        init = xavier_uniform_for(hidden, hidden)
        bias_init = "zeros"
        for name in ("query", "key", "value"):
            projection = layers.EinsumDense(
                "btd,dhk->bthk", output_shape=(None, self.num_heads, head_dim),
                bias_axes="hk", kernel_initializer=init, bias_initializer=bias_init,
                name=name, dtype=self.dtype_policy,
            )
            projection.build(input_shape)
            setattr(self, name, projection)
        self.out = layers.EinsumDense(
            "bthk,hkd->btd", output_shape=(None, hidden), bias_axes="d",
            kernel_initializer=init, bias_initializer=bias_init, name="out",
            dtype=self.dtype_policy,
        )
        self.out.build((None, None, self.num_heads, head_dim))
        self.scale = 1.0 / math.sqrt(head_dim)

    def _fused_projection(self):
        """q, k and v kernels side by side as one (D, 3D) matrix: one matmul instead of three.
        The variables keep the reference layout; only the computation is fused."""
        hidden = self.query.kernel.shape[0]
        projections = (self.query, self.key, self.value)
        kernels = [ops.reshape(layer.kernel, (hidden, hidden)) for layer in projections]
        biases = [ops.reshape(layer.bias, (hidden,)) for layer in projections]
        return ops.concatenate(kernels, axis=1), ops.concatenate(biases, axis=0)

    def call(self, tokens, training=None, return_attention=False):
        batch, length, hidden = ops.shape(tokens)[0], ops.shape(tokens)[1], tokens.shape[-1]
        head_dim = hidden // self.num_heads
        kernel, bias = self._fused_projection()
        qkv = ops.reshape(ops.matmul(tokens, kernel) + bias,
                          (batch, length, 3, self.num_heads, head_dim))
        query, key, value = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), axis=0)  # (B,H,T,K)
        query = query * ops.cast(self.scale, query.dtype)
        logits = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
        weights = ops.softmax(ops.cast(logits, NUMERICALLY_SENSITIVE_DTYPE), axis=-1)
        dropped = self.attention_dropout(ops.cast(weights, tokens.dtype), training=training)
        context = ops.transpose(ops.matmul(dropped, value), (0, 2, 1, 3))  # (B,T,H,K)
        context = ops.reshape(context, (batch, length, hidden))
        output = ops.matmul(context, ops.reshape(self.out.kernel, (hidden, hidden))) + self.out.bias
        return (output, weights) if return_attention else output

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "dropout": self.dropout}


@serializable
class MlpBlock(layers.Layer):
    """Dense(M) -> tanh-approximate GELU -> Dropout -> Dense(D) -> Dropout."""

    def __init__(self, mlp_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.drop = layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        bias_init = keras.initializers.RandomNormal(stddev=1e-6)
        self.dense_0 = layers.Dense(
            self.mlp_dim, kernel_initializer="glorot_uniform", bias_initializer=bias_init,
            name="Dense_0", dtype=self.dtype_policy,
        )
        self.dense_1 = layers.Dense(
            input_shape[-1], kernel_initializer="glorot_uniform", bias_initializer=bias_init,
            name="Dense_1", dtype=self.dtype_policy,
        )
        self.dense_0.build(input_shape)
        self.dense_1.build((*input_shape[:-1], self.mlp_dim))

    def call(self, tokens, training=None):
        # Dense_0's matmul, then its bias and the GELU as one compiled kernel
        hidden = fused.bias_gelu(ops.matmul(tokens, self.dense_0.kernel), self.dense_0.bias,
                                 training=bool(training))
        hidden = self.drop(hidden, training=training)
        return self.drop(self.dense_1(hidden), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mlp_dim": self.mlp_dim, "dropout": self.dropout}


@serializable
class EncoderBlock(layers.Layer):
    """Pre-norm block: x + Dropout(MHA(LN(x))), then x + MLP(LN(x)).

    `drop_path` is stochastic depth (Huang et al. 2016; timm's and big_vision's DropPath): in
    training each residual branch is dropped whole, per example, with that probability, and
    kept ones are scaled by 1 / (1 - drop_path); Keras' Dropout with the noise shape
    (batch, 1, 1) is exactly that. 0 (the default) is the reference's block.
    """

    def __init__(self, num_heads: int, mlp_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0, drop_path: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.drop_path = drop_path
        self.drop_attention_branch = layers.Dropout(drop_path, noise_shape=(None, 1, 1),
                                                    dtype=self.dtype_policy)
        self.drop_mlp_branch = layers.Dropout(drop_path, noise_shape=(None, 1, 1),
                                              dtype=self.dtype_policy)
        self.norm_0 = layer_norm("LayerNorm_0")
        self.attention = MultiHeadSelfAttention(
            num_heads, attention_dropout, name="MultiHeadDotProductAttention_1",
            dtype=self.dtype_policy,
        )
        self.drop = layers.Dropout(dropout, dtype=self.dtype_policy)
        self.norm_2 = layer_norm("LayerNorm_2")
        self.mlp = MlpBlock(mlp_dim, dropout, name="MlpBlock_3", dtype=self.dtype_policy)

    def build(self, input_shape):
        for sublayer in (self.norm_0, self.attention, self.norm_2, self.mlp):
            sublayer.build(input_shape)

    def call(self, tokens, training=None, return_attention=False):
        normed = self.norm_0(tokens)
        attended = self.attention(normed, training=training, return_attention=return_attention)
        if return_attention:
            attended, weights = attended
        attended = self.drop(attended, training=training)
        tokens = tokens + self.drop_attention_branch(attended, training=training)
        normed = self.norm_2(tokens)
        tokens = tokens + self.drop_mlp_branch(self.mlp(normed, training=training),
                                               training=training)
        return (tokens, weights) if return_attention else tokens

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "mlp_dim": self.mlp_dim,
                "dropout": self.dropout, "attention_dropout": self.attention_dropout,
                "drop_path": self.drop_path}


@serializable
class TokenPooling(layers.Layer):
    """`token`: the class token's output; `gap`: the mean over all tokens."""

    def __init__(self, classifier: str = "token", **kwargs):
        super().__init__(**kwargs)
        if classifier not in ("token", "gap"):
            raise ValueError(f"classifier must be 'token' or 'gap', got {classifier!r}")
        self.classifier = classifier

    def call(self, tokens):
        return tokens[:, 0] if self.classifier == "token" else ops.mean(tokens, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "classifier": self.classifier}
