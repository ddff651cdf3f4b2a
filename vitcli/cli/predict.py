"""`vitcli predict`: top-k labels for images, as a table, JSON or CSV."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vitcli.cli import options as opt
from vitcli.cli.console import console, error_console, print_json, reports_errors
from vitcli.cli.options import with_default
from vitcli.config import DataConfig

BATCH_SIZE = 32  # images per forward pass


def _labels(model, labels: list[str] | None, labels_file: Path | None) -> list[str]:
    if labels_file is not None:
        labels = labels_file.read_text().splitlines()
    classes = model.output_shape[-1]
    return labels if labels and len(labels) == classes else [str(i) for i in range(classes)]


def _print_csv(rows: list[dict]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(["file", "rank", "label", "probability"])
    for row in rows:
        for rank, (label, probability) in enumerate(row["predictions"], start=1):
            writer.writerow([row["file"], rank, label, f"{probability:.6f}"])


@reports_errors
def predict_command(
    model: opt.ModelArgument,
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Labels per image.")] = 5,
    batch: opt.batch_option(BATCH_SIZE, "Images per forward pass.", panel=None) = None,
    labels_file: Annotated[Path | None, typer.Option("--labels", help=with_default(
        "Class names, one per line.", "a run directory's labels.txt, else class numbers"))] = None,
    eval_crop: opt.EvalCrop = None,
    as_json: opt.Json = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """Classify images with a trained model.

    Example: vitcli predict runs/flowers photo.jpg more-photos/ --top-k 3
    """
    from vitcli.evaluate.predict import image_files, predict_files
    from vitcli.train.models import load_trained

    network, labels = load_trained(model)
    rows, skipped = predict_files(network, image_files(images), _labels(network, labels,
                                                                          labels_file),
                                  top_k=top_k, batch_size=batch or BATCH_SIZE,
                                  eval_crop=eval_crop or DataConfig.eval_crop)
    if skipped:
        error_console.print(f"[yellow]warning: skipped {len(skipped)} unreadable file(s): "
                            + ", ".join(path for path, _ in skipped) + "[/]")
    if as_json:
        print_json(rows)
    elif as_csv:
        _print_csv(rows)
    else:
        table = Table(title=f"predictions of {model}")
        table.add_column("file")
        table.add_column("top labels (probability)")
        for row in rows:
            table.add_row(row["file"], ", ".join(f"{label} ({p:.1%})"
                                                 for label, p in row["predictions"]))
        console.print(table)
