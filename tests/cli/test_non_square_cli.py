"""`--res HEIGHTxWIDTH` through the CLI: a tiny non-square pre-training and fine-tuning run,
its config.yaml (which reruns it), predict and the inspection figures on the run, and bad
values as one-line errors."""

from __future__ import annotations

from functools import partial

import pytest
import yaml

import vitcli
from tests.support.cli import invoke
from vitcli.config import resolve_run_config
from vitcli.models.vit import config_from_model

pretrain = partial(invoke, "pretrain")
finetune = partial(invoke, "finetune")


@pytest.fixture(scope="module")
def wide_run(colour_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("non_square") / "run"
    result = pretrain("--model", "vit-mu8", "--data", colour_folder, "--res", "16x24",
                      "--steps", 2, "--batch", 6, "--warmup", 1, "--out", out)
    assert result.exit_code == 0, result.output
    assert "16x24 px" in result.output
    return out


def test_pretrain_writes_the_pair_and_a_non_square_model(wide_run):
    config = yaml.safe_load((wide_run / "config.yaml").read_text())
    assert config["image_size"] == [16, 24]
    # config.yaml is a recipe that reruns the run at the same size
    assert resolve_run_config("pretrain", str(wide_run / "config.yaml"), {}).image_size == (16, 24)
    model = vitcli.load_checkpoint(wide_run / "model.keras")
    assert model.input_shape == (None, 16, 24, 3)
    assert config_from_model(model).grid_shape == (2, 3)


def test_predict_and_inspect_on_a_non_square_run(wide_run, colour_folder, tmp_path):
    image = next(colour_folder.rglob("*.png"))
    result = invoke("predict", wide_run, image)
    assert result.exit_code == 0, result.output
    figures = tmp_path / "figures"
    result = invoke("inspect", "attention", wide_run, image, "--out", figures, "--layers")
    assert result.exit_code == 0, result.output
    assert (figures / f"{image.stem}_attention.png").is_file()
    assert (figures / f"{image.stem}_layers.png").is_file()
    result = invoke("inspect", "posemb", wide_run, "--out", figures)
    assert result.exit_code == 0, result.output
    assert (figures / "posemb.png").is_file()


def test_finetune_square_checkpoint_at_non_square_resolution(colour_folder, tiny_checkpoint,
                                                            tmp_path):
    out = tmp_path / "run"
    result = finetune("--weights", tiny_checkpoint, "--data", colour_folder, "--res", "16x24",
                      "--steps", 1, "--batch", 6, "--lr", 0, "--out", out)
    assert result.exit_code == 0, result.output
    assert "position embeddings 2x2 -> 2x3 (16 px -> 16x24 px)" in result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["image_size"] == [16, 24]


@pytest.mark.parametrize(("res", "message"), [
    ("16x20", "image width 20 (of 16x20) is not a multiple of 8"),
    ("20x16", "image height 20 (of 20x16) is not a multiple of 8"),
    ("16x", "--res (image size in pixels) must be a whole number at least 1, or two as "
            "HEIGHTxWIDTH, got '16x'"),
    ("16x9999", "must be at most 2,048"),
])
def test_bad_res_is_a_one_line_error(colour_folder, tmp_path, res, message):
    result = pretrain("--model", "vit-mu8", "--data", colour_folder, "--res", res,
                      "--steps", 1, "--out", tmp_path / "run")
    assert result.exit_code != 0
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "run").exists()
