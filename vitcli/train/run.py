"""Builds a training job from a `RunConfig` and runs it: the library side of
`vitcli finetune` and `vitcli pretrain`."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import tensorflow as tf

from vitcli.config import RunConfig
from vitcli.data.pipeline import train_dataset
from vitcli.data.sources import DataSource, open_source
from vitcli.errors import VitcliError
from vitcli.train.callbacks import TrainingCallbacks
from vitcli.train.loop import TrainingJob, ensure_built, run_loop
from vitcli.train.models import model_for_run, objective_for_run
from vitcli.train.optim import make_optimizer, make_schedule
from vitcli.train.precision import (
    base_optimizer,
    device_kind,
    dtype_policy,
    resolve_precision,
    wrap_optimizer,
)
from vitcli.train.rundir import RunDirectory, truncate_metrics
from vitcli.train.state import has_state, restore_state
from vitcli.train.step import make_train_step
from vitcli.train.strategy import is_chief, make_strategy, resolve_name
from vitcli.train.validation import make_validator


def default_run_directory(config: RunConfig) -> Path:
    source = config.data.source.rstrip("/")
    name = source.split(":", 1)[1] if source.startswith("tfds:") else Path(source).name
    return Path("runs") / f"{name or 'run'}-{config.command}"


def total_steps(config: RunConfig, num_train: int) -> int:
    train = config.train
    if train.epochs is not None:
        return max(1, math.ceil(train.epochs * num_train / train.batch_size))
    if train.steps is None:
        raise VitcliError("no training length given", hint="pass --steps N or --epochs N")
    return train.steps


def _check_batch(config: RunConfig, replicas: int) -> int:
    """The per-replica micro-batch: global batch / accumulation steps / replicas."""
    train = config.train
    micro, remainder = divmod(train.batch_size, train.accum_steps * replicas)
    if remainder or micro < 1:
        raise VitcliError(f"--batch {train.batch_size} is not divisible by --accum "
                          f"{train.accum_steps} x {replicas} replicas")
    return micro


def _distributed_iterator(strategy, source: DataSource, config: RunConfig, image_size: int,
                          start_step: int):
    micro_batch = _check_batch(config, strategy.num_replicas_in_sync)
    consumed = start_step * config.train.batch_size

    def dataset_for(context: tf.distribute.InputContext):
        return train_dataset(
            source.split("train"), config.data, image_size=image_size, batch_size=micro_batch,
            num_classes=len(source.class_names), seed=config.train.seed,
            start_example=consumed, input_context=context,
        )

    return iter(strategy.distribute_datasets_from_function(dataset_for))


def _save_worker_copy(model) -> Path:
    """Non-chief workers keep their final model in a temporary folder, never the run's."""
    import tempfile

    return RunDirectory(tempfile.mkdtemp(prefix="vitcli-worker-")).save_model(model)


def run_training(config: RunConfig, callbacks: TrainingCallbacks | None = None) -> dict:
    """Trains (or resumes) the run of `config`; returns a summary dict."""
    callbacks = callbacks or TrainingCallbacks()
    strategy = make_strategy(config.strategy, config.tpu)
    chief = is_chief(strategy)
    source = open_source(config.data)
    if source.skipped:
        listing = "".join(f"\n    {path} ({reason})" for path, reason in source.skipped)
        callbacks.on_message(f"warning: skipped {len(source.skipped)} unreadable "
                             f"file(s):{listing}")
    run_dir = RunDirectory(config.out or default_run_directory(config))
    if chief:  # other workers only read the chief's checkpoints (shared storage)
        run_dir.prepare(config, source.class_names)
    keras.utils.set_random_seed(config.train.seed)
    precision = resolve_precision(config.precision, device_kind(strategy))
    steps = total_steps(config, source.split("train").num_examples)
    with strategy.scope():
        model, load_lines = model_for_run(config, len(source.class_names),
                                          dtype=dtype_policy(precision))
        # `trained` is `model`, or with --objective mpp the predictor built on its layers.
        trained, batch_loss = objective_for_run(model, config)
        optimizer = wrap_optimizer(make_optimizer(config.train, steps), precision)
        ensure_built(optimizer, trained)
    start_step, best = 0, None
    if config.resume and has_state(run_dir.checkpoints):
        extra = restore_state(run_dir.checkpoints, trained, optimizer)
        start_step, best = extra["step"], extra.get("best_val_top1")
        if chief:
            truncate_metrics(run_dir.path, start_step)
    image_size = model.input_shape[1]
    job = TrainingJob(
        model=trained, optimizer=optimizer, total_steps=steps,
        train_step=make_train_step(
            trained, optimizer, strategy, global_batch=config.train.batch_size,
            accum_steps=config.train.accum_steps, grad_clip_norm=config.train.grad_clip_norm,
            label_smoothing=config.train.label_smoothing, jit=config.jit,
            batch_loss=batch_loss),
        iterator=_distributed_iterator(strategy, source, config, image_size, start_step),
        steps_per_epoch=source.split("train").num_examples / config.train.batch_size,
        global_batch=config.train.batch_size, train=config.train, run_dir=run_dir,
        schedule=make_schedule(config.train, steps),
        validate=make_validator(trained, source, config, image_size), is_chief=chief,
    )
    job.train_step.steps_done.assign(start_step)
    callbacks.on_start({"run_dir": str(run_dir.path), "total_steps": steps,
                        "start_step": start_step, "global_batch": config.train.batch_size,
                        "replicas": strategy.num_replicas_in_sync, "image_size": image_size,
                        "strategy": f"{resolve_name(config.strategy, config.tpu)} strategy",
                        "precision": precision,
                        "per_replica_batch": config.train.batch_size // (
                            config.train.accum_steps * strategy.num_replicas_in_sync),
                        "accum_steps": config.train.accum_steps,
                        "classes": len(source.class_names), "loaded": load_lines,
                        "train_examples": source.split("train").num_examples})
    summary = run_loop(job, start_step, callbacks, best)
    if config.train.ema_decay is not None:
        base_optimizer(optimizer).finalize_variable_values(trained.trainable_variables)
    summary["model"] = str(run_dir.save_model(trained) if chief else _save_worker_copy(trained))
    summary["run_dir"] = str(run_dir.path)
    callbacks.on_end(summary)
    return summary
