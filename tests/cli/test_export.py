"""`vitcli export` through the CLI on a small trained run: the served SavedModel answers as
predict does, in a fresh process; an unknown format is one line. (What an export may replace,
its locking and its bad inputs: tests/export/test_export_safety.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tests.support.cli import invoke


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
