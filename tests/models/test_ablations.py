"""The paper's ablation switches in the model (docs/reference.md §1.6): the fixed 2-D
sine-cosine position embeddings equal an independent numpy formula, sincos2d and none models
(token or gap) equal the numpy forward pass, and the sincos2d layer passes the layer battery."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference import numpy_posemb
from tests.reference.numpy_vit import random_checkpoint
from tests.support.checks import vitcli_error
from tests.support.layers import check_layer
from tests.support.models import PARITY_TOLERANCE, random_images
from vitcli.config import ModelConfig
from vitcli.models.cost import parameter_count
from vitcli.models.layers import SinCosPositionEmbedding, sincos2d_table
from vitcli.models.vit import build_vit, config_from_model
from vitcli.weights.checkpoint import model_from_arrays

SHAPE = dict(hidden_size=32, depth=2, num_heads=4, mlp_dim=64, patch_size=8, image_size=32,
             num_classes=5)
RECORD = "Transformer/posembed_input/{}"  # the file's record of a table it does not hold (§4.1)
POSEMB = "Transformer/posembed_input/pos_embedding"


def ablation_checkpoint(posemb: str, classifier: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A random official-layout file of a sincos2d or none model: no table, its record."""
    arrays = random_checkpoint(seed, classifier=classifier, **SHAPE)
    del arrays[POSEMB]
    grid = SHAPE["image_size"] // SHAPE["patch_size"]
    return {**arrays, RECORD.format(posemb): np.array([grid, grid], np.int32)}


@pytest.mark.parametrize("rows, columns, width", [(4, 4, 32), (3, 5, 8), (1, 1, 192)])
def test_sincos2d_table_is_the_independent_formula(rows, columns, width):
    np.testing.assert_allclose(sincos2d_table(rows, columns, width),
                               numpy_posemb.sincos2d(rows, columns, width), rtol=0, atol=1e-12)


def test_sincos2d_order_is_column_first_as_big_vision():
    """Token 1 is row 0, column 1: its first quarter (sin of the column) is not zero, its
    third (sin of the row) is; the first frequency is 1, the last 1/10000."""
    table = sincos2d_table(2, 3, 16)
    assert table[1, 0] == pytest.approx(np.sin(1.0)) and table[1, 8] == 0.0
    assert table[3, 0] == 0.0 and table[3, 8] == pytest.approx(np.sin(1.0))  # row 1, column 0
    assert table[1, 3] == pytest.approx(np.sin(1e-4))


def test_sincos_layer_passes_the_battery(tmp_path):
    check_layer(SinCosPositionEmbedding(1, name="posembed_input"), (2, 17, 32), tmp_path)


def test_sincos_layer_leaves_the_class_token_alone():
    layer = SinCosPositionEmbedding(1)
    tokens = np.zeros((1, 10, 16), np.float32)
    table = np.asarray(layer(tokens))[0]
    np.testing.assert_array_equal(table[0], 0.0)
    np.testing.assert_allclose(table[1:], numpy_posemb.sincos2d(3, 3, 16), atol=1e-6)


@pytest.mark.parametrize("classifier", ["token", "gap"])
@pytest.mark.parametrize("posemb", ["sincos2d", "none"])
def test_model_matches_the_numpy_reference(posemb, classifier):
    arrays = ablation_checkpoint(posemb, classifier)
    model, report = model_from_arrays(arrays)
    assert (report.config.posemb, report.config.classifier) == (posemb, classifier)
    images = random_images(SHAPE["image_size"], batch=3)
    want = numpy_posemb.forward(arrays, images, posemb, grid=4)
    np.testing.assert_allclose(np.asarray(model(images, training=False)), want, rtol=0,
                               atol=PARITY_TOLERANCE * max(1.0, np.abs(want).max()))


def test_position_information_changes_the_logits():
    """The parity above would hold for a model that ignored its table: it does not."""
    base = ablation_checkpoint("none", "token")
    images = random_images(SHAPE["image_size"], batch=2)
    outputs = {}
    for posemb in ("sincos2d", "none"):
        arrays = {key: value for key, value in base.items() if key != RECORD.format("none")}
        arrays[RECORD.format(posemb)] = np.array([4, 4], np.int32)
        outputs[posemb] = np.asarray(model_from_arrays(arrays)[0](images, training=False))
    assert np.abs(outputs["sincos2d"] - outputs["none"]).max() > 1e-2


@pytest.mark.parametrize("posemb", ["learned", "sincos2d", "none"])
@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_config_round_trip_and_parameter_count(posemb, classifier):
    config = ModelConfig(**SHAPE, classifier=classifier, posemb=posemb, name="tiny")
    model = build_vit(config)
    assert config_from_model(model) == config
    assert parameter_count(config) == model.count_params()
    trainable = sum(int(np.prod(variable.shape)) for variable in model.trainable_variables)
    assert trainable == model.count_params()  # the sincos2d table is no weight at all


def test_sincos2d_needs_a_width_divisible_by_four():
    config = ModelConfig(hidden_size=30, depth=1, num_heads=3, mlp_dim=8, patch_size=8,
                         image_size=16, num_classes=2, posemb="sincos2d")
    assert "multiple of 4" in vitcli_error(build_vit, config)
