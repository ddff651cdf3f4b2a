"""Options shared by several commands (Annotated types; defaults are None = 'not given',
so that config.py stays the only place where defaults live). Each help text ends with the
effective default, read from config.py or said in words where the run derives it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from vitcli.config import MAX_IMAGE_SIZE, DataConfig, ModelConfig, RunConfig, ScoringConfig
from vitcli.storage import location

DATA = "Data"
TRAINING = "Training"
MODEL = "Model"
SCALE = "Scale"


def switch_default(name: str, on: bool) -> str:
    """The spelling of a `--NAME/--no-NAME` switch's default, as typer shows its own."""
    return name if on else f"no-{name}"


def with_default(help_text: str, default) -> str:
    """`help_text [default: DEFAULT]`, styled as typer shows a signature's default (dim).
    The signature's own default is None ('not given'), so typer would show nothing."""
    return f"{help_text} [dim]{escape(f'[default: {default}]')}[/]"


Data = Annotated[str | None, typer.Option(
    "--data", help="Image folder (DIR/<class>/... or DIR/{train,val,test}/<class>/...), "
    "packed data (a folder made by `vitcli data pack`), a multi-label CSV manifest (FILE.csv: "
    "file,labels[,split]; labels separated by ';') or tfds:NAME.", rich_help_panel=DATA)]
DataDir = Annotated[str | None, typer.Option(
    "--data-dir", help=with_default("tensorflow-datasets data directory.",
                                    "tensorflow-datasets' own"), rich_help_panel=DATA)]
TrainSplit = Annotated[str | None, typer.Option(
    "--train-split", help=with_default("tfds split string, e.g. 'train[:98%]'.",
                                       DataConfig.train_split), rich_help_panel=DATA)]
ValSplit = Annotated[str | None, typer.Option(
    "--val-split", help=with_default("Fraction held out of an image folder without val/, or a "
                                     "tfds split string.", DataConfig.val_split),
    rich_help_panel=DATA)]
TestSplit = Annotated[str | None, typer.Option(
    "--test-split", help=with_default("tfds split string for the test set.",
                                      DataConfig.test_split), rich_help_panel=DATA)]
Download = Annotated[bool | None, typer.Option(
    "--download/--no-download", help=with_default(
        "Let tensorflow-datasets download and prepare.",
        switch_default("download", DataConfig.download)), rich_help_panel=DATA)]
Strict = Annotated[bool | None, typer.Option(
    "--strict/--no-strict", help=with_default(
        "Unreadable images are an error, not a warning.",
        switch_default("strict", DataConfig.strict)), rich_help_panel=DATA)]
EvalCrop = Annotated[str | None, typer.Option(
    "--eval-crop", help=with_default("resize (the reference's) or center (resize-small + "
                                     "centre crop).", DataConfig.eval_crop),
    rich_help_panel=DATA)]
Resolution = Annotated[str | None, typer.Option(
    "--res", help=with_default(f"Image size or HEIGHTxWIDTH, multiples of the patch, at most "
                               f"{MAX_IMAGE_SIZE}; resizes position embeddings.",
                               f"the checkpoint's resolution, else {ModelConfig.image_size}"),
    rich_help_panel=MODEL)]
ModelArgument = Annotated[Path, typer.Argument(
    parser=location, help="A run directory, a .keras file or an .npz checkpoint.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
Threshold = Annotated[float | None, typer.Option(
    "--threshold", help=with_default("Multi-label: a class is predicted when its score is at "
                                     "least this.", ScoringConfig.threshold))]
Scores = Annotated[str | None, typer.Option(
    "--scores", help=with_default("softmax (one label per image) or sigmoid (multi-label): "
                                  "how the logits become scores.",
                                  "the run's training loss (its config.yaml), else softmax"))]


def batch_option(default, help_text: str = "Global batch size.", *, panel: str | None = TRAINING):
    """--batch, whose default differs per command (and per training recipe)."""
    return Annotated[int | None, typer.Option(
        "--batch", help=with_default(help_text, default), rich_help_panel=panel)]


Strategy = Annotated[str | None, typer.Option(
    "--strategy", help=with_default("auto, default, mirrored, multi-worker ($TF_CONFIG) or tpu.",
                                    RunConfig.strategy), rich_help_panel=SCALE)]
Tpu = Annotated[str | None, typer.Option(
    "--tpu", help="TPU address ('local' on a TPU VM).", rich_help_panel=SCALE)]
Precision = Annotated[str | None, typer.Option(
    "--precision", help=with_default("auto (bf16 on TPU, fp16 on GPU; on a CPU bf16 where it has "
                                     "native bfloat16 matmuls, AMX or AVX512-BF16, else fp32), "
                                     "fp32, bf16 or fp16.", RunConfig.precision),
    rich_help_panel=SCALE)]
Jit = Annotated[bool | None, typer.Option(
    "--jit/--no-jit", help=with_default(
        "XLA-compile the whole training step (LayerNorm and GELU are always compiled kernels). "
        "Neither given: auto, off on CPU and GPU (on a CPU measured slower than the "
        "compiled kernels alone), always on on TPU.", "auto"),
    rich_help_panel=SCALE)]


def read_labels_file(path: Path) -> list[str]:
    """The lines of a --labels file (export, predict); an unreadable or empty one is one line.
    Whether they name every class is checked once the model is loaded
    (`vitcli.weights.trained.check_labels`)."""
    from vitcli.errors import VitcliError

    try:
        labels = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise VitcliError(f"--labels {path} is not UTF-8 text") from None
    except OSError as error:
        raise VitcliError(f"cannot read --labels {path}: {error.strerror or error}") from None
    if not labels:  # no model has no classes: never fall back to other names silently
        raise VitcliError(f"--labels {path} has no names",
                          hint="give one name per line, in class-index order")
    return labels
