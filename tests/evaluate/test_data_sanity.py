"""evaluate and predict through the CLI on real folders with a tiny real model: which images
are used (a plain class folder is evaluated on all of them, predict judges files by content),
every report saying what it evaluated on, and bad flags as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.data.test_bounded_inputs import write_black_png
from tests.train.conftest import TINY_VIT, write_colour_folder
from vitcli.cli.app import app
from vitcli.config import DataConfig, ModelConfig
from vitcli.data.sources import open_source
from vitcli.evaluate.evaluation import headline
from vitcli.models.vit import build_vit

runner = CliRunner()
COLOURS = ["blue", "green", "red"]  # write_colour_folder's classes, in label order


@pytest.fixture(scope="module", autouse=True)
def vitcli_home(tmp_path_factory):
    """The index caches of this module's folders stay in its own home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITCLI_HOME", str(tmp_path_factory.mktemp("vitcli-home")))
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory's model.keras (a random one-block ViT, 3 classes, 16 px: quick to load
    and trace) and labels.txt."""
    directory = tmp_path_factory.mktemp("run")
    config = ModelConfig(**dict(TINY_VIT, depth=1), num_classes=3)
    build_vit(config).save(directory / "model.keras")
    (directory / "labels.txt").write_text("".join(f"{name}\n" for name in COLOURS))
    return directory


@pytest.fixture(scope="module")
def plain_folder(tmp_path_factory) -> Path:
    return write_colour_folder(tmp_path_factory.mktemp("plain") / "colours", per_class=5)


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("splits") / "colours"
    write_colour_folder(root / "train", per_class=4)
    write_colour_folder(root / "test", per_class=2, seed=1)
    return root


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def one_error_line(result) -> str:
    """The one `error:` line of a failed command (no traceback), lower-cased."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0].lower()


# -- evaluate ----------------------------------------------------------------------------------


def test_a_plain_class_folder_is_evaluated_on_all_its_images(run_dir, plain_folder, tmp_path):
    """Few-shot probes, whose shots come from it, are tested on its hold-out instead."""
    result = invoke("evaluate", run_dir, "--data", plain_folder, "--json", "--out", tmp_path,
                    "--few-shot", "1")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report)[:2] == ["split", "examples"]
    assert (report["split"], report["examples"], report["num_examples"]) == ("all", 15, 15)
    assert report["few_shot_split"] == "val" and set(report["few_shot"]) == {"1shot"}
    text = invoke("evaluate", run_dir, "--data", plain_folder, "--out", tmp_path)
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[0] == (
        f"evaluating on all 15 images of {plain_folder} (a plain class folder)")


def test_its_hold_out_is_still_there_when_asked_for(plain_folder):
    source = open_source(DataConfig(source=str(plain_folder)), purpose="evaluate")
    assert {name: split.num_examples for name, split in source.splits.items()} == {
        "all": 15, "train": 12, "val": 3}  # one of each class's 5 held out
    assert headline(source, "./colours", "val") == (
        "evaluating on the val split (3 images) of ./colours (a plain class folder)")


def test_a_split_layout_is_evaluated_on_test(run_dir, split_folder, tmp_path):
    result = invoke("evaluate", run_dir, "--data", split_folder, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"evaluating on the test split (6 images) of {split_folder} (train/test folders)")


def test_a_one_class_folder_is_evaluated_on_the_runs_classes(run_dir, tmp_path):
    folder = tmp_path / "reds"
    write_colour_folder(folder, per_class=3)
    for other in ("blue", "green"):
        for file in (folder / other).iterdir():
            file.unlink()
        (folder / other).rmdir()
    result = invoke("evaluate", run_dir, "--data", folder, "--json", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["examples"] == 3 and list(report["per_class"]) == COLOURS
    assert {name: row["count"] for name, row in report["per_class"].items()} == {
        "blue": 0, "green": 0, "red": 3}


def test_few_shot_that_is_not_numbers_is_a_usage_error(run_dir, plain_folder):
    result = invoke("evaluate", run_dir, "--data", plain_folder, "--few-shot", "abc")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "not 'abc'" in " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_an_unknown_eval_crop_is_one_line(run_dir, plain_folder, command):
    where = ["--data", plain_folder] if command == "evaluate" else [plain_folder]
    message = one_error_line(invoke(command, run_dir, *where, "--eval-crop", "bogus"))
    assert "unknown evaluation crop 'bogus'" in message


def test_an_unknown_split_is_one_line(run_dir, plain_folder):
    result = invoke("evaluate", run_dir, "--data", plain_folder, "--split", "bogus")
    assert "unknown split 'bogus'" in one_error_line(result)
    assert "hint: use train, val, test, all" in result.stderr


# -- predict -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Images of every kind, misnamed and nested, next to files that are not usable images."""
    root = tmp_path_factory.mktemp("mixed") / "photos"
    write_colour_folder(root / "nested", per_class=1)
    picture = Image.new("RGB", (20, 20), (200, 30, 30))
    picture.save(root / "top.png")  # directly in the folder: used by predict
    picture.save(root / "photo.webp")
    picture.save(root / "really-a-png.jpg", "PNG")
    (root / "notes.txt").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    write_black_png(root / "huge.png", 12000, 12000)  # never decoded
    return root


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
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    message = one_error_line(invoke("predict", run_dir, mixed_folder / "top.png", "--labels",
                                    labels))
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
    labels = tmp_path / "labels.txt"
    labels.write_text("")
    message = one_error_line(invoke("predict", run_dir, mixed_folder / "top.png", "--labels",
                                    labels))
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
    labels = tmp_path / "labels.txt"
    labels.write_text("azure\nolive\nscarlet\n")
    result = invoke("predict", run_dir, mixed_folder / "top.png", "--labels", labels, "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert {label for label, _ in row["predictions"]} == {"azure", "olive", "scarlet"}


def test_a_folder_without_usable_images_is_one_line(run_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    message = one_error_line(invoke("predict", run_dir, tmp_path / "docs"))
    assert "no usable images" in message and "readme.txt" in message
