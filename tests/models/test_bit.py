"""The pure BiT ResNet classifiers (`bit-r26`, `bit-r50`): registry rows, parameter and FLOP
counts against an independent formula, the forward pass against the numpy reference, the
.npz layout and its exact round trip, and the settings a ResNet refuses.

Expected values come from `tests/reference/numpy_resnet.py`, which shares no code with vitcli.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import vitcli
from tests.reference import numpy_resnet
from tests.support.checks import vitcli_error
from tests.support.models import logits, random_images, randomise_weights, weights_by_path
from vitcli.config import ResNetConfig, RunConfig, TrainConfig, check_resnet_run
from vitcli.evaluate.features import feature_model
from vitcli.models.cost import flops, parameter_count
from vitcli.models.registry import decode_variant, match_variant
from vitcli.models.vit import build_vit, config_from_model
from vitcli.train import memory
from vitcli.weights.assign import check_keys
from vitcli.weights.checkpoint import (
    load_checkpoint_with_report,
    model_arrays,
    model_from_arrays,
    save_npz,
)
from vitcli.weights.npz import IMAGE_SIZE_RECORD, key_map, read_npz, without_records

# Logits against the float64 reference through 26 layers of weight-standardised convolutions
# and GroupNorms (float32 in Keras).
RESNET_PARITY_TOLERANCE = 1e-4
TINY_SIZE = 28  # not a multiple of the stride 32: SAME padding rounds every side up


@pytest.mark.parametrize("name", ["bit-r26", "bit-r50"])
@pytest.mark.parametrize("num_classes", [10, 1000])
def test_parameter_count_equals_the_independent_formula(name, num_classes, free_keras_memory):
    layers = numpy_resnet.BIT_LAYERS[int(name[5:])]
    expected = numpy_resnet.parameter_count(layers, num_classes=num_classes)
    model = vitcli.build_model(name, num_classes=num_classes, image_size=TINY_SIZE)
    assert model.count_params() == expected
    assert parameter_count(decode_variant(name, num_classes=num_classes)) == expected


def test_the_formula_gives_torchvision_resnet50s_count():
    assert numpy_resnet.parameter_count((3, 4, 6, 3)) == \
        numpy_resnet.TORCHVISION_RESNET50_PARAMETERS


@pytest.mark.parametrize("name", ["bit-r26", "bit-r50", "bit-r50x3"])
@pytest.mark.parametrize("image_size", [224, TINY_SIZE, 100])
def test_flops_equal_the_independent_formula(name, image_size):
    config = decode_variant(name, image_size=image_size)
    expected = numpy_resnet.multiply_adds(config.resnet.layers, image_size,
                                          config.resnet.width_factor)
    assert flops(config) == 2 * expected


def test_r50_costs_what_the_literature_says():
    # ResNet-50 at 224 px: 4.09 GMACs (torchvision, fvcore)
    assert flops(decode_variant("bit-r50")) == pytest.approx(2 * 4.09e9, rel=0.01)


def test_rows_are_pure_resnets_of_the_bit_depths():
    for name, layers in (("bit-r26", (2, 2, 2, 2)), ("bit-r50", (3, 4, 6, 3))):
        config = decode_variant(name)
        assert config.is_resnet and config.resnet == ResNetConfig(layers=layers)
        assert (config.hidden_size, config.depth, config.patch_size, config.classifier,
                config.posemb, config.num_tokens) == (0, 0, 0, "gap", "none", 0)
        assert match_variant(config.replace(name="x", num_classes=3)) == name
    assert decode_variant("BiT-R50x3").resnet == ResNetConfig(layers=(3, 4, 6, 3),
                                                              width_factor=3)
    assert decode_variant("bit-r101").resnet.layers == (3, 4, 23, 3)


@pytest.mark.parametrize("name", ["bit-r27", "bit-r50x0", "bit-r50x5", "bit-r", "bit-r26-vit"])
def test_unknown_bit_names_are_refused(name):
    assert "variant" in vitcli_error(decode_variant, name)


def test_forward_matches_the_numpy_reference():
    arrays = numpy_resnet.random_checkpoint(3, layers=(2, 2, 2, 2), num_classes=5)
    # No image-size record: the file alone says 224 px; this one runs at 28.
    model, report = model_from_arrays(arrays, name="bit-r26", image_size=TINY_SIZE)
    assert match_variant(report.config) == "bit-r26" and model.output_shape == (None, 5)
    images = random_images(TINY_SIZE, batch=2)
    expected = numpy_resnet.forward(arrays, images)
    assert np.abs(logits(model, images) - expected).max() < RESNET_PARITY_TOLERANCE


def test_features_are_the_pooled_last_feature_map():
    model = vitcli.build_model("bit-r26", num_classes=4, image_size=32)
    features = feature_model(model)
    assert features.output_shape == (None, 2048)
    assert features.layers[-1].name == "pooling"


@pytest.fixture(scope="module")
def random_r26(tmp_path_factory):
    """bit-r26 (4 classes, 28 px) with random non-zero weights everywhere, and its .npz."""
    model = vitcli.build_model("bit-r26", num_classes=4, image_size=TINY_SIZE)
    randomise_weights(model, seed=2)
    path = save_npz(model, tmp_path_factory.mktemp("bit") / "bit-r26.npz")
    return model, path


def test_npz_keys_are_the_hybrid_stems_names_all_stages_and_the_head(random_r26):
    model, path = random_r26
    arrays = read_npz(path)
    # R26+S/32's stem has the same four stages: its keys are the ResNet's but for the head.
    hybrid = key_map(decode_variant("r26-vit-s32"))
    stem = {key for key, _ in hybrid if not key.startswith(("Transformer/", "embedding", "cls",
                                                            "head"))}
    assert set(arrays) == stem | {"head/kernel", "head/bias", IMAGE_SIZE_RECORD}
    assert {"conv_root/kernel", "gn_root/scale", "block4/unit1/conv_proj/kernel",
            "block4/unit2/gn3/scale"} <= stem
    assert arrays[IMAGE_SIZE_RECORD].tolist() == [TINY_SIZE, TINY_SIZE]
    check_keys(without_records(arrays), key_map(config_from_model(model)))  # nothing extra


def test_npz_round_trip_is_exact(random_r26, tmp_path):
    model, path = random_r26
    loaded, report = load_checkpoint_with_report(path)
    assert report.lines() == []  # nothing resized, replaced or dropped
    assert report.config == config_from_model(model).replace(name="bit-r26")
    before, after = weights_by_path(model), weights_by_path(loaded)
    assert before.keys() == after.keys()
    for path_name, array in before.items():
        assert array.tobytes() == after[path_name].tobytes(), path_name
    again = read_npz(save_npz(loaded, tmp_path / "again.npz"))
    original = read_npz(path)
    assert again.keys() == original.keys()
    for key, array in original.items():
        assert array.dtype == again[key].dtype and array.tobytes() == again[key].tobytes(), key
    images = random_images(TINY_SIZE, batch=2)
    assert np.array_equal(logits(model, images), logits(loaded, images))


def test_a_new_head_and_resolution_on_load(random_r26):
    model, path = random_r26
    loaded, report = load_checkpoint_with_report(path, num_classes=7, image_size=64)
    assert loaded.output_shape == (None, 7) and loaded.input_shape == (None, 64, 64, 3)
    assert report.lines() == ["head: 4 -> 7 classes (new, zero-initialised)"]
    assert not np.any(loaded.get_layer("head").kernel.numpy())
    kept = weights_by_path(model)
    for path_name, array in weights_by_path(loaded).items():
        if not path_name.startswith("head/"):
            assert np.array_equal(array, kept[path_name]), path_name


def test_keras_file_round_trip_keeps_the_config(random_r26, tmp_path):
    model, _ = random_r26
    model.save(tmp_path / "bit.keras")
    loaded = keras.saving.load_model(tmp_path / "bit.keras")
    assert config_from_model(loaded) == config_from_model(model)
    assert model_arrays(loaded).keys() == model_arrays(model).keys()


def test_mixed_precision_keeps_a_float32_head():
    model = build_vit(decode_variant("bit-r26", num_classes=3, image_size=32),
                      dtype="mixed_bfloat16")
    output = model(random_images(32, batch=1))
    assert output.dtype == "float32" and np.all(np.isfinite(np.asarray(output)))


@pytest.mark.parametrize(("override", "words"), [
    ({"classifier": "token"}, "classifier"), ({"posemb": "learned"}, "position"),
    ({"dropout": 0.1}, "--dropout"), ({"drop_path": 0.1}, "--drop-path"),
    ({"representation_size": 64}, "pre-logits"), ({"hidden_size": 64}, "transformer"),
])
def test_a_resnet_config_with_transformer_settings_is_refused(override, words):
    config = decode_variant("bit-r26", num_classes=3, image_size=32, **override)
    message = vitcli_error(build_vit, config)
    assert words in message and "pure resnet" in message


@pytest.mark.parametrize(("settings", "flag"), [
    ({"objective": "mpp", "command": "pretrain"}, "--objective mpp"),
    ({"classifier": "token"}, "--classifier token"),
    ({"posemb": "sincos2d"}, "--posemb sincos2d"),
    ({"dropout": 0.1}, "--dropout 0.1"), ({"drop_path": 0.2}, "--drop-path 0.2"),
    ({"train": TrainConfig(layer_decay=0.7)}, "--layer-decay 0.7"),
    ({"train": TrainConfig(freeze="blocks:2")}, "--freeze blocks:2"),
    ({"train": TrainConfig(freeze="embeddings")}, "--freeze embeddings"),
])
def test_run_settings_that_need_a_transformer_are_refused(settings, flag):
    message = vitcli_error(check_resnet_run, RunConfig(model="bit-r26", **settings),
                           decode_variant("bit-r26"))
    assert message.startswith(flag) and "pure resnet" in message


@pytest.mark.parametrize("settings", [
    {}, {"classifier": "gap", "posemb": "none", "dropout": 0.0, "remat": True},
    {"train": TrainConfig(freeze="backbone")}, {"train": TrainConfig(freeze="none")},
])
def test_settings_that_mean_something_for_a_resnet_pass(settings):
    check_resnet_run(RunConfig(model="bit-r26", **settings), decode_variant("bit-r26"))


def test_memory_estimate_has_no_token_terms_and_grows_with_the_image():
    small, large = (decode_variant("bit-r26", num_classes=10, image_size=size)
                    for size in (32, 224))
    assert 0 < memory.training_bytes_per_image(small) < memory.training_bytes_per_image(large)
    assert memory.training_bytes_per_image(large, remat=True) < \
        memory.training_bytes_per_image(large)
    assert memory.fixed_training_bytes(large) > parameter_count(large) * 16
