"""`vitcli predict`: top-k labels for images, as a table, JSON or CSV; a multi-label model
shows sigmoid scores and the labels scoring at least --threshold."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from vitcli._environment import import_tensorflow_quietly
from vitcli.cli import options as opt
from vitcli.cli.console import console, error_console, print_json, reports_errors
from vitcli.cli.options import read_labels_file, with_default
from vitcli.config import DataConfig, RunConfig, ScoringConfig, check_value
from vitcli.errors import VitcliError
from vitcli.storage import location

BATCH_SIZE = 32  # images per forward pass
LISTED_SKIPS = 20  # skipped files named in the warning; the rest are counted


def _labels(model, given: list[str] | None, run_labels: list[str] | None,
            labels_file: Path | None) -> list[str]:
    """--labels, else the run's labels.txt, else class numbers; --labels must name every
    class of the model."""
    from vitcli.weights.trained import check_labels

    classes = model.output_shape[-1]
    if given is not None:
        return check_labels(given, classes, f"--labels {labels_file}")
    return run_labels or [str(index) for index in range(classes)]


def _warn_skipped(skipped: list[tuple[str, str]]) -> None:
    """One warning naming the files that were not used, and why."""
    listed = ", ".join(f"{path} ({reason})" for path, reason in skipped[:LISTED_SKIPS])
    more = f" and {len(skipped) - LISTED_SKIPS} more" if len(skipped) > LISTED_SKIPS else ""
    error_console.print(f"[yellow]warning: skipped {len(skipped)} unreadable file(s): "
                        f"{escape(listed)}{more}[/]", soft_wrap=True)


def _print_csv(rows: list[dict], multi_label: bool) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(["file", "rank", "label", *(("score", "above_threshold") if multi_label
                                                 else ("probability",))])
    for row in rows:
        for rank, (label, probability) in enumerate(row["predictions"], start=1):
            above = [str(label in row["labels"]).lower()] if multi_label else []
            writer.writerow([row["file"], rank, label, f"{probability:.6f}", *above])


def _print_table(title: str, rows: list[dict], multi_label: bool, threshold: float) -> None:
    table = Table(title=title)
    table.add_column("file")
    if multi_label:
        table.add_column(f"labels (score >= {threshold:g})")
    table.add_column("top labels (score)" if multi_label else "top labels (probability)")
    for row in rows:
        chosen = [escape(", ".join(row["labels"]) or "-")] if multi_label else []
        table.add_row(escape(row["file"]), *chosen, escape(", ".join(
            f"{label} ({p:.1%})" for label, p in row["predictions"])))
    console.print(table)


@reports_errors(tensorflow=False)
def predict_command(
    model: opt.ModelArgument,
    images: Annotated[list[Path], typer.Argument(parser=location,
                                                 help="Image files or folders.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Labels per image (at least 1; "
                                       "more than the classes means all).")] = 5,
    batch: opt.batch_option(BATCH_SIZE, "Images per forward pass.", panel=None) = None,
    labels_file: Annotated[Path | None, typer.Option("--labels", parser=location, help=with_default(
        "Class names, one per line.", "a run directory's labels.txt, else class numbers"))] = None,
    eval_crop: opt.EvalCrop = None,
    scores: opt.Scores = None,
    threshold: opt.Threshold = None,
    strategy: opt.Strategy = None, tpu: opt.Tpu = None,
    as_json: opt.Json = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
) -> None:
    """Classify images with a trained model.

    Example: vitcli predict runs/flowers photo.jpg more-photos/ --top-k 3
    """
    # Flags are checked before TensorFlow starts: a typo answers at once.
    if top_k < 1:
        raise VitcliError(f"--top-k must be at least 1, not {top_k}")
    if batch is not None and batch < 1:
        raise VitcliError(f"--batch must be at least 1, not {batch}")
    eval_crop = check_value(DataConfig, "eval_crop", eval_crop)
    scores = check_value(ScoringConfig, "scores", scores)
    threshold = check_value(ScoringConfig, "threshold", threshold)
    strategy = check_value(RunConfig, "strategy", strategy)
    missing = next((path for path in images if not path.exists()), None)
    if missing is not None:
        raise VitcliError(f"'{missing}' does not exist")
    given = read_labels_file(labels_file) if labels_file is not None else None
    import_tensorflow_quietly()
    from vitcli.evaluate.predict import predict_files
    from vitcli.train.strategy import make_strategy
    from vitcli.weights.trained import load_trained, model_scores

    distribution = make_strategy(strategy, tpu)
    with distribution.scope():  # the model's variables on every replica
        network, run_labels = load_trained(model)
    labels = _labels(network, given, run_labels, labels_file)
    scores = model_scores(model, scores)
    rows, skipped = predict_files(network, images, labels, top_k=top_k,
                                  batch_size=batch or BATCH_SIZE, eval_crop=eval_crop,
                                  scores=scores, threshold=threshold, strategy=distribution)
    if skipped:
        _warn_skipped(skipped)
    if as_json:
        print_json(rows)
    elif as_csv:
        _print_csv(rows, scores == "sigmoid")
    else:
        _print_table(f"predictions of {model}", rows, scores == "sigmoid", threshold)
