"""bf16 and fp16 training: finite losses, float32 where it matters, fp32-level accuracy."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import vitcli
from tests.support.cli import invoke


def train(data, out, *extra):
    result = invoke("pretrain", "--model", "vit-mu8", "--data", data, "--res", 16, "--steps", 30,
                    "--batch", 12, "--lr", "3e-3", "--warmup", 3, "--eval-every", 30,
                    "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.heavy
@pytest.mark.parametrize("precision, compute", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_mixed_precision_trains_like_fp32(colour_folder, tmp_path, precision, compute):
    reference = train(colour_folder, tmp_path / "fp32", "--precision", "fp32")
    records = train(colour_folder, tmp_path / precision, "--precision", precision)
    losses = [record["loss"] for record in records if "loss" in record]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    accuracy = [record["val_top1"] for record in records if "val_top1" in record][-1]
    fp32_accuracy = [record["val_top1"] for record in reference if "val_top1" in record][-1]
    assert accuracy >= fp32_accuracy - 0.1  # stated margin: 10 points on 3 easy classes
    model = vitcli.load_checkpoint(tmp_path / precision / "model.keras")
    block = model.get_layer("encoderblock_0")
    assert block.compute_dtype == compute and block.mlp.dense_0.kernel.dtype == "float32"
    assert block.norm_0.compute_dtype == "float32"
    assert model.get_layer("encoder_norm").compute_dtype == "float32"
    assert model.get_layer("head").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    keras.config.set_dtype_policy("float32")


@pytest.mark.heavy
def test_jit_compiled_step_matches_graph_step(colour_folder, tmp_path):
    plain = train(colour_folder, tmp_path / "graph", "--precision", "fp32")
    jitted = train(colour_folder, tmp_path / "xla", "--precision", "fp32", "--jit")
    plain_losses = [record["loss"] for record in plain if "loss" in record]
    jit_losses = [record["loss"] for record in jitted if "loss" in record]
    np.testing.assert_allclose(jit_losses, plain_losses, rtol=1e-3)
