"""The TF Serving SavedModel: a versioned folder whose `serving_default` signature takes
encoded images and a second signature takes float pixels, both returning probabilities and
the top-k labels, scores and indices. A multi-label model's signatures return per-class
sigmoid `scores` instead of probabilities, and the classes scoring at least the threshold
(stored in the SavedModel as the variable `threshold`): `predicted` (bool per class) and
`predicted_labels` (their labels, highest score first, then "" to the number of classes).

This module is the format (its layout, record, and the fresh-process runner); the graph it
saves is built in `vitcli.export.serving_graph`, imported only when a SavedModel is written.
It runs TensorFlow's own kernels on the same graph, so it agrees with the Keras model to
float32 round-off.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vitcli.export.record import ExportFormat, as_numpy

if TYPE_CHECKING:
    import keras

SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "predict_pixels"
# TF Serving's REST API accepts {"b64": ...} for string inputs; `_bytes` is its naming habit.
IMAGE_INPUT = "image_bytes"
PIXELS_INPUT = "pixels"
OUTPUTS = ("probabilities", "top_k_labels", "top_k_scores", "top_k_indices")
MULTI_LABEL_OUTPUTS = ("scores", "predicted", "predicted_labels", "top_k_labels",
                       "top_k_scores", "top_k_indices")
LABELS_FILE = "labels.txt"
WARMUP_FILE = Path("assets.extra", "tf_serving_warmup_requests")


def next_version(base: Path) -> int:
    """1 for a new base folder, else one more than its highest integer folder (TF Serving
    serves the highest version, so a new export becomes the served one)."""
    if not base.is_dir():
        return 1
    versions = [int(child.name) for child in base.iterdir()
                if child.is_dir() and child.name.isdigit()]
    return max(versions, default=0) + 1


def write_savedmodel(model: keras.Model, path: Path, *, labels: list[str], eval_crop: str,
                     top_k: int, scores: str = "softmax", threshold: float = 0.5) -> dict:
    """Writes the serving SavedModel into the folder `path`; returns its description."""
    from vitcli.export.serving_graph import save_serving_graph
    from vitcli.export.warmup import write_warmup

    top_k = min(top_k, len(labels))
    multi_label = scores == "sigmoid"
    save_serving_graph(model, path, labels=labels, eval_crop=eval_crop, top_k=top_k,
                       threshold=threshold if multi_label else None)
    outputs = list(MULTI_LABEL_OUTPUTS if multi_label else OUTPUTS)
    write_warmup(path / WARMUP_FILE, SERVING_SIGNATURE, IMAGE_INPUT,
                 tuple(model.input_shape[1:3]))
    pixels_shape = [None, *model.input_shape[1:]]
    return {
        "signatures": {
            SERVING_SIGNATURE: {"inputs": {IMAGE_INPUT: "string [None] (encoded images)"},
                                "outputs": outputs},
            PIXELS_SIGNATURE: {"inputs": {PIXELS_INPUT: f"float32 {pixels_shape}"},
                               "outputs": outputs},
        },
        **({"scores": scores, "threshold": threshold} if multi_label else {}),
        "labels_asset": f"assets/{LABELS_FILE}",
        "warmup_file": str(WARMUP_FILE),
        "eval_crop": eval_crop,
        "top_k": top_k,
    }


def _run_eager(path: str, feeds: dict) -> dict:
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    results = {}
    for kind, (signature, name, value) in feeds.items():
        outputs = loaded.signatures[signature](**{name: tf.constant(value)})
        results.update({f"{kind}/tf.saved_model.load/{key}": as_numpy(output)
                        for key, output in outputs.items()})
    return results


def _run_in_session(path: str, feeds: dict) -> dict:
    """The SavedModel through a TF1 session, the way TF Serving's C++ loader runs it."""
    import tensorflow as tf

    results = {}
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        for kind, (signature, name, value) in feeds.items():
            definition = graph.signature_def[signature]
            keys = list(definition.outputs)
            fetched = session.run([definition.outputs[key].name for key in keys],
                                  {definition.inputs[name].name: value})
            results.update({f"{kind}/session/{key}": as_numpy(output)
                            for key, output in zip(keys, fetched, strict=True)})
    return results


def run_savedmodel(path: str, inputs: dict) -> dict:
    """Both signatures, both through `tf.saved_model.load` and through a TF1 session."""
    import numpy as np

    encoded = np.array([inputs[key].tobytes() for key in sorted(inputs)
                        if key.startswith("encoded/")], dtype=object)
    feeds = {"pixels": (PIXELS_SIGNATURE, PIXELS_INPUT, inputs["pixels"]),
             "images": (SERVING_SIGNATURE, IMAGE_INPUT, encoded)}
    return {**_run_eager(path, feeds), **_run_in_session(path, feeds)}


FORMAT = ExportFormat(name="savedmodel", title="SavedModel", suffix="", tolerance=1e-4,
                      write=write_savedmodel, run=run_savedmodel, versioned=True,
                      serves_images=True)
