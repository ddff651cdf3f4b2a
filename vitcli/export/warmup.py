"""TF Serving's warm-up file: a TFRecord of `PredictionLog` protos that the server replays
when it loads a version, so the first real request does not pay for graph initialisation.

The `PredictionLog` class lives in tensorflow-serving-api, which pins TensorFlow's minor
version; rather than depend on it, the three thin wrapper messages are written here in
protobuf's wire format around TensorFlow's own `TensorProto`. Field numbers are those of
tensorflow_serving/apis/prediction_log.proto, predict.proto and model.proto.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

PREDICTION_LOG_PREDICT_LOG = 6  # PredictionLog.predict_log
PREDICT_LOG_REQUEST = 1  # PredictLog.request
PREDICT_REQUEST_MODEL_SPEC = 1  # PredictRequest.model_spec
PREDICT_REQUEST_INPUTS = 2  # PredictRequest.inputs: map<string, TensorProto>
MODEL_SPEC_SIGNATURE_NAME = 3  # ModelSpec.signature_name
MAP_ENTRY_KEY, MAP_ENTRY_VALUE = 1, 2  # how protobuf encodes every map entry
LENGTH_DELIMITED = 2  # wire type of strings, bytes and embedded messages


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while True:
        low_bits, value = value & 0x7F, value >> 7
        encoded.append(low_bits | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (string, bytes or embedded message)."""
    return _varint(number << 3 | LENGTH_DELIMITED) + _varint(len(payload)) + payload


def predict_log(signature_name: str, inputs: dict[str, tf.Tensor]) -> bytes:
    """A serialised `PredictionLog` holding a predict request for `signature_name`."""
    model_spec = _field(MODEL_SPEC_SIGNATURE_NAME, signature_name.encode())
    request = _field(PREDICT_REQUEST_MODEL_SPEC, model_spec)
    for name, value in sorted(inputs.items()):
        tensor = tf.make_tensor_proto(value).SerializeToString()
        entry = _field(MAP_ENTRY_KEY, name.encode()) + _field(MAP_ENTRY_VALUE, tensor)
        request += _field(PREDICT_REQUEST_INPUTS, entry)
    return _field(PREDICTION_LOG_PREDICT_LOG, _field(PREDICT_LOG_REQUEST, request))


def warmup_image(size) -> bytes:
    """A deterministic size x size (or height x width) colour-gradient PNG: a real image, not
    noise or zeros."""
    height, width = (size, size) if isinstance(size, int) else size
    rows = np.linspace(0, 255, height, dtype=np.float32)
    columns = rows if width == height else np.linspace(0, 255, width, dtype=np.float32)
    image = np.stack(np.broadcast_arrays(rows[:, None], columns[None, :], 255 - rows[:, None]),
                     axis=-1)
    return tf.io.encode_png(image.astype(np.uint8)).numpy()


def write_warmup(path: Path, signature_name: str, input_name: str, image_size) -> Path:
    """Writes one request with one encoded image for the encoded-image signature."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = predict_log(signature_name,
                         {input_name: tf.constant([warmup_image(image_size)], tf.string)})
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(record)
    return path
