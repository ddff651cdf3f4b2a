"""A folder of corrupt, empty, truncated, misnamed and non-image files, through the CLI."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from tests.train.conftest import write_colour_folder
from vitcli.cli.app import app

runner = CliRunner()


@pytest.fixture
def messy_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VITCLI_HOME", str(tmp_path / "home"))
    root = write_colour_folder(tmp_path / "messy", per_class=6)
    good = (root / "red" / "0.png").read_bytes()
    (root / "red" / "empty.png").write_bytes(b"")
    (root / "red" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "green" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "green" / "notes.txt").write_text("not an image")
    (root / "blue" / "PHOTO.JPEG").write_bytes(good)  # a PNG named .JPEG: still an image
    return root


def finetune(data, out, *extra):
    return runner.invoke(app, ["finetune", "--model", "vit-mu8", "--from-scratch", "--data",
                               str(data), "--res", "16", "--steps", "1", "--batch", "6",
                               "--out", str(out), *extra])


def test_bad_files_are_listed_in_one_warning_and_skipped(messy_folder, tmp_path):
    result = finetune(messy_folder, tmp_path / "run")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "unreadable" in line]
    assert len(warnings) == 1
    for name in ("empty.png", "truncated.png", "corrupt.jpg", "notes.txt"):
        assert name in result.output
    assert "PHOTO.JPEG" not in result.output and "Traceback" not in result.output


def test_strict_turns_bad_files_into_one_line_error(messy_folder, tmp_path):
    result = finetune(messy_folder, tmp_path / "run", "--strict")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.parametrize("case", ["empty_class", "no_images", "missing_path", "a_file"])
def test_unusable_folders_are_one_line_errors(messy_folder, tmp_path, case):
    if case == "empty_class":
        (messy_folder / "purple").mkdir()
        data = messy_folder
    elif case == "no_images":
        data = tmp_path / "nothing"
        (data / "cats").mkdir(parents=True)
        (data / "cats" / "readme.txt").write_text("no images here")
    elif case == "missing_path":
        data = tmp_path / "absent"
    else:
        data = messy_folder / "red" / "0.png"
    result = finetune(data, tmp_path / "run")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
