"""evaluate, predict and export driven through the CLI on a small trained run."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from vitcli.cli.app import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


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


def test_predict_csv_and_unreadable_file_warning(trained_run, colour_split_folder, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    good = next((colour_split_folder / "test" / "red").iterdir())
    result = invoke("predict", trained_run, good, broken, "--csv", "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["rank"] for row in rows] == ["1", "2"] and rows[0]["file"] == str(good)
    assert "skipped 1 unreadable" in result.stderr and "broken.png" in result.stderr


def test_exported_savedmodel_matches_predict_in_fresh_process(trained_run, colour_split_folder,
                                                              tmp_path):
    out = tmp_path / "serving"
    result = invoke("export", trained_run, "--format", "savedmodel", "--out", out)
    assert result.exit_code == 0, result.output
    assert "verified in a fresh process" in " ".join(result.stdout.split())  # rich wraps
    images = sorted((colour_split_folder / "test").rglob("*.png"))[:5]
    predicted = json.loads(invoke("predict", trained_run, *images, "--json").stdout)
    script = (
        "import sys, json, tensorflow as tf\n"
        "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "data = tf.constant([open(p, 'rb').read() for p in sys.argv[2:]])\n"
        "out = serve(image_bytes=data)\n"
        "print(json.dumps({'labels': out['top_k_labels'].numpy().astype(str).tolist(),"
        " 'scores': out['top_k_scores'].numpy().tolist()}))\n")
    completed = subprocess.run([sys.executable, "-c", script, str(out / "1"), *map(str, images)],
                               capture_output=True, text=True, timeout=120, check=True)
    served = json.loads(completed.stdout.strip().splitlines()[-1])
    for row, labels, scores in zip(predicted, served["labels"], served["scores"], strict=True):
        assert [label for label, _ in row["predictions"]][:3] == labels[:3]
        np.testing.assert_allclose([p for _, p in row["predictions"]][:3], scores[:3], atol=1e-5)


def test_export_refuses_unknown_format(trained_run, tmp_path):
    result = invoke("export", trained_run, "--format", "pickle", "--out", tmp_path / "x")
    assert result.exit_code == 1 and not (tmp_path / "x").exists()
    assert "unknown export format 'pickle'" in result.stderr


def test_finetune_on_tfds_source_via_mock_data(tmp_path, mnist_metadata_dir):
    import tensorflow_datasets as tfds

    out = tmp_path / "run"
    tfds_flags = ("--data", "tfds:mnist", "--data-dir", mnist_metadata_dir)
    with tfds.testing.mock_data(num_examples=12, data_dir=mnist_metadata_dir):
        result = invoke("finetune", "--model", "vit-mu4", "--from-scratch", *tfds_flags,
                        "--res", "28", "--steps", "2", "--batch", "8", "--out", out)
        assert result.exit_code == 0, result.output
        assert (out / "labels.txt").read_text().split() == [str(i) for i in range(10)]
        report = invoke("evaluate", out, *tfds_flags, "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["num_examples"] == 12


def test_grayscale_and_rgba_images_predict(trained_run, tmp_path):
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.full((20, 20, 4), 200, np.uint8)).save(tmp_path / "rgba.png")
    result = invoke("predict", trained_run, tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 2
