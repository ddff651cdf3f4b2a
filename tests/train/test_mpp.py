"""Masked patch prediction (docs/reference.md §6.4): the corruption plan and layer, the 3-bit
mean-colour targets against plain numpy, the recipe's defaults, and real runs through the CLI
(loss goes down, the run directory fine-tunes, an interrupted run resumes exactly)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import vitcli
from tests.support.checks import vitcli_error
from tests.support.cli import runner
from vitcli.cli.app import app
from vitcli.config import MaskedPatchConfig, resolve_run_config
from vitcli.models.mpp import KEPT, MASKED, REPLACED, UNTOUCHED, PatchCorruption, build_mpp_model
from vitcli.models.registry import decode_variant
from vitcli.models.vit import build_vit
from vitcli.train.callbacks import TrainingCallbacks
from vitcli.train.mpp import colour_classes, sample_corruption
from vitcli.train.run import run_training


def numpy_colour_classes(images: np.ndarray, patch: int) -> np.ndarray:
    """(r>>5)*64 + (g>>5)*8 + (b>>5) of each patch's mean colour, row-major, in plain numpy."""
    batch, height, width, _ = images.shape
    classes = np.zeros((batch, (height // patch) * (width // patch)), np.int64)
    for image in range(batch):
        for row in range(height // patch):
            for column in range(width // patch):
                block = images[image, row * patch:(row + 1) * patch,
                               column * patch:(column + 1) * patch].astype(np.float64)
                red, green, blue = (int(np.floor(value)) >> 5 for value in block.mean((0, 1)))
                classes[image, row * (width // patch) + column] = red * 64 + green * 8 + blue
    return classes


def test_corruption_proportions_over_many_patches():
    settings = MaskedPatchConfig()
    batch, patches = 400, 64
    modes, sources = (array.numpy() for array in
                      sample_corruption(tf.constant([7, 11], tf.int64), batch, patches, settings))
    corrupted = modes != UNTOUCHED
    assert (corrupted.sum(axis=1) == patches // 2).all()  # exactly 50% in every image
    kinds = modes[corrupted]
    assert abs(np.mean(kinds == MASKED) - 0.8) < 0.01
    assert abs(np.mean(kinds == REPLACED) - 0.1) < 0.01
    assert abs(np.mean(kinds == KEPT) - 0.1) < 0.01
    # A replacement is always another patch of the same image, chosen uniformly.
    own = np.arange(patches)[None].repeat(batch, axis=0)
    assert (sources != own).all() and sources.min() == 0 and sources.max() == patches - 1
    assert np.bincount(sources.ravel(), minlength=patches).min() > 0.8 * batch
    # Stateless: the same seed draws the same plan, another seed another plan.
    again = sample_corruption(tf.constant([7, 11], tf.int64), batch, patches, settings)[0]
    other = sample_corruption(tf.constant([7, 12], tf.int64), batch, patches, settings)[0]
    assert (again.numpy() == modes).all() and (other.numpy() != modes).any()


def test_corruption_layer_applies_the_plan():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(2, 6, 5)).astype(np.float32)
    modes = np.array([[UNTOUCHED, MASKED, REPLACED, KEPT, MASKED, REPLACED]] * 2, np.int32)
    sources = np.array([[1, 0, 4, 0, 0, 1], [5, 0, 0, 0, 0, 2]], np.int32)
    layer = PatchCorruption()
    result = np.asarray(layer([embeddings, modes, sources]))
    mask = layer.mask_embedding.numpy()
    for image in range(2):
        for patch, mode in enumerate(modes[image]):
            expected = {UNTOUCHED: embeddings[image, patch], KEPT: embeddings[image, patch],
                        MASKED: mask,
                        REPLACED: embeddings[image, sources[image, patch]]}[mode]
            np.testing.assert_array_equal(result[image, patch], expected)


def test_colour_target_matches_numpy_on_a_constructed_image():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(2, 28, 28, 3)).astype(np.float32)
    # Patches whose mean sits exactly on a 3-bit boundary, and one just below it.
    images[0, :7, :7] = [32.0, 31.0, 255.0]
    images[0, :7, 7:14] = [224.0, 0.0, 96.0]
    images[1, :7, :7] = 64.0
    images[1, 0, 0] = 63.0  # mean 63.98: level 1, not 2
    got = colour_classes(tf.constant(images), 7).numpy()
    expected = numpy_colour_classes(images, 7)
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0] == 1 * 64 + 0 * 8 + 7 and got[0, 1] == 7 * 64 + 0 + 3
    assert got[1, 0] == 1 * 64 + 1 * 8 + 1


def test_mpp_model_is_built_from_the_vits_own_layers():
    vit = build_vit(decode_variant("vit-mu8", image_size=16, num_classes=3))
    predictor = build_mpp_model(vit)
    shared = {id(variable) for variable in vit.weights}
    added = [variable.path for variable in predictor.weights if id(variable) not in shared]
    assert sorted(added) == ["mpp_corruption/mask_embedding", "mpp_head/bias", "mpp_head/kernel"]
    images = np.zeros((2, 16, 16, 3), np.float32)
    untouched = np.zeros((2, 4), np.int32)
    assert predictor([images, untouched, untouched]).shape == (2, 4, 512)


def test_mpp_recipe_defaults_and_refusals(tmp_path):
    config = resolve_run_config("pretrain", None, {"objective": "mpp"})
    train = config.train
    assert (train.optimizer, train.base_learning_rate, train.default_warmup, train.schedule) == (
        "adamw", 2e-4, 10_000, "cosine")
    assert train.learning_rate is None and train.warmup_steps is None  # derived per run
    assert config.mpp == MaskedPatchConfig(0.5, 0.8, 0.1, 3)
    flags = {"objective": "mpp", "train": {"learning_rate": 1e-3}, "mpp": {"mask_fraction": 0.7}}
    config = resolve_run_config("pretrain", None, flags)
    assert (config.train.learning_rate, config.mpp.mask_fraction) == (1e-3, 0.7)
    recipe = tmp_path / "mpp.yaml"
    recipe.write_text("objective: mpp\n")
    assert resolve_run_config("pretrain", str(recipe), {}).train.base_learning_rate == 2e-4
    assert resolve_run_config("pretrain", None, {}).train.base_learning_rate == 1e-3
    assert "pre-training objective" in vitcli_error(resolve_run_config, "finetune", None,
                                                    {"objective": "mpp"})
    assert "unknown objective" in vitcli_error(resolve_run_config, "pretrain", None,
                                               {"objective": "mae"})


def pretrain_mpp(data, out, *extra):
    return runner.invoke(app, ["pretrain", "--objective", "mpp", "--model", "vit-mu8", "--data",
                               str(data), "--res", "16", "--batch", "12", "--lr", "3e-3",
                               "--warmup", "5", "--out", str(out), *map(str, extra)])


@pytest.fixture(scope="module")
def mpp_run(colour_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("mpp") / "run"
    result = pretrain_mpp(colour_folder, out, "--steps", 40, "--eval-every", 20)
    assert result.exit_code == 0, result.output
    return out


def test_mpp_pretraining_lowers_its_loss(mpp_run):
    records = [json.loads(line) for line in (mpp_run / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if "loss" in record]
    assert losses[0] < np.log(512) + 0.01 and losses[-1] < 0.6 * losses[0]
    validations = [record for record in records if "val_top1" in record]
    assert [record["step"] for record in validations] == [20, 40]
    assert validations[-1]["val_loss"] < validations[0]["val_loss"]


def test_mpp_run_saves_a_plain_classifier_that_finetunes(mpp_run, colour_folder, tmp_path):
    model = vitcli.load_checkpoint(mpp_run / "model.keras")
    names = [layer.name for layer in model.layers]
    assert not any(name.startswith("mpp") for name in names) and "pre_logits" not in names
    head = model.get_layer("head")
    assert head.units == 3 and not np.any(head.kernel.numpy())
    out = tmp_path / "finetuned"
    result = runner.invoke(app, ["finetune", "--weights", str(mpp_run), "--data",
                                 str(colour_folder), "--steps", "2", "--batch", "6", "--lr", "0",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    finetuned = vitcli.load_checkpoint(out / "model.keras")
    for name in ("embedding", "posembed_input", "encoderblock_5", "encoder_norm"):
        for got, want in zip(finetuned.get_layer(name).weights, model.get_layer(name).weights,
                             strict=True):
            np.testing.assert_array_equal(got.numpy(), want.numpy())


class _StopAt(TrainingCallbacks):
    """Records where a run starts; Ctrl-C after the log of step `step` (the loop then
    checkpoints and re-raises)."""

    def __init__(self, step: int | None = None):
        self.step, self.start_step = step, None

    def on_start(self, info: dict) -> None:
        self.start_step = info["start_step"]

    def on_log(self, record: dict) -> None:
        if record["step"] == self.step:
            raise KeyboardInterrupt


def test_interrupted_mpp_run_resumes_to_the_same_weights(colour_folder, tmp_path):
    flags = {"objective": "mpp", "model": "vit-mu8", "image_size": 16, "strategy": "default",
             "data": {"source": str(colour_folder)},
             "train": {"steps": 12, "batch_size": 12, "learning_rate": 3e-3, "warmup_steps": 2,
                       "log_every": 6, "eval_every": 1000, "checkpoint_every": 1000}}
    straight = resolve_run_config("pretrain", None, {**flags, "out": str(tmp_path / "straight")})
    run_training(straight)
    stopped = resolve_run_config("pretrain", None, {**flags, "out": str(tmp_path / "stopped")})
    with pytest.raises(KeyboardInterrupt):
        run_training(stopped, _StopAt(6))
    resumed = _StopAt()
    run_training(resolve_run_config("pretrain", None, {**flags, "out": str(tmp_path / "stopped"),
                                                       "resume": True}), resumed)
    assert resumed.start_step == 6
    want = vitcli.load_checkpoint(tmp_path / "straight" / "model.keras").weights
    got = vitcli.load_checkpoint(tmp_path / "stopped" / "model.keras").weights
    for left, right in zip(got, want, strict=True):
        np.testing.assert_allclose(left.numpy(), right.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.heavy
def test_mpp_runs_mirrored_with_accumulation(colour_folder, tmp_path):
    """Inside strategy.run on two replicas, two micro-batches each (each its own seed slot)."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "vitcli", "pretrain", "--objective", "mpp", "--model",
            "vit-mu8", "--data", str(colour_folder), "--res", "16", "--steps", "30", "--batch",
            "12", "--accum", "2", "--lr", "3e-3", "--warmup", "5", "--eval-every", "30",
            "--strategy", "mirrored", "--out", str(out)]
    completed = subprocess.run(args, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "COLUMNS": "200", "VITCLI_CPU_DEVICES": "2"})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "2 replica(s) x 2 micro-batch(es) x 3" in completed.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if "loss" in record]
    assert losses[-1] < 0.6 * losses[0]
    assert vitcli.load_checkpoint(out / "model.keras").get_layer("head").units == 3
