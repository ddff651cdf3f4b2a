"""Multi-label end to end through the CLI: fine-tune on a CSV manifest (sigmoid loss by
default, recorded in config.yaml), validation mAP, `evaluate --json` (mAP, per-class AP, F1),
`predict` (sigmoid scores, labels above the threshold), `export --format savedmodel` (its
scores equal the Keras model's in a fresh process), and the refusals, each one line."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import yaml

from tests.reference.numpy_vit import random_checkpoint
from tests.support.checkpoints import TINY_VIT
from tests.support.cli import invoke, one_error_line
from tests.support.export import run_python
from tests.support.images import COLOURS, write_colour_splits

TEMPERATURE = {"red": "warm", "green": "cool", "blue": "cool"}
CLASSES = ["blue", "cool", "green", "red", "warm"]
SCORE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """colours/{train,test}/<colour>/<i>.png listed in colours/labels.csv with two labels each
    (the colour and its temperature) and their split."""
    root = write_colour_splits(tmp_path_factory.mktemp("multi") / "colours", train=12, test=6)
    lines = ["file,labels,split"]
    for split in ("train", "test"):
        for colour in COLOURS:
            for image in sorted((root / split / colour).glob("*.png")):
                lines.append(f"{image.relative_to(root).as_posix()},"
                             f"{colour};{TEMPERATURE[colour]},{split}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.npz"
    np.savez(path, **random_checkpoint(2, num_classes=4, **TINY_VIT))
    return path


@pytest.fixture(scope="module")
def multilabel_run(manifest, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "colours"
    result = invoke("finetune", "--weights", weights, "--data", manifest, "--steps", 24,
                    "--batch", 12, "--lr", 0.05, "--warmup", 3, "--eval-every", 12, "--out", out)
    assert result.exit_code == 0, result.output
    assert "mAP" in result.stdout
    return out


def test_the_run_records_the_sigmoid_loss_and_validates_by_map(multilabel_run):
    config = yaml.safe_load((multilabel_run / "config.yaml").read_text())
    assert config["train"]["loss"] == "sigmoid"
    assert (multilabel_run / "labels.txt").read_text().splitlines() == CLASSES
    records = [json.loads(line) for line in (multilabel_run / "metrics.jsonl").open()]
    validations = [record for record in records if "val_map" in record]
    assert [record["step"] for record in validations] == [12, 24]
    assert all(0 <= record["val_map"] <= 1 and record["val_loss"] > 0 for record in validations)
    assert (multilabel_run / "best.keras").is_file()


def test_evaluate_json_reports_map_per_class_ap_and_f1(multilabel_run, manifest):
    result = invoke("evaluate", multilabel_run, "--data", manifest, "--json",
                    "--threshold", 0.4)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["multi_label"] and report["split"] == "test" and report["examples"] == 18
    assert set(report["per_class"]) == set(CLASSES)
    aps = [values["ap"] for values in report["per_class"].values()]
    assert report["map"] == pytest.approx(np.mean(aps)) and 0 <= report["map"] <= 1
    assert report["threshold"] == 0.4 and report["classes_without_positives"] == []
    assert 0 <= report["micro_f1"] <= 1 and 0 <= report["macro_f1"] <= 1
    assert {values["positives"] for values in report["per_class"].values()} == {6, 12}
    table = invoke("evaluate", multilabel_run, "--data", manifest)
    assert table.exit_code == 0 and "mAP" in table.stdout and "per class" in table.stdout


def test_predict_shows_sigmoid_scores_and_the_labels_above_the_threshold(multilabel_run,
                                                                         manifest):
    image = manifest.parent / "test" / "red" / "0.png"
    rows = json.loads(invoke("predict", multilabel_run, image, "--json", "--top-k", 5,
                             "--threshold", 0.3).stdout)
    scores = dict(rows[0]["predictions"])
    assert set(scores) == set(CLASSES) and all(0 < score < 1 for score in scores.values())
    assert rows[0]["labels"] == [name for name, score in rows[0]["predictions"] if score >= 0.3]
    assert sum(scores.values()) != pytest.approx(1.0)  # independent sigmoids, not a softmax
    table = invoke("predict", multilabel_run, image)
    assert table.exit_code == 0 and "score >= 0.5" in " ".join(table.stdout.split())
    csv = invoke("predict", multilabel_run, image, "--csv").stdout.splitlines()
    assert csv[0] == "file,rank,label,score,above_threshold"


EXPORTED_SCORES = """
import sys
import numpy as np
import tensorflow as tf
folder, pixels_path, outputs_path = sys.argv[1:]
loaded = tf.saved_model.load(folder)
outputs = loaded.signatures["predict_pixels"](pixels=tf.constant(np.load(pixels_path)))
np.savez(outputs_path, threshold=loaded.threshold.numpy(),
         **{key: np.asarray(value).astype(bytes) if value.dtype == tf.string
            else np.asarray(value) for key, value in outputs.items()})
"""


def test_exported_savedmodel_scores_equal_the_keras_models_in_a_fresh_process(multilabel_run,
                                                                              tmp_path):
    out = tmp_path / "serving"
    result = invoke("export", multilabel_run, "--format", "savedmodel", "--out", out,
                    "--threshold", 0.45)
    assert result.exit_code == 0, result.output
    model = keras.saving.load_model(multilabel_run / "model.keras")
    pixels = np.random.default_rng(4).uniform(0, 255, (5, 16, 16, 3)).astype(np.float32)
    pixels[0] = COLOURS["red"]  # a clean red and a clean blue image
    pixels[1] = COLOURS["blue"]
    np.save(tmp_path / "pixels.npy", pixels)
    run_python(EXPORTED_SCORES, str(out / "1"), str(tmp_path / "pixels.npy"),
               str(tmp_path / "outputs.npz"))
    outputs = dict(np.load(tmp_path / "outputs.npz"))
    logits = np.asarray(model(pixels, training=False), np.float64)
    expected = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(outputs["scores"], expected, atol=SCORE_TOLERANCE, rtol=0)
    assert outputs["threshold"] == np.float32(0.45)
    np.testing.assert_array_equal(outputs["predicted"], outputs["scores"] >= np.float32(0.45))
    for row, scores in zip(outputs["predicted_labels"], outputs["scores"], strict=True):
        order = [index for index in np.argsort(-scores, kind="stable") if scores[index] >= 0.45]
        assert [label.decode() for label in row if label] == [CLASSES[i] for i in order]


def test_softmax_on_multi_label_data_and_few_shot_are_refused_in_one_line(multilabel_run,
                                                                          manifest, weights,
                                                                          tmp_path):
    message = one_error_line(invoke("finetune", "--weights", weights, "--data", manifest,
                                    "--loss", "softmax", "--steps", 1, "--out", tmp_path / "r"))
    assert "--loss softmax needs one label per image" in message
    assert not (tmp_path / "r").exists()
    message = one_error_line(invoke("evaluate", multilabel_run, "--data", manifest,
                                    "--few-shot", "1"))
    assert "few-shot probes need single-label data" in message
    message = one_error_line(invoke("evaluate", multilabel_run, "--data", manifest,
                                    "--threshold", 1.5))
    assert "--threshold" in message and "[0, 1]" in message


def test_pretrain_plans_a_sigmoid_run_and_single_label_data_keeps_softmax(manifest, tmp_path):
    result = invoke("pretrain", "--model", "vit-mu7", "--res", 14, "--data", manifest,
                    "--steps", 5, "--batch", 8, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["loss"] == "sigmoid" and plan["data"]["multi_label"]
    assert "loss: sigmoid cross-entropy (multi-label data)" in plan["plan"]
    folder = manifest.parent / "train"
    plan = json.loads(invoke("pretrain", "--model", "vit-mu7", "--res", 14, "--data", folder,
                             "--steps", 5, "--batch", 8, "--dry-run", "--json").stdout)
    assert plan["loss"] == "softmax" and not plan["data"]["multi_label"]
    plan = json.loads(invoke("pretrain", "--model", "vit-mu7", "--res", 14, "--data", folder,
                             "--loss", "sigmoid", "--steps", 5, "--batch", 8, "--dry-run",
                             "--json").stdout)
    assert plan["loss"] == "sigmoid"
