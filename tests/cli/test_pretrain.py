"""`vitcli pretrain` end to end on a tiny model and data, through the CLI."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import yaml

import vitcli
from tests.support.cli import runner
from tests.support.runs import optimizer_arrays
from vitcli.cli.app import app


def test_pretrain_from_scratch_learns_colours(colour_folder, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", "--model", "vit-mu8", "--data", str(colour_folder),
                                 "--res", "16", "--steps", "40", "--batch", "12", "--lr", "3e-3",
                                 "--warmup", "5", "--eval-every", "40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] < 1.5
    model = vitcli.load_checkpoint(out / "model.keras")
    assert model.get_layer("pre_logits").units == 96  # tanh pre-logits of width D
    # the first step's wait, said at the start and kept with the first metrics record
    first, *later = [r for r in records if "loss" in r]
    assert 0 < first["first_step_call_seconds"] <= first["first_step_seconds"] < 600
    assert not any("first_step_seconds" in record for record in later)
    said = f"first step done {first['first_step_seconds']:.1f} s after start"
    assert said in result.output


def test_cli_pretrain_keeps_bfloat16_first_moments(colour_folder, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", "--model", "vit-mu8", "--data", str(colour_folder),
                                 "--res", "16", "--steps", "2", "--batch", "6", "--warmup", "1",
                                 "--momentum-dtype", "bfloat16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["momentum_dtype"] == "bfloat16"
    moments = [array for array in optimizer_arrays(out) if array.ndim and np.any(array)]
    representable = [np.array_equal(array, array.astype(ml_dtypes.bfloat16).astype(array.dtype))
                     for array in moments]
    # Adam's first moments are stored in bfloat16, its second moments in float32.
    assert any(representable) and not all(representable)
