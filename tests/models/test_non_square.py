"""Non-square resolutions (--res HxW): a square checkpoint loaded at height x width against the
independent numpy reference, whose position table is resized by scipy (docs/reference.md §5),
the config's sizes and checks, and the .npz round trip of a non-square model's grid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import vitcli
from tests.reference.numpy_vit import forward, random_checkpoint
from tests.support.checks import vitcli_error
from tests.support.models import PARITY_TOLERANCE, logits
from vitcli.config import ModelConfig, RunConfig, check_value
from vitcli.errors import VitcliError
from vitcli.models.cost import flops, parameter_count
from vitcli.models.vit import build_vit, config_from_model, validate
from vitcli.train.memory import stacked_input_bytes, training_bytes_per_image

SMALL = dict(hidden_size=32, depth=2, num_heads=4, mlp_dim=64, patch_size=16)
POSEMB = "Transformer/posembed_input/pos_embedding"


def zoomed_table(posemb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The reference's resize: scipy.ndimage.zoom(order=1) of the (g, g, D) grid, class row
    kept (written here from the paper's description, not vitcli's code)."""
    table = posemb[0].astype(np.float64)
    old = int(round(np.sqrt(table.shape[0] - 1)))
    grid = table[1:].reshape(old, old, -1)
    grid = ndimage.zoom(grid, (height / old, width / old, 1), order=1)
    assert grid.shape[:2] == (height, width)
    return np.concatenate([table[:1], grid.reshape(height * width, -1)])[None]


@pytest.fixture(scope="module")
def square_checkpoint(tmp_path_factory):
    arrays = random_checkpoint(3, image_size=224, num_classes=5, **SMALL)
    path = tmp_path_factory.mktemp("non_square") / "square224.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_224x320_model_from_224x224_checkpoint_matches_numpy_reference(square_checkpoint):
    path, arrays = square_checkpoint
    model = vitcli.load_checkpoint(path, image_size=(224, 320))
    assert model.input_shape == (None, 224, 320, 3)
    config = config_from_model(model)
    assert config.image_size == (224, 320) and config.grid_shape == (14, 20)
    assert config.num_tokens == 14 * 20 + 1
    reference = {**arrays, POSEMB: zoomed_table(arrays[POSEMB], 14, 20)}
    images = np.random.default_rng(0).uniform(0, 255, (2, 224, 320, 3)).astype(np.float32)
    expected = forward(reference, images)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(logits(model, images), expected, rtol=0, atol=PARITY_TOLERANCE)


def test_equal_pair_is_the_square_model(square_checkpoint):
    path, _ = square_checkpoint
    square = vitcli.load_checkpoint(path, image_size=224)
    pair = vitcli.load_checkpoint(path, image_size=(224, 224))
    assert config_from_model(pair).image_size == 224
    images = np.random.default_rng(1).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    np.testing.assert_array_equal(logits(square, images), logits(pair, images))


def test_non_square_npz_round_trip_records_its_grid(square_checkpoint, tmp_path):
    path, _ = square_checkpoint
    model = vitcli.load_checkpoint(path, image_size=(224, 320))
    out = tmp_path / "wide.npz"
    vitcli.save_npz(model, out)
    with np.load(out) as saved:
        np.testing.assert_array_equal(saved["Transformer/posembed_input/grid"], [14, 20])
    again = vitcli.load_checkpoint(out)
    assert config_from_model(again).image_size == (224, 320)
    images = np.random.default_rng(2).uniform(0, 255, (1, 224, 320, 3)).astype(np.float32)
    np.testing.assert_allclose(logits(again, images), logits(model, images), atol=1e-6)
    # and on to the transposed shape: the non-square table is resized axis by axis
    tall = vitcli.load_checkpoint(out, image_size=(320, 224))
    assert config_from_model(tall).grid_shape == (20, 14)


def test_square_npz_has_no_grid_record(square_checkpoint, tmp_path):
    path, _ = square_checkpoint
    out = tmp_path / "square.npz"
    vitcli.save_npz(vitcli.load_checkpoint(path), out)
    with np.load(out) as saved:
        assert "Transformer/posembed_input/grid" not in saved.files


@pytest.mark.parametrize("posemb", ["sincos2d", "none"])
def test_non_square_sincos2d_and_none_models_build_and_round_trip(posemb, tmp_path):
    config = ModelConfig(**SMALL, image_size=(32, 48), num_classes=3, posemb=posemb)
    model = build_vit(config)
    assert model.output_shape == (None, 3)
    out = tmp_path / f"{posemb}.npz"
    vitcli.save_npz(model, out)
    assert config_from_model(vitcli.load_checkpoint(out)).image_size == (32, 48)


def test_model_config_sizes():
    config = ModelConfig(**SMALL, image_size=[384, 512])
    assert config.image_size == (384, 512)  # a YAML list is stored as a tuple
    assert config.image_shape == (384, 512) and config.grid_shape == (24, 32)
    assert ModelConfig(**SMALL, image_size=(64, 64)).image_size == 64
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_cost_and_memory_use_height_times_width():
    wide = ModelConfig(**SMALL, image_size=(224, 320))
    tall = wide.replace(image_size=(320, 224))
    square = wide.replace(image_size=224)
    assert flops(wide) == flops(tall) > flops(square)
    assert parameter_count(wide) - parameter_count(square) == (14 * 20 - 14 * 14) * 32
    assert stacked_input_bytes(wide, 2) == 2 * 224 * 320 * 3 * 4
    assert training_bytes_per_image(wide) > training_bytes_per_image(square)


@pytest.mark.parametrize(("value", "expected"), [
    ("384x512", (384, 512)), ("384", 384), ("384X384", 384), ([16, 24], (16, 24)),
    ("16 x 24", (16, 24)), (224, 224),
])
def test_res_values_are_parsed(value, expected):
    assert check_value(RunConfig, "image_size", value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("384x", "must be a whole number at least 1, or two as HEIGHTxWIDTH, got '384x'"),
    ("0x16", "must be at least 1, got '0x16'"),
    ("16x4096", "must be at most 2,048, got '16x4096'"),
    ("axb", "got 'axb'"),
    ([1, 2, 3], "got a list"),
])
def test_bad_res_values_are_one_line_errors(value, message):
    assert message.lower() in vitcli_error(check_value, RunConfig, "image_size", value)


def test_side_not_a_multiple_of_the_patch_is_named():
    config = ModelConfig(**SMALL, image_size=(384, 500))
    message = vitcli_error(validate, config)
    assert "image width 500 (of 384x500) is not a multiple of 16" in message
    with pytest.raises(VitcliError) as caught:
        validate(config)
    assert "384x496 or 384x512" in caught.value.hint
