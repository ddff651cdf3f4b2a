"""`export_model`: picks the destination, locks its folder, checks what it would replace,
writes the format at a temporary path beside it, verifies it in a fresh process and renames
it into place."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import keras

from vitcli.config import EVAL_CROPS, LOSSES  # declared once, with the settings
from vitcli.errors import VitcliError
from vitcli.export import ExportResult
from vitcli.export.compare import measure
from vitcli.export.formats import get_format
from vitcli.export.savedmodel import next_version
from vitcli.export.staging import locked_folder, staged
from vitcli.export.targets import check_protected, check_replaceable
from vitcli.files import reports_full_disk
from vitcli.models import fused
from vitcli.storage import files_below, location

DEFAULT_FILE_NAME = "model"


def _check_arguments(model: keras.Model, fmt: str, labels: list[str], eval_crop: str,
                     top_k: int, scores: str, threshold: float) -> None:
    get_format(fmt)
    num_classes = model.output_shape[-1]
    if len(labels) != num_classes:
        # The remedy is in the message, not a hint: a bad input is one line.
        raise VitcliError(f"{len(labels)} labels for a model with {num_classes} classes; "
                          f"give one label per class, in class-index order")
    if any("\n" in label or "\r" in label for label in labels):
        raise VitcliError("a label contains a line break (labels are stored one per line)")
    if eval_crop not in EVAL_CROPS:
        raise VitcliError(f"eval crop must be one of {EVAL_CROPS}, not '{eval_crop}'")
    if top_k < 1:
        raise VitcliError(f"top-k must be at least 1, not {top_k}")
    if scores not in LOSSES:
        raise VitcliError(f"scores must be one of {', '.join(LOSSES)}, not '{scores}'")
    if not 0.0 <= threshold <= 1.0:
        raise VitcliError(f"the threshold must lie in [0, 1], not {threshold:g}")


def destination_of(fmt: str, out: Path) -> Path:
    """Where the artefact goes: `out/<next version>` for a versioned format (SavedModel);
    for a file format `out` itself, with the format's suffix added if it has none, or
    `out/model.<suffix>` if `out` is an existing folder."""
    export_format = get_format(fmt)
    if export_format.versioned:
        if out.exists() and not out.is_dir():
            raise VitcliError(f"'{out}' is a file; a {export_format.title} export needs a folder")
        version = next_version(out)
        while (out / str(version)).exists():  # a file named like the next version
            version += 1
        return out / str(version)
    suffix = export_format.suffix
    if out.is_dir():
        return out / f"{DEFAULT_FILE_NAME}{suffix}"
    if not out.suffix:
        return out.with_suffix(suffix)
    if out.suffix != suffix:
        raise VitcliError(f"{fmt} exports are '{suffix}' files, not '{out.name}'",
                          hint=f"use e.g. --out {out.with_suffix(suffix)}")
    return out


def _write(model, fmt: str, path: Path, labels, eval_crop: str, top_k: int, scores: str,
           threshold: float) -> dict:
    """Runs the format's writer, turning a converter's failure into one VitcliError line."""
    export_format = get_format(fmt)
    serving = (dict(labels=labels, eval_crop=eval_crop, top_k=top_k, scores=scores,
                    threshold=threshold) if export_format.serves_images else {})
    try:
        return export_format.write(model, path, **serving)
    except VitcliError:
        raise
    except Exception as error:  # converters raise many types; all mean "could not convert".
        first_line = next((line for line in str(error).splitlines() if line.strip()), "")
        raise VitcliError(f"{fmt} export failed: {type(error).__name__}: {first_line}") from error


def _verify(model, fmt: str, path: Path, destination: Path, labels, eval_crop: str, log,
            scores: str = "softmax", threshold: float = 0.5) -> dict:
    """Measures the artefact in a fresh process and refuses it beyond the format's tolerance."""
    log(f"verifying {fmt} in a fresh process")
    probability_checks, logit_checks = measure(model, fmt, path, labels=labels,
                                               eval_crop=eval_crop, scores=scores,
                                               threshold=threshold)
    difference, tolerance = max(probability_checks.values()), get_format(fmt).tolerance
    log(f"max |difference| to the Keras model: {difference:.2e} (tolerance {tolerance:.0e})")
    if not math.isfinite(difference) or difference > tolerance:
        raise VitcliError(f"the {fmt} export differs from the Keras model by {difference:.2e} "
                          f"(tolerance {tolerance:.0e}); nothing was written to '{destination}'")
    return {"max_abs_diff": difference, "tolerance": tolerance, "checks": probability_checks,
            "logit_checks": logit_checks}


def _size_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum((path / name).stat().st_size for name in files_below(path))


def export_model(model: keras.Model, fmt: str, out, *, labels: list[str],
                 eval_crop: str = "resize", top_k: int = 5, verify: bool = True,
                 log=None, overwrite: bool = True,
                 protect: Mapping[Path, str] | None = None, scores: str = "softmax",
                 threshold: float = 0.5) -> ExportResult:
    """Exports `model` as `fmt` at `out` (see `destination_of`), verified against `model`
    in a fresh process unless `verify` is False; `log(line)` receives progress lines.

    The destination's folder is locked while the export is written. Without `overwrite`
    (the CLI's default; this function's is True, as for `model.save`) only a previous
    export of the same format is replaced (see `vitcli.export.targets`); nothing is ever
    written to or into the `protect` paths, which map to what they are for the refusal
    (the CLI's: the source model and its run's checkpoints).

    `scores="sigmoid"` exports a multi-label model: the SavedModel's signatures return
    per-class sigmoid scores and the labels scoring at least `threshold` (stored in the
    export); the other formats return what they return for any model (logits, and TFLite's
    and ONNX's softmax `probabilities`), and are verified on the sigmoid of their logits.
    """
    log = log or (lambda line: None)
    labels = [str(label) for label in labels]
    _check_arguments(model, fmt, labels, eval_crop, top_k, scores, threshold)
    out = location(out)
    destination = destination_of(fmt, out)
    check_protected(destination, protect or {})
    export_format = get_format(fmt)
    what = f"{export_format.title} base" if export_format.versioned else "export folder"
    check = {"max_abs_diff": math.nan}
    with reports_full_disk(destination), locked_folder(destination.parent, what):
        # Again under the lock: a concurrent export may have added a version meanwhile.
        destination = destination_of(fmt, out)
        check_replaceable(fmt, destination, overwrite)
        with staged(destination) as temporary:
            log(f"writing {fmt} to {destination}")
            with fused.portable():  # exported graphs hold no XLA-compiled function
                details = _write(model, fmt, temporary, labels, eval_crop, top_k, scores,
                                 threshold)
            if verify:
                check = _verify(model, fmt, temporary, destination, labels, eval_crop, log,
                                scores, threshold)
    details.update({key: value for key, value in check.items() if key != "max_abs_diff"},
                   verified=verify, size_bytes=_size_bytes(destination))
    if export_format.versioned:
        details["version"] = int(destination.name)
    log(f"wrote {destination}")
    return ExportResult(fmt, destination, check["max_abs_diff"], details)
