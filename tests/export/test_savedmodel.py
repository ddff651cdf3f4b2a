"""The TF Serving SavedModel: layout, both signatures in a fresh process and through
`saved_model_cli`, the labels asset, the warm-up request, and versioning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.support.export import (
    LABELS,
    TOP_K,
    encoded_test_images,
    keras_probabilities,
    random_pixels,
    run_python,
    served_pixels,
)
from vitcli.export import export_model

TOLERANCE = 1e-4  # the documented savedmodel tolerance on probabilities

SERVE_IN_FRESH_PROCESS = """
import sys
import numpy as np
import tensorflow as tf
folder, images_path, outputs_path = sys.argv[1:]
with np.load(images_path) as archive:
    images = [archive[key].tobytes() for key in sorted(archive.files)]
serve = tf.saved_model.load(folder).signatures["serving_default"]
outputs = serve(image_bytes=tf.constant(images))
np.savez(outputs_path, **{key: np.asarray(value).astype(bytes) if value.dtype == tf.string
                          else np.asarray(value) for key, value in outputs.items()})
"""


def _expected_top_k(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    indices = np.argsort(-probabilities, axis=-1)[:, :TOP_K]
    return indices, np.array([[LABELS[index].encode() for index in row] for row in indices])


def test_layout_labels_asset_and_result(exported):
    result = exported("savedmodel")
    assert result.path.name == "1" and result.details["version"] == 1
    for relative in ("saved_model.pb", "variables/variables.index", "assets/labels.txt",
                     "assets.extra/tf_serving_warmup_requests"):
        assert (result.path / relative).is_file(), relative
    labels_file = (result.path / "assets" / "labels.txt").read_text(encoding="utf-8")
    assert labels_file.splitlines() == LABELS
    assert set(result.details["signatures"]) == {"serving_default", "predict_pixels"}
    assert result.max_abs_diff <= TOLERANCE
    assert [child.name for child in result.path.parent.iterdir()] == ["1"]  # no leftovers


def test_the_graph_holds_no_xla_compiled_function(exported):
    """vitcli's own inference compiles LayerNorm and GELU with XLA; an export must not (TF
    Serving builds and converters without XLA could not run it), and uses plain ops."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((exported("savedmodel").path / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    nodes = [*graph.node, *(node for function in graph.library.function
                            for node in function.node_def)]
    assert any(node.op == "Tanh" for node in nodes)  # the GELU is there, as plain ops
    compiled = [node.name for node in nodes if node.attr["_XlaMustCompile"].b]
    compiled += [function.signature.name for function in graph.library.function
                 if function.attr["_XlaMustCompile"].b]
    assert not compiled


def test_serving_default_in_a_fresh_process_matches_keras(model, exported, tmp_path):
    """Encoded PNG/JPEG bytes in, the Keras model's answer on the same decoded images out."""
    images = encoded_test_images()
    np.savez(tmp_path / "images.npz", **{f"image_{index}": np.frombuffer(image, np.uint8)
                                         for index, image in enumerate(images)})
    run_python(SERVE_IN_FRESH_PROCESS, str(exported("savedmodel").path),
               str(tmp_path / "images.npz"), str(tmp_path / "outputs.npz"))
    outputs = dict(np.load(tmp_path / "outputs.npz"))
    expected = keras_probabilities(model, served_pixels(images))
    indices, labels = _expected_top_k(expected)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=TOLERANCE)
    np.testing.assert_array_equal(outputs["top_k_indices"], indices)
    np.testing.assert_array_equal(outputs["top_k_labels"], labels)
    np.testing.assert_allclose(outputs["top_k_scores"],
                               np.take_along_axis(expected, indices, axis=-1), atol=TOLERANCE)


def _saved_model_cli(folder: Path, signature: str, inputs: str, outdir: Path) -> dict:
    executable = Path(sys.executable).with_name("saved_model_cli")
    if not executable.exists():
        pytest.skip("saved_model_cli is not installed beside this Python")
    subprocess.run([str(executable), "run", "--dir", str(folder), "--tag_set", "serve",
                    "--signature_def", signature, "--inputs", inputs, "--outdir", str(outdir)],
                   check=True, capture_output=True)
    return {path.stem: np.load(path, allow_pickle=True) for path in outdir.glob("*.npy")}


def test_saved_model_cli_runs_both_signatures(model, exported, tmp_path):
    """saved_model_cli loads through a TF1 session, the way TF Serving's C++ loader does."""
    folder = exported("savedmodel").path
    images = encoded_test_images()
    # A fixed-width bytes array (no pickle); numpy drops trailing NULs, and PNG and JPEG
    # data end with a CRC / the 0xFFD9 marker, never with one.
    np.save(tmp_path / "images.npy", np.array(images))
    pixels = random_pixels(3, seed=11)
    np.save(tmp_path / "pixels.npy", pixels)
    by_images = _saved_model_cli(folder, "serving_default",
                                 f"image_bytes={tmp_path / 'images.npy'}", tmp_path / "images")
    by_pixels = _saved_model_cli(folder, "predict_pixels",
                                 f"pixels={tmp_path / 'pixels.npy'}", tmp_path / "pixels")
    for outputs, expected in ((by_images, keras_probabilities(model, served_pixels(images))),
                              (by_pixels, keras_probabilities(model, pixels))):
        np.testing.assert_allclose(outputs["probabilities"], expected, atol=TOLERANCE)
        indices, labels = _expected_top_k(expected)
        np.testing.assert_array_equal(outputs["top_k_indices"], indices)
        np.testing.assert_array_equal(outputs["top_k_labels"].astype(bytes), labels)


def test_warmup_file_is_a_prediction_log_that_runs(exported):
    """Parsed with TF Serving's own protos (not vitcli's encoder), then run as TF Serving would."""
    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    folder = exported("savedmodel").path
    records = list(tf.data.TFRecordDataset(
        str(folder / "assets.extra" / "tf_serving_warmup_requests")).as_numpy_iterator())
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    assert log.WhichOneof("log_type") == "predict_log"
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert list(request.inputs) == ["image_bytes"]
    images = tf.make_ndarray(request.inputs["image_bytes"])
    assert images.shape == (1,)
    assert tf.io.decode_image(images[0]).shape == (32, 32, 3)
    serve = tf.saved_model.load(str(folder)).signatures[request.model_spec.signature_name]
    outputs = serve(**{name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()})
    assert outputs["probabilities"].shape == (1, len(LABELS))
    assert outputs["top_k_labels"].shape == (1, TOP_K)


def test_second_export_adds_version_2(model, exported):
    """Exporting again (here with the centre crop) adds version 2 beside an untouched 1."""
    first = exported("savedmodel")
    before = sorted(path.name for path in first.path.rglob("*"))
    second = export_model(model, "savedmodel", first.path.parent, labels=LABELS,
                          eval_crop="center", top_k=TOP_K)
    assert second.path == first.path.parent / "2" and second.details["version"] == 2
    assert second.details["eval_crop"] == "center" and second.max_abs_diff <= TOLERANCE
    assert sorted(path.name for path in first.path.rglob("*")) == before
    assert sorted(child.name for child in first.path.parent.iterdir()) == ["1", "2"]
