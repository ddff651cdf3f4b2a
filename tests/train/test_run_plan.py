"""The headline command as a new user types it: fine-tuning starts from the published
checkpoint (or says in one line where to put it), the run length, warm-up and learning rate
fit the run, `--dry-run` shows the plan, and `--accum auto` fits the memory it is given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import vitcli
from tests.reference.numpy_vit import random_checkpoint
from vitcli.config import ModelConfig
from vitcli.models.registry import decode_variant
from vitcli.train import memory


def vitcli_run(*args, home, timeout=300, **env):
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "vitcli", *map(str, args)], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "COLUMNS": "200", "VITCLI_HOME": str(home), **env})
    return completed, time.monotonic() - started


def test_default_checkpoint_offline_says_where_to_put_it_then_runs(colour_folder, tmp_path):
    home, out = tmp_path / "home", tmp_path / "run"
    args = ("finetune", "--model", "vit-ti16", "--data", colour_folder, "--res", 32,
            "--steps", 1, "--batch", 6, "--out", out)
    failed, seconds = vitcli_run(*args, home=home)
    assert failed.returncode == 1 and seconds < 5, (seconds, failed.stderr)
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: could not download https://")
    target = home / "weights" / "vit-ti16-augreg.npz"
    assert f"put the file at {target}" in lines[0] and "--weights FILE" in lines[0]
    assert not out.exists()
    target.parent.mkdir(parents=True)
    np.savez(target, **random_checkpoint(0, hidden_size=192, depth=12, num_heads=3,
                                         mlp_dim=768, patch_size=16, image_size=224,
                                         num_classes=21843))
    done, _ = vitcli_run(*args, home=home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "weights: vit-ti16-augreg" in done.stdout and "14x14 -> 2x2" in done.stdout
    assert (out / "model.keras").exists()


def test_fine_tuning_from_random_weights_is_never_silent(colour_folder, tmp_path):
    refused, _ = vitcli_run("finetune", "--model", "vit-mu8", "--data", colour_folder,
                            "--out", tmp_path / "run", home=tmp_path)
    assert refused.returncode == 1
    assert "no published checkpoint" in refused.stderr and "--from-scratch" in refused.stderr
    assert not (tmp_path / "run").exists()


def dry_run(*args, home):
    completed, _ = vitcli_run(*args, "--dry-run", "--json", home=home)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_pretrain_fits_warmup_and_rate_to_a_short_small_batch_run(colour_folder, tmp_path):
    plan = dry_run("pretrain", "--model", "vit-mu8", "--data", colour_folder, "--res", 16,
                   "--steps", 400, "--batch", 64, home=tmp_path)
    assert plan["steps"] == 400 and plan["warmup_steps"] == 40
    assert any("warm-up 40 steps" in line and "10,000" in line for line in plan["plan"])
    assert plan["learning_rate"] == pytest.approx(1e-3 * (64 / 4096) ** 0.5)
    assert plan["optimizer"] == "adamw" and plan["batch_plan"]["global_batch"] == 64
    assert not (tmp_path / "runs").exists()


def test_finetune_dry_run_shows_the_whole_plan(colour_folder, tiny_checkpoint, tmp_path):
    plan = dry_run("finetune", "--weights", tiny_checkpoint, "--data", colour_folder,
                   "--batch", 8, home=tmp_path)
    # 33 training images: the reference's 500 steps at batch 512 as images seen, at batch 8.
    assert plan["steps"] == 500 * 512 // 8 and plan["warmup_steps"] == 100
    assert plan["learning_rate"] == pytest.approx(0.003 * 8 / 512)
    assert plan["train_crop"] == "resize"  # 16 px images are not cropped by default
    assert plan["data"]["train_examples"] + plan["data"]["val_examples"] == 36
    assert plan["data"]["classes"] == 3
    batch = plan["batch_plan"]
    assert batch["micro_batch"] * batch["accum_steps"] * batch["replicas"] == 8
    assert batch["estimated_peak_bytes"] > 0 and batch["budget_bytes"] > 0


def budget_for_micro_batch(variant: str, res: int, micro: int, accum: int) -> int:
    """A memory budget that holds the plan (micro x accum) of the variant's pre-training but
    not the whole batch at once."""
    row = decode_variant(variant)
    config: ModelConfig = decode_variant(variant, image_size=res, num_classes=3,
                                         representation_size=row.hidden_size)
    per_image = memory.training_bytes_per_image(config, "fp32")
    fixed = memory.fixed_training_bytes(config, "adamw", "float32")
    fixed += memory.stacked_input_bytes(config, micro * accum)
    per_micro_batch, overlap = memory.accumulation_costs(config, "cpu")
    peak = memory.plan_peak_bytes(micro, accum, per_image, fixed,
                                  per_micro_batch=per_micro_batch, accum_overlap=overlap)
    whole = memory.plan_peak_bytes(micro * accum, 1, per_image, fixed)
    assert whole > peak, "the budget must force a split"
    return int(peak / memory.DEFAULT_SAFETY) + 1


@pytest.mark.heavy
def test_accum_auto_splits_the_batch_to_fit_and_equals_the_explicit_plan(colour_folder,
                                                                          tmp_path):
    # At 224 px an image's activations outweigh what each further micro-batch adds to the
    # step (for a tiny model at 16 px the whole batch is always the cheapest plan).
    common = ("pretrain", "--model", "vit-ti16", "--data", colour_folder, "--res", 224,
              "--steps", 2, "--batch", 12, "--lr", "2e-3", "--warmup", 1)
    budget = budget_for_micro_batch("vit-ti16", 224, 4, 3)
    auto, _ = vitcli_run(*common, "--out", tmp_path / "auto", home=tmp_path,
                         VITCLI_MEMORY_BUDGET=str(budget))
    assert auto.returncode == 0, auto.stderr
    recorded = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    accum = recorded["train"]["accum_steps"]
    assert accum in (2, 3) and "--accum auto" in auto.stdout
    assert f"1 replica(s) x {accum} micro-batch(es) x {12 // accum}" in auto.stdout
    given, _ = vitcli_run(*common, "--accum", accum, "--out", tmp_path / "given",
                          home=tmp_path)
    assert given.returncode == 0, given.stderr
    want = vitcli.load_checkpoint(tmp_path / "given" / "model.keras").weights
    got = vitcli.load_checkpoint(tmp_path / "auto" / "model.keras").weights
    for left, right in zip(got, want, strict=True):
        np.testing.assert_allclose(left.numpy(), right.numpy(), rtol=1e-5, atol=1e-6)


def test_a_budget_too_small_for_one_image_is_one_line(colour_folder, tmp_path):
    completed, _ = vitcli_run("pretrain", "--model", "vit-mu8", "--data", colour_folder,
                              "--res", 16, "--steps", 1, "--batch", 4, "--out", tmp_path / "run",
                              home=tmp_path, VITCLI_MEMORY_BUDGET="64MiB")
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == 1 and lines[0].startswith("error:") and len(lines) <= 2
    assert not (tmp_path / "run").exists()
