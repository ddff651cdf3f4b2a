"""`vitcli weights`: inspect, convert and download checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vitcli.cli.console import console, print_json, reports_errors
from vitcli.cli.options import with_default
from vitcli.cli.progress import download_progress
from vitcli.config import MAX_IMAGE_SIZE, RunConfig, check_value, size_text
from vitcli.errors import VitcliError
from vitcli.storage import location

app = typer.Typer(help="Inspect, convert and download ViT checkpoints (.npz).",
                  no_args_is_help=True)


def checkpoint_summary(path: Path) -> dict:
    from vitcli.models.cost import parameter_count
    from vitcli.models.registry import match_variant
    from vitcli.weights.assign import check_keys
    from vitcli.weights.describe import describe_arrays
    from vitcli.weights.layout import normalise_layout
    from vitcli.weights.npz import key_map, read_npz, without_records

    raw = read_npz(path)
    arrays = normalise_layout(raw)
    config = describe_arrays(arrays, name=path.stem)
    check_keys(without_records(arrays), key_map(config))
    summary = config.to_dict()  # classifier and posemb included
    weights = without_records(raw)
    rows, columns = config.grid_shape  # a non-square grid (its GRID_RECORD) as "RxC"
    summary.update(variant=match_variant(config),
                   grid=rows if rows == columns else f"{rows}x{columns}",
                   params=parameter_count(config), arrays=len(weights),
                   dtypes=sorted({"bfloat16" if a.dtype.kind == "V" else str(a.dtype)
                                  for a in weights.values()}))
    return summary


@app.command("info")
@reports_errors
def info(
    file: Annotated[Path, typer.Argument(parser=location,
                                         help="An .npz checkpoint (any supported layout).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the architecture read from a checkpoint file alone.

    Example: vitcli weights info ViT-B_16.npz
    """
    summary = checkpoint_summary(file)
    if as_json:
        print_json(summary)
        return
    table = Table(title=str(file), show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)


@app.command("convert")
@reports_errors
def convert(
    file: Annotated[Path, typer.Argument(parser=location, help="An .npz or .keras checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", parser=location,
                                      help="Output .keras or .npz file.")],
    res: Annotated[str | None, typer.Option("--res", help=with_default(
        f"New image size, at most {MAX_IMAGE_SIZE}, or HEIGHTxWIDTH (resizes the position "
        "embeddings).",
        "the checkpoint's"))] = None,
    num_classes: Annotated[int | None, typer.Option("--num-classes", min=1, help=with_default(
        "New zero-initialised head; drops pre-logits.", "the checkpoint's head"))] = None,
) -> None:
    """Convert a checkpoint to a .keras model (or back to .npz), optionally re-sized.

    Example: vitcli weights convert ViT-B_16.npz --out vit-b16-384.keras --res 384 --num-classes 10
    """
    from vitcli.files import write_atomically
    from vitcli.weights.checkpoint import load_checkpoint_with_report, save_npz

    if out.suffix not in (".keras", ".npz"):
        raise typer.BadParameter("--out must end in .keras or .npz")
    if out.is_dir():
        raise VitcliError(f"--out {out} is a folder", hint="give a .keras or .npz file name")
    res = check_value(RunConfig, "image_size", res)  # the same limits as training's --res
    model, report = load_checkpoint_with_report(file, image_size=res, num_classes=num_classes)
    for line in report.lines():
        console.print(f"  {line}")
    if out.suffix == ".npz":
        save_npz(model, out)
    else:
        write_atomically(out, model.save)
    console.print(f"wrote {out} ({size_text(report.config.image_size)} px, "
                  f"{report.config.num_classes} classes)")


@app.command("list")
@reports_errors(tensorflow=False)  # a table of names: no TensorFlow
def list_pretrained(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the published checkpoints that `download` and `--weights NAME` know."""
    from dataclasses import asdict

    from vitcli.weights.hub import PRETRAINED, cache_path

    if as_json:
        print_json([asdict(entry) for entry in PRETRAINED.values()])
        return
    table = Table(title="Published ViT checkpoints (Apache-2.0)")
    for column in ("name", "variant", "px", "classes", "data", "cached"):
        table.add_column(column)
    for entry in PRETRAINED.values():
        cached = "yes" if cache_path(entry.name).exists() else ""
        table.add_row(entry.name, entry.variant, str(entry.image_size), str(entry.num_classes),
                      entry.dataset, cached)
    console.print(table)


@app.command("download")
@reports_errors(tensorflow=False)  # plain HTTP into the cache: no TensorFlow
def download(
    name: Annotated[str, typer.Argument(help="A name from `vitcli weights list`, or a URL.")],
) -> None:
    """Download a published checkpoint into the cache ($VITCLI_HOME, default ~/.cache/vitcli).

    Interrupted downloads resume. Example: vitcli weights download vit-b16-i21k
    """
    from vitcli.weights.hub import resolve_weights

    with download_progress(name) as progress:
        path = resolve_weights(name, progress=progress)
    console.print(f"{name}: {path}")
