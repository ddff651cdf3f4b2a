"""Options shared by several commands (Annotated types; defaults are None = 'not given',
so that config.py stays the only place where defaults live)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DATA = "Data"
TRAINING = "Training"
MODEL = "Model"

Data = Annotated[str | None, typer.Option(
    "--data", help="Image folder (DIR/<class>/... or DIR/{train,val,test}/<class>/...) or "
    "tfds:NAME.", rich_help_panel=DATA)]
DataDir = Annotated[str | None, typer.Option(
    "--data-dir", help="tensorflow-datasets data directory.", rich_help_panel=DATA)]
TrainSplit = Annotated[str | None, typer.Option(
    "--train-split", help="tfds split string, e.g. 'train[:98%]'.", rich_help_panel=DATA)]
ValSplit = Annotated[str | None, typer.Option(
    "--val-split", help="Fraction held out of an image folder without val/ (default 0.1), "
    "or a tfds split string.", rich_help_panel=DATA)]
TestSplit = Annotated[str | None, typer.Option(
    "--test-split", help="tfds split string for the test set.", rich_help_panel=DATA)]
Download = Annotated[bool | None, typer.Option(
    "--download/--no-download", help="Let tensorflow-datasets download and prepare.",
    rich_help_panel=DATA)]
Strict = Annotated[bool | None, typer.Option(
    "--strict/--no-strict", help="Unreadable images are an error, not a warning.",
    rich_help_panel=DATA)]
EvalCrop = Annotated[str | None, typer.Option(
    "--eval-crop", help="resize (the reference's) or center (resize-small + centre crop).",
    rich_help_panel=DATA)]
Resolution = Annotated[int | None, typer.Option(
    "--res", help="Image size; position embeddings are resized to match.",
    rich_help_panel=MODEL)]
Batch = Annotated[int | None, typer.Option(
    "--batch", help="Global batch size.", rich_help_panel=TRAINING)]
ModelArgument = Annotated[Path, typer.Argument(
    help="A run directory, a .keras file or an .npz checkpoint.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]

SCALE = "Scale"
Strategy = Annotated[str | None, typer.Option(
    "--strategy", help="auto, default, mirrored, multi-worker ($TF_CONFIG) or tpu.",
    rich_help_panel=SCALE)]
Tpu = Annotated[str | None, typer.Option(
    "--tpu", help="TPU address ('local' on a TPU VM).", rich_help_panel=SCALE)]
Precision = Annotated[str | None, typer.Option(
    "--precision", help="auto (bf16 on TPU, fp16 on GPU, fp32 on CPU), fp32, bf16 or fp16.",
    rich_help_panel=SCALE)]
Jit = Annotated[bool | None, typer.Option(
    "--jit/--no-jit", help="XLA-compile the training step.", rich_help_panel=SCALE)]
