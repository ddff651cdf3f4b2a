"""A pure BiT ResNet (`bit-r26`) through every command: pre-trained from scratch, evaluated
with few-shot probes, fine-tuned from its run, used to predict, exported, converted and
described; the flags that need a transformer are refused in one line naming the flag."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.reference import numpy_resnet
from tests.support.cli import invoke, one_error_line
from vitcli.models.vit import config_from_model
from vitcli.weights.checkpoint import load_checkpoint

BIT = "bit-r26"
RES = 32


@pytest.fixture(scope="module")
def bit_run(colour_split_folder, tmp_path_factory):
    """A run directory of bit-r26 pre-trained 2 steps at 32 px on the colour folders."""
    out = tmp_path_factory.mktemp("bit") / "run"
    result = invoke("pretrain", "--model", BIT, "--data", colour_split_folder, "--res", RES,
                    "--steps", 2, "--batch", 6, "--warmup", 1, "--out", out)
    assert result.exit_code == 0, result.output
    assert "new bit-r26" in result.output
    return out


def test_pretrain_writes_a_pure_resnet_without_pre_logits(bit_run):
    config = config_from_model(load_checkpoint(bit_run / "model.keras"))
    assert config.is_resnet and config.resnet.layers == (2, 2, 2, 2)
    assert (config.image_size, config.num_classes, config.representation_size) == (RES, 3, None)


def test_evaluate_with_few_shot_probes_on_the_pooled_features(bit_run, colour_split_folder):
    result = invoke("evaluate", bit_run, "--data", colour_split_folder, "--few-shot", "1,2",
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["examples"] == 18 and set(report["few_shot"]) == {"1shot", "2shot"}


def test_finetune_from_the_run_with_a_new_head(bit_run, colour_split_folder, tmp_path):
    out = tmp_path / "ft"
    result = invoke("finetune", "--model", BIT, "--weights", bit_run, "--data",
                    colour_split_folder, "--steps", 1, "--batch", 6, "--warmup", 0,
                    "--freeze", "backbone", "--out", out)
    assert result.exit_code == 0, result.output
    assert "head: 3 -> 3 classes (new, zero-initialised)" in result.output
    before = load_checkpoint(bit_run / "model.keras")
    after = load_checkpoint(out / "model.keras")
    assert config_from_model(after).is_resnet and after.input_shape == (None, RES, RES, 3)
    # --freeze backbone: everything but the head as it was
    for old, new in zip(before.weights, after.weights, strict=True):
        if not old.path.startswith("head/"):
            assert np.array_equal(old.numpy(), new.numpy()), old.path


def test_predict_and_convert_and_weights_info(bit_run, colour_split_folder, tmp_path):
    image = sorted((colour_split_folder / "test").rglob("*.png"))[0]
    result = invoke("predict", bit_run, image, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)[0]["predictions"]) == 3
    npz = tmp_path / "bit.npz"
    assert invoke("weights", "convert", bit_run / "model.keras", "--out", npz).exit_code == 0
    info = json.loads(invoke("weights", "info", npz, "--json").stdout)
    assert (info["kind"], info["variant"], info["image_size"]) == ("resnet", BIT, RES)
    assert info["params"] == numpy_resnet.parameter_count((2, 2, 2, 2), num_classes=3)


def test_dry_run_plan_says_it_is_a_resnet(colour_split_folder):
    result = invoke("pretrain", "--model", BIT, "--data", colour_split_folder, "--res", 28,
                    "--steps", 2, "--batch", 6, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "a pure ResNet, last feature map 1x1" in " ".join(result.stdout.split())


def test_models_lists_the_resnets_with_the_formulas_count():
    rows = {row["name"]: row for row in json.loads(invoke("models", "--json").stdout)}
    for name, layers in (("bit-r26", (2, 2, 2, 2)), ("bit-r50", (3, 4, 6, 3))):
        assert rows[name]["kind"] == "resnet" and rows[name]["resnet_layers"] == list(layers)
        assert rows[name]["params"] == numpy_resnet.parameter_count(layers)
        assert rows[name]["gflops_224"] == round(
            2 * numpy_resnet.multiply_adds(layers, 224) / 1e9, 2)


@pytest.mark.parametrize(("flags", "named"), [
    (("--objective", "mpp"), "--objective mpp"),
    (("--classifier", "token"), "--classifier token"),
    (("--posemb", "learned"), "--posemb learned"),
    (("--drop-path", "0.1"), "--drop-path 0.1"),
    (("--dropout", "0.1"), "--dropout 0.1"),
    (("--layer-decay", "0.75"), "--layer-decay 0.75"),
    (("--freeze", "blocks:1"), "--freeze blocks:1"),
])
def test_flags_that_need_a_transformer_are_one_line(colour_split_folder, tmp_path, flags, named):
    result = invoke("pretrain", "--model", BIT, "--data", colour_split_folder, "--steps", 1,
                    *flags, "--out", tmp_path / "never")
    line = one_error_line(result)
    assert named in line and "pure resnet" in line
    assert not (tmp_path / "never").exists()


def test_a_resnet_runs_layer_decay_is_refused_when_fine_tuning_it(bit_run, colour_split_folder,
                                                                  tmp_path):
    result = invoke("finetune", "--weights", bit_run, "--data", colour_split_folder,
                    "--steps", 1, "--layer-decay", "0.8", "--out", tmp_path / "never")
    assert "--layer-decay 0.8: bit-r26, a pure resnet" in one_error_line(result)


def test_inspecting_attention_is_refused(bit_run, colour_split_folder, tmp_path):
    image = sorted((colour_split_folder / "test").rglob("*.png"))[0]
    result = invoke("inspect", "attention", bit_run, image, "--out", tmp_path)
    assert "pure resnet" in one_error_line(result)


@pytest.mark.heavy
def test_export_savedmodel_verifies_in_a_fresh_process(bit_run, tmp_path):
    result = invoke("export", bit_run, "--format", "savedmodel", "--out", tmp_path / "served")
    assert result.exit_code == 0, result.output
    assert "verified in a fresh process" in " ".join(result.stdout.split())
