"""Builds a training job from a `RunConfig` and runs it: the library side of
`vitcli finetune` and `vitcli pretrain`.

`prepare_run` resolves everything a run needs (start weights, data and its counts, the
derived length, warm-up, learning rate and crop, the model, the batch plan) and says how;
`plan_run` reports that without training (`--dry-run`); `run_training` trains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from vitcli.config import RunConfig, canonical_size
from vitcli.data.pipeline import train_dataset
from vitcli.data.sources import MANIFEST, TFDS, DataSource, open_source, parse_source
from vitcli.errors import VitcliError
from vitcli.files import DiskFullError, is_full_disk, terminate_as_interrupt
from vitcli.train import defaults
from vitcli.train.batching import GIB, BatchPlan, plan_batch
from vitcli.train.callbacks import TrainingCallbacks
from vitcli.train.groups import TrainedVariables, trained_variables
from vitcli.train.loop import TrainingJob, ensure_built, run_loop
from vitcli.train.optim import make_optimizer
from vitcli.train.precision import (
    base_optimizer,
    describe_compute,
    device_kind,
    dtype_policy,
    resolve_jit,
    resolve_precision,
    wrap_optimizer,
)
from vitcli.train.rundir import RunDirectory, truncate_metrics
from vitcli.train.start_model import model_for_run, objective_for_run
from vitcli.train.state import has_state, restore_state
from vitcli.train.step import make_train_step
from vitcli.train.strategy import is_chief, make_strategy, resolve_name
from vitcli.train.validation import make_validator


def default_run_directory(config: RunConfig) -> Path:
    source = parse_source(config.data.source)
    name = source.name.rstrip("/")
    name = name if source.kind == TFDS else Path(name).stem if source.kind == MANIFEST \
        else Path(name).name
    return Path("runs") / f"{name or 'run'}-{config.command}"


@dataclass
class PreparedRun:
    """A run with every derived setting decided, its model built and its data opened."""

    config: RunConfig  # derived settings filled in: this is what config.yaml records
    strategy: tf.distribute.Strategy
    source: DataSource
    precision: str
    model: keras.Model  # the classifier that is saved
    trained: keras.Model  # what the optimizer trains (the classifier, or the MPP predictor)
    batch_loss: object
    batch: BatchPlan
    load_lines: list[str]
    plan_lines: list[str] = field(default_factory=list)  # each decision and why
    # what the optimizer updates and at which rates (--freeze, --layer-decay)
    groups: TrainedVariables | None = None

    @property
    def image_size(self) -> int | tuple[int, int]:
        """The model's input size: a number, or (height, width) when it is not square."""
        return canonical_size(self.model.input_shape[1:3])


def _derive_schedule(config: RunConfig, num_train: int) -> tuple[RunConfig, list[str]]:
    """Fills in the run length, learning rate and warm-up; returns the lines saying how."""
    train = config.train
    steps, length_line = defaults.run_length(config.command, train, num_train)
    rate, rate_line = defaults.learning_rate_for(train)
    warmup, warmup_note = defaults.warmup_for(train, steps)
    train = dataclasses.replace(train, steps=steps, learning_rate=rate, warmup_steps=warmup)
    lines = [f"length: {length_line}", f"learning rate: {rate_line}",
             f"schedule: {train.optimizer}, {warmup:,} warm-up steps, then {train.schedule} "
             "decay to zero"]
    if warmup_note:
        lines.append(warmup_note)
    return dataclasses.replace(config, train=train), lines


def _derive_crop(config: RunConfig, source: DataSource):
    from vitcli.data.stats import median_side

    side = median_side(source.split("train")) if config.data.train_crop == "auto" else None
    crop, why = defaults.train_crop_for(config.data.train_crop, side)
    data = config.data
    extras = [name for name, on in (
        ("RandAugment", data.randaugment),
        (f"random erasing {data.random_erasing:g}", data.random_erasing > 0),
        (f"MixUp {data.mixup:g}", data.mixup > 0),
        (f"CutMix {data.cutmix:g}", data.cutmix > 0)) if on]
    line = f"augmentation: {why}" + "".join(f", {extra}" for extra in extras)
    return dataclasses.replace(config, data=dataclasses.replace(config.data, train_crop=crop)), line


def _derive_loss(config: RunConfig, source: DataSource) -> tuple[RunConfig, list[str]]:
    """Fills in the classification loss (softmax, or sigmoid for multi-label data); masked
    patch prediction has its own and leaves it unset."""
    if config.objective != "classification":
        return config, []
    loss, line = defaults.loss_for(config.train.loss, source.multi_label)
    train = dataclasses.replace(config.train, loss=loss)
    return dataclasses.replace(config, train=train), [f"loss: {line}"]


def _open_data(config: RunConfig, callbacks: TrainingCallbacks) -> DataSource:
    # A classifier needs two classes; masked patch prediction learns from any images.
    purpose = "classify" if config.objective == "classification" else "any"
    source = open_source(config.data, purpose=purpose)
    if source.skipped:
        listing = "".join(f"\n    {path} ({reason})" for path, reason in source.skipped)
        callbacks.on_message(f"warning: skipped {len(source.skipped)} unreadable "
                             f"file(s):{listing}")
    return source


def prepare_run(config: RunConfig, callbacks: TrainingCallbacks | None = None) -> PreparedRun:
    """Decides every setting the user left to vitcli, opens the data and builds the model."""
    callbacks = callbacks or TrainingCallbacks()
    config, weights_line = defaults.start_weights(config)
    strategy = make_strategy(config.strategy, config.tpu)
    source = _open_data(config, callbacks)
    config, loss_lines = _derive_loss(config, source)
    config, schedule_lines = _derive_schedule(config, source.split("train").num_examples)
    device = device_kind(strategy)
    precision = resolve_precision(config.precision, device)
    jit = resolve_jit(config.jit, device)
    compute_line = describe_compute(config.precision, precision, config.jit, jit, device)
    config = dataclasses.replace(config, jit=jit)
    keras.utils.set_random_seed(config.train.seed)
    from vitcli.train.memory import remat_scope

    with strategy.scope(), remat_scope(config.remat):
        model, load_lines = model_for_run(config, source.num_classes, dtype=dtype_policy(precision))
        # `trained` is `model`, or with --objective mpp the predictor built on its layers.
        trained, batch_loss = objective_for_run(model, config)
    config, crop_line = _derive_crop(config, source)
    batch = plan_batch(config, model, strategy, precision, device)
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, accum_steps=batch.accum_steps))
    if weights_line:  # the published checkpoint, said in full where the loader names it
        load_lines = [weights_line if line.startswith("weights:") else line
                      for line in load_lines]
    groups = trained_variables(trained, config.train)  # refuses a --freeze beyond the depth
    groups_line = groups.describe(config.train.layer_decay, config.train.freeze)
    lines = [*loss_lines, *schedule_lines, crop_line, compute_line, f"batch: {batch.describe()}",
             *([f"parameters: {groups_line}"] if groups_line else [])]
    return PreparedRun(config=config, strategy=strategy, source=source, precision=precision,
                       model=model, trained=trained, batch_loss=batch_loss, batch=batch,
                       load_lines=load_lines, plan_lines=lines, groups=groups)


def describe_run(run: PreparedRun) -> dict:
    """The plan as plain data: what `--dry-run` prints and every run shows at its start."""
    config, source = run.config, run.source
    from vitcli.weights.checkpoint import config_from_model

    model_config = config_from_model(run.model)
    return {
        "command": config.command,
        "data": {"source": config.data.source, "classes": source.num_classes,
                 "multi_label": source.multi_label,
                 **{f"{name}_examples": split.num_examples
                    for name, split in source.splits.items()}},
        "model": {**model_config.to_dict(), "grid_size": model_config.grid_size,
                  "grid_shape": list(model_config.grid_shape),
                  "tokens": model_config.num_tokens,
                  "parameters": int(run.model.count_params())},
        "loaded": run.load_lines,
        "steps": config.train.steps, "epochs": round(
            config.train.steps * config.train.batch_size
            / source.split("train").num_examples, 3),
        "warmup_steps": config.train.warmup_steps,
        "learning_rate": config.train.learning_rate,
        "optimizer": config.train.optimizer, "schedule": config.train.schedule,
        "layer_decay": config.train.layer_decay, "freeze": config.train.freeze,
        "loss": config.train.loss,
        "train_crop": config.data.train_crop, "randaugment": config.data.randaugment,
        "mixup": config.data.mixup, "cutmix": config.data.cutmix,
        "random_erasing": config.data.random_erasing, "precision": run.precision,
        "strategy": resolve_name(config.strategy, config.tpu),
        "batch_plan": run.batch.to_dict(), "plan": run.plan_lines,
        "run_dir": str(config.out or default_run_directory(config)),
    }


def plan_run(config: RunConfig, callbacks: TrainingCallbacks | None = None) -> dict:
    """Resolves the run (`--dry-run`) and returns its plan without writing or training."""
    return describe_run(prepare_run(config, callbacks))


def _distributed_iterator(run: PreparedRun, start_step: int):
    config, strategy = run.config, run.strategy
    consumed = start_step * config.train.batch_size

    def dataset_for(context: tf.distribute.InputContext):
        return train_dataset(
            run.source.split("train"), config.data, image_size=run.image_size,
            batch_size=run.batch.micro_batch, num_classes=run.source.num_classes,
            seed=config.train.seed, start_example=consumed, input_context=context,
        )

    return iter(strategy.distribute_datasets_from_function(dataset_for))


def _save_worker_copy(model) -> Path:
    """Non-chief workers keep their final model in a temporary folder, never the run's."""
    return RunDirectory(tempfile.mkdtemp(prefix="vitcli-worker-")).save_model(model)


def _job(run: PreparedRun, run_dir: RunDirectory, optimizer, start_step: int) -> TrainingJob:
    config, train = run.config, run.config.train
    num_train = run.source.split("train").num_examples
    return TrainingJob(
        model=run.trained, optimizer=optimizer, total_steps=train.steps,
        train_step=make_train_step(
            run.trained, optimizer, run.strategy, global_batch=train.batch_size,
            accum_steps=train.accum_steps, grad_clip_norm=train.grad_clip_norm,
            label_smoothing=train.label_smoothing, jit=config.jit, batch_loss=run.batch_loss,
            variables=run.groups.variables, seed=train.seed),
        iterator=_distributed_iterator(run, start_step),
        steps_per_epoch=num_train / train.batch_size, global_batch=train.batch_size,
        train=train, run_dir=run_dir, schedule=base_optimizer(optimizer).schedule,
        validate=make_validator(run.trained, run.source, config, run.image_size,
                                batch_size=run.batch.eval_batch),
        is_chief=is_chief(run.strategy),
        after_first_step=lambda: first_step_memory(run.batch),
    )


def first_step_memory(batch: BatchPlan) -> str | None:
    """The probe of the batch plan: the process's peak memory after its first step (on the
    CPU, where that is the device's memory) against the estimate."""
    import resource

    if batch.estimated_peak_bytes is None or tf.config.list_logical_devices("GPU"):
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    line = (f"memory after the first step: peak {peak / GIB:.2f} GiB "
            f"(estimated {batch.estimated_peak_bytes / GIB:.2f} GiB)")
    if peak > batch.estimated_peak_bytes:
        return f"warning: {line}; the estimate was low: pass a larger --accum if memory is tight"
    return line


def _out_of_memory(batch: BatchPlan, error: Exception) -> VitcliError:
    """One line with the numbers instead of TensorFlow's page of allocator state."""
    estimate = (f", estimated peak {batch.estimated_peak_bytes / GIB:.2f} GiB"
                if batch.estimated_peak_bytes else "")
    budget = f" of {batch.budget_bytes / GIB:.1f} GiB" if batch.budget_bytes else ""
    return VitcliError(
        f"out of memory with micro-batches of {batch.micro_batch} x {batch.accum_steps} "
        f"per replica{estimate}{budget}",
        hint=f"use a larger --accum (e.g. {batch.accum_steps * 2}), --remat, --precision bf16, "
        "a smaller --res, or set VITCLI_MEMORY_BUDGET below the device's memory")


def _claimed(run: PreparedRun, run_dir: RunDirectory, callbacks: TrainingCallbacks):
    """The chief owns the run directory (checked, created, locked, cleaned up on a failed
    start); other workers only read its checkpoints (shared storage)."""
    if not is_chief(run.strategy):
        return contextlib.nullcontext()
    return run_dir.claim(run.config, run.source.class_names, callbacks.on_message)


def _restore(run: PreparedRun, run_dir: RunDirectory, optimizer,
             callbacks: TrainingCallbacks) -> tuple[int, float | None]:
    """(start step, best validation top-1): a resumed run's from its last checkpoint."""
    config, chief = run.config, is_chief(run.strategy)
    start_step, best = 0, None
    if config.resume and has_state(run_dir.checkpoints):
        extra, warnings = restore_state(run_dir.checkpoints, run.trained, optimizer,
                                        repair=chief)
        start_step, best = extra["step"], extra.get("best_val_top1")
        for line in warnings:
            callbacks.on_message(line)
    if chief:  # the settings are recorded once the checkpoint is known to fit them
        run_dir.write_settings(config, run.source.class_names)
        if config.resume:
            truncate_metrics(run_dir.path, start_step)
    return start_step, best


def _train(run: PreparedRun, run_dir: RunDirectory, callbacks: TrainingCallbacks) -> dict:
    config, chief = run.config, is_chief(run.strategy)
    with run.strategy.scope():
        optimizer = wrap_optimizer(make_optimizer(config.train, config.train.steps,
                                                  run.groups.multipliers), run.precision)
        ensure_built(optimizer, run.trained, run.groups.variables)
    start_step, best = _restore(run, run_dir, optimizer, callbacks)
    job = _job(run, run_dir, optimizer, start_step)
    job.train_step.steps_done.assign(start_step)
    callbacks.on_start({**describe_run(run), "run_dir": str(run_dir.path),
                        "total_steps": config.train.steps, "start_step": start_step,
                        "strategy": f"{resolve_name(config.strategy, config.tpu)} strategy",
                        "train_examples": run.source.split("train").num_examples,
                        "image_size": run.image_size})
    try:
        summary = run_loop(job, start_step, callbacks, best)
    except tf.errors.ResourceExhaustedError as error:
        if is_full_disk(error):  # TensorFlow's file writers report ENOSPC this way
            raise DiskFullError(run_dir.path) from error
        raise _out_of_memory(run.batch, error) from None
    if config.train.ema_decay is not None:
        base_optimizer(optimizer).finalize_variable_values(run.groups.variables)
    summary["model"] = str(run_dir.save_model(run.trained) if chief
                           else _save_worker_copy(run.trained))
    summary["run_dir"] = str(run_dir.path)
    callbacks.on_end(summary)
    return summary


def run_training(config: RunConfig, callbacks: TrainingCallbacks | None = None) -> dict:
    """Trains (or resumes) the run of `config`; returns a summary dict.

    Everything is checked (data, model, weights, what the run directory holds) before the
    run directory is created or changed; it is locked while training, SIGTERM checkpoints
    like Ctrl-C, and a start that fails before its first checkpoint leaves nothing behind.
    """
    callbacks = callbacks or TrainingCallbacks()
    run = prepare_run(config, callbacks)
    run_dir = RunDirectory(run.config.out or default_run_directory(run.config))
    try:
        with terminate_as_interrupt(), _claimed(run, run_dir, callbacks):
            return _train(run, run_dir, callbacks)
    except DiskFullError as error:
        if not (has_state(run_dir.checkpoints) or run.config.resume):
            raise  # the start was removed: the same command works once there is space
        # A partial write never replaces a checkpoint, so the last complete one is there.
        raise DiskFullError(error.path, hint="free some space, then continue with --resume "
                            "(the last complete checkpoint is intact)") from error
