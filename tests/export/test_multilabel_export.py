"""A multi-label model's exports (`scores="sigmoid"`): the SavedModel's two signatures return
sigmoid scores, the classes at or above the stored threshold and their labels, and agree with
the Keras model in a fresh process; the file formats export as for any model and are verified
on the sigmoid of their logits; an inconsistent serving answer is refused."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.checks import vitcli_error
from tests.support.export import (
    LABELS,
    TOP_K,
    encoded_test_images,
    random_pixels,
    run_python,
    served_pixels,
)
from vitcli.export import export_model
from vitcli.export.compare import differences

THRESHOLD = 0.4
TOLERANCE = 1e-5  # measured ~1e-7: the same graph, TensorFlow's own kernels

BOTH_SIGNATURES = """
import sys
import numpy as np
import tensorflow as tf
folder, pixels_path, images_path, outputs_path = sys.argv[1:]
loaded = tf.saved_model.load(folder)
with np.load(images_path) as archive:
    images = [archive[key].tobytes() for key in sorted(archive.files)]
results = {"threshold": loaded.threshold.numpy()}
for name, call in (("pixels", lambda: loaded.signatures["predict_pixels"](
                        pixels=tf.constant(np.load(pixels_path)))),
                   ("images", lambda: loaded.signatures["serving_default"](
                        image_bytes=tf.constant(images)))):
    for key, value in call().items():
        value = np.asarray(value)
        results[f"{name}/{key}"] = value.astype(bytes) if value.dtype == object else value
np.savez(outputs_path, **results)
"""


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


@pytest.fixture(scope="module")
def multi_label_export(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("multi-label") / "served"
    return export_model(model, "savedmodel", out, labels=LABELS, top_k=TOP_K, scores="sigmoid",
                        threshold=THRESHOLD)


def test_the_savedmodel_describes_its_outputs_and_threshold(multi_label_export):
    details = multi_label_export.details
    assert details["scores"] == "sigmoid" and details["threshold"] == THRESHOLD
    assert details["signatures"]["serving_default"]["outputs"] == [
        "scores", "predicted", "predicted_labels", "top_k_labels", "top_k_scores",
        "top_k_indices"]
    assert multi_label_export.max_abs_diff <= TOLERANCE


def test_both_signatures_in_a_fresh_process_equal_the_keras_model(model, multi_label_export,
                                                                  tmp_path):
    pixels = random_pixels(4, seed=9)
    images = encoded_test_images()
    np.save(tmp_path / "pixels.npy", pixels)
    np.savez(tmp_path / "images.npz", **{f"image_{index}": np.frombuffer(image, np.uint8)
                                         for index, image in enumerate(images)})
    run_python(BOTH_SIGNATURES, str(multi_label_export.path), str(tmp_path / "pixels.npy"),
               str(tmp_path / "images.npz"), str(tmp_path / "outputs.npz"))
    outputs = dict(np.load(tmp_path / "outputs.npz"))
    assert outputs["threshold"] == np.float32(THRESHOLD)
    names = np.array([label.encode() for label in LABELS])
    for kind, inputs in (("pixels", pixels), ("images", served_pixels(images))):
        expected = sigmoid(model(inputs, training=False))
        scores = outputs[f"{kind}/scores"]
        np.testing.assert_allclose(scores, expected, atol=TOLERANCE, rtol=0)
        predicted = outputs[f"{kind}/predicted"]
        np.testing.assert_array_equal(predicted, scores >= np.float32(THRESHOLD))
        assert predicted.any() and not predicted.all()  # the threshold splits the classes
        for row, row_scores, row_labels in zip(predicted, scores,
                                               outputs[f"{kind}/predicted_labels"], strict=True):
            order = [index for index in np.argsort(-row_scores, kind="stable") if row[index]]
            assert row_labels.tolist() == [*names[order], *[b""] * (len(LABELS) - len(order))]
        top = np.argsort(-expected, axis=-1, kind="stable")[:, :TOP_K]
        np.testing.assert_array_equal(outputs[f"{kind}/top_k_indices"], top)
        np.testing.assert_array_equal(outputs[f"{kind}/top_k_labels"], names[top])


@pytest.mark.parametrize("fmt", ["keras", "onnx"])
def test_file_formats_are_verified_on_the_sigmoid_of_their_logits(model, fmt, tmp_path):
    result = export_model(model, fmt, tmp_path / "model", labels=LABELS, scores="sigmoid")
    assert result.details["verified"] and result.max_abs_diff <= 1e-3
    assert set(result.details["checks"]) == set(result.details["logit_checks"])


def test_an_inconsistent_serving_answer_is_refused():
    logits = np.array([[2.0, -1.0, 0.1, -3.0, 0.0]], np.float32)
    scores = sigmoid(logits).astype(np.float32)
    order = np.argsort(-scores[0], kind="stable")
    chosen = [index for index in order if scores[0, index] >= 0.5]
    good = {"pixels/x/scores": scores, "pixels/x/predicted": scores >= 0.5,
            "pixels/x/predicted_labels": np.array([[LABELS[i].encode() for i in chosen]
                                                   + [b""] * (5 - len(chosen))])}
    checks, _ = differences(good, {"pixels": logits}, LABELS, "sigmoid", 0.5)
    assert checks["pixels via x"] < 1e-6
    reversed_labels = good["pixels/x/predicted_labels"][:, ::-1]
    swapped = dict(good, **{"pixels/x/predicted_labels": reversed_labels})
    assert "predicted_labels" in vitcli_error(differences, swapped, {"pixels": logits}, LABELS,
                                              "sigmoid", 0.5)
    lowered = dict(good, **{"pixels/x/predicted": np.ones_like(good["pixels/x/predicted"])})
    assert "predicted is not scores >= 0.5" in vitcli_error(
        differences, lowered, {"pixels": logits}, LABELS, "sigmoid", 0.5)


def test_a_bad_threshold_or_scores_is_refused(model, tmp_path):
    assert "threshold" in vitcli_error(export_model, model, "savedmodel", tmp_path / "a",
                                       labels=LABELS, scores="sigmoid", threshold=1.5)
    assert "scores must be one of" in vitcli_error(export_model, model, "savedmodel",
                                                   tmp_path / "b", labels=LABELS, scores="relu")
