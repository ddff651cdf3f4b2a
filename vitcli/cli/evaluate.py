"""`vitcli evaluate`: accuracy, per-class accuracy, confusion matrix, few-shot probes; for
multi-label data mAP, per-class AP and micro/macro F1 at --threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from vitcli._environment import import_tensorflow_quietly
from vitcli.cli import options as opt
from vitcli.cli.console import console, print_json, reports_errors
from vitcli.cli.options import with_default
from vitcli.config import SPLIT_NAMES, RunConfig, ScoringConfig, check_value, data_config
from vitcli.errors import VitcliError
from vitcli.storage import location

SPLITS = (*SPLIT_NAMES, "all")  # all: every image of a plain class folder

BATCH_SIZE = 64  # images per forward pass


def parse_shots(value: str) -> tuple[int, ...]:
    """--few-shot 1,5,10: positive shot counts; anything else is a usage error, reported
    before TensorFlow starts."""
    parts = [part.strip() for part in value.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise typer.BadParameter(f"use shots per class such as 1,5,10,25, not {value!r}")
    return tuple(int(part) for part in parts)


def _percent(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def _print_multilabel_report(report: dict) -> None:
    """mAP, F1 and loss, then AP, F1 and positives per class."""
    table = Table(title=escape(f"{report['model']} on {report['data']} ({report['split']})"))
    for column in ("examples", "mAP", f"micro F1 @{report['threshold']:g}", "macro F1"):
        table.add_column(column, justify="right")
    table.add_row(str(report["num_examples"]), _percent(report["map"]),
                  _percent(report["micro_f1"]), _percent(report["macro_f1"]))
    console.print(table)
    per_class = Table(title="per class")
    for column in ("class", "AP", "F1", "positives"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for name, values in report["per_class"].items():
        per_class.add_row(escape(name), _percent(values["ap"]), _percent(values["f1"]),
                          str(values["positives"]))
    console.print(per_class)
    missing = report["classes_without_positives"]
    if missing:
        console.print(f"{len(missing)} class(es) without positives, left out of the mAP: "
                      f"{escape(', '.join(missing))}", soft_wrap=True)


def _print_report(report: dict) -> None:
    console.print(report["headline"], markup=False, soft_wrap=True)
    if report.get("multi_label"):
        _print_multilabel_report(report)
        return
    table = Table(title=escape(f"{report['model']} on {report['data']} ({report['split']})"))
    for column in ("examples", "top-1", "top-5", "loss"):
        table.add_column(column, justify="right")
    table.add_row(str(report["num_examples"]), f"{report['top1']:.2%}", f"{report['top5']:.2%}",
                  f"{report['loss']:.4f}")
    console.print(table)
    per_class = Table(title="per class")
    per_class.add_column("class")
    per_class.add_column("accuracy", justify="right")
    per_class.add_column("count", justify="right")
    for name, values in report["per_class"].items():
        accuracy = "-" if values["accuracy"] is None else f"{values['accuracy']:.2%}"
        per_class.add_row(escape(name), accuracy, str(values["count"]))
    console.print(per_class)
    for key, value in report.get("few_shot", {}).items():
        console.print(f"few-shot {key} (tested on {report['few_shot_split']}): "
                      f"{value['accuracy']:.2%} (± {value['std']:.2%})")
    if "confusion_png" in report:
        console.print(f"confusion matrix: {report['confusion_csv']}, {report['confusion_png']}")


@reports_errors(tensorflow=False)
def evaluate_command(
    model: opt.ModelArgument,
    data: opt.Data = None,
    split: Annotated[str | None, typer.Option("--split", help=with_default(
        "train, val, test, or all (every image of a plain class folder).",
        "test, else all, else val"))] = None,
    batch: opt.batch_option(BATCH_SIZE, "Images per forward pass.", panel=None) = None,
    few_shot: Annotated[str | None, typer.Option(  # parse_shots: a tuple of ints
        "--few-shot", parser=parse_shots, metavar="N,N,...", help=with_default(
            "Linear few-shot probes, e.g. 1,5,10,25 shots per class.", "none"))] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", parser=location, help=with_default(
        "Folder for confusion.csv/.png.", "eval-<split>/ next to the model"))] = None,
    data_dir: opt.DataDir = None, train_split: opt.TrainSplit = None,
    val_split: opt.ValSplit = None, test_split: opt.TestSplit = None,
    eval_crop: opt.EvalCrop = None, precision: opt.Precision = None,
    strategy: opt.Strategy = None, tpu: opt.Tpu = None,
    threshold: opt.Threshold = None, as_json: opt.Json = False,
) -> None:
    """Evaluate a model: top-1, top-5, loss, per-class accuracy, confusion matrix; on
    multi-label data mAP, per-class AP and micro/macro F1.

    Example: vitcli evaluate runs/flowers --data ./flowers --few-shot 1,5,10
    """
    # Flags are checked before TensorFlow starts: a typo answers at once.
    data_flags = {"source": data, "data_dir": data_dir, "train_split": train_split,
                  "val_split": val_split, "test_split": test_split, "eval_crop": eval_crop}
    if data is not None:  # without it, evaluate_report says what to give
        data_config(data_flags)
    if split is not None and split not in SPLITS:
        raise VitcliError(f"unknown split '{split}'", hint=f"use {', '.join(SPLITS)}")
    if batch is not None and batch < 1:
        raise VitcliError(f"--batch must be at least 1, not {batch}")
    threshold = check_value(ScoringConfig, "threshold", threshold)
    strategy = check_value(RunConfig, "strategy", strategy)
    import_tensorflow_quietly()
    from vitcli.evaluate.evaluation import evaluate_report

    report = evaluate_report(model, data_flags, split=split, batch_size=batch or BATCH_SIZE,
                             shots=few_shot or (), out_dir=out,
                             precision=precision or RunConfig.precision, threshold=threshold,
                             strategy=strategy, tpu=tpu)
    if as_json:
        print_json(report)
    else:
        _print_report(report)
