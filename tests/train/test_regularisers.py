"""Regularisers resume exactly: a run with RandAugment, MixUp, CutMix, random erasing, stochastic
depth and dropout, SIGKILLed mid-run and resumed, ends with the uninterrupted run's weights.

The data augmentations draw from (run seed, example position) (vitcli.data.augment); dropout and
stochastic depth draw from Keras seed generators that the train step restarts before every
micro-batch from (run seed, step, slot) (vitcli.train.step)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import vitcli
from tests.support.models import random_images
from tests.support.runs import assert_same_weights, checkpoint_step
from vitcli.config import ModelConfig
from vitcli.models.vit import build_vit

STEPS = 12
AUGMENTATIONS = ("--randaugment", "--mixup", "0.2", "--cutmix", "1.0", "--random-erasing",
                 "0.25")
MASKS = ("--drop-path", "0.1", "--dropout", "0.1")


def command(weights, data, out, *extra, batch: int = 5,
            regularisers=AUGMENTATIONS + MASKS) -> list[str]:
    # The tiny two-block ViT at 16 px. A batch of 5 with checkpoints every 3 steps: a resume
    # from the first checkpoint starts at an odd position, the second of a MixUp/CutMix pair.
    return [sys.executable, "-m", "vitcli", "finetune", "--weights", str(weights), "--data",
            str(data), "--steps", str(STEPS), "--batch", str(batch), "--lr", "0.01",
            "--warmup", "2", "--checkpoint-every", "3", "--log-every", "1",
            "--eval-every", "1000", "--out", str(out), *regularisers, *extra]


def run_to_end(args) -> str:
    completed = subprocess.run(args, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "COLUMNS": "200"})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def kill_after_first_checkpoint(args, out) -> None:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               env={**os.environ, "COLUMNS": "200"})
    state, deadline = out / "checkpoints" / "state.npz", time.monotonic() + 240
    try:
        while not state.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.heavy
def test_killed_run_with_every_regulariser_resumes_to_the_same_weights(
        tiny_checkpoint, colour_folder, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    stdout = run_to_end(command(tiny_checkpoint, colour_folder, straight))
    assert "RandAugment, random erasing 0.25, MixUp 0.2, CutMix 1" in stdout
    kill_after_first_checkpoint(command(tiny_checkpoint, colour_folder, killed), killed)
    stopped_at = checkpoint_step(killed)
    assert 0 < stopped_at < STEPS
    assert not (killed / "model.keras").exists()
    resumed = run_to_end(command(tiny_checkpoint, colour_folder, killed, "--resume"))
    assert f"resuming at step {stopped_at}" in resumed
    assert_same_weights(killed / "model.keras", straight / "model.keras")
    model = vitcli.load_checkpoint(straight / "model.keras")
    assert model.get_layer("encoderblock_1").drop_path == pytest.approx(0.1)


@pytest.mark.heavy
def test_augmentations_do_not_depend_on_the_replicas(tiny_checkpoint, colour_folder, tmp_path):
    """MixUp and CutMix pair examples by stream position, not within a replica's batch: two
    replicas train on exactly the data of one device. (Dropout and stochastic depth masks
    are drawn per micro-batch, so they do depend on how the batch is split.)"""
    runs = {}
    for strategy, devices in (("default", "1"), ("mirrored", "2")):
        runs[strategy] = tmp_path / strategy
        args = command(tiny_checkpoint, colour_folder, runs[strategy], "--strategy", strategy,
                       batch=6, regularisers=AUGMENTATIONS)
        completed = subprocess.run(args, capture_output=True, text=True, timeout=300,
                                   env={**os.environ, "COLUMNS": "200",
                                        "VITCLI_CPU_DEVICES": devices})
        assert completed.returncode == 0, completed.stdout + completed.stderr
    assert_same_weights(runs["mirrored"] / "model.keras", runs["default"] / "model.keras",
                        atol=2e-5)  # summed in another order across the replicas


def tiny_model(weights=None):
    model = build_vit(ModelConfig(hidden_size=16, depth=3, num_heads=2, mlp_dim=32,
                                  patch_size=8, image_size=16, num_classes=3, dropout=0.2,
                                  drop_path=0.5))
    if weights is not None:
        model.set_weights(weights)
    return model


def train(model, seed_advances: int = 0) -> np.ndarray:
    """Three SGD steps on fixed batches, after `seed_advances` training calls that advance
    the model's seed generators (as steps of an earlier process would have)."""
    images = random_images(16, batch=6, seed=1)
    for _ in range(seed_advances):
        model(images, training=True)
    labels = np.arange(6) % 3
    vitcli.train_steps(model, [(images, labels)] * 3, learning_rate=0.1, warmup_steps=0)
    return np.concatenate([weight.numpy().ravel() for weight in model.weights])


def test_dropout_and_drop_path_masks_depend_on_the_step_not_on_earlier_draws():
    start = tiny_model().get_weights()
    fresh = train(tiny_model(start))
    np.testing.assert_array_equal(train(tiny_model(start), seed_advances=3), fresh)
