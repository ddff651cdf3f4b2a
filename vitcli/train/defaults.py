"""Settings derived for the run at hand when the user left them out: how long to train,
how long to warm up, the learning rate for the batch actually used, the training crop for
the images actually given, and the checkpoint fine-tuning starts from.

Each function returns the value and a line saying how it was derived, printed when the run
starts and by `--dry-run`. Pure Python (no TensorFlow), so the CLI can run the checks that
need no data before TensorFlow starts.
"""

from __future__ import annotations

import dataclasses
import math

from vitcli.config import RunConfig, TrainConfig
from vitcli.errors import VitcliError

# The reference's fine-tuning lengths at batch 512 (docs/reference.md §6.1):
# Pets/Flowers-sized sets 500 steps, CIFAR 10,000, ImageNet 20,000.
# (largest training set, steps at batch 512)
FINETUNE_LENGTHS = ((20_000, 500), (500_000, 10_000), (None, 20_000))
FINETUNE_LENGTH_BATCH = 512
# The paper's pre-training lengths: ImageNet-1k 300 epochs, ImageNet-21k 90, JFT 7.
PRETRAIN_EPOCHS = ((2_000_000, 300), (20_000_000, 90), (None, 7))
WARMUP_FRACTION = 0.1  # the paper's 10k warm-up steps of ~94k
SMALL_IMAGE_SIDE = 64  # below it, `--train-crop auto` resizes instead of cropping


def _epochs(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _row(table, size: int) -> int:
    return next(value for limit, value in table if limit is None or size <= limit)


def run_length(command: str, train: TrainConfig, num_train: int) -> tuple[int, str]:
    """(steps, how they were derived): --steps, --epochs, or a rule from the data size."""
    batch = train.batch_size
    if train.epochs is not None:
        steps = max(1, math.ceil(train.epochs * num_train / batch))
        return steps, f"{steps:,} steps = {train.epochs:g} epochs of {num_train:,} images"
    if train.steps is not None:
        epochs = _epochs(train.steps * batch / num_train)
        return train.steps, f"{train.steps:,} steps ({epochs} epochs)"
    if command == "pretrain":
        epochs = _row(PRETRAIN_EPOCHS, num_train)
        steps = max(1, math.ceil(epochs * num_train / batch))
        return steps, (f"{steps:,} steps = {epochs} epochs (the paper's pre-training length "
                       f"for {num_train:,} images; set --steps or --epochs)")
    reference_steps = _row(FINETUNE_LENGTHS, num_train)
    images = reference_steps * FINETUNE_LENGTH_BATCH
    steps = max(1, math.ceil(images / batch))
    return steps, (f"{steps:,} steps = {_epochs(images / num_train)} epochs (the reference's "
                   f"{reference_steps:,} steps at batch {FINETUNE_LENGTH_BATCH} for a set of "
                   f"{num_train:,} images, as images seen; set --steps or --epochs)")


def warmup_for(train: TrainConfig, steps: int) -> tuple[int, str | None]:
    """(warm-up steps, a notice or warning or None). A default warm-up longer than a tenth
    of the run shrinks to that tenth; an explicit one is kept, with a warning when it is
    at least the whole run (the rate would never reach its peak)."""
    if train.warmup_steps is not None:
        if train.warmup_steps >= steps:
            return train.warmup_steps, (f"warning: --warmup {train.warmup_steps:,} is not "
                                        f"shorter than the run ({steps:,} steps): the "
                                        "learning rate never reaches its peak")
        return train.warmup_steps, None
    cap = int(steps * WARMUP_FRACTION)
    if train.default_warmup > cap:
        return cap, (f"warm-up {cap:,} steps: the recipe's {train.default_warmup:,} is "
                     f"more than a tenth of this {steps:,}-step run")
    return train.default_warmup, None


def learning_rate_for(train: TrainConfig) -> tuple[float, str]:
    """(peak rate, how it was derived): --lr, or the recipe's rate at its reference batch
    scaled to the run's batch (linear for SGD, square root for Adam-type optimizers)."""
    if train.learning_rate is not None:
        return train.learning_rate, f"{train.learning_rate:g} (given)"
    ratio = train.batch_size / train.reference_batch
    factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[train.lr_scaling]
    rate = train.base_learning_rate * factor
    if factor == 1.0:
        return rate, f"{rate:g} (the recipe's, at batch {train.reference_batch:,})"
    return rate, (f"{rate:.4g} = {train.base_learning_rate:g} at batch "
                  f"{train.reference_batch:,} x {train.lr_scaling} scaling to batch "
                  f"{train.batch_size:,} ({factor:.4g}); set --lr to override")


def train_crop_for(crop: str, median_side: int | None) -> tuple[str, str]:
    """(crop, why). `auto` takes the reference's inception crop (5-100 % of the area, then
    resize, plus a flip) for photo-sized images, and resizes small ones whole: on a
    thumbnail (digits, Fashion-MNIST, CIFAR-sized) a 5 % crop keeps a few pixels and blurs
    away what the class depends on (measured on 32 px digits: 18.6 % vs 37.2 % top-1)."""
    if crop != "auto":
        return crop, crop
    if median_side is None or median_side >= SMALL_IMAGE_SIDE:
        size = "size unknown" if median_side is None else f"median side {median_side} px"
        return "inception", f"inception crop + flip ({size})"
    return "resize", (f"resize, no crop (small images: median side {median_side} px < "
                      f"{SMALL_IMAGE_SIDE}; --train-crop inception to crop anyway)")


def loss_for(loss: str | None, multi_label: bool) -> tuple[str, str]:
    """(loss, how it was chosen): --loss, else softmax for single-label data and sigmoid for
    multi-label data. Softmax on multi-label data is refused: its cross-entropy takes one
    class per image, and normalising the multi-hot targets would train scores that compete
    instead of one independent score per class."""
    if multi_label and loss == "softmax":
        raise VitcliError("--loss softmax needs one label per image, and this data is "
                          "multi-label", hint="use --loss sigmoid (the default for "
                          "multi-label data)")
    if loss is not None:
        return loss, f"{loss} cross-entropy (given)"
    if multi_label:
        return "sigmoid", "sigmoid cross-entropy (multi-label data)"
    return "softmax", "softmax cross-entropy"


def start_weights(config: RunConfig) -> tuple[RunConfig, str | None]:
    """Fine-tuning without --weights starts from the variant's recommended published
    checkpoint; without one (or with neither --model nor --weights) it needs an explicit
    --from-scratch. Returns the config with `weights` filled in, and a line to print."""
    if config.command != "finetune" or config.weights or config.from_scratch:
        return config, None
    if not config.model:
        raise VitcliError("no model given", hint="pass --model (e.g. vit-b16) or --weights")
    from vitcli.weights.hub import recommended_checkpoint

    entry = recommended_checkpoint(config.model)
    if entry is None:
        raise VitcliError(f"{config.model} has no published checkpoint to fine-tune from",
                          hint="pass --weights FILE, or --from-scratch to start from random "
                          "weights")
    line = f"weights: {entry.name} ({entry.dataset}, {entry.image_size} px), {entry.url}"
    return dataclasses.replace(config, weights=entry.name), line


def fetch_start_weights(config: RunConfig, progress=None) -> tuple[RunConfig, str | None]:
    """`start_weights`, then the named or URL checkpoint fetched into the cache now (and a
    missing local file refused): called before TensorFlow starts and before the data is
    indexed, so a wrong --weights or an offline machine is one line within seconds. Local
    files and run directories are read when the model is loaded."""
    config, line = start_weights(config)
    if config.weights:
        from vitcli.storage import location
        from vitcli.weights.hub import resolve_weights

        if not location(config.weights).exists():
            resolve_weights(config.weights, progress=progress)
    return config, line
