"""How the global batch is reached on this machine: replicas x accumulated micro-batches.

With `--accum auto` (the default) the micro-batch is the largest divisor of the
per-replica batch whose estimated training memory fits the device (vitcli.train.memory);
the arithmetic is that of the full batch either way (the step sums the micro-batches'
gradients before one optimizer update).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vitcli.config import RunConfig
from vitcli.errors import VitcliError
from vitcli.train import memory

GIB = 1 << 30
MAX_EVAL_BATCH = 256


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    replicas: int
    micro_batch: int  # per replica and accumulation step
    accum_steps: int
    chosen: str  # "auto" or "given"
    estimated_peak_bytes: int | None = None
    budget_bytes: int | None = None

    @property
    def eval_batch(self) -> int:
        """Evaluation keeps no activations for a backward pass: a training micro-batch per
        replica always fits."""
        return min(MAX_EVAL_BATCH, self.micro_batch * self.replicas)

    def describe(self) -> str:
        text = (f"global batch {self.global_batch} = {self.replicas} replica(s) x "
                f"{self.accum_steps} micro-batch(es) x {self.micro_batch}")
        if self.estimated_peak_bytes is not None:
            text += f"; estimated peak {self.estimated_peak_bytes / GIB:.2f} GiB"
        if self.budget_bytes is not None:
            text += f" of {self.budget_bytes / GIB:.1f} GiB available"
        return text + (" (--accum auto)" if self.chosen == "auto" else "")

    def to_dict(self) -> dict:
        return {**asdict(self), "eval_batch": self.eval_batch}


def plan_batch(config: RunConfig, model, strategy, precision: str, device: str) -> BatchPlan:
    """The batch plan of a run: `--accum N` as given (checked), or the auto choice."""
    from vitcli.weights.checkpoint import config_from_model

    train, replicas = config.train, strategy.num_replicas_in_sync
    model_config = config_from_model(model)
    per_image = memory.training_bytes_per_image(model_config, precision, config.remat)
    fixed = memory.fixed_training_bytes(model_config, train.optimizer, train.momentum_dtype,
                                        precision=precision, remat=config.remat,
                                        ema=train.ema_decay is not None, device=device)
    # Accumulating keeps the replica's whole batch of pixels stacked for the step's loop.
    fixed += memory.stacked_input_bytes(model_config, train.batch_size // replicas)
    per_micro_batch, overlap = memory.accumulation_costs(model_config, device)

    def peak(micro: int, accum: int) -> int:
        return memory.plan_peak_bytes(micro, accum, per_image, fixed,
                                      per_micro_batch=per_micro_batch, accum_overlap=overlap)

    if train.accum_steps == "auto":
        budget = memory.available_bytes(device)
        micro, accum = memory.plan_micro_batch(
            train.batch_size, replicas, per_image, fixed, budget,
            per_micro_batch=per_micro_batch, accum_overlap=overlap)
        return BatchPlan(train.batch_size, replicas, micro, accum, "auto", peak(micro, accum),
                         budget)
    micro, remainder = divmod(train.batch_size, train.accum_steps * replicas)
    if remainder or micro < 1:
        raise VitcliError(f"--batch {train.batch_size} is not divisible by --accum "
                          f"{train.accum_steps} x {replicas} replicas",
                          hint="use --accum auto, or a batch that divides evenly")
    return BatchPlan(train.batch_size, replicas, micro, train.accum_steps, "given",
                     peak(micro, train.accum_steps))
