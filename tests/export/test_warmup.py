"""The hand-written protobuf encoding of the warm-up request, checked against TF Serving's
own generated classes (tensorflow-serving-api, a test-only dependency)."""

from __future__ import annotations

import pytest
import tensorflow as tf

from vitcli.export.warmup import _varint, predict_log, warmup_image


def test_varints_match_the_protobuf_specification():
    # Examples from protobuf's encoding guide: 1 -> 01, 150 -> 96 01, 300 -> ac 02.
    assert [_varint(value) for value in (0, 1, 150, 300)] == [
        b"\x00", b"\x01", b"\x96\x01", b"\xac\x02"]


def test_predict_log_parses_with_tf_serving_protos():
    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    images = tf.constant([warmup_image(16), b"x" * 300])  # a length over one varint byte
    log = prediction_log_pb2.PredictionLog.FromString(
        predict_log("predict_pixels", {"image_bytes": images, "extra": tf.constant([1.5])}))
    request = log.predict_log.request
    assert request.model_spec.signature_name == "predict_pixels"
    assert sorted(request.inputs) == ["extra", "image_bytes"]
    assert list(tf.make_ndarray(request.inputs["image_bytes"])) == list(images.numpy())
    assert tf.make_ndarray(request.inputs["extra"]).tolist() == [1.5]
    assert tf.io.decode_png(images[0]).shape == (16, 16, 3)
