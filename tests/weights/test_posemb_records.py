"""Files of sincos2d and none models (docs/reference.md §4.1, §4.3, §5): no position table,
one record of the kind and the grid; they describe themselves, load back bit for bit, resize
by recomputing, and `vitcli weights info` shows the switches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.reference import numpy_posemb
from tests.support.checks import vitcli_error
from tests.support.cli import invoke
from tests.support.models import random_images, randomise_weights
from vitcli.config import ModelConfig
from vitcli.models.vit import build_vit
from vitcli.weights.checkpoint import load_checkpoint_with_report, model_arrays, save_npz
from vitcli.weights.describe import describe_arrays

POSEMB = "Transformer/posembed_input/pos_embedding"
RECORDS = {"sincos2d": "Transformer/posembed_input/sincos2d",
           "none": "Transformer/posembed_input/none"}
SHAPE = dict(hidden_size=32, depth=2, num_heads=4, mlp_dim=64, patch_size=8, image_size=32,
             num_classes=5)


def saved_model(tmp_path, posemb: str, classifier: str):
    model = build_vit(ModelConfig(**SHAPE, posemb=posemb, classifier=classifier, name="tiny"))
    randomise_weights(model)
    return model, save_npz(model, tmp_path / f"{posemb}-{classifier}.npz")


@pytest.mark.parametrize("classifier", ["token", "gap"])
@pytest.mark.parametrize("posemb", ["sincos2d", "none"])
def test_npz_round_trip_is_bit_exact(tmp_path, posemb, classifier):
    model, path = saved_model(tmp_path, posemb, classifier)
    with np.load(path) as archive:
        stored = {key: archive[key] for key in archive.files}
    assert POSEMB not in stored and ("cls" in stored) == (classifier == "token")
    record = stored[RECORDS[posemb]]
    assert record.dtype == np.int32 and record.tolist() == [4, 4]
    assert RECORDS[{"sincos2d": "none", "none": "sincos2d"}[posemb]] not in stored
    loaded, report = load_checkpoint_with_report(path)
    assert (report.config.posemb, report.config.classifier) == (posemb, classifier)
    assert report.config.image_size == SHAPE["image_size"] and not report.lines()
    images = random_images(SHAPE["image_size"], batch=2)
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(model(images)))
    again = model_arrays(loaded)
    assert set(again) == set(stored)
    for key, value in stored.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    # Saving the loaded model again writes the same arrays.
    second = save_npz(loaded, tmp_path / "again.npz")
    with np.load(second) as archive:
        assert all(np.array_equal(archive[key], stored[key]) for key in stored)


def test_resizing_sincos2d_recomputes_its_table(tmp_path):
    _, path = saved_model(tmp_path, "sincos2d", "token")
    model, report = load_checkpoint_with_report(path, image_size=48)
    assert report.config.grid_size == 6
    assert report.lines() == ["sincos2d position embeddings computed for 6x6 (32 px -> 48 px)"]
    table = np.asarray(model.get_layer("posembed_input").pos_embedding)
    np.testing.assert_allclose(table, numpy_posemb.position_table("sincos2d", 6, 32, True),
                               atol=1e-6)
    assert model_arrays(model)[RECORDS["sincos2d"]].tolist() == [6, 6]


def test_resizing_a_model_without_position_embeddings_needs_nothing(tmp_path):
    _, path = saved_model(tmp_path, "none", "gap")
    model, report = load_checkpoint_with_report(path, image_size=48, num_classes=3)
    assert report.config.image_size == 48 and report.config.posemb == "none"
    assert not report.resized and model.output_shape == (None, 3)


def test_a_table_and_a_record_together_are_refused(tmp_path):
    _, path = saved_model(tmp_path, "sincos2d", "token")
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    both = {**arrays, POSEMB: np.zeros((1, 17, 32), np.float32)}
    assert "more than one kind of position embedding" in vitcli_error(describe_arrays, both)
    two = {**arrays, RECORDS["none"]: np.array([4, 4], np.int32)}
    assert "more than one kind" in vitcli_error(describe_arrays, two)
    for bad in (np.array([0, 4], np.int32), np.array([4.0, 4.0]), np.array([4], np.int32)):
        message = vitcli_error(describe_arrays, {**arrays, RECORDS["sincos2d"]: bad})
        assert "token grid (height, width)" in message


def test_a_file_with_neither_is_not_a_vit_checkpoint(tmp_path):
    _, path = saved_model(tmp_path, "none", "token")
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files if key != RECORDS["none"]}
    assert f"no '{POSEMB.lower()}' array" in vitcli_error(describe_arrays, arrays)


@pytest.mark.parametrize("posemb, classifier", [("sincos2d", "gap"), ("none", "token"),
                                                ("learned", "gap")])
def test_weights_info_shows_the_switches(tmp_path, posemb, classifier):
    model, path = saved_model(tmp_path, posemb, classifier)
    result = invoke("weights", "info", path, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["posemb"], summary["classifier"]) == (posemb, classifier)
    assert summary["params"] == model.count_params() and summary["dtypes"] == ["float32"]
    assert summary["image_size"] == SHAPE["image_size"] and summary["grid"] == 4
    table = invoke("weights", "info", path)
    assert table.exit_code == 0 and posemb in table.stdout and classifier in table.stdout
