"""`vitcli predict` through the CLI: on a small trained run (CSV, unreadable files, grayscale and
RGBA images) and on a random run over real folders (files judged by content, --top-k, labels
files, bad inputs as one line)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.cli import invoke, one_error_line
from tests.support.images import COLOUR_CLASSES as COLOURS


def predict_with_labels(run_dir, image, folder, text: str, *extra):
    """`vitcli predict RUN IMAGE --labels FILE EXTRA...` with FILE `folder`/labels.txt holding
    `text`: (FILE, the result)."""
    labels = folder / "labels.txt"
    labels.write_text(text)
    return labels, invoke("predict", run_dir, image, "--labels", labels, *extra)


def test_predict_csv_and_unreadable_file_warning(trained_run, colour_split_folder, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    good = next((colour_split_folder / "test" / "red").iterdir())
    result = invoke("predict", trained_run, good, broken, "--csv", "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["rank"] for row in rows] == ["1", "2"] and rows[0]["file"] == str(good)
    assert "skipped 1 unreadable" in result.stderr and "broken.png" in result.stderr


def test_grayscale_and_rgba_images_predict(trained_run, tmp_path):
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.full((20, 20, 4), 200, np.uint8)).save(tmp_path / "rgba.png")
    result = invoke("predict", trained_run, tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 2


def test_predict_judges_a_folder_by_content(run_dir, mixed_folder):
    result = invoke("predict", run_dir, mixed_folder, "--json")
    assert result.exit_code == 0, result.output
    used = sorted(Path(row["file"]).relative_to(mixed_folder).as_posix()
                  for row in json.loads(result.stdout))
    assert used == ["nested/blue/0.png", "nested/green/0.png", "nested/red/0.png",
                    "photo.webp", "really-a-png.jpg", "top.png"]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "skipped 3 unreadable file(s)" in warnings[0]
    for name, reason in (("notes.txt", "not an image"), ("empty.png", "empty file"),
                         ("huge.png", "too large to decode (12000 x 12000")):
        assert f"{mixed_folder / name} ({reason}" in warnings[0]


@pytest.mark.parametrize("top_k", ["0", "-2"])
def test_top_k_below_one_is_one_line(run_dir, mixed_folder, top_k):
    message = one_error_line(invoke("predict", run_dir, mixed_folder / "top.png", "--top-k",
                                    top_k))
    assert f"--top-k must be at least 1, not {top_k}" in message


def test_top_k_above_the_classes_is_clamped(run_dir, mixed_folder):
    result = invoke("predict", run_dir, mixed_folder / "top.png", "--top-k", "99", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert sorted(label for label, _ in row["predictions"]) == COLOURS


def test_a_labels_file_of_the_wrong_length_is_one_line(run_dir, mixed_folder, tmp_path):
    labels, result = predict_with_labels(run_dir, mixed_folder / "top.png", tmp_path,
                                         "cat\ndog\n")
    message = one_error_line(result)
    assert f"--labels {labels} has 2 names for a 3-class model".lower() in message


def test_predict_judges_named_files_by_content_not_extension(run_dir, tmp_path):
    """A PNG named .txt is predicted; a text file named .jpg is reported, named on its own
    or inside a folder, as folders judge their files."""
    folder = tmp_path / "misnamed"
    folder.mkdir()
    Image.new("RGB", (20, 20), (30, 200, 30)).save(folder / "picture.txt", "PNG")
    (folder / "words.jpg").write_text("a text file, whatever its name says")
    for arguments in ([folder / "picture.txt", folder / "words.jpg"], [folder]):
        result = invoke("predict", run_dir, *arguments, "--json")
        assert result.exit_code == 0, result.output
        assert [row["file"] for row in json.loads(result.stdout)] == [
            str(folder / "picture.txt")]
        assert f"{folder / 'words.jpg'} (not an image" in result.stderr
    message = one_error_line(invoke("predict", run_dir, folder / "words.jpg"))
    assert "no usable images" in message and "words.jpg: not an image" in message


def test_an_empty_labels_file_is_one_line(run_dir, mixed_folder, tmp_path):
    labels, result = predict_with_labels(run_dir, mixed_folder / "top.png", tmp_path, "")
    message = one_error_line(result)
    assert f"--labels {labels} has no names".lower() in message


def test_a_run_labels_file_of_the_wrong_length_is_one_line(run_dir, mixed_folder, tmp_path):
    """A run directory whose labels.txt does not name every class is refused, never replaced
    by class numbers."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").symlink_to(run_dir / "model.keras")
    (run / "labels.txt").write_text("cat\ndog\n")
    message = one_error_line(invoke("predict", run, mixed_folder / "top.png"))
    assert f"{run / 'labels.txt'} has 2 names for a 3-class model".lower() in message


def test_a_missing_labels_file_is_one_line(run_dir, mixed_folder, tmp_path):
    message = one_error_line(invoke("predict", run_dir, mixed_folder / "top.png", "--labels",
                                    tmp_path / "absent.txt"))
    assert "cannot read --labels" in message and "no such file" in message


def test_a_labels_file_names_the_predictions(run_dir, mixed_folder, tmp_path):
    _, result = predict_with_labels(run_dir, mixed_folder / "top.png", tmp_path,
                                    "azure\nolive\nscarlet\n", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert {label for label, _ in row["predictions"]} == {"azure", "olive", "scarlet"}


def test_a_folder_without_usable_images_is_one_line(run_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    message = one_error_line(invoke("predict", run_dir, tmp_path / "docs"))
    assert "no usable images" in message and "readme.txt" in message
