"""The TensorFlow graph inside vitcli's SavedModel (`vitcli.export.savedmodel`): labels read
from an asset, both signatures traced around the Keras model, saved with the variables TF
Serving restores.

Decoding and resizing use `vitcli.data.ops`, the ops of the evaluation pipeline, so that
training and serving cannot drift. A multi-label model's graph (a threshold given) returns
sigmoid scores and the classes at or above the threshold, which the SavedModel keeps as its
variable `threshold`. Labels travel as `assets/labels.txt` and the graph reads
them from there (a lookup table initialised from the asset), so the two cannot disagree.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from vitcli.config import canonical_size, image_shape
from vitcli.data import ops
from vitcli.export.savedmodel import (
    IMAGE_INPUT,
    LABELS_FILE,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
    SERVING_SIGNATURE,
)


def _labels_table(labels_file: tf.saved_model.Asset) -> tf.lookup.StaticHashTable:
    """Class index -> label, read from the labels asset (line number -> whole line)."""
    initializer = tf.lookup.TextFileInitializer(
        labels_file, key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE)
    return tf.lookup.StaticHashTable(initializer, default_value="")


def _classify(model: keras.Model, table, top_k: int):
    """pixels -> the four outputs, the body of both signatures."""
    def classify(pixels):
        logits = tf.cast(model(pixels, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        scores, indices = tf.math.top_k(probabilities, k=top_k)
        return {"probabilities": probabilities,
                "top_k_labels": table.lookup(tf.cast(indices, tf.int64)),
                "top_k_scores": scores, "top_k_indices": indices}

    return classify


def _decode_batch(image_bytes, eval_crop: str, size):
    """Encoded images of any size -> float32 [N, height, width, 3] pixels in [0, 255] (`size`:
    a number, or (height, width) for a non-square model)."""
    transform = ops.eval_transform(eval_crop, size)
    shape = [*image_shape(size), 3]
    return tf.map_fn(lambda encoded: tf.ensure_shape(transform(ops.decode_image(encoded)),
                                                     shape),
                     image_bytes, fn_output_signature=tf.TensorSpec(shape, tf.float32))


def _classify_multi_label(model: keras.Model, table, top_k: int, threshold: tf.Variable):
    """pixels -> sigmoid scores, the classes scoring at least `threshold` (a bool per class,
    and their labels highest first, padded with ""), and the top-k; both signatures' body."""
    def classify(pixels):
        logits = tf.cast(model(pixels, training=False), tf.float32)
        scores = tf.math.sigmoid(logits)
        ranked, order = tf.math.top_k(scores, k=int(logits.shape[-1]))
        names = table.lookup(tf.cast(order, tf.int64))
        return {"scores": scores, "predicted": scores >= threshold,
                "predicted_labels": tf.where(ranked >= threshold, names, ""),
                "top_k_labels": names[:, :top_k], "top_k_scores": ranked[:, :top_k],
                "top_k_indices": order[:, :top_k]}

    return classify


def _signatures(model: keras.Model, table, eval_crop: str, top_k: int,
                threshold: tf.Variable | None = None) -> dict:
    size = canonical_size(model.input_shape[1:3])  # (height, width) unless square
    classify = (_classify(model, table, top_k) if threshold is None
                else _classify_multi_label(model, table, top_k, threshold))
    pixels_spec = tf.TensorSpec([None, *image_shape(size), 3], tf.float32, name=PIXELS_INPUT)
    image_spec = tf.TensorSpec([None], tf.string, name=IMAGE_INPUT)
    predict_pixels = tf.function(classify, input_signature=[pixels_spec], autograph=False)

    def serve_images(image_bytes):
        return classify(_decode_batch(image_bytes, eval_crop, size))

    serving = tf.function(serve_images, input_signature=[image_spec], autograph=False)
    return {SERVING_SIGNATURE: serving.get_concrete_function(),
            PIXELS_SIGNATURE: predict_pixels.get_concrete_function()}


def _captured_variables(functions) -> list[tf.Variable]:
    """The tf.Variables the signatures read, each once."""
    found = {}
    for function in functions:
        for variable in function.variables:
            found.setdefault(id(variable), variable)
    return list(found.values())


def _serving_root(model: keras.Model, labels_path: Path, eval_crop: str, top_k: int,
                  threshold: float | None = None):
    root = tf.Module()
    root.labels_file = tf.saved_model.Asset(str(labels_path))
    root.labels_table = _labels_table(root.labels_file)
    if threshold is not None:
        root.threshold = tf.Variable(threshold, dtype=tf.float32, trainable=False,
                                     name="threshold")
    signatures = _signatures(model, root.labels_table, eval_crop, top_k,
                             getattr(root, "threshold", None))
    # Keras 3 variables wrap tf.Variables; TF Serving (and saved_model_cli) restore only the
    # tf.Variables the root tracks itself, as Keras' own ExportArchive does.
    root.model_variables = _captured_variables(signatures.values())
    return root, signatures


def save_serving_graph(model: keras.Model, path: Path, *, labels: list[str], eval_crop: str,
                       top_k: int, threshold: float | None = None) -> None:
    """Saves both signatures around `model`, and the labels asset, into the folder `path`;
    with a `threshold`, the multi-label graph."""
    with tempfile.TemporaryDirectory() as folder:
        labels_path = Path(folder, LABELS_FILE)
        labels_path.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        root, signatures = _serving_root(model, labels_path, eval_crop, top_k, threshold)
        tf.saved_model.save(root, str(path), signatures=signatures)
