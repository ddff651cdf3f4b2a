"""`evaluate` and `predict` under MirroredStrategy over two logical CPUs give the one-device
numbers: 13 images at batch 4, so global batches split over two replicas and a ragged last
batch of one image (padded, masked, put back in order).

The logical CPU split must happen before TensorFlow initialises its devices, so both
strategies run in one fresh process (VITCLI_CPU_DEVICES=2), the mirrored one first."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.reference.numpy_vit import random_checkpoint
from tests.support.checkpoints import TINY_VIT
from tests.support.images import make_folder

BATCH = 4
COUNTS = {"blue": 4, "green": 4, "red": 5}  # 13 images: batches of 4, 4, 4 and 1

SCRIPT = r"""
import json, sys
import numpy as np
from vitcli.train.strategy import configure_cpu_devices
configure_cpu_devices()  # two logical CPUs, before anything initialises TensorFlow's devices
from typer.testing import CliRunner
from vitcli.cli.app import app
from vitcli.config import data_config
from vitcli.data.pipeline import eval_dataset
from vitcli.data.sources import open_source
from vitcli.evaluate.evaluation import load_for_evaluation
from vitcli.evaluate.features import feature_model
from vitcli.evaluate.inference import collect_logits
from vitcli.train.strategy import make_strategy
from vitcli.weights.checkpoint import load_checkpoint

weights, run, data, batch, out = sys.argv[1:]
load_checkpoint(weights).save(f"{run}/model.keras")
reports, arrays = {}, {}
for name in ("mirrored", "default"):
    def cli(*args):
        result = CliRunner().invoke(app, [*args, "--batch", batch, "--strategy", name, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    reports[name] = {"evaluate": cli("evaluate", run, "--data", data, "--few-shot", "1,2"),
                     "predict": cli("predict", run, data, "--top-k", "3")}
    strategy = make_strategy(name)
    model, _ = load_for_evaluation(run, "fp32", strategy)
    config = data_config({"source": data})
    split = open_source(config, purpose="evaluate").split("all")
    with strategy.scope():
        extractor = feature_model(model)
    # --batch 3 on two replicas: every batch padded to a global batch of 4
    for key, network, size in (("logits", model, int(batch)), ("features", extractor, int(batch)),
                               ("logits_batch3", model, 3)):
        dataset = eval_dataset(split, config, image_size=(16, 16), batch_size=size)
        values, labels = collect_logits(network, dataset, strategy=strategy, batch_size=size)
        arrays[f"{name}/{key}"], arrays[f"{name}/labels"] = values, labels
    arrays[f"{name}/replicas"] = strategy.num_replicas_in_sync
np.savez(f"{out}/arrays.npz", **arrays)
with open(f"{out}/reports.json", "w") as file:
    json.dump(reports, file)
"""


def assert_close(actual, expected, atol: float, where: str = "") -> None:
    """Equal structures, numbers within `atol`, everything else equal."""
    if isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_close(actual[key], expected[key], atol, f"{where}/{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
            assert_close(left, right, atol, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert abs(actual - expected) <= atol, (where, actual, expected)
    else:
        assert actual == expected, (where, actual, expected)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """(reports, arrays) of the mirrored and default strategies, from one fresh process."""
    root = tmp_path_factory.mktemp("distributed")
    make_folder(root / "colours", COUNTS)
    np.savez(root / "tiny.npz", **random_checkpoint(5, num_classes=3, **dict(TINY_VIT, depth=1)))
    (root / "run").mkdir()
    (root / "run" / "labels.txt").write_text("".join(f"{name}\n" for name in sorted(COUNTS)))
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root / "tiny.npz"), str(root / "run"),
         str(root / "colours"), str(BATCH), str(root)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "VITCLI_CPU_DEVICES": "2", "VITCLI_HOME": str(root / "home")})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    reports = json.loads((root / "reports.json").read_text())
    return reports, dict(np.load(root / "arrays.npz"))


def test_logits_and_features_match_one_device_in_order(results):
    _, arrays = results
    assert (arrays["mirrored/replicas"], arrays["default/replicas"]) == (2, 1)
    for key in ("logits", "features", "logits_batch3"):
        mirrored, default = arrays[f"mirrored/{key}"], arrays[f"default/{key}"]
        assert mirrored.shape == default.shape and len(mirrored) == 13
        assert np.ptp(default, axis=0).max() > 1e-3  # the examples' rows differ: order matters
        np.testing.assert_allclose(mirrored, default, rtol=0, atol=1e-5)
    # The folder's classes in order: the labels came back with their examples.
    expected = np.repeat(np.arange(3), [COUNTS[name] for name in sorted(COUNTS)])
    np.testing.assert_array_equal(arrays["mirrored/labels"], expected)
    np.testing.assert_array_equal(arrays["default/labels"], expected)


def test_evaluate_reports_the_same_metrics(results):
    reports, _ = results
    mirrored, default = (reports[name]["evaluate"] for name in ("mirrored", "default"))
    assert (mirrored.pop("replicas"), default.pop("replicas")) == (2, 1)
    assert (mirrored["split"], mirrored["num_examples"]) == ("all", 13)
    assert mirrored["confusion"] == default["confusion"] and mirrored["top1"] == default["top1"]
    assert set(mirrored["few_shot"]) == {"1shot", "2shot"}
    assert_close(mirrored, default, atol=1e-6)


def test_predict_gives_the_same_scores_per_file(results):
    reports, _ = results
    mirrored, default = (reports[name]["predict"] for name in ("mirrored", "default"))
    assert len(mirrored) == 13
    assert [row["file"] for row in mirrored] == [row["file"] for row in default]
    assert_close(mirrored, default, atol=1e-5)
