"""`vitcli evaluate` through the CLI: on a small trained run (reports, the confusion matrix,
few-shot probes, agreement with predict) and on a random run over real folders (which images
are used, every report saying what it evaluated on, bad flags as one line)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import invoke, one_error_line, runner
from tests.support.images import COLOUR_CLASSES as COLOURS
from tests.support.images import write_colour_folder
from vitcli.cli.app import app
from vitcli.config import DataConfig, RunConfig
from vitcli.data.sources import open_source
from vitcli.evaluate.evaluation import headline


def test_evaluate_json_agrees_with_predict(trained_run, colour_split_folder):
    result = invoke("evaluate", trained_run, "--data", colour_split_folder, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"] == "test" and report["num_examples"] == 18
    assert 0 <= report["top1"] <= report["top5"] <= 1 and np.isfinite(report["loss"])
    predicted = json.loads(invoke("predict", trained_run, colour_split_folder / "test", "--json",
                                  "--top-k", "1").stdout)
    correct = [Path(row["file"]).parent.name == row["predictions"][0][0] for row in predicted]
    assert len(correct) == 18
    assert report["top1"] == np.mean(correct)
    matrix = np.array(report["confusion"])
    assert matrix.sum() == 18 and np.trace(matrix) == sum(correct)


def test_evaluate_learned_the_colours_and_writes_confusion(trained_run, colour_split_folder,
                                                          tmp_path):
    result = invoke("evaluate", trained_run, "--data", colour_split_folder, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "top-1" in result.stdout and "per class" in result.stdout
    rows = list(csv.reader((tmp_path / "confusion.csv").open()))
    counts = [sum(int(value) for value in row[1:]) for row in rows[1:]]
    assert counts == [6, 6, 6]
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(invoke("evaluate", trained_run, "--data", colour_split_folder,
                               "--json").stdout)
    assert report["top1"] > 0.9  # solid colours are easy after 30 steps


def test_few_shot_probes(trained_run, colour_split_folder):
    result = invoke("evaluate", trained_run, "--data", colour_split_folder, "--few-shot", "1,3",
                    "--json")
    assert result.exit_code == 0, result.output
    few_shot = json.loads(result.stdout)["few_shot"]
    assert set(few_shot) == {"1shot", "3shot"}
    assert few_shot["3shot"]["accuracy"] > 0.6


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


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_strategy_is_training_s_option(run_dir, plain_folder, command):
    """The same --strategy as training: its help and default, its one-line error."""
    where = ["--data", plain_folder] if command == "evaluate" else [plain_folder]
    message = one_error_line(invoke(command, run_dir, *where, "--strategy", "bogus"))
    assert "unknown strategy 'bogus'" in message
    help_text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
    line = next(line for line in help_text.splitlines() if "--strategy" in line)
    assert f"[default: {RunConfig.strategy}]" in line and "--tpu" in help_text


def test_a_tpu_strategy_without_a_tpu_is_training_s_error_before_any_reading(plain_folder,
                                                                            tmp_path):
    """Neither the model nor the data exist: the strategy is chosen before either is read."""
    absent = tmp_path / "absent"
    training = one_error_line(invoke("finetune", "--model", "vit-mu8", "--from-scratch",
                                     "--data", plain_folder, "--steps", 1, "--out",
                                     tmp_path / "run", "--strategy", "tpu"))
    assert training.startswith("error: no tpu found at")
    evaluating = invoke("evaluate", absent / "model.keras", "--data", absent, "--strategy", "tpu")
    predicting = invoke("predict", absent / "model.keras", plain_folder, "--strategy", "tpu")
    assert one_error_line(evaluating) == one_error_line(predicting) == training
