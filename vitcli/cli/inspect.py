"""`vitcli inspect`: the paper's analysis figures (attention, position embeddings, filters,
attention distance) for any run directory, .keras or .npz."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from vitcli.cli import options as opt
from vitcli.cli.console import console, reports_errors
from vitcli.cli.options import with_default
from vitcli.config import SPLIT_NAMES, DataConfig, check_value, data_config
from vitcli.errors import VitcliError
from vitcli.storage import location

app = typer.Typer(help="The paper's analysis figures for a model, as PNG (and CSV).",
                  no_args_is_help=True)

# The library's defaults (vitcli.inspect.outputs, which imports Keras: help must not wait
# for it), repeated for help only; tests/cli/test_help.py checks that they agree.
BATCH_SIZE = 8
COMPONENTS = 28
DISTANCE_IMAGES = 32

Out = Annotated[Path, typer.Option("--out", "-o", parser=location,
                                   help="Folder for the figures.")]
Batch = Annotated[int | None, typer.Option(
    "--batch", min=1, help=with_default("Images per forward pass.", BATCH_SIZE))]


def _load(model: Path):
    from vitcli.weights.trained import load_trained

    return load_trained(model)[0], model.name


def _check_out(out: Path) -> None:
    """The figures' folder may exist, but not as a file: refused before any work."""
    if out.exists() and not out.is_dir():
        raise VitcliError(f"--out {out} is a file, not a folder",
                          hint="give a folder for the figures (it is created if needed)")


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLIT_NAMES:
        raise VitcliError(f"unknown split '{split}' (--split)",
                          hint=f"use {', '.join(SPLIT_NAMES)}")


def _given(**values) -> dict:
    """The options given on the command line; the library's defaults fill in the rest."""
    return {key: value for key, value in values.items() if value is not None}


def _report(paths: list[Path]) -> None:
    for path in paths:
        console.print(f"wrote {escape(str(path))}", soft_wrap=True)


@app.command("attention")
@reports_errors
def attention_command(
    model: opt.ModelArgument,
    images: Annotated[list[Path], typer.Argument(parser=location,
                                                 help="Image files or folders.")],
    out: Out,
    layers: Annotated[bool, typer.Option(
        "--layers", help="Also draw each layer's class-token attention (gap models: the "
        "mean over queries).")] = False,
    eval_crop: opt.EvalCrop = None, batch: Batch = None,
) -> None:
    """Attention rollout over each image, one PNG per image.

    Example: vitcli inspect attention runs/flowers photo.jpg --out figures --layers
    """
    from vitcli.evaluate.predict import image_files
    from vitcli.inspect.outputs import write_attention_figures

    _check_out(out)
    eval_crop = check_value(DataConfig, "eval_crop", eval_crop)
    files = image_files(images)
    network, name = _load(model)
    _report(write_attention_figures(network, files, out, name=name, per_layer=layers,
                                    eval_crop=eval_crop, **_given(batch_size=batch)))


@app.command("posemb")
@reports_errors
def posemb_command(model: opt.ModelArgument, out: Out) -> None:
    """Cosine similarity of the position embeddings (paper Fig. 7 centre)."""
    from vitcli.inspect.outputs import write_posemb_figure

    _check_out(out)
    network, name = _load(model)
    _report([write_posemb_figure(network, out, name=name)])


@app.command("filters")
@reports_errors
def filters_command(model: opt.ModelArgument, out: Out, components: Annotated[
        int | None, typer.Option("--components", min=1, help=with_default(
            "How many.", COMPONENTS))] = None) -> None:
    """Principal components of the patch-embedding filters (paper Fig. 7 left)."""
    from vitcli.inspect.outputs import write_filters_figure

    _check_out(out)
    network, name = _load(model)
    _report([write_filters_figure(network, out, name=name, **_given(count=components))])


@app.command("distance")
@reports_errors
def distance_command(
    model: opt.ModelArgument, out: Out, data: opt.Data = None,
    images: Annotated[int | None, typer.Option("--images", min=1, help=with_default(
        "Images to average over.", DISTANCE_IMAGES))] = None,
    split: Annotated[str | None, typer.Option("--split", help=with_default(
        "train, val or test.", "val, else test, else train"))] = None,
    data_dir: opt.DataDir = None, eval_crop: opt.EvalCrop = None, batch: Batch = None,
) -> None:
    """Mean attention distance of every head and layer (paper Fig. 7 right): PNG and CSV.

    Example: vitcli inspect distance runs/flowers --data ./flowers --out figures --images 64
    """
    from vitcli.inspect.outputs import write_distance_outputs

    if not data:
        raise VitcliError("give --data: the images to measure attention distances on")
    _check_out(out)
    _check_split(split)
    settings = data_config({"source": data, "data_dir": data_dir, "eval_crop": eval_crop})
    network, name = _load(model)
    csv_path, png_path, count = write_distance_outputs(
        network, dataclasses.asdict(settings), out, name=name, split=split,
        **_given(count=images, batch_size=batch))
    console.print(f"mean attention distance over {count} images")
    _report([csv_path, png_path])
