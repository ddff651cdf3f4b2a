"""Failed, unloadable and interrupted exports leave nothing behind; bad arguments are one-line
errors; where artefacts go and which SavedModel version comes next."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.support.export import LABELS, TINY
from vitcli.errors import VitcliError
from vitcli.export import dispatch, export_model
from vitcli.export.dispatch import destination_of
from vitcli.export.formats import FORMATS
from vitcli.export.savedmodel import next_version, write_savedmodel
from vitcli.models.vit import build_vit


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _with_writer(monkeypatch, fmt: str, write) -> None:
    """The registry's `fmt` with another writer, for this test."""
    monkeypatch.setitem(FORMATS, fmt, dataclasses.replace(FORMATS[fmt], write=write))


def _one_line_error(function, *args, **kwargs) -> str:
    with pytest.raises(VitcliError) as caught:
        function(*args, **kwargs)
    message = str(caught.value)
    assert message and "\n" not in message, message
    return message


def test_a_failed_verification_leaves_nothing(model, tmp_path, monkeypatch):
    """The writer exports another model (other weights): the real check in a fresh process
    sees the difference, and neither the version folder nor its new base folder remains."""
    other = build_vit(TINY)  # its head is zero: uniform probabilities, far from `model`'s
    _with_writer(monkeypatch, "savedmodel",
                 lambda _model, path, **options: write_savedmodel(other, path, **options))
    message = _one_line_error(export_model, model, "savedmodel", tmp_path / "served",
                              labels=LABELS)
    assert "differs from the keras model" in message.lower() and "nothing was written" in message
    assert list(tmp_path.iterdir()) == []


def test_an_unloadable_artefact_keeps_the_existing_file(model, tmp_path, monkeypatch):
    """A file the fresh process cannot load fails the export; the old file stays as it was."""
    destination = tmp_path / "model.keras"
    destination.write_bytes(b"the previous export")

    def write_garbage(_model, path: Path) -> dict:
        path.write_bytes(b"not a keras archive")
        return {}

    _with_writer(monkeypatch, "keras", write_garbage)
    message = _one_line_error(export_model, model, "keras", destination, labels=LABELS)
    assert "could not be run in a fresh process" in message
    assert _files(tmp_path) == {"model.keras": b"the previous export"}


def test_an_interrupted_export_leaves_nothing(model, tmp_path, monkeypatch):
    def interrupt(*_arguments, **_options):
        raise KeyboardInterrupt

    monkeypatch.setattr(dispatch, "measure", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_model(model, "npz", tmp_path / "new" / "deeper" / "weights.npz", labels=LABELS)
    assert list(tmp_path.iterdir()) == []


def test_a_converter_failure_is_one_line(model, tmp_path, monkeypatch):
    def broken(_model, _path):
        raise RuntimeError("unsupported op\nwith a long\nstack")

    _with_writer(monkeypatch, "onnx", broken)
    message = _one_line_error(export_model, model, "onnx", tmp_path / "m.onnx", labels=LABELS)
    assert message == "onnx export failed: RuntimeError: unsupported op"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("arguments", "expected"), [
    (dict(fmt="pb"), "unknown export format"),
    (dict(labels=LABELS[:-1]), "4 labels for a model with 5 classes"),
    (dict(labels=["a", "b", "c\nd", "e", "f"]), "line break"),
    (dict(eval_crop="inception"), "eval crop"),
    (dict(top_k=0), "top-k"),
    (dict(fmt="onnx", out="model.tflite"), "'.onnx' file"),
])
def test_bad_arguments_are_one_line_errors(model, tmp_path, arguments, expected):
    options = dict(fmt="savedmodel", out="out", labels=LABELS) | arguments
    message = _one_line_error(export_model, model, options.pop("fmt"),
                              tmp_path / options.pop("out"), **options)
    assert expected in message
    assert list(tmp_path.iterdir()) == []


def test_a_savedmodel_needs_a_folder(model, tmp_path):
    (tmp_path / "served").write_text("a file")
    assert "needs a folder" in _one_line_error(export_model, model, "savedmodel",
                                               tmp_path / "served", labels=LABELS)


def test_next_version_follows_the_highest_integer_folder(tmp_path):
    assert next_version(tmp_path / "missing") == 1
    assert next_version(tmp_path) == 1
    for name in ("1", "3", "latest", ".4.1a2b3c4d.partial"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    assert next_version(tmp_path) == 4


def test_destinations_of_file_formats(tmp_path):
    assert destination_of("onnx", tmp_path / "m.onnx") == tmp_path / "m.onnx"
    assert destination_of("tflite", tmp_path / "m") == tmp_path / "m.tflite"
    assert destination_of("keras", tmp_path) == tmp_path / "model.keras"
    assert destination_of("savedmodel", tmp_path / "served") == tmp_path / "served" / "1"


def test_export_without_verification_reports_nan(model, tmp_path):
    result = export_model(model, "npz", tmp_path, labels=LABELS, verify=False)
    assert result.path == tmp_path / "model.npz" and result.path.is_file()
    assert np.isnan(result.max_abs_diff) and result.details["verified"] is False
