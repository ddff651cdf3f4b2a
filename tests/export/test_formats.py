"""The file formats: each exports, verifies itself, and matches the Keras model when read back
here with the format's own runtime (onnx.checker + onnxruntime, the TFLite interpreter,
vitcli's loader)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import tensorflow as tf

from tests.support.export import keras_probabilities, random_pixels, softmax
from vitcli.export.formats import FORMATS
from vitcli.weights.checkpoint import load_checkpoint
from vitcli.weights.npz import read_npz

FILE_FORMATS = ("keras", "npz", "tflite", "onnx")
TOLERANCES = {name: export_format.tolerance for name, export_format in FORMATS.items()}


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_every_file_format_exports_and_verifies(exported, fmt):
    result = exported(fmt)
    assert result.format == fmt
    assert result.path.is_file() and result.path.suffix == f".{fmt}"
    assert result.details["verified"] and result.details["size_bytes"] > 0
    assert 0.0 <= result.max_abs_diff <= TOLERANCES[fmt]
    assert not [path for path in result.path.parent.iterdir() if ".partial" in path.name]


def test_onnx_passes_the_checker_and_matches_onnxruntime(model, exported):
    path = str(exported("onnx").path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [tensor.name for tensor in session.get_inputs()] == ["pixels"]
    pixels = random_pixels(3, seed=21)  # another batch size than the verification's
    probabilities, logits = session.run(["probabilities", "logits"], {"pixels": pixels})
    np.testing.assert_allclose(probabilities, keras_probabilities(model, pixels),
                               atol=TOLERANCES["onnx"])
    np.testing.assert_allclose(softmax(logits), probabilities, atol=1e-6)


def test_tflite_matches_keras_through_its_signature(model, exported):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(exported("tflite").path))
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["pixels"], "outputs": ["logits", "probabilities"]}}
    pixels = random_pixels(3, seed=22)
    outputs = interpreter.get_signature_runner("serving_default")(pixels=pixels)
    assert outputs["probabilities"].dtype == np.float32
    np.testing.assert_allclose(outputs["probabilities"], keras_probabilities(model, pixels),
                               atol=TOLERANCES["tflite"])


@pytest.mark.parametrize("fmt", ("keras", "npz"))
def test_keras_and_npz_load_back_in_vitcli(model, exported, fmt):
    reloaded = load_checkpoint(exported(fmt).path)
    pixels = random_pixels(2, seed=23)
    np.testing.assert_allclose(np.asarray(reloaded(pixels)), np.asarray(model(pixels)),
                               atol=1e-6)


def test_npz_is_in_the_reference_layout(exported):
    keys = set(read_npz(exported("npz").path))
    assert {"cls", "embedding/kernel", "head/kernel", "Transformer/posembed_input/pos_embedding",
            "Transformer/encoder_norm/scale",
            "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"} <= keys
