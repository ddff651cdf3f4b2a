"""Self-checks of the numpy training reference, each against an independent computation.

Gradients are checked against finite differences of `numpy_vit.forward` (a separate forward
pass), the loss against a cross-entropy written out here, and the schedule, clipping and
optimizers against hand arithmetic.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from tests.reference import numpy_train as nt
from tests.reference import numpy_vit as nv

TINY = dict(hidden_size=8, depth=2, num_heads=2, mlp_dim=16, patch_size=8, image_size=16,
            num_classes=3)
VARIANTS = {
    "token": dict(),
    "gap": dict(classifier="gap"),
    "token_pre_logits": dict(representation_size=5),
    "gap_pre_logits": dict(classifier="gap", representation_size=5),
}
BATCH = 3


def tiny_checkpoint(variant: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A random float32 tiny ViT of one of the `VARIANTS`."""
    return nv.random_checkpoint(seed, **TINY, **VARIANTS[variant])


def tiny_batch(seed: int = 1, soft: bool = False):
    """Raw [0, 255] float pixels and int labels or random soft label distributions."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 255.0, (BATCH, TINY["image_size"], TINY["image_size"], 3))
    if soft:
        raw = rng.uniform(0.1, 1.0, (BATCH, TINY["num_classes"]))
        return images, raw / raw.sum(axis=1, keepdims=True)
    return images, rng.integers(0, TINY["num_classes"], BATCH)


def independent_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy written with log-sum-exp, per row, from class indices or targets."""
    total = 0.0
    for row, label in zip(logits, labels, strict=True):
        lse = row.max() + math.log(sum(math.exp(z - row.max()) for z in row))
        target = np.eye(len(row))[label] if np.ndim(label) == 0 else label
        total -= float(np.dot(target, row - lse))
    return total / len(logits)


def five_point_derivative(f, h: float) -> float:
    """Fourth-order central difference f'(0) from f(+-h), f(+-2h)."""
    return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)


# ---------------------------------------------------------------------------------------------
# Loss and gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("soft", [False, True])
def test_loss_matches_numpy_vit_logits(variant, soft):
    params = tiny_checkpoint(variant)
    images, labels = tiny_batch(soft=soft)
    expected_logits = nv.forward(params, images)
    np.testing.assert_allclose(nt.logits(params, images), expected_logits, rtol=0, atol=1e-12)
    loss, _ = nt.loss_and_gradients(params, images, labels)
    assert loss == pytest.approx(independent_cross_entropy(expected_logits, labels), abs=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_match_finite_differences(variant):
    params = {k: v.astype(np.float64) for k, v in tiny_checkpoint(variant).items()}
    # Soft labels for the pre-logits variants, so both label forms are differentiated.
    images, labels = tiny_batch(soft="pre_logits" in variant)
    _, grads = nt.loss_and_gradients(params, images, labels)
    rng = np.random.default_rng(7)
    for key, value in params.items():
        for index in rng.choice(value.size, size=min(value.size, 5), replace=False):

            def loss_at(delta, key=key, index=index):
                shifted = params[key].copy()
                shifted.flat[index] += delta
                logits = nv.forward({**params, key: shifted}, images)
                return independent_cross_entropy(logits, labels)

            numeric = five_point_derivative(loss_at, 1e-3)
            analytic = grads[key].flat[index]
            # The differences are good to ~1e-11 absolute; the floor keeps gradients that are
            # zero in exact arithmetic (key biases, below) from dividing by rounding noise.
            error = abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-4)
            assert error < 1e-6, (key, index, numeric, analytic)


def test_key_bias_gradient_is_zero():
    # Softmax over keys ignores a shift shared by all keys, and q . b_k is such a shift.
    _, grads = nt.loss_and_gradients(tiny_checkpoint("token"), *tiny_batch())
    for i in range(TINY["depth"]):
        key = f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/key/bias"
        assert np.abs(grads[key]).max() < 1e-15


def test_gradients_cover_every_array_in_float64():
    params = tiny_checkpoint("token_pre_logits")
    _, grads = nt.loss_and_gradients(params, *tiny_batch())
    assert grads.keys() == params.keys()
    for key, value in params.items():
        assert grads[key].shape == value.shape, key
        assert grads[key].dtype == np.float64, key


def test_int_labels_equal_one_hot():
    params = tiny_checkpoint("gap")
    images, labels = tiny_batch()
    loss_int, grads_int = nt.loss_and_gradients(params, images, labels)
    loss_hot, grads_hot = nt.loss_and_gradients(params, images, np.eye(3)[labels])
    assert loss_int == loss_hot
    for key in params:
        np.testing.assert_array_equal(grads_int[key], grads_hot[key])


def test_cross_entropy_by_hand():
    # Logits (0, ln 3) give probabilities (1/4, 3/4).
    loss, dlogits = nt.cross_entropy_and_gradient(np.array([[0.0, math.log(3.0)]]), np.array([1]))
    assert loss == pytest.approx(-math.log(0.75), abs=1e-15)
    np.testing.assert_allclose(dlogits, [[0.25, -0.25]], atol=1e-15)
    # The gradient is of the batch mean: two identical rows halve it.
    _, dlogits = nt.cross_entropy_and_gradient(np.zeros((2, 2)), np.array([[1.0, 0.0]] * 2))
    np.testing.assert_allclose(dlogits, [[-0.25, 0.25]] * 2, atol=1e-15)


@pytest.mark.parametrize(
    "labels", [np.array([0.0, 1.0]), np.array([0, 3]), np.array([-1, 0]), np.zeros((2, 4))]
)
def test_bad_labels_are_rejected(labels):
    with pytest.raises(ValueError):
        nt.label_distribution(labels, 3)


def test_hybrid_is_rejected():
    params = nv.random_checkpoint(0, hidden_size=32, depth=1, num_heads=2, mlp_dim=8,
                                  patch_size=1, image_size=16, num_classes=3, resnet_layers=())
    with pytest.raises(ValueError, match="plain ViT"):
        nt.loss_and_gradients(params, np.zeros((1, 16, 16, 3)), np.array([0]))


# ---------------------------------------------------------------------------------------------
# Schedule and clipping
# ---------------------------------------------------------------------------------------------


def lr_at(step, schedule="cosine", warmup=10, total=110, base=0.1):
    """The schedule with the test's default settings."""
    return nt.learning_rate(step, base_lr=base, warmup_steps=warmup, total_steps=total,
                            schedule=schedule)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_warms_up_peaks_and_ends_at_zero(schedule):
    assert lr_at(0, schedule) == 0.0
    assert lr_at(5, schedule) == pytest.approx(0.05, abs=1e-15)
    assert lr_at(10, schedule) == pytest.approx(0.1, abs=1e-15)
    assert lr_at(110, schedule) == pytest.approx(0.0, abs=1e-15)
    assert lr_at(500, schedule) == pytest.approx(0.0, abs=1e-15)  # progress is clipped at 1


def test_schedule_decay_by_hand():
    # 100 decay steps after 10 of warm-up: step 35 is a quarter, 60 half way.
    assert lr_at(60, "cosine") == pytest.approx(0.05, abs=1e-15)
    assert lr_at(35, "cosine") == pytest.approx(0.1 * 0.5 * (1 + math.sqrt(0.5)), abs=1e-15)
    assert lr_at(35, "linear") == pytest.approx(0.075, abs=1e-15)
    assert lr_at(85, "linear") == pytest.approx(0.025, abs=1e-15)


def test_schedule_without_warmup_starts_at_base():
    assert lr_at(0, warmup=0, total=4) == 0.1
    assert lr_at(2, "linear", warmup=0, total=4) == pytest.approx(0.05, abs=1e-15)


def test_schedule_rejects_bad_settings():
    with pytest.raises(ValueError):
        lr_at(0, schedule="step")
    with pytest.raises(ValueError):
        lr_at(0, warmup=10, total=10)


def test_clipping_above_the_threshold_rescales_to_max_norm():
    grads = {"a": np.array([3.0, 4.0]), "b": np.array([[12.0]])}  # global norm 13
    clipped = nt.clip_by_global_norm(grads, 1.0)
    assert nt.global_norm(clipped) == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(clipped["a"], [3 / 13, 4 / 13], atol=1e-15)
    np.testing.assert_allclose(clipped["b"], [[12 / 13]], atol=1e-15)


@pytest.mark.parametrize("max_norm", [13.5, 100.0, None, 0])
def test_clipping_below_the_threshold_or_disabled_keeps_gradients(max_norm):
    grads = {"a": np.array([3.0, 4.0]), "b": np.array([[12.0]])}
    clipped = nt.clip_by_global_norm(grads, max_norm)
    for key in grads:
        np.testing.assert_array_equal(clipped[key], grads[key])


# ---------------------------------------------------------------------------------------------
# Optimizers on toys
# ---------------------------------------------------------------------------------------------


def test_sgd_momentum_two_steps_by_hand_differ_from_keras():
    # Quadratic L = w^2 (g = 2w) from w = 1, rates 0.1 then 0.2.
    params = {"w": np.array([1.0])}
    trace = nt.zeros_state(params)
    params, trace = nt.sgd_momentum_update(params, {"w": 2 * params["w"]}, trace, lr=0.1)
    np.testing.assert_allclose(params["w"], [0.8], atol=1e-15)  # m = 2
    params, trace = nt.sgd_momentum_update(params, {"w": 2 * params["w"]}, trace, lr=0.2)
    # m = 1.6 + 0.9 * 2 = 3.4; w = 0.8 - 0.2 * 3.4.
    np.testing.assert_allclose(params["w"], [0.12], atol=1e-15)
    assert trace["w"].dtype == np.float32 and trace["w"][0] == np.float32(3.4)
    # Keras: m = -0.1 * 2 = -0.2, w = 0.8; m = 0.9 * -0.2 - 0.2 * 1.6 = -0.5, w = 0.3.
    assert abs(params["w"][0] - 0.3) > 0.1


def test_sgd_with_zero_first_rate_only_accumulates():
    # With warm-up, lr(0) = 0: the first update moves nothing but the trace still holds g.
    params = {"w": np.array([1.0, -2.0])}
    grads = {"w": np.array([0.5, 0.25])}
    new, trace = nt.sgd_momentum_update(params, grads, nt.zeros_state(params), lr=0.0)
    np.testing.assert_array_equal(new["w"], params["w"])
    np.testing.assert_array_equal(trace["w"], [0.5, 0.25])


def test_adamw_two_steps_by_hand_with_kernel_only_decay():
    params = {"dense/kernel": np.array([2.0]), "dense/bias": np.array([2.0])}
    state = nt.adam_init(params, mu_dtype="float64", nu_dtype="float64")
    grads = {"dense/kernel": np.array([0.5]), "dense/bias": np.array([0.5])}
    kw = dict(weight_decay=0.1, mu_dtype="float64", nu_dtype="float64")
    params, state = nt.adamw_update(params, grads, state, lr=0.1, **kw)
    # t = 1: mu = 0.05, nu = 0.00025, mu_hat = 0.5, nu_hat = 0.25, dir = 0.5 / (0.5 + 1e-8).
    direction = 0.5 / (0.5 + 1e-8)
    kernel1 = 2.0 - 0.1 * (direction + 0.1 * 2.0)
    np.testing.assert_allclose(params["dense/kernel"], [kernel1], rtol=1e-14)
    np.testing.assert_allclose(params["dense/bias"], [2.0 - 0.1 * direction], rtol=1e-14)
    assert state.count == 1
    np.testing.assert_allclose(state.mu["dense/kernel"], [0.05], rtol=1e-14)
    np.testing.assert_allclose(state.nu["dense/kernel"], [0.00025], rtol=1e-14)

    grads = {"dense/kernel": np.array([-0.25]), "dense/bias": np.array([-0.25])}
    params, state = nt.adamw_update(params, grads, state, lr=0.05, **kw)
    # t = 2: mu = -0.025 + 0.045 = 0.02, nu = 0.0000625 + 0.00024975 = 0.00031225,
    # bias corrections 1 - 0.9^2 = 0.19 and 1 - 0.999^2 = 0.001999.
    direction = (0.02 / 0.19) / (math.sqrt(0.00031225 / 0.001999) + 1e-8)
    expected_kernel = kernel1 - 0.05 * (direction + 0.1 * kernel1)
    np.testing.assert_allclose(params["dense/kernel"], [expected_kernel], rtol=1e-13)
    bias1 = 2.0 - 0.1 * (0.5 / (0.5 + 1e-8))
    np.testing.assert_allclose(params["dense/bias"], [bias1 - 0.05 * direction], rtol=1e-13)


def test_adamw_paper_form_equals_big_vision_form():
    # big_vision: w - s * (lr_base * dir + wd_bv * w); here lr = lr_base * s and
    # weight_decay = wd_bv / lr_base. lr_base 0.2, s 0.5, wd_bv 0.02.
    params = {"head/kernel": np.array([2.0, -1.0]), "head/bias": np.array([0.5, 0.5])}
    grads = {"head/kernel": np.array([0.3, -0.7]), "head/bias": np.array([-0.2, 0.4])}
    state = nt.adam_init(params)
    new, _ = nt.adamw_update(params, grads, state, lr=0.2 * 0.5, weight_decay=0.02 / 0.2)
    for key, w in params.items():
        g = grads[key]
        direction = g / (np.abs(g) + 1e-8)  # the first step's bias-corrected moments
        decay = 0.02 * w if key.endswith("/kernel") else 0.0
        np.testing.assert_allclose(new[key], w - 0.5 * (0.2 * direction + decay), rtol=1e-14)


def test_weight_decay_mask():
    decayed = ["embedding/kernel", "head/kernel", "pre_logits/kernel",
               "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel",
               "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel"]
    kept = ["cls", "Transformer/posembed_input/pos_embedding", "head/bias",
            "Transformer/encoder_norm/scale", "Transformer/encoderblock_0/LayerNorm_0/bias"]
    assert all(nt.is_decayed(k) for k in decayed)
    assert not any(nt.is_decayed(k) for k in kept)


def bfloat16_round(x: np.ndarray) -> np.ndarray:
    """Round float64 values to bfloat16 and back."""
    return np.asarray(x, dtype=ml_dtypes.bfloat16).astype(np.float64)


def test_sgd_bfloat16_trace_is_rounded_but_update_is_not():
    params = {"w": np.array([1.0, 1.0])}
    g1 = np.array([0.1, 1.0 / 3.0])  # neither is a bfloat16 value
    assert np.all(bfloat16_round(g1) != g1)
    trace = nt.zeros_state(params, "bfloat16")
    params1, trace = nt.sgd_momentum_update(params, {"w": g1}, trace, lr=0.5,
                                            accumulator_dtype="bfloat16")
    assert trace["w"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(trace["w"].astype(np.float64), bfloat16_round(g1))
    np.testing.assert_array_equal(params1["w"], 1.0 - 0.5 * g1)  # the unrounded m_new
    g2 = np.array([0.2, -0.3])
    params2, _ = nt.sgd_momentum_update(params1, {"w": g2}, trace, lr=0.5,
                                        accumulator_dtype="bfloat16")
    # The second step starts from the rounded stored trace, decayed in bfloat16 as optax
    # does: the factor 0.9 becomes 0.8984375 and the product is rounded once more.
    decayed = bfloat16_round(0.8984375 * bfloat16_round(g1))
    np.testing.assert_allclose(params2["w"], params1["w"] - 0.5 * (g2 + decayed), rtol=1e-15)
    assert np.all(params2["w"] != params1["w"] - 0.5 * (g2 + 0.9 * g1))


def test_adam_bfloat16_mu_is_rounded_but_update_is_not():
    params = {"dense/kernel": np.array([1.0, -1.0])}
    g = np.array([0.3, -0.7])
    state = nt.adam_init(params, mu_dtype="bfloat16")
    new, state = nt.adamw_update(params, {"dense/kernel": g}, state, lr=0.01,
                                 mu_dtype="bfloat16")
    mu, nu = 0.1 * g, 0.001 * g * g
    assert state.mu["dense/kernel"].dtype == ml_dtypes.bfloat16
    assert state.nu["dense/kernel"].dtype == np.float32
    np.testing.assert_array_equal(state.mu["dense/kernel"].astype(np.float64), bfloat16_round(mu))
    assert np.all(bfloat16_round(mu) != mu)
    np.testing.assert_array_equal(state.nu["dense/kernel"], nu.astype(np.float32))
    expected = params["dense/kernel"] - 0.01 * (mu / 0.1) / (np.sqrt(nu / 0.001) + 1e-8)
    np.testing.assert_allclose(new["dense/kernel"], expected, rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# Trajectory driver
# ---------------------------------------------------------------------------------------------


def test_sgd_trajectory_wiring():
    params = tiny_checkpoint("token")
    batch = tiny_batch()
    kw = dict(optimizer="sgd", base_lr=0.2, warmup_steps=2, total_steps=6, grad_clip_norm=1.0)
    losses, final = nt.train_trajectory(params, [batch] * 3, **kw)
    # Update 1 uses lr(0) = 0: the second batch sees the same parameters.
    assert losses[0] == losses[1]
    assert losses[2] < losses[1]
    assert all(v.dtype == np.float32 for v in final.values())
    # After two updates: the first (rate 0) stored the float32 trace g and left w alone, so the
    # second saw the same clipped g again: w - lr(1) * (g + 0.9 * float32(g)), in float32.
    _, two = nt.train_trajectory(params, [batch] * 2, **kw)
    _, g = nt.loss_and_gradients(params, *batch)
    g = nt.clip_by_global_norm(g, 1.0)
    lr1 = nt.learning_rate(1, base_lr=0.2, warmup_steps=2, total_steps=6)
    for key, w in params.items():
        m = g[key] + 0.9 * g[key].astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal(two[key], (w.astype(np.float64) - lr1 * m).astype(np.float32))


def test_adamw_trajectory_first_step_is_sign_like():
    params = tiny_checkpoint("gap")
    kw = dict(optimizer="adamw", base_lr=1e-3, warmup_steps=0, total_steps=10,
              weight_decay=0.1, grad_clip_norm=1.0)
    losses, final = nt.train_trajectory(params, [tiny_batch()], **kw)
    loss, grads = nt.loss_and_gradients(params, *tiny_batch())
    assert losses == [loss]
    grads = nt.clip_by_global_norm(grads, 1.0)
    for key, w in params.items():
        # Adam's first direction is g / (|g| + eps) of the clipped g; the rate is the full base
        # at step 0 without warm-up.
        g = grads[key]
        sign = g / (np.abs(g) + 1e-8)
        decay = 0.1 * w if key.endswith("/kernel") else 0.0
        expected = w.astype(np.float64) - 1e-3 * (sign + decay)
        np.testing.assert_allclose(final[key], expected, rtol=0, atol=2e-7, err_msg=key)


def test_trajectory_rejects_sgd_weight_decay():
    with pytest.raises(ValueError, match="weight decay"):
        nt.train_trajectory(tiny_checkpoint("token"), [tiny_batch()], optimizer="sgd",
                            base_lr=0.1, warmup_steps=0, total_steps=2, weight_decay=0.1)
