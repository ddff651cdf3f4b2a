"""Settings derived for the run: length from the data size, warm-up that fits the run, the
learning rate scaled to the batch, a crop that suits the images, the start checkpoint."""

from __future__ import annotations

import dataclasses
import math

import pytest

from vitcli.config import (
    FINETUNE_DEFAULTS,
    MPP_PRETRAIN_DEFAULTS,
    PRETRAIN_DEFAULTS,
    RunConfig,
)
from vitcli.errors import VitcliError
from vitcli.train import defaults


def train(base=FINETUNE_DEFAULTS, **changes):
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(("num_train", "reference_steps"), [
    (1_020, 500), (3_680, 500), (20_000, 500), (50_000, 10_000), (1_281_167, 20_000)])
def test_finetune_length_keeps_the_reference_images_seen(num_train, reference_steps):
    for batch in (512, 64, 100):
        steps, line = defaults.run_length("finetune", train(batch_size=batch), num_train)
        assert steps == math.ceil(reference_steps * 512 / batch)
        assert f"{reference_steps:,} steps at batch 512" in line


def test_pretrain_length_is_the_papers_epochs():
    steps, line = defaults.run_length("pretrain", train(PRETRAIN_DEFAULTS, batch_size=64),
                                      54_000)
    assert steps == math.ceil(300 * 54_000 / 64) and "300 epochs" in line
    steps, _ = defaults.run_length("pretrain", train(PRETRAIN_DEFAULTS, batch_size=4096),
                                   14_000_000)
    assert steps == math.ceil(90 * 14_000_000 / 4096)


def test_explicit_steps_and_epochs_win():
    assert defaults.run_length("finetune", train(steps=7), 1_000)[0] == 7
    assert defaults.run_length("finetune", train(epochs=2.5, batch_size=100), 1_000)[0] == 25
    # epochs win over steps, as documented for the flags
    assert defaults.run_length("finetune", train(steps=7, epochs=1, batch_size=10), 100)[0] == 10


def test_default_warmup_is_capped_at_a_tenth_of_the_run():
    warmup, note = defaults.warmup_for(train(PRETRAIN_DEFAULTS), 400)
    assert warmup == 40 and "10,000" in note and "400" in note
    assert defaults.warmup_for(train(), 5_000) == (100, None)


def test_explicit_warmup_is_kept_and_warned_about_when_too_long():
    assert defaults.warmup_for(train(warmup_steps=30), 100) == (30, None)
    warmup, note = defaults.warmup_for(train(warmup_steps=500), 400)
    assert warmup == 500 and note.startswith("warning") and "never reaches its peak" in note


def test_learning_rate_scales_linearly_for_sgd_and_by_square_root_for_adam():
    rate, line = defaults.learning_rate_for(train(batch_size=64))
    assert rate == pytest.approx(0.003 * 64 / 512) and "linear" in line
    rate, line = defaults.learning_rate_for(train(PRETRAIN_DEFAULTS, batch_size=64))
    assert rate == pytest.approx(1e-3 * math.sqrt(64 / 4096)) and "sqrt" in line
    rate, _ = defaults.learning_rate_for(train(MPP_PRETRAIN_DEFAULTS, batch_size=1024))
    assert rate == pytest.approx(2e-4 * 0.5)
    assert defaults.learning_rate_for(train(PRETRAIN_DEFAULTS))[0] == pytest.approx(1e-3)
    assert defaults.learning_rate_for(train(learning_rate=0.5, batch_size=8))[0] == 0.5


@pytest.mark.parametrize(("side", "want"), [
    (28, "resize"), (32, "resize"), (63, "resize"), (64, "inception"), (500, "inception"),
    (None, "inception")])
def test_auto_crop_follows_the_image_size(side, want):
    assert defaults.train_crop_for("auto", side)[0] == want


def test_an_explicit_crop_is_kept():
    assert defaults.train_crop_for("inception", 28)[0] == "inception"


def test_finetune_starts_from_the_recommended_checkpoint():
    config, line = defaults.start_weights(RunConfig(command="finetune", model="vit-b16"))
    assert config.weights == "vit-b16-augreg" and "augreg/B_16-i21k" in line
    config, _ = defaults.start_weights(RunConfig(command="finetune", model="vit-h14"))
    assert config.weights == "vit-h14-i21k"
    config, _ = defaults.start_weights(RunConfig(command="finetune", model="r50-vit-b16"))
    assert config.weights == "r50-vit-b16-i21k"


def test_finetune_without_a_published_checkpoint_needs_from_scratch():
    with pytest.raises(VitcliError, match="has no published checkpoint.*--from-scratch"):
        defaults.start_weights(RunConfig(command="finetune", model="vit-mu8"))
    config = RunConfig(command="finetune", model="vit-mu8", from_scratch=True)
    assert defaults.start_weights(config) == (config, None)
    pretrain = RunConfig(command="pretrain", model="vit-b16")
    assert defaults.start_weights(pretrain) == (pretrain, None)
