"""LayerNorm and bias + tanh-GELU as compiled element-wise kernels with hand-written gradients.

TensorFlow runs the composite forms (mean, variance, rsqrt, scale, shift; cube, tanh,
products) as a dozen separate element-wise kernels per op and direction, each a full pass
over an activation, and its automatic differentiation keeps every intermediate alive until
the backward pass. Here each op's forward and backward is one small XLA-compiled function
(a fused loop over the tensor), the matmuls around them stay TensorFlow's own (oneDNN on
CPU, faster there than XLA's), and the backward pass keeps only the op's input (and, for
LayerNorm, two per-token statistics) and recomputes the rest. The forward values are those
of Keras' LayerNormalization (`tf.nn.moments`, then `x * inv + (beta - mean * inv)`) and of
`tf.nn.gelu(approximate=True)` after a bias add, to float32 round-off. Measured effects
(training speed, memory, kernel counts): benchmarks/profile.md; derivatives:
docs/reference.md ("Training"); tests/models/test_fused.py checks them against TensorFlow's
automatic differentiation of the definitions.

Under mixed precision LayerNorm takes the bf16/fp16 input, normalises in float32 and
returns the input's dtype; the saved input stays in the narrow dtype.

Exported graphs must run where XLA does not (TF Serving builds, TFLite, ONNX): inside
`portable()` the same computations are built from plain TensorFlow ops.
"""

from __future__ import annotations

import contextlib
import math
import threading

import tensorflow as tf

_GELU_SCALE = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715
_state = threading.local()


@contextlib.contextmanager
def portable():
    """Within: plain TensorFlow ops only, no XLA-compiled functions (for exports)."""
    previous = getattr(_state, "portable", False)
    _state.portable = True
    try:
        yield
    finally:
        _state.portable = previous


def _maybe_compiled(body):
    """`body` as written (inside `portable()`), else XLA-compiled (one fused kernel)."""
    compiled = tf.function(body, jit_compile=True, autograph=False, reduce_retracing=True)

    def run(*args):
        return body(*args) if getattr(_state, "portable", False) else compiled(*args)

    return run


def _layer_norm_forward(x, gamma, beta, epsilon):
    x32 = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
    rstd = tf.math.rsqrt(variance + epsilon)
    inv = rstd * gamma
    return tf.cast(x32 * inv + (-mean * inv + beta), x.dtype), mean, rstd


def _layer_norm_backward(dy, x, gamma, mean, rstd):
    # xhat = (x - mean) * rstd; dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with
    # g = dy * gamma: the LayerNorm derivative, recomputed from the saved input
    dy = tf.cast(dy, tf.float32)
    xhat = (tf.cast(x, tf.float32) - mean) * rstd
    reduce_axes = list(range(len(x.shape) - 1))
    d_gamma = tf.reduce_sum(dy * xhat, axis=reduce_axes)
    d_beta = tf.reduce_sum(dy, axis=reduce_axes)
    g = dy * gamma
    mean_g = tf.reduce_mean(g, axis=-1, keepdims=True)
    mean_gx = tf.reduce_mean(g * xhat, axis=-1, keepdims=True)
    return tf.cast(rstd * (g - mean_g - xhat * mean_gx), x.dtype), d_gamma, d_beta


def _bias_gelu_forward(h, bias):
    return tf.nn.gelu(h + bias, approximate=True)


def _bias_gelu_backward(dy, h, bias):
    # d/dx gelu = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2),
    # t = tanh(sqrt(2/pi) (x + 0.044715 x^3)), x = h + bias
    x = h + bias
    square = x * x
    t = tf.tanh(_GELU_SCALE * x * (1.0 + _GELU_CUBIC * square))
    slope = 0.5 * (1.0 + t) + (0.5 * _GELU_SCALE) * x * (1.0 - t * t) * (
        1.0 + 3.0 * _GELU_CUBIC * square)
    d_x = dy * slope
    return d_x, tf.reduce_sum(tf.cast(d_x, tf.float32), axis=list(range(len(x.shape) - 1)))


_layer_norm_forward_run = _maybe_compiled(_layer_norm_forward)
_layer_norm_backward_run = _maybe_compiled(_layer_norm_backward)
_bias_gelu_forward_run = _maybe_compiled(_bias_gelu_forward)
_bias_gelu_backward_run = _maybe_compiled(_bias_gelu_backward)


def layer_norm(x, gamma, beta, epsilon: float, training: bool = False):
    """LayerNorm over the last axis, normalised in float32, returned in x's dtype."""
    gamma, beta = tf.cast(gamma, tf.float32), tf.cast(beta, tf.float32)
    epsilon = tf.constant(epsilon, tf.float32)
    if not training:
        return _layer_norm_forward_run(x, gamma, beta, epsilon)[0]

    @tf.custom_gradient
    def normalise(x, gamma, beta):
        y, mean, rstd = _layer_norm_forward_run(x, gamma, beta, epsilon)

        def grad(dy):
            return _layer_norm_backward_run(dy, x, gamma, mean, rstd)

        return y, grad

    return normalise(x, gamma, beta)


def bias_gelu(h, bias, training: bool = False):
    """tanh-approximate GELU of h + bias: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    bias = tf.cast(bias, h.dtype)
    if not training:
        return _bias_gelu_forward_run(h, bias)

    @tf.custom_gradient
    def activate(h, bias):
        def grad(dy):
            d_h, d_bias = _bias_gelu_backward_run(dy, h, bias)
            return d_h, tf.cast(d_bias, bias.dtype)

        return _bias_gelu_forward_run(h, bias), grad

    return activate(h, bias)
