"""`vitcli finetune` and `vitcli pretrain`: one module, two recipes (REFERENCE section 6).

The invoked name picks the defaults (config.FINETUNE_DEFAULTS or PRETRAIN_DEFAULTS);
everything else is the same machinery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitcli.cli import options as opt
from vitcli.cli.console import console, reports_errors
from vitcli.cli.progress import TrainingProgress

T = opt.TRAINING


@reports_errors
def train_command(
    context: typer.Context,
    data: opt.Data = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Variant, e.g. vit-b16 (see `vitcli models`).",
        rich_help_panel=opt.MODEL)] = None,
    weights: Annotated[str | None, typer.Option(
        "--weights", help=".npz, .keras, run directory, URL or a name from "
        "`vitcli weights list`.", rich_help_panel=opt.MODEL)] = None,
    res: opt.Resolution = None,
    dropout: Annotated[float | None, typer.Option("--dropout", rich_help_panel=opt.MODEL)] = None,
    objective: Annotated[str | None, typer.Option(
        "--objective", help="classification, or mpp: self-supervised masked patch prediction "
        "(pretrain only).", rich_help_panel=T)] = None,
    steps: Annotated[int | None, typer.Option("--steps", rich_help_panel=T)] = None,
    epochs: Annotated[float | None, typer.Option(
        "--epochs", help="Overrides --steps.", rich_help_panel=T)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Base learning rate.",
                                             rich_help_panel=T)] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="Warm-up steps.",
                                               rich_help_panel=T)] = None,
    batch: opt.Batch = None,
    accum: Annotated[int | None, typer.Option(
        "--accum", help="Gradient accumulation micro-batches per step.", rich_help_panel=T)] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", help="sgd or adamw.",
                                                  rich_help_panel=T)] = None,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help="Decoupled, on kernels, times the current rate (adamw).",
        rich_help_panel=T)] = None,
    momentum_dtype: Annotated[str | None, typer.Option(
        "--momentum-dtype", help="float32 (exact) or bfloat16 (the reference's memory "
        "saving) for SGD's momentum / Adam's first moment.", rich_help_panel=T)] = None,
    label_smoothing: Annotated[float | None, typer.Option("--label-smoothing",
                                                          rich_help_panel=T)] = None,
    ema: Annotated[float | None, typer.Option(
        "--ema", help="Polyak averaging factor, e.g. 0.9999.", rich_help_panel=T)] = None,
    seed: Annotated[int | None, typer.Option("--seed", rich_help_panel=T)] = None,
    eval_every: Annotated[int | None, typer.Option("--eval-every", rich_help_panel=T)] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every",
                                                         rich_help_panel=T)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory.")] = None,
    recipe: Annotated[Path | None, typer.Option("--config", help="Recipe YAML file.")] = None,
    strategy: opt.Strategy = None, tpu: opt.Tpu = None, precision: opt.Precision = None,
    jit: opt.Jit = None,
    resume: Annotated[bool | None, typer.Option(
        "--resume", help="Continue the run in --out from its last checkpoint.")] = None,
    data_dir: opt.DataDir = None, train_split: opt.TrainSplit = None,
    val_split: opt.ValSplit = None, test_split: opt.TestSplit = None,
    download: opt.Download = None, strict: opt.Strict = None, eval_crop: opt.EvalCrop = None,
    train_crop: Annotated[str | None, typer.Option(
        "--train-crop", help="inception (random crop + flip, the reference's), resize or center.",
        rich_help_panel=opt.DATA)] = None,
    randaugment: Annotated[bool | None, typer.Option("--randaugment/--no-randaugment",
                                                     rich_help_panel=opt.DATA)] = None,
    mixup: Annotated[float | None, typer.Option("--mixup", help="Mixup alpha (0 = off).",
                                                rich_help_panel=opt.DATA)] = None,
) -> None:
    from vitcli.config import resolve_run_config
    from vitcli.train.run import run_training

    flags = {
        "objective": objective, "model": model, "weights": weights, "image_size": res,
        "dropout": dropout,
        "out": str(out) if out else None, "resume": resume, "strategy": strategy, "tpu": tpu,
        "precision": precision, "jit": jit,
        "data": {"source": data, "data_dir": data_dir, "train_split": train_split,
                 "val_split": val_split, "test_split": test_split, "download": download,
                 "strict": strict, "eval_crop": eval_crop, "train_crop": train_crop,
                 "randaugment": randaugment,
                 "mixup": mixup},
        "train": {"steps": steps, "epochs": epochs, "learning_rate": lr, "warmup_steps": warmup,
                  "batch_size": batch, "accum_steps": accum, "optimizer": optimizer,
                  "weight_decay": weight_decay, "momentum_dtype": momentum_dtype,
                  "label_smoothing": label_smoothing,
                  "ema_decay": ema, "seed": seed, "eval_every": eval_every,
                  "checkpoint_every": checkpoint_every},
    }
    config = resolve_run_config(context.info_name, str(recipe) if recipe else None, flags)
    if not config.data.source:
        raise typer.BadParameter("give --data (or data.source in --config)")
    with TrainingProgress(console) as progress:
        run_training(config, progress)


FINETUNE_HELP = """Fine-tune a ViT on your data (SGD, warm-up + cosine, clip 1.0, new zero head).

Examples:

  vitcli finetune --weights vit-b16-i21k --data ./flowers --res 384 --steps 500 --lr 0.003

  vitcli finetune --config examples/recipes/cifar10.yaml --weights ViT-B_16.npz

  vitcli finetune --out runs/flowers --resume --data ./flowers
"""

PRETRAIN_HELP = """Pre-train a ViT from scratch (AdamW, wd 0.1, warm-up + linear decay, tanh head).

Examples:

  vitcli pretrain --model vit-ti16 --data ./images --epochs 300 --batch 256 --lr 1e-3

  vitcli pretrain --objective mpp --model vit-ti16 --data ./images --epochs 300 --batch 256

(masked patch prediction: Adam lr 2e-4, warm-up + cosine; its model.keras fine-tunes as usual)
"""
