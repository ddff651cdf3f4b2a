"""`vitcli export`: SavedModel (TF Serving), .keras, TFLite, ONNX or .npz, verified."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitcli._environment import import_tensorflow_quietly
from vitcli.cli import options as opt
from vitcli.cli.console import console, reports_errors
from vitcli.cli.options import read_labels_file, with_default
from vitcli.config import DataConfig, ScoringConfig, check_value
from vitcli.export.formats import FORMATS, get_format
from vitcli.files import terminate_as_interrupt
from vitcli.storage import location


def _listed(words: list[str]) -> str:
    """'a, b or c'."""
    *rest, last = words
    return f"{', '.join(rest)} or {last}" if rest else last


# The help names what the registry holds, so a new format appears in it by itself.
VERSIONED = [export_format for export_format in FORMATS.values() if export_format.versioned]
VERSIONED_NAMES = _listed([export_format.name for export_format in VERSIONED])
VERSIONED_TITLES = _listed([export_format.title for export_format in VERSIONED])


def _source(model: Path) -> tuple[Path, str | Path]:
    """(the model file, what to load it from): a run directory is loaded as such, for its
    labels; a name or URL is resolved (downloaded) once."""
    from vitcli.weights.trained import resolve_model_path

    path = resolve_model_path(str(model))
    return path, (model if model.is_dir() else path)


@reports_errors(tensorflow=False)
def export_command(
    model: opt.ModelArgument,
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help=f"{_listed(list(FORMATS))}.")] = "savedmodel",
    out: Annotated[Path | None, typer.Option("--out", "-o", parser=location, help=with_default(
        f"Output path ({VERSIONED_NAMES}: a folder that gets a version sub-folder).",
        "<model name>-<format>.<suffix>, e.g. flowers-onnx.onnx"))] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file at "
                                            "--out that is not a vitcli export of this format "
                                            f"({VERSIONED_NAMES}: add a version to a folder that "
                                            f"is not a {VERSIONED_TITLES} base).")] = False,
    labels_file: Annotated[Path | None, typer.Option("--labels", parser=location, help=with_default(
        "Class names, one per line.", "a run directory's labels.txt, else class numbers"))] = None,
    eval_crop: opt.EvalCrop = None,
    top_k: Annotated[int, typer.Option("--top-k", help="top_k outputs of the serving "
                                       "signature.")] = 5,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Reload in a fresh "
                                         "process and compare with Keras.")] = True,
    scores: opt.Scores = None,
    threshold: opt.Threshold = None,
) -> None:
    """Export a model for serving, verified in a fresh process before it is put in place.

    An existing file at --out is replaced only if it is a vitcli export of the same format
    (else --overwrite); the source model and its run's checkpoints never are. A multi-label
    model's SavedModel returns sigmoid scores and the labels at or above --threshold.

    Examples:

      vitcli export runs/flowers --format savedmodel --out serving/flowers

      vitcli export runs/flowers --format onnx --out flowers.onnx
    """
    suffix = get_format(fmt).suffix  # before TensorFlow starts: a typo answers at once
    labels = read_labels_file(labels_file) if labels_file is not None else None
    scoring = {"scores": check_value(ScoringConfig, "scores", scores),
               "threshold": check_value(ScoringConfig, "threshold", threshold)}
    import_tensorflow_quietly()
    # SIGTERM takes Ctrl-C's path, so an export killed by a scheduler removes its temporary.
    with terminate_as_interrupt():
        _export(model, fmt, out or Path(f"{model.stem}-{fmt}{suffix}"), overwrite,
                labels, eval_crop or DataConfig.eval_crop, top_k, verify, scoring)


def _export(model: Path, fmt: str, out: Path, overwrite: bool, labels: list[str] | None,
            eval_crop: str, top_k: int, verify: bool, scoring: dict) -> None:
    from vitcli.export import export_model
    from vitcli.export.targets import protected_paths
    from vitcli.weights.trained import load_trained, model_scores

    source, load_from = _source(model)
    network, run_labels = load_trained(load_from)
    labels = labels or run_labels or [str(index) for index in range(network.output_shape[-1])]
    result = export_model(network, fmt, out, labels=labels, eval_crop=eval_crop, top_k=top_k,
                          verify=verify, log=lambda line: console.print(f"  {line}"),
                          overwrite=overwrite, protect=protected_paths(source),
                          scores=model_scores(model, scoring["scores"]),
                          threshold=scoring["threshold"])
    console.print(f"exported {fmt} to {result.path}"
                  + (f" (verified in a fresh process: max |diff| {result.max_abs_diff:.2e})"
                     if verify else ""))
