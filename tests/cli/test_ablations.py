"""The paper's ablation switches through the CLI (docs/reference.md §1.6): `vitcli pretrain
--posemb sincos2d|none --classifier gap` trains such a model, its `.npz` records the
switches, loads back exactly and fine-tunes (at another resolution too), `weights info` shows
them, and fine-tuning a checkpoint refuses them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vitcli
from tests.support.cli import invoke, one_error_line
from tests.support.models import random_images
from vitcli.weights.checkpoint import model_arrays

CASES = {"sincos2d-gap": ("sincos2d", "gap"), "none-token": ("none", "token")}


@pytest.fixture(scope="module", params=list(CASES))
def pretrained(request, colour_folder, tmp_path_factory):
    """(posemb, classifier, run directory, its model as .npz) of a 4-step pre-training."""
    posemb, classifier = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    result = invoke("pretrain", "--model", "vit-mu8", "--data", colour_folder, "--res", 16,
                    "--steps", 4, "--batch", 12, "--warmup", 1, "--posemb", posemb,
                    "--classifier", classifier, "--out", root / "run")
    assert result.exit_code == 0, result.output
    converted = invoke("weights", "convert", root / "run" / "model.keras", "--out",
                       root / "model.npz")
    assert converted.exit_code == 0, converted.output
    return posemb, classifier, root / "run", root / "model.npz"


def test_pretrained_model_has_the_switches_and_its_npz_loads_back_exactly(pretrained):
    posemb, classifier, run, npz = pretrained
    keras_model, loaded = vitcli.load_checkpoint(run / "model.keras"), vitcli.load_checkpoint(npz)
    for model in (keras_model, loaded):
        names = [layer.name for layer in model.layers]
        assert ("posembed_input" in names) == (posemb == "sincos2d")
        assert ("cls" in names) == (classifier == "token")
        assert model.get_layer("pooling").classifier == classifier
    images = random_images(16, batch=3)
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(keras_model(images)))
    with np.load(npz) as archive:
        stored = {key: archive[key] for key in archive.files}
    assert f"Transformer/posembed_input/{posemb}" in stored
    assert "Transformer/posembed_input/pos_embedding" not in stored
    for key, value in model_arrays(loaded).items():
        np.testing.assert_array_equal(value, stored[key], err_msg=key)


def test_weights_info_shows_the_switches(pretrained):
    posemb, classifier, _, npz = pretrained
    result = invoke("weights", "info", npz, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["posemb"], summary["classifier"]) == (posemb, classifier)
    assert summary["grid"] == 2 and summary["image_size"] == 16


def test_the_npz_fine_tunes_at_another_resolution(pretrained, colour_folder, tmp_path):
    posemb, classifier, _, npz = pretrained
    out = tmp_path / "finetune"
    result = invoke("finetune", "--weights", npz, "--data", colour_folder, "--res", 32,
                    "--steps", 2, "--batch", 12, "--warmup", 1, "--out", out)
    assert result.exit_code == 0, result.output
    if posemb == "sincos2d":
        assert "sincos2d position embeddings computed for 4x4" in result.output
    model = vitcli.load_checkpoint(out / "model.keras")
    assert model.input_shape[1] == 32 and model.get_layer("pooling").classifier == classifier
    assert ("posembed_input" in [layer.name for layer in model.layers]) == (posemb != "none")


def test_finetune_refuses_the_switches(pretrained, colour_folder, tmp_path):
    posemb, _, _, npz = pretrained
    result = invoke("finetune", "--weights", npz, "--data", colour_folder, "--posemb", posemb,
                    "--out", tmp_path / "x")
    assert "fine-tuning reads the classifier and the position embeddings" in one_error_line(result)
    other = "learned" if posemb != "learned" else "none"
    result = invoke("pretrain", "--weights", npz, "--data", colour_folder, "--posemb", other,
                    "--steps", 1, "--batch", 12, "--out", tmp_path / "y")
    assert f"--posemb {other} does not match the checkpoint's {posemb}" in one_error_line(result)
    assert not (tmp_path / "y").exists()


def test_inspect_posemb_draws_a_sincos2d_table_and_explains_none(pretrained, tmp_path):
    posemb, _, run, _ = pretrained
    result = invoke("inspect", "posemb", run, "--out", tmp_path)
    if posemb == "sincos2d":
        assert result.exit_code == 0, result.output
        assert (tmp_path / "posemb.png").is_file()
    else:
        assert "has no position embeddings (posemb none)" in one_error_line(result)
