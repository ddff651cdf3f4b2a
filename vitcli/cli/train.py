"""`vitcli finetune` and `vitcli pretrain`: one module, two recipes (docs/reference.md §6).

The command picks the defaults (config.train_defaults); everything else is the same
machinery. `make_train_command` builds each command's function from one option list, so
that each command's help shows its own recipe's defaults.
"""

# No `from __future__ import annotations` here: typer reads the options from the
# annotations, and those written inside make_train_command use its local recipe, so they
# must be evaluated where they stand (a string annotation would be looked up in globals).

import os
from pathlib import Path
from typing import Annotated

import typer

from vitcli._environment import import_tensorflow_quietly
from vitcli.cli import options as opt
from vitcli.cli.console import console, reports_errors
from vitcli.cli.options import switch_default, with_default
from vitcli.cli.progress import TrainingProgress
from vitcli.config import (
    OPTIMIZERS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    resolve_run_config,
    settings_from_options,
    train_defaults,
)
from vitcli.errors import VitcliError
from vitcli.storage import is_url, location

T = opt.TRAINING
OPTIMIZER_CHOICES = f"{', '.join(OPTIMIZERS[:-1])} or {OPTIMIZERS[-1]}."
SCALINGS = {"linear": "scaled linearly to --batch",
            "sqrt": "scaled to --batch by the square root"}


def parse_accum(value: str) -> int | str:
    """--accum: `auto` stays a word, a positive whole number becomes an int; anything else
    is a usage error, reported before anything starts."""
    if value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise typer.BadParameter(f"use auto or a positive whole number, not {value!r}")


def rate_default(command: str, recipe: TrainConfig) -> str:
    """The default learning rate in words: the recipe's rate at its reference batch and how
    it follows --batch (vitcli.train.defaults.learning_rate_for), plus MPP's own rate."""
    text = f"{recipe.base_learning_rate:g}"
    if recipe.lr_scaling in SCALINGS:
        text += f" at batch {recipe.reference_batch}, {SCALINGS[recipe.lr_scaling]}"
    mpp = train_defaults(command, "mpp")
    if mpp.base_learning_rate != recipe.base_learning_rate:
        text += f"; {mpp.base_learning_rate:g} with --objective mpp"
    return text


def _fetch_start_weights(config) -> None:
    """Downloads a named or URL checkpoint (fine-tuning's default one included) before
    TensorFlow starts, so an offline machine says where to put the file within seconds."""
    from vitcli.cli.progress import download_progress
    from vitcli.train.defaults import fetch_start_weights

    with download_progress("downloading weights") as progress:
        fetch_start_weights(config, progress)


def _check_out(out: str | None) -> None:
    """Refuses an --out that cannot become a run directory (a file in the way, a parent
    where folders cannot be made) before any work; other failures to write it are reported
    when it is written (console.os_error)."""
    if out is None or is_url(out):  # an object store makes folders as it writes
        return
    path = Path(out).expanduser().absolute()
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        raise VitcliError(f"--out {out}: {existing} is a file, not a folder",
                          hint="choose another --out")
    if existing != path and not os.access(existing, os.W_OK | os.X_OK):
        raise VitcliError(f"--out {out}: cannot create folders in {existing} (permission "
                          "denied)", hint="choose another --out")


def _run(command: str, recipe: Path | None, flags: dict, *, dry_run: bool,
         as_json: bool) -> None:
    """Checks every setting that needs no data (before TensorFlow's start-up), then plans
    the run (--dry-run) or trains."""
    if as_json and not dry_run:
        raise typer.BadParameter("--json prints the plan of --dry-run: give both")
    config = resolve_run_config(command, str(recipe) if recipe else None, flags)
    if not config.data.source:
        raise typer.BadParameter("give --data (or data.source in --config)")
    if not (config.model or config.weights or config.resume):
        raise VitcliError("no model given", hint="pass --model (e.g. vit-b16) or --weights")
    _check_out(config.out)
    _fetch_start_weights(config)
    import_tensorflow_quietly()
    if dry_run:
        from vitcli.cli.plan import show_plan
        from vitcli.train.run import plan_run

        show_plan(plan_run(config), as_json=as_json)
        return
    from vitcli.train.run import run_training

    with TrainingProgress(console) as progress:
        run_training(config, progress)


def make_train_command(command: str):
    """The function of `vitcli COMMAND` (finetune or pretrain). Built per command because
    typer takes each option's help from the signature, and the defaults it shows are
    COMMAND's recipe; the signature's own defaults stay None ('not given')."""
    recipe = train_defaults(command, RunConfig.objective)
    finetune = command == "finetune"

    @reports_errors(tensorflow=False)  # _run checks the flags first, then starts TensorFlow
    def train_command(
        data: opt.Data = None,
        model: Annotated[str | None, typer.Option(
            "--model", help=with_default("Variant, e.g. vit-b16 (see `vitcli models`).",
                                         "read from --weights"), rich_help_panel=opt.MODEL)] = None,
        weights: Annotated[str | None, typer.Option(
            "--weights", help=with_default(
                ".npz, .keras, run directory, URL or a name from `vitcli weights list`.",
                "the variant's published checkpoint" if finetune else "none (random weights)"),
            rich_help_panel=opt.MODEL)] = None,
        from_scratch: Annotated[bool, typer.Option(
            "--from-scratch", help="Start from random weights instead of the variant's "
            "published checkpoint (finetune).", rich_help_panel=opt.MODEL)] = False,
        res: opt.Resolution = None,
        dropout: Annotated[float | None, typer.Option(
            "--dropout", help=with_default("Dropout rate.", "0" if finetune else "the variant's"),
            rich_help_panel=opt.MODEL)] = None,
        drop_path: Annotated[float | None, typer.Option(
            "--drop-path", metavar="RATE", help=with_default(
                "Stochastic depth: each example skips a block's residual branches with a "
                "probability growing linearly over the blocks from 0 to RATE.",
                RunConfig.drop_path), rich_help_panel=opt.MODEL)] = None,
        classifier: Annotated[str | None, typer.Option(
            "--classifier", metavar="token|gap", help=with_default(
                "A new model's pooling: token (class token) or gap (global average pooling); "
                "a checkpoint keeps its own.",
                "the checkpoint's" if finetune else ModelConfig.classifier),
            rich_help_panel=opt.MODEL)] = None,
        posemb: Annotated[str | None, typer.Option(
            "--posemb", metavar="learned|sincos2d|none", help=with_default(
                "A new model's position embeddings: learned (1-D table, the paper's), "
                "sincos2d (fixed 2-D sine-cosine, not trained) or none; a checkpoint keeps "
                "its own.", "the checkpoint's" if finetune else ModelConfig.posemb),
            rich_help_panel=opt.MODEL)] = None,
        objective: Annotated[str | None, typer.Option(
            "--objective", help=with_default(
                "classification, or mpp: self-supervised masked patch prediction (pretrain "
                "only).", RunConfig.objective), rich_help_panel=T)] = None,
        steps: Annotated[int | None, typer.Option(
            "--steps", help=with_default("Optimizer steps.", "a length from the training "
                                         "set's size, see README"), rich_help_panel=T)] = None,
        epochs: Annotated[float | None, typer.Option(
            "--epochs", help="Passes over the training set; overrides --steps.",
            rich_help_panel=T)] = None,
        lr: Annotated[float | None, typer.Option(
            "--lr", help=with_default("Peak learning rate.", rate_default(command, recipe)),
            rich_help_panel=T)] = None,
        warmup: Annotated[int | None, typer.Option(
            "--warmup", help=with_default(
                "Warm-up steps.", f"{recipe.default_warmup}, at most a tenth of the run"),
            rich_help_panel=T)] = None,
        batch: opt.batch_option(recipe.batch_size) = None,
        accum: Annotated[str | None, typer.Option(  # parse_accum: "auto" or an int
            "--accum", parser=parse_accum, metavar="auto|N", help=with_default(
                "Micro-batches per step: N, or auto (the fewest that fit the device's "
                "memory).", recipe.accum_steps), rich_help_panel=T)] = None,
        optimizer: Annotated[str | None, typer.Option(
            "--optimizer", help=with_default(OPTIMIZER_CHOICES, recipe.optimizer),
            rich_help_panel=T)] = None,
        weight_decay: Annotated[float | None, typer.Option(
            "--weight-decay", help=with_default(
                "Decoupled, on kernels, times the current rate (adamw).", recipe.weight_decay),
            rich_help_panel=T)] = None,
        momentum_dtype: Annotated[str | None, typer.Option(
            "--momentum-dtype", help=with_default(
                "float32 (exact) or bfloat16 (the reference's memory saving) for SGD's "
                "momentum / Adam's first moment.", recipe.momentum_dtype),
            rich_help_panel=T)] = None,
        label_smoothing: Annotated[float | None, typer.Option(
            "--label-smoothing", help=with_default("Label smoothing.", recipe.label_smoothing),
            rich_help_panel=T)] = None,
        layer_decay: Annotated[float | None, typer.Option(
            "--layer-decay", metavar="F", help=with_default(
                "Layer-wise rate decay F in (0, 1]: encoder block i of L at lr x F^(L-i), the "
                "embeddings at lr x F^(L+1), the head at lr.", f"{recipe.layer_decay:g} (off)"),
            rich_help_panel=T)] = None,
        freeze: Annotated[str | None, typer.Option(
            "--freeze", metavar="none|embeddings|blocks:N|backbone", help=with_default(
                "Keep fixed: the embeddings (patch, position, class token, hybrid stem), "
                "those and the first N encoder blocks, or everything but the head (a linear "
                "probe).", recipe.freeze), rich_help_panel=T)] = None,
        loss: Annotated[str | None, typer.Option(
            "--loss", help=with_default(
                "softmax (one label per image) or sigmoid (multi-label; the paper's "
                "pre-training loss); softmax is refused on multi-label data.",
                "softmax, sigmoid for multi-label data (a .csv manifest, tfds label "
                "sequences)"), rich_help_panel=T)] = None,
        ema: Annotated[float | None, typer.Option(
            "--ema", help=with_default("Polyak averaging factor, e.g. 0.9999.",
                                       recipe.ema_decay or "off"), rich_help_panel=T)] = None,
        seed: Annotated[int | None, typer.Option(
            "--seed", help=with_default("Random seed.", recipe.seed), rich_help_panel=T)] = None,
        log_every: Annotated[int | None, typer.Option(
            "--log-every", help=with_default("Steps between metric lines.", recipe.log_every),
            rich_help_panel=T)] = None,
        eval_every: Annotated[int | None, typer.Option(
            "--eval-every", help=with_default("Steps between validations.", recipe.eval_every),
            rich_help_panel=T)] = None,
        checkpoint_every: Annotated[int | None, typer.Option(
            "--checkpoint-every", help=with_default("Steps between checkpoints.",
                                                    recipe.checkpoint_every),
            rich_help_panel=T)] = None,
        out: Annotated[Path | None, typer.Option(
            "--out", "-o", parser=location,
            help=with_default("Run directory.", f"runs/<data>-{command}"))] = None,
        recipe_file: Annotated[Path | None, typer.Option(
            "--config", parser=location, help="Recipe YAML file (flags override it).")] = None,
        resume: Annotated[bool | None, typer.Option(
            "--resume", help="Continue the run in --out from its last checkpoint.")] = None,
        overwrite: Annotated[bool | None, typer.Option(
            "--overwrite", help="Write into an existing --out: replaces only vitcli's own "
            "files there.")] = None,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Resolve and print the run plan (data counts, weights, model, "
            "length, schedule, batch plan, memory) without training.")] = False,
        as_json: Annotated[bool, typer.Option(
            "--json", help="Print the --dry-run plan as one JSON object.")] = False,
        strategy: opt.Strategy = None, tpu: opt.Tpu = None, precision: opt.Precision = None,
        jit: opt.Jit = None,
        remat: Annotated[bool | None, typer.Option(
            "--remat/--no-remat", help=with_default(
                "Recompute activations in the backward pass: less memory, more compute.",
                switch_default("remat", RunConfig.remat)), rich_help_panel=opt.SCALE)] = None,
        data_dir: opt.DataDir = None, train_split: opt.TrainSplit = None,
        val_split: opt.ValSplit = None, test_split: opt.TestSplit = None,
        download: opt.Download = None, strict: opt.Strict = None, eval_crop: opt.EvalCrop = None,
        train_crop: Annotated[str | None, typer.Option(
            "--train-crop", help=with_default(
                "auto (inception, but resize for images smaller than --res), inception "
                "(random crop + flip, the reference's), resize or center.",
                DataConfig.train_crop), rich_help_panel=opt.DATA)] = None,
        randaugment: Annotated[bool | None, typer.Option(
            "--randaugment/--no-randaugment", help=with_default(
                "RandAugment (Keras' layer).",
                switch_default("randaugment", DataConfig.randaugment)),
            rich_help_panel=opt.DATA)] = None,
        mixup: Annotated[float | None, typer.Option(
            "--mixup", help=with_default("Mixup alpha (0 = off).", DataConfig.mixup),
            rich_help_panel=opt.DATA)] = None,
        cutmix: Annotated[float | None, typer.Option(
            "--cutmix", metavar="ALPHA", help=with_default(
                "CutMix alpha (0 = off); with --mixup each example gets one of the two.",
                DataConfig.cutmix), rich_help_panel=opt.DATA)] = None,
        random_erasing: Annotated[float | None, typer.Option(
            "--random-erasing", metavar="P", help=with_default(
                "Probability of erasing a random box of each image (Keras' layer).",
                DataConfig.random_erasing), rich_help_panel=opt.DATA)] = None,
    ) -> None:
        # Each option is named after its setting's flag (config.flag_of), so the settings
        # are read off the parameters; only these two need a different value.
        options = {**locals(), "from_scratch": from_scratch or None,
                   "out": str(out) if out else None}
        flags = settings_from_options(options)
        _run(command, recipe_file, flags, dry_run=dry_run, as_json=as_json)

    train_command.__name__ = train_command.__qualname__ = f"{command}_command"
    return train_command


FINETUNE_HELP = """Fine-tune a ViT on your data (SGD, warm-up + cosine, clip 1.0, new zero head).

Examples:

  vitcli finetune --weights vit-b16-i21k --data ./flowers --res 384 --steps 500 --lr 0.003

  vitcli finetune --config examples/recipes/cifar10.yaml --weights ViT-B_16.npz

  vitcli finetune --model vit-b16 --data ./flowers --dry-run

  vitcli finetune --out runs/flowers --resume --data ./flowers
"""

PRETRAIN_HELP = """Pre-train a ViT from scratch (AdamW, wd 0.1, warm-up + linear decay, tanh head).

Examples:

  vitcli pretrain --model vit-ti16 --data ./images --epochs 300 --batch 256 --lr 1e-3

  vitcli pretrain --objective mpp --model vit-ti16 --data ./images --epochs 300 --batch 256

(masked patch prediction: Adam lr 2e-4, warm-up + cosine; its model.keras fine-tunes as usual)
"""
