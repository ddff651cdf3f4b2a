"""The reference recipes' optimizers and learning-rate schedule (docs/reference.md, "Training").

Keras' own SGD and AdamW are close to, but not, what the paper's code runs:
- Keras SGD keeps the learning rate inside the momentum buffer (m <- 0.9 m - lr g;
  w <- w + m). The reference fine-tunes with optax's sgd, which keeps raw gradients there
  and applies the current rate afterwards (m <- g + 0.9 m; w <- w - lr m). The two agree
  only while the rate is constant, and a warm-up + cosine schedule never is.
- Keras Adam adds epsilon to sqrt(v) before bias correction; optax's scale_by_adam, which
  big_vision pre-trains with, adds it to sqrt(v_hat).
So both are written here as small Keras optimizers; everything else (distribution, loss
scaling, EMA, the step counter) is Keras' own.

The schedule is evaluated at the optimizer's step count before the update, starting from 0,
as optax does: the first update of a warm-up run has rate 0.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from vitcli.config import MOMENTUM_DTYPES, TrainConfig
from vitcli.errors import VitcliError


@keras.saving.register_keras_serializable(package="vitcli")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """base * min(1, step / warmup) * decay(p), p = clip((step - warmup) / (total - warmup), 0, 1).

    decay is 0.5 * (1 + cos(pi p)) for `cosine` and 1 - p for `linear` (to zero, as
    big_vision's default).
    """

    def __init__(self, base: float, warmup_steps: int, total_steps: int, decay: str = "cosine"):
        if decay not in ("cosine", "linear"):
            raise VitcliError(f"schedule must be 'cosine' or 'linear', not '{decay}'")
        self.base = base
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.decay = decay

    def __call__(self, step):
        step = ops.cast(step, "float32")
        # No warm-up means none at all (the reference multiplies by the ramp only `if
        # warmup_steps`): the first update then uses the full rate, not 0/1.
        warmup = ops.minimum(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "cosine":
            decay = 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            decay = 1.0 - progress
        return self.base * warmup * decay

    def get_config(self):
        return {"base": self.base, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "decay": self.decay}


class _ReferenceOptimizer(keras.optimizers.Optimizer):
    """Shared parts: optimizer state kept in `momentum_dtype` (float32, or bfloat16 as the
    reference stores it to save memory), and per-variable learning-rate multipliers
    (`rate_multipliers`, by variable path; layer-wise decay, vitcli.train.groups): a
    variable's whole update is scaled, Adam's decoupled weight decay included."""

    def __init__(self, learning_rate, momentum_dtype: str = "float32",
                 rate_multipliers: dict[str, float] | None = None, **kwargs):
        if momentum_dtype not in MOMENTUM_DTYPES:
            raise VitcliError(f"unknown momentum dtype '{momentum_dtype}'",
                              hint=f"use {' or '.join(MOMENTUM_DTYPES)}")
        super().__init__(learning_rate, **kwargs)
        self.momentum_dtype = momentum_dtype
        self.rate_multipliers = dict(rate_multipliers or {})
        # The rate as a function of the step count, as given (the run's log reports it).
        self.schedule = learning_rate

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # By index, decided on the Keras variables (update_step may see the backend's own).
        self.variable_multipliers = [self.rate_multipliers.get(variable.path, 1.0)
                             for variable in variables]

    def _variable_rate(self, learning_rate, index: int, variable):
        """The schedule's rate times the variable's multiplier, in the variable's dtype;
        untouched (the same graph, bit for bit) where the multiplier is 1."""
        learning_rate = ops.cast(learning_rate, variable.dtype)
        multiplier = self.variable_multipliers[index]
        return learning_rate if multiplier == 1 else ops.multiply(learning_rate, multiplier)

    def _slots(self, variables, name: str, dtype: str | None = None):
        return [self.add_variable(shape=variable.shape, dtype=dtype or variable.dtype,
                                  name=f"{variable.path.replace('/', '_')}_{name}")
                for variable in variables]

    def _decayed_moment(self, moment, decay: float, variable):
        """decay * moment, computed in the moment's own dtype as optax does (in bfloat16,
        the factor itself is rounded to bfloat16), then widened to the variable's dtype."""
        return ops.cast(ops.multiply(moment, ops.cast(decay, moment.dtype)), variable.dtype)

    def get_config(self):
        return {**super().get_config(), "momentum_dtype": self.momentum_dtype,
                "rate_multipliers": self.rate_multipliers}


@keras.saving.register_keras_serializable(package="vitcli")
class ReferenceSGD(_ReferenceOptimizer):
    """optax.sgd with momentum, as the reference fine-tunes:

        m_t = g_t + momentum * m_{t-1}      (stored in momentum_dtype)
        w_t = w_{t-1} - lr(t - 1) * m_t     (the un-rounded m_t)
    """

    def __init__(self, learning_rate, momentum: float = 0.9, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = momentum

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self._slots(variables, "momentum", self.momentum_dtype)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = self._variable_rate(learning_rate, index, variable)
        stored = self.momentums[index]
        trace = ops.add(ops.cast(gradient, variable.dtype),
                        self._decayed_moment(stored, self.momentum, variable))
        self.assign(stored, trace)
        self.assign_sub(variable, ops.multiply(learning_rate, trace))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


def _bias_correction(beta: float, step):
    """1 - beta^step, accurate in float32: written as -expm1(step * log(beta)) with the log
    taken in double precision. The plain form rounds beta2 = 0.999 to float32 first and is
    then off by 1.3e-5 (relative) in the first steps, where 1 - beta2^t is small."""
    return -ops.expm1(ops.multiply(step, math.log(beta)))


def is_decayed(variable) -> bool:
    """Weight decay applies to kernels only (big_vision's default `.*/kernel$`): not to
    biases, norm scales and offsets, the class token or the position embeddings."""
    return variable.name == "kernel"


@keras.saving.register_keras_serializable(package="vitcli")
class ReferenceAdamW(_ReferenceOptimizer):
    """big_vision's pre-training chain: optax scale_by_adam, then the base rate, then
    decoupled weight decay on kernels, all scaled by the schedule:

        mu = (1 - b1) g + b1 mu;  nu = (1 - b2) g^2 + b2 nu;  t = step + 1
        direction = (mu / (1 - b1^t)) / (sqrt(nu / (1 - b2^t)) + epsilon)
        w <- w - lr(step) * (direction + weight_decay * w)      (weight decay on kernels)

    `weight_decay` is the paper's convention (0.1), multiplied by the current learning
    rate; big_vision's configs write the same decay as wd = weight_decay * base rate
    (0.1 x 0.001 = 1e-4). The first moment is stored in `momentum_dtype` (big_vision's
    mu_dtype), the second in float32.
    """

    def __init__(self, learning_rate, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, weight_decay: float = 0.0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.decoupled_weight_decay = weight_decay

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.first_moments = self._slots(variables, "mu", self.momentum_dtype)
        self.second_moments = self._slots(variables, "nu")
        # Decided here, on the Keras variables: update_step may see the backend's own
        # variable, whose name differs.
        self._decays = [is_decayed(variable) for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = self._variable_rate(learning_rate, index, variable)
        gradient = ops.cast(gradient, variable.dtype)
        stored_mu, stored_nu = self.first_moments[index], self.second_moments[index]
        mu = ops.add(ops.multiply(1.0 - self.beta_1, gradient),
                     self._decayed_moment(stored_mu, self.beta_1, variable))
        nu = ops.add(ops.multiply(1.0 - self.beta_2, ops.square(gradient)),
                     ops.multiply(self.beta_2, stored_nu))
        step = ops.cast(self.iterations + 1, variable.dtype)
        mu_hat = ops.divide(mu, _bias_correction(self.beta_1, step))
        nu_hat = ops.divide(nu, _bias_correction(self.beta_2, step))
        direction = ops.divide(mu_hat, ops.add(ops.sqrt(nu_hat), self.epsilon))
        if self.decoupled_weight_decay and self._decays[index]:
            direction = ops.add(direction, ops.multiply(self.decoupled_weight_decay, variable))
        self.assign(stored_mu, mu)
        self.assign(stored_nu, nu)
        self.assign_sub(variable, ops.multiply(learning_rate, direction))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "weight_decay": self.decoupled_weight_decay}


def make_schedule(config: TrainConfig, total_steps: int) -> WarmupDecay:
    return WarmupDecay(config.learning_rate, config.warmup_steps, total_steps, config.schedule)


def make_optimizer(config: TrainConfig, total_steps: int,
                   rate_multipliers: dict[str, float] | None = None
                   ) -> keras.optimizers.Optimizer:
    """The reference's SGD (fine-tuning) or big_vision's AdamW (pre-training), on the
    warm-up schedule; `rate_multipliers` (variable path -> factor) scale some variables'
    rates (layer-wise decay: vitcli.train.groups.trained_variables).

    Clipping is not set here: the training step clips the all-reduced global gradient,
    which an optimizer's own `global_clipnorm` would do per replica.
    """
    schedule = make_schedule(config, total_steps)
    common = {"momentum_dtype": config.momentum_dtype, "rate_multipliers": rate_multipliers,
              "use_ema": config.ema_decay is not None,
              "ema_momentum": config.ema_decay or 0.99}
    if config.optimizer == "sgd":
        if config.weight_decay:
            raise VitcliError("weight decay is only supported with --optimizer adamw "
                              "(the reference fine-tunes with none)")
        return ReferenceSGD(schedule, momentum=config.momentum, **common)
    if config.optimizer in ("adam", "adamw"):
        return ReferenceAdamW(schedule, beta_1=config.beta1, beta_2=config.beta2,
                              epsilon=config.epsilon, weight_decay=config.weight_decay,
                              **common)
    raise VitcliError(f"unknown optimizer '{config.optimizer}'", hint="use sgd or adamw")
