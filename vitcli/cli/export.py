"""`vitcli export`: SavedModel (TF Serving), .keras, TFLite, ONNX or .npz, verified."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vitcli.cli import options as opt
from vitcli.cli.console import console, reports_errors
from vitcli.cli.options import with_default
from vitcli.config import DataConfig


@reports_errors
def export_command(
    model: opt.ModelArgument,
    fmt: Annotated[str, typer.Option("--format", "-f", help="savedmodel, keras, tflite, onnx "
                                     "or npz.")] = "savedmodel",
    out: Annotated[Path | None, typer.Option("--out", "-o", help=with_default(
        "Output path (savedmodel: a folder that gets a version sub-folder).",
        "<model name>-<format>.<suffix>, e.g. flowers-onnx.onnx"))] = None,
    labels_file: Annotated[Path | None, typer.Option("--labels", help=with_default(
        "Class names, one per line.", "a run directory's labels.txt, else class numbers"))] = None,
    eval_crop: opt.EvalCrop = None,
    top_k: Annotated[int, typer.Option("--top-k", help="top_k outputs of the serving "
                                       "signature.")] = 5,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Reload in a fresh "
                                         "process and compare with Keras.")] = True,
) -> None:
    """Export a model for serving, verified in a fresh process before it is put in place.

    Examples:

      vitcli export runs/flowers --format savedmodel --out serving/flowers

      vitcli export runs/flowers --format onnx --out flowers.onnx
    """
    from vitcli.export import FORMATS, export_model
    from vitcli.train.models import load_trained

    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    network, labels = load_trained(model)
    if labels_file is not None:
        labels = labels_file.read_text().splitlines()
    labels = labels or [str(index) for index in range(network.output_shape[-1])]
    suffix = {"savedmodel": "", "keras": ".keras", "tflite": ".tflite", "onnx": ".onnx",
              "npz": ".npz"}[fmt]
    out = out or Path(f"{Path(model).stem}-{fmt}{suffix}")
    result = export_model(network, fmt, out, labels=labels,
                          eval_crop=eval_crop or DataConfig.eval_crop, top_k=top_k,
                          verify=verify, log=lambda line: console.print(f"  {line}"))
    console.print(f"exported {fmt} to {result.path}"
                  + (f" (verified in a fresh process: max |diff| {result.max_abs_diff:.2e})"
                     if verify else ""))
