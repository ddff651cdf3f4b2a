"""The training loop: steps, logging, validation (best model kept), checkpoints, Ctrl-C."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from vitcli.clock import seconds_since_start
from vitcli.config import TrainConfig
from vitcli.train.callbacks import TrainingCallbacks
from vitcli.train.rundir import BEST_FILE, RunDirectory
from vitcli.train.state import save_state


@dataclass
class TrainingJob:
    """Everything the loop needs, built by `vitcli.train.run`."""

    model: object
    optimizer: object
    train_step: object  # tf.function(iterator) -> loss
    iterator: object
    total_steps: int
    steps_per_epoch: float
    global_batch: int
    train: TrainConfig
    run_dir: RunDirectory
    schedule: object = None  # optimizer step count -> rate (the k-th update uses k - 1)
    validate: object = None  # callable() -> dict of val metrics, or None
    is_chief: bool = True
    after_first_step: object = None  # callable() -> a line to show, or None


class _Throughput:
    def __init__(self, global_batch: int):
        self.global_batch = global_batch
        self.reset()

    def reset(self, first_step_seconds: float | None = None):
        self.start, self.steps = time.perf_counter(), 0
        # a window of only the first (tracing) step reports that step's own rate
        self.first_step_seconds = first_step_seconds

    def images_per_second(self) -> float:
        elapsed = time.perf_counter() - self.start
        if self.steps == 0 and self.first_step_seconds:
            return self.global_batch / self.first_step_seconds
        return self.steps * self.global_batch / elapsed if elapsed > 0 else 0.0


def _checkpoint(job: TrainingJob, best: float | None) -> None:
    # The step function's own counter, not the loop's: a Ctrl-C can land after a step was
    # applied but before the loop counted it.
    step = int(job.train_step.steps_done.numpy())
    if job.is_chief:
        save_state(job.run_dir.checkpoints, job.model, job.optimizer,
                   {"step": step, "best_val_top1": best})


def _validate(job: TrainingJob, step: int, best, callbacks: TrainingCallbacks):
    record = {"step": step, **job.validate()}
    callbacks.on_eval(record)
    if job.is_chief:
        job.run_dir.log(record)
    # The best model is the one of highest top-1, or mAP for multi-label data (kept under
    # the same name in checkpoints, so runs resume alike).
    score = record["val_top1"] if "val_top1" in record else record.get("val_map")
    if score is not None and (best is None or score > best):
        best = score
        if job.is_chief:
            job.run_dir.save_model(job.model, BEST_FILE)
    return best


def _first_step(job: TrainingJob, callbacks: TrainingCallbacks, losses: list) -> dict:
    """Runs the first step of this process (tracing included) and says when it finished,
    counted from the process's start; returns those figures for metrics.jsonl."""
    started = time.perf_counter()
    losses.append(float(job.train_step(job.iterator)))
    # Rounded before both uses: the message shows the logged figure, not a second rounding.
    call = round(time.perf_counter() - started, 2)
    since_start = round(seconds_since_start(), 2)
    callbacks.on_message(f"first step done {since_start:.1f} s after start "
                         f"(the step itself {call:.1f} s, tracing included)")
    line = job.after_first_step() if job.after_first_step else None
    if line:
        callbacks.on_message(line)
    return {"first_step_seconds": since_start, "first_step_call_seconds": call}


def run_loop(job: TrainingJob, start_step: int, callbacks: TrainingCallbacks,
             best: float | None = None) -> dict:
    """Runs steps start_step+1 .. total_steps. Ctrl-C checkpoints, then re-raises."""
    config, meter, step, losses = job.train, _Throughput(job.global_batch), start_step, []
    start_up = {}  # the first step's timing, logged with the first record
    try:
        while step < job.total_steps:
            if step == start_step:
                start_up = _first_step(job, callbacks, losses)
                meter.reset(start_up["first_step_call_seconds"])  # the steady state's rate
            else:
                losses.append(job.train_step(job.iterator))
                meter.steps += 1
            step += 1
            if step % config.log_every == 0 or step == job.total_steps:
                loss = float(np.mean([float(value) for value in losses]))
                record = {"step": step, "epoch": round(step / job.steps_per_epoch, 3),
                          "loss": loss, "lr": float(job.schedule(step - 1)),
                          "images_per_sec": round(meter.images_per_second(), 2), **start_up}
                start_up = {}
                if not np.isfinite(loss):
                    callbacks.on_message(f"warning: loss is {loss} at step {step}")
                callbacks.on_log(record)
                if job.is_chief:
                    job.run_dir.log(record)
                losses = []
                meter.reset()
            if job.validate and (step % config.eval_every == 0 or step == job.total_steps):
                best = _validate(job, step, best, callbacks)
                meter.reset()
            if step % config.checkpoint_every == 0 or step == job.total_steps:
                _checkpoint(job, best)
    except KeyboardInterrupt:
        _checkpoint(job, best)
        raise
    return {"step": step, "interrupted": False, "best_val_top1": best}


def ensure_built(optimizer, model, variables=None) -> None:
    """Creates the optimizer's slots (needed before restoring a checkpoint into them), for
    `variables` (default: all of the model's trainable ones; fewer when some are frozen)."""
    if not optimizer.built:
        optimizer.build(model.trainable_variables if variables is None else variables)

