"""Independent plain-numpy reference of ViT training: loss, gradients, schedule, optimizers.

Like `numpy_vit`, it shares no code with `vitcli` and imports no deep-learning framework, so
training tests compare two separate implementations. It covers the plain ViT (no hybrid stem),
in eval mode (no dropout), and reproduces what the reference code does at each step:

* the mean softmax cross-entropy of a batch and its exact analytic gradient with respect to
  every array of an official-layout parameter dict, by a hand-written backward pass in float64;
* the learning-rate schedule of vision_transformer / big_vision (linear warm-up, then cosine or
  linear decay to zero), evaluated at the optimizer's own 0-based update count;
* optax's global-norm clipping;
* fine-tuning SGD with momentum as `optax.sgd(lr_fn, momentum=0.9, accumulator_dtype=...)`;
* pre-training Adam with decoupled, kernel-only weight decay as big_vision's optax chain.

Parameters are float32 between steps because the model under test is float32: gradients are
computed in float64 from the float32 values, the update is applied in float64 and the result is
rounded back to float32. Optimizer state is kept in its storage dtype (float32 or bfloat16, as
the reference stores it) and widened to float64 for arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from tests.reference import numpy_vit as nv

Params = dict[str, np.ndarray]

_POSEMB = "Transformer/posembed_input/pos_embedding"
_BLOCK = "Transformer/encoderblock_{}/"
_ATTENTION = "MultiHeadDotProductAttention_1/"
_MLP = "MlpBlock_3/"
_ENCODER_NORM = "Transformer/encoder_norm/"
_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715

# float64 stores the state exactly; it is not a reference setting but lets tests do exact
# hand arithmetic without float32 rounding in the way.
STATE_DTYPES = {"float64": np.float64, "float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


# ---------------------------------------------------------------------------------------------
# Layer forward/backward pairs (float64). Each forward returns (output, cache); each backward
# takes the output gradient and the cache and returns the input gradient, writing parameter
# gradients into `grads` under the full checkpoint key.
# ---------------------------------------------------------------------------------------------


def _sum_leading(x: np.ndarray) -> np.ndarray:
    """Sum over every axis but the last: the gradient of a bias broadcast over them."""
    return x.reshape(-1, x.shape[-1]).sum(axis=0)


def _layer_norm_fwd(x: np.ndarray, scale: np.ndarray, bias: np.ndarray):
    """LayerNorm (biased variance, eps 1e-6) keeping the normalised input for the backward."""
    rstd = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True) + nv.LAYER_NORM_EPS)
    xhat = (x - x.mean(axis=-1, keepdims=True)) * rstd
    return xhat * scale + bias, (xhat, rstd, scale)


def _layer_norm_bwd(dy: np.ndarray, cache, grads: Params, prefix: str) -> np.ndarray:
    """LayerNorm backward; the two mean terms come from the mean and the variance."""
    xhat, rstd, scale = cache
    grads[prefix + "scale"] = _sum_leading(dy * xhat)
    grads[prefix + "bias"] = _sum_leading(dy)
    dxhat = dy * scale
    centred = dxhat - dxhat.mean(axis=-1, keepdims=True)
    return rstd * (centred - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))


def _dense_bwd(dy: np.ndarray, x: np.ndarray, kernel: np.ndarray, grads: Params, prefix: str):
    """Backward of `x @ kernel + bias` for an (in, out) kernel and any leading axes."""
    flat_x = x.reshape(-1, x.shape[-1])
    grads[prefix + "kernel"] = flat_x.T @ dy.reshape(-1, dy.shape[-1])
    grads[prefix + "bias"] = _sum_leading(dy)
    return dy @ kernel.T


def _gelu_derivative(x: np.ndarray) -> np.ndarray:
    """d/dx of the tanh-approximated GELU 0.5 x (1 + tanh(c (x + a x^3)))."""
    t = np.tanh(_GELU_C * (x + _GELU_A * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * x * x)


def _attention_fwd(x: np.ndarray, p: Mapping[str, np.ndarray], prefix: str):
    """Multi-head self-attention with (D, H, K) projections and an (H, K, D) output kernel."""
    q, k, v = (
        np.einsum("btd,dhk->bthk", x, p[f"{prefix}{n}/kernel"]) + p[f"{prefix}{n}/bias"]
        for n in ("query", "key", "value")
    )
    scale = 1.0 / math.sqrt(q.shape[-1])
    weights = nv.softmax(np.einsum("bqhk,bshk->bhqs", q, k) * scale, axis=-1)
    attended = np.einsum("bhqs,bshk->bqhk", weights, v)
    out = np.einsum("bthk,hkd->btd", attended, p[prefix + "out/kernel"]) + p[prefix + "out/bias"]
    return out, (x, q, k, v, weights, attended, scale)


def _attention_bwd(dout: np.ndarray, cache, p: Mapping[str, np.ndarray], grads, prefix):
    """Attention backward, through the output projection, the softmax and the three inputs."""
    x, q, k, v, weights, attended, scale = cache
    grads[prefix + "out/kernel"] = np.einsum("bthk,btd->hkd", attended, dout)
    grads[prefix + "out/bias"] = _sum_leading(dout)
    dattended = np.einsum("btd,hkd->bthk", dout, p[prefix + "out/kernel"])
    dweights = np.einsum("bqhk,bshk->bhqs", dattended, v)
    dv = np.einsum("bhqs,bqhk->bshk", weights, dattended)
    # Softmax Jacobian-vector product, row by row; the logit scale folds in here.
    dlogits = weights * (dweights - (dweights * weights).sum(axis=-1, keepdims=True)) * scale
    dq = np.einsum("bhqs,bshk->bqhk", dlogits, k)
    dk = np.einsum("bhqs,bqhk->bshk", dlogits, q)
    dx = np.zeros_like(x)
    for name, d in (("query", dq), ("key", dk), ("value", dv)):
        grads[f"{prefix}{name}/kernel"] = np.einsum("btd,bthk->dhk", x, d)
        grads[f"{prefix}{name}/bias"] = d.sum(axis=(0, 1))
        dx += np.einsum("bthk,dhk->btd", d, p[f"{prefix}{name}/kernel"])
    return dx


def _mlp_fwd(x: np.ndarray, p: Mapping[str, np.ndarray], prefix: str):
    """Dense -> tanh-GELU -> Dense, keeping the pre-activation."""
    pre = nv.dense(x, p[prefix + "Dense_0/kernel"], p[prefix + "Dense_0/bias"])
    hidden = nv.gelu_tanh(pre)
    out = nv.dense(hidden, p[prefix + "Dense_1/kernel"], p[prefix + "Dense_1/bias"])
    return out, (x, pre, hidden)


def _mlp_bwd(dout: np.ndarray, cache, p: Mapping[str, np.ndarray], grads, prefix):
    """MLP backward."""
    x, pre, hidden = cache
    dhidden = _dense_bwd(dout, hidden, p[prefix + "Dense_1/kernel"], grads, prefix + "Dense_1/")
    dpre = dhidden * _gelu_derivative(pre)
    return _dense_bwd(dpre, x, p[prefix + "Dense_0/kernel"], grads, prefix + "Dense_0/")


def _block_fwd(x: np.ndarray, p: Mapping[str, np.ndarray], prefix: str):
    """Pre-norm encoder block: x + MHA(LN0(x)), then x + MLP(LN2(x))."""
    y, ln0 = _layer_norm_fwd(x, p[prefix + "LayerNorm_0/scale"], p[prefix + "LayerNorm_0/bias"])
    a, att = _attention_fwd(y, p, prefix + _ATTENTION)
    x = x + a
    y, ln2 = _layer_norm_fwd(x, p[prefix + "LayerNorm_2/scale"], p[prefix + "LayerNorm_2/bias"])
    m, mlp = _mlp_fwd(y, p, prefix + _MLP)
    return x + m, (ln0, att, ln2, mlp)


def _block_bwd(dout: np.ndarray, cache, p: Mapping[str, np.ndarray], grads, prefix):
    """Encoder block backward; each residual passes the gradient straight through."""
    ln0, att, ln2, mlp = cache
    dy = _mlp_bwd(dout, mlp, p, grads, prefix + _MLP)
    dmid = dout + _layer_norm_bwd(dy, ln2, grads, prefix + "LayerNorm_2/")
    dy = _attention_bwd(dmid, att, p, grads, prefix + _ATTENTION)
    return dmid + _layer_norm_bwd(dy, ln0, grads, prefix + "LayerNorm_0/")


def _patches(x: np.ndarray, patch: int) -> np.ndarray:
    """(B, N, P*P*C) patches in row-major grid order, flattened as an HWIO kernel's (H, W, I).

    With this layout the VALID, stride-P patch convolution is one matrix product; pixels past
    the last whole patch are dropped as VALID padding drops them.
    """
    b, h, w, c = x.shape
    gh, gw = h // patch, w // patch
    x = x[:, : gh * patch, : gw * patch].reshape(b, gh, patch, gw, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, patch * patch * c)


# ---------------------------------------------------------------------------------------------
# Whole model
# ---------------------------------------------------------------------------------------------


def _check_supported(p: Mapping[str, np.ndarray], images: np.ndarray) -> None:
    """Reject inputs this reference does not cover rather than silently mis-train them."""
    if "conv_root/kernel" in p:
        raise ValueError("numpy_train covers the plain ViT only, not the hybrid ResNet stem")
    if images.ndim != 4:
        raise ValueError(f"images must be NHWC, got shape {images.shape}")


def _forward(p: Mapping[str, np.ndarray], images: np.ndarray):
    """Float64 logits and every intermediate the backward pass needs."""
    images = np.asarray(images)
    _check_supported(p, images)
    kernel = p["embedding/kernel"]
    patches = _patches(nv.normalise_pixels(images), kernel.shape[0])
    x = patches @ kernel.reshape(-1, kernel.shape[-1]) + p["embedding/bias"]
    if "cls" in p:
        cls = np.broadcast_to(p["cls"].reshape(1, 1, -1), (x.shape[0], 1, x.shape[2]))
        x = np.concatenate([cls, x], axis=1)
    if p[_POSEMB].shape[1] != x.shape[1]:
        raise ValueError(f"position embedding has {p[_POSEMB].shape[1]} rows, tokens: {x.shape[1]}")
    x = x + p[_POSEMB]  # every token, the class token included
    blocks = []
    for i in range(nv.encoder_depth(p)):
        x, cache = _block_fwd(x, p, _BLOCK.format(i))
        blocks.append(cache)
    x, enc = _layer_norm_fwd(x, p[_ENCODER_NORM + "scale"], p[_ENCODER_NORM + "bias"])
    pooled = x[:, 0] if "cls" in p else x.mean(axis=1)
    features = pooled
    if "pre_logits/kernel" in p:
        features = np.tanh(nv.dense(pooled, p["pre_logits/kernel"], p["pre_logits/bias"]))
    logits = nv.dense(features, p["head/kernel"], p["head/bias"])
    cache = dict(patches=patches, blocks=blocks, enc=enc, tokens=x.shape[1], pooled=pooled,
                 features=features)
    return logits, cache


def _backward(p: Mapping[str, np.ndarray], cache: dict, dlogits: np.ndarray) -> Params:
    """Gradients of every parameter given the gradient of the loss w.r.t. the logits."""
    grads: Params = {}
    dfeatures = _dense_bwd(dlogits, cache["features"], p["head/kernel"], grads, "head/")
    dpooled = dfeatures
    if "pre_logits/kernel" in p:
        dpre = dfeatures * (1.0 - cache["features"] ** 2)  # tanh' = 1 - tanh^2
        dpooled = _dense_bwd(dpre, cache["pooled"], p["pre_logits/kernel"], grads, "pre_logits/")
    batch, tokens, width = dpooled.shape[0], cache["tokens"], dpooled.shape[1]
    dx = np.zeros((batch, tokens, width))
    if "cls" in p:
        dx[:, 0] = dpooled
    else:
        dx[:] = dpooled[:, None, :] / tokens  # the mean spreads its gradient evenly
    dx = _layer_norm_bwd(dx, cache["enc"], grads, _ENCODER_NORM)
    for i in reversed(range(len(cache["blocks"]))):
        dx = _block_bwd(dx, cache["blocks"][i], p, grads, _BLOCK.format(i))
    grads[_POSEMB] = dx.sum(axis=0, keepdims=True)
    if "cls" in p:
        grads["cls"] = dx[:, 0].sum(axis=0).reshape(p["cls"].shape)
        dx = dx[:, 1:]
    kernel = p["embedding/kernel"]
    patches = cache["patches"]
    flat = patches.reshape(-1, patches.shape[-1]).T @ dx.reshape(-1, width)
    grads["embedding/kernel"] = flat.reshape(kernel.shape)
    grads["embedding/bias"] = _sum_leading(dx)
    return grads


def label_distribution(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(B, K) float64 targets from int class indices (B,) or from (B, K) distributions.

    Distributions are used as given (one-hot, smoothed or soft); nothing renormalises them.
    """
    labels = np.asarray(labels)
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"1-D labels must be int class indices, got {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"class indices must lie in [0, {num_classes})")
        return np.eye(num_classes)[labels]
    if labels.ndim != 2 or labels.shape[1] != num_classes:
        raise ValueError(f"labels must be (B,) or (B, {num_classes}), got {labels.shape}")
    return labels.astype(np.float64)


def cross_entropy_and_gradient(logits: np.ndarray, labels: np.ndarray):
    """Mean softmax cross-entropy over the batch and its gradient w.r.t. the logits."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = label_distribution(labels, logits.shape[1])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -(targets * log_probs).sum(axis=1).mean()
    # d/dz of -sum_k y_k log softmax(z)_k is softmax(z) * sum(y) - y; sum(y) is 1 for
    # distributions but the general form keeps unnormalised targets exact too.
    dlogits = np.exp(log_probs) * targets.sum(axis=1, keepdims=True) - targets
    return float(loss), dlogits / logits.shape[0]


def mean_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of (B, K) logits against int or (B, K) labels."""
    return cross_entropy_and_gradient(logits, labels)[0]


def _as_float64(params: Mapping[str, np.ndarray]) -> Params:
    """Float64 copies: the pass runs in double precision whatever the stored dtype."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def logits(params: Mapping[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Float64 logits (B, K) from this module's own forward (which the backward relies on)."""
    return _forward(_as_float64(params), images)[0]


def loss_and_gradients(
    params: Mapping[str, np.ndarray], images: np.ndarray, labels: np.ndarray
) -> tuple[float, Params]:
    """Mean cross-entropy of a batch and its exact gradient w.r.t. every parameter array.

    `images` are raw NHWC pixels in [0, 255] (any dtype); `labels` are int class indices (B,)
    or (B, K) target distributions. The gradient dict has the same keys and shapes as `params`,
    in float64, whatever the dtype of `params`.
    """
    p = _as_float64(params)
    out, cache = _forward(p, images)
    loss, dlogits = cross_entropy_and_gradient(out, labels)
    grads = _backward(p, cache, dlogits)
    if grads.keys() != p.keys():
        raise ValueError(f"no gradient for {sorted(p.keys() - grads.keys())}")
    return loss, grads


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule and clipping
# ---------------------------------------------------------------------------------------------


def learning_rate(
    step: int,
    *,
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    schedule: str = "cosine",
) -> float:
    """The reference schedule: `base * min(1, step / warmup) * decay(p)`.

    `p = clip((step - warmup) / (total - warmup), 0, 1)`; decay is `0.5 (1 + cos(pi p))` for
    "cosine" and `1 - p` for "linear" (to zero). Without warm-up the warm-up factor is 1.
    The optimizer calls this with its own update count, starting at 0: the k-th update
    (1-based) uses `learning_rate(k - 1)`, so with warm-up the first update has rate 0.
    """
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps {total_steps} must exceed warmup_steps {warmup_steps}")
    progress = min(max((step - warmup_steps) / (total_steps - warmup_steps), 0.0), 1.0)
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        decay = 1.0 - progress
    else:
        raise ValueError(f"schedule must be 'cosine' or 'linear', got {schedule!r}")
    warmup = min(1.0, step / warmup_steps) if warmup_steps else 1.0
    return base_lr * warmup * decay


def global_norm(tree: Mapping[str, np.ndarray]) -> float:
    """Square root of the sum of squares over all arrays (optax.global_norm)."""
    return math.sqrt(sum(float(np.sum(np.asarray(t, np.float64) ** 2)) for t in tree.values()))


def clip_by_global_norm(grads: Mapping[str, np.ndarray], max_norm: float | None) -> Params:
    """optax.clip_by_global_norm: unchanged below `max_norm`, else every array `t / n * max`.

    `None` or 0 disables clipping (the arrays come back unchanged, as float64).
    """
    grads = _as_float64(grads)
    if not max_norm:
        return grads
    norm = global_norm(grads)
    if norm < max_norm:
        return grads
    return {k: g / norm * max_norm for k, g in grads.items()}


# ---------------------------------------------------------------------------------------------
# Optimizers. Updates return float64 parameters; state is stored in its storage dtype.
# ---------------------------------------------------------------------------------------------


def _store(tree: Mapping[str, np.ndarray], dtype: str) -> Params:
    """Round state arrays to their storage dtype, as the reference casts its stored state."""
    return {k: np.asarray(v, dtype=STATE_DTYPES[dtype]) for k, v in tree.items()}


def decayed_state(stored: np.ndarray, decay: float) -> np.ndarray:
    """`decay * stored` as optax computes it: in the state's own dtype. JAX's weak typing
    keeps a Python float times a bfloat16 array in bfloat16, so for bfloat16 state the factor
    is rounded to bfloat16 (0.9 -> 0.8984375) and so is the product; float32 state is
    multiplied in float64 here (the difference is float32 round-off)."""
    stored = np.asarray(stored)
    if stored.dtype == STATE_DTYPES["bfloat16"]:
        factor = np.float64(np.asarray(decay, dtype=stored.dtype))
        product = (factor * stored.astype(np.float64)).astype(stored.dtype)  # exact, rounded once
        return product.astype(np.float64)
    return decay * stored.astype(np.float64)


def zeros_state(params: Mapping[str, np.ndarray], dtype: str = "float32") -> Params:
    """Zero optimizer state shaped like `params` (optax initialises traces and moments at 0)."""
    return {k: np.zeros(np.shape(v), dtype=STATE_DTYPES[dtype]) for k, v in params.items()}


def sgd_momentum_update(
    params: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    trace: Mapping[str, np.ndarray],
    *,
    lr: float,
    momentum: float = 0.9,
    accumulator_dtype: str = "float32",
) -> tuple[Params, Params]:
    """One step of `optax.sgd(lr_fn, momentum, accumulator_dtype=...)`, the fine-tuning rule.

    `m_new = g + momentum * m` (the product in the stored dtype, see `decayed_state`), then
    `w <- w - lr * m_new` with `lr = lr_fn(count)`. Only the stored trace is rounded to
    `accumulator_dtype`; the update uses the unrounded `m_new`. This differs from Keras' SGD
    (`m = momentum * m - lr * g; w += m`) whenever the rate changes between steps, because
    the reference multiplies the whole trace by the current rate. Returns float64 params and
    the stored trace.
    """
    new_params, new_trace = {}, {}
    for key, w in params.items():
        m = np.asarray(grads[key], np.float64) + decayed_state(trace[key], momentum)
        new_trace[key] = m
        new_params[key] = np.asarray(w, np.float64) - lr * m
    return new_params, _store(new_trace, accumulator_dtype)


def is_decayed(key: str) -> bool:
    """Weight decay applies to kernels only, not biases, norm scales, cls or pos_embedding."""
    return key.endswith("/kernel")


@dataclass
class AdamState:
    """Adam moments as stored (mu in `mu_dtype`, nu in `nu_dtype`) and the update count."""

    mu: Params
    nu: Params
    count: int = 0


def adam_init(
    params: Mapping[str, np.ndarray], mu_dtype: str = "float32", nu_dtype: str = "float32"
) -> AdamState:
    """Zero moments and count 0, as optax.scale_by_adam initialises them."""
    return AdamState(zeros_state(params, mu_dtype), zeros_state(params, nu_dtype), 0)


def adamw_update(
    params: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    state: AdamState,
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mu_dtype: str = "float32",
    nu_dtype: str = "float32",
) -> tuple[Params, AdamState]:
    """One step of big_vision's pre-training chain, after clipping.

    big_vision: scale_by_adam(b1, b2, eps, eps_root=0, mu_dtype) -> scale(lr_base) ->
    add_decayed_weights(wd_bv, kernels only) -> scale_by_schedule(s(count)) -> scale(-1), i.e.
        kernels: w <- w - s(count) * (lr_base * dir + wd_bv * w)
        others:  w <- w - s(count) * lr_base * dir
    with `dir = mu_hat / (sqrt(nu_hat) + eps)`, `mu = (1-b1) g + b1 mu`,
    `nu = (1-b2) g^2 + b2 nu`, `mu_hat = mu / (1 - b1^t)`, `nu_hat = nu / (1 - b2^t)`,
    `t = count + 1`, and s the schedule with base 1.
    Parametrised here as vitcli does, with `lr = lr_base * s(count)` (the full schedule at
    the current count) and a "paper" weight decay `weight_decay = wd_bv / lr_base`:
        kernels: w <- w - lr * (dir + weight_decay * w)
        others:  w <- w - lr * dir
    The bias corrections use the unrounded moments; only the stored mu is rounded to
    `mu_dtype` and nu to `nu_dtype` (float32 in the reference).
    """
    t = state.count + 1
    new_params, mu, nu = {}, {}, {}
    for key, w in params.items():
        g = np.asarray(grads[key], np.float64)
        w = np.asarray(w, np.float64)
        mu[key] = (1.0 - beta1) * g + decayed_state(state.mu[key], beta1)
        nu[key] = (1.0 - beta2) * g * g + beta2 * np.asarray(state.nu[key], np.float64)
        mu_hat = mu[key] / (1.0 - beta1**t)
        nu_hat = nu[key] / (1.0 - beta2**t)
        step = mu_hat / (np.sqrt(nu_hat) + eps)
        if is_decayed(key):
            step = step + weight_decay * w
        new_params[key] = w - lr * step
    return new_params, AdamState(_store(mu, mu_dtype), _store(nu, nu_dtype), t)


# ---------------------------------------------------------------------------------------------
# Trajectory driver
# ---------------------------------------------------------------------------------------------


def _to_float32(params: Mapping[str, np.ndarray]) -> Params:
    """Round parameters to float32, the precision the model under test keeps them in."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}


def train_trajectory(
    params: Mapping[str, np.ndarray],
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    optimizer: str = "sgd",
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    schedule: str = "cosine",
    momentum: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    grad_clip_norm: float | None = 1.0,
    accumulator_dtype: str = "float32",
) -> tuple[list[float], Params]:
    """Train on `batches` (a list of (images, labels)), one update per batch.

    Returns each step's mean batch loss at the pre-update parameters (what a training loop
    reports) and the final float32 parameters. Each step: float64 loss and gradient from the
    float32 parameters, global-norm clipping, the optimizer update in float64 with rate
    `learning_rate(count)` for update count 0, 1, ..., and rounding back to float32.
    `optimizer` is "sgd" (fine-tuning; no weight decay, `accumulator_dtype` is the trace's) or
    "adamw" (pre-training; `accumulator_dtype` is mu's, nu stays float32).
    """
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    if optimizer == "sgd" and weight_decay:
        raise ValueError("the reference fine-tuning SGD has no weight decay")
    params = _to_float32(params)
    trace = zeros_state(params, accumulator_dtype)
    adam = adam_init(params, mu_dtype=accumulator_dtype)
    losses = []
    for count, (images, labels) in enumerate(batches):
        loss, grads = loss_and_gradients(params, images, labels)
        losses.append(loss)
        grads = clip_by_global_norm(grads, grad_clip_norm)
        lr = learning_rate(count, base_lr=base_lr, warmup_steps=warmup_steps,
                           total_steps=total_steps, schedule=schedule)
        if optimizer == "sgd":
            new, trace = sgd_momentum_update(params, grads, trace, lr=lr, momentum=momentum,
                                             accumulator_dtype=accumulator_dtype)
        else:
            new, adam = adamw_update(params, grads, adam, lr=lr, beta1=beta1, beta2=beta2,
                                     eps=eps, weight_decay=weight_decay,
                                     mu_dtype=accumulator_dtype)
        params = _to_float32(new)
    return losses, params
