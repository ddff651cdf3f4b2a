"""Learning-rate schedules and optimizers of the reference recipes (REFERENCE section 6)."""

from __future__ import annotations

import math

import keras
from keras import ops

from vitcli.config import TrainConfig
from vitcli.errors import VitcliError

# Not decayed in pre-training: biases, norm scales/offsets, and the embeddings.
NO_WEIGHT_DECAY = ["bias", "gamma", "beta", "pos_embedding", "cls", "mask_embedding"]


@keras.saving.register_keras_serializable(package="vitcli")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """base * min(1, step / warmup) * decay(p), p = clip((step - warmup) / (total - warmup), 0, 1).

    decay is 0.5 * (1 + cos(pi p)) for `cosine` and 1 - p for `linear`.
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
        warmup = ops.minimum(1.0, step / max(self.warmup_steps, 1))
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


def make_optimizer(config: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """SGD with momentum (fine-tuning) or AdamW (pre-training), with the warm-up schedule.

    Clipping is not set here: the training step clips the all-reduced global gradient,
    which an optimizer's own `global_clipnorm` would do per replica.
    """
    schedule = WarmupDecay(config.learning_rate, config.warmup_steps, total_steps,
                           config.schedule)
    ema = {"use_ema": config.ema_decay is not None,
           "ema_momentum": config.ema_decay or 0.99}
    if config.optimizer == "sgd":
        if config.weight_decay:
            raise VitcliError("weight decay is only supported with --optimizer adamw "
                              "(the reference fine-tunes with none)")
        return keras.optimizers.SGD(schedule, momentum=config.momentum, **ema)
    if config.optimizer in ("adam", "adamw"):
        optimizer = keras.optimizers.AdamW(
            schedule, weight_decay=config.weight_decay, beta_1=config.beta1,
            beta_2=config.beta2, **ema,
        )
        optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
        return optimizer
    raise VitcliError(f"unknown optimizer '{config.optimizer}'", hint="use sgd or adamw")
