"""The exporting side of verification: deterministic inputs, the Keras model's answers, the
fresh process that runs the artefact (`vitcli.export.verify`), and the differences.

Tolerances are on probabilities (max absolute difference), one in each format's record
(`vitcli.export.formats`); for a multi-label model (`scores="sigmoid"`) on its sigmoid scores,
read from the artefact's `scores` output or computed from its `logits`. Formats that run
TensorFlow's own kernels on the same graph (savedmodel, keras, npz) agree to float32
round-off; TFLite and ONNX run other kernels (XNNPACK, onnxruntime) and fuse ops differently.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vitcli.config import canonical_size, image_shape
from vitcli.data import ops
from vitcli.errors import VitcliError
from vitcli.export.formats import get_format
from vitcli.processes import run_module

NUM_EXAMPLES = 2
SEED = 0


def verification_pixels(image_size) -> np.ndarray:
    """Deterministic float32 pixels uniform in [0, 255] (`image_size`: a number, or (height,
    width))."""
    rng = np.random.default_rng(SEED)
    return rng.uniform(0.0, 255.0, (NUM_EXAMPLES, *image_shape(image_size), 3)).astype(
        np.float32)


def verification_images(image_size) -> list[bytes]:
    """A PNG and a JPEG of random content, neither square nor of the model's size, so
    decoding and resizing are exercised."""
    rng = np.random.default_rng(SEED + 1)
    height, width = image_shape(image_size)
    shapes = [(height + 7, width + 3), (height // 2 + 5, width + 11)]
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]
    return [tf.io.encode_png(images[0]).numpy(), tf.io.encode_jpeg(images[1]).numpy()]


def decoded_pixels(encoded: list[bytes], eval_crop: str, image_size) -> np.ndarray:
    """What the serving graph feeds the model: the evaluation pipeline's own ops."""
    transform = ops.eval_transform(eval_crop, image_size)
    return np.stack([transform(ops.decode_image(tf.constant(image))).numpy()
                     for image in encoded])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))  # no overflow for large |x|


def keras_logits(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    # On the CPU, as in the fresh process: a GPU's TF32 matmuls would differ by ~1e-3.
    with tf.device("/CPU:0"):
        return np.asarray(model(pixels, training=False), dtype=np.float32)


def _fresh_environment() -> dict[str, str]:
    # The exporting process may hold the whole GPU; the check runs on the CPU anyway.
    return dict(os.environ, CUDA_VISIBLE_DEVICES="-1")


def run_in_fresh_process(fmt: str, artefact: Path, inputs: dict) -> dict[str, np.ndarray]:
    """The artefact's outputs on `inputs`, from `python -m vitcli.export.verify` in a process
    that takes no code from the working directory (`vitcli.processes.run_module`)."""
    with tempfile.TemporaryDirectory(prefix="vitcli-verify-") as folder:
        inputs_path, outputs_path = Path(folder, "inputs.npz"), Path(folder, "outputs.npz")
        np.savez(inputs_path, **inputs)
        # Absolute paths: the fresh process runs in a temporary folder of its own.
        arguments = [fmt, artefact.absolute(), inputs_path, outputs_path]
        finished = run_module("vitcli.export.verify", arguments, environment=_fresh_environment())
        if finished.returncode != 0:
            lines = [line for line in finished.stderr.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit code {finished.returncode}"
            raise VitcliError(f"the {fmt} export could not be run in a fresh process: {reason}")
        with np.load(outputs_path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}


def _grouped(outputs: dict[str, np.ndarray]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """`<kind>/<route>/<output>` keys -> {(kind, route): {output: array}}."""
    groups: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, value in outputs.items():
        kind, route, name = key.split("/", 2)
        groups.setdefault((kind, route), {})[name] = value
    return groups


def _difference(actual: np.ndarray, expected: np.ndarray, what: str) -> float:
    if actual.shape != expected.shape:
        raise VitcliError(f"{what} has shape {actual.shape}, the Keras model's {expected.shape}")
    return float(np.abs(actual.astype(np.float64) - expected).max())


def _top_k_difference(group: dict, expected: np.ndarray, labels: list[str], what: str) -> float:
    """Top-k labels must name the top-k indices exactly; the scores must be Keras' k highest
    probabilities (compared sorted, so that near-ties cannot swap the verdict)."""
    indices = group["top_k_indices"]
    names = np.array([label.encode() for label in labels])[indices]
    if not np.array_equal(names, group["top_k_labels"]):
        raise VitcliError(f"{what}: top_k_labels are not the labels of top_k_indices")
    highest = -np.sort(-expected, axis=-1)[:, :indices.shape[-1]]
    return _difference(group["top_k_scores"], highest, f"{what} top_k_scores")


def _check_predicted(group: dict, labels: list[str], threshold: float, what: str) -> None:
    """A multi-label serving graph's `predicted` must be its own `scores` at or above the
    threshold, and `predicted_labels` their labels, highest score first, padded with ""."""
    scores = group["scores"]
    chosen = scores >= np.float32(threshold)
    if not np.array_equal(group["predicted"], chosen):
        raise VitcliError(f"{what}: predicted is not scores >= {threshold:g}")
    names = np.array([label.encode() for label in labels])
    expected = np.full(scores.shape, b"", dtype=names.dtype)
    for row, (row_scores, row_chosen) in enumerate(zip(scores, chosen, strict=True)):
        order = [index for index in np.argsort(-row_scores, kind="stable") if row_chosen[index]]
        expected[row, :len(order)] = names[order]
    if not np.array_equal(group["predicted_labels"].astype(expected.dtype), expected):
        raise VitcliError(f"{what}: predicted_labels are not the labels of predicted")


def differences(outputs: dict[str, np.ndarray], expected_logits: dict[str, np.ndarray],
                labels: list[str], scores: str = "softmax", threshold: float = 0.5
                ) -> tuple[dict[str, float], dict[str, float]]:
    """(probability differences, logit differences) of every output group, by its name; with
    `scores="sigmoid"` the probabilities are per-class sigmoid scores."""
    activation, output = (sigmoid, "scores") if scores == "sigmoid" else (softmax, "probabilities")
    probability_checks, logit_checks = {}, {}
    for (kind, route), group in _grouped(outputs).items():
        what = f"{kind} via {route}"
        expected = activation(expected_logits[kind])
        if "logits" in group:
            logit_checks[what] = _difference(group["logits"], expected_logits[kind], what)
        probabilities = group.get(output)
        if probabilities is None:
            probabilities = activation(group["logits"])
        probability_checks[what] = _difference(probabilities, expected, what)
        if "top_k_indices" in group:
            probability_checks[f"{what}, top-k"] = _top_k_difference(group, expected, labels, what)
        if "predicted_labels" in group:
            _check_predicted(group, labels, threshold, what)
    return probability_checks, logit_checks


def measure(model: keras.Model, fmt: str, artefact: Path, *, labels: list[str],
            eval_crop: str, scores: str = "softmax", threshold: float = 0.5
            ) -> tuple[dict[str, float], dict[str, float]]:
    """Runs the artefact in a fresh process on deterministic inputs (pixels, and encoded
    images for a format that serves them: SavedModel) and compares it with `model` on the
    same pixels (`scores`, `threshold`: how a multi-label model's outputs are read)."""
    size = canonical_size(model.input_shape[1:3])
    pixels = verification_pixels(size)
    inputs = {"pixels": pixels}
    expected_logits = {"pixels": keras_logits(model, pixels)}
    if get_format(fmt).serves_images:
        encoded = verification_images(size)
        inputs.update({f"encoded/{index}": np.frombuffer(image, np.uint8)
                       for index, image in enumerate(encoded)})
        expected_logits["images"] = keras_logits(model, decoded_pixels(encoded, eval_crop, size))
    outputs = run_in_fresh_process(fmt, artefact, inputs)
    return differences(outputs, expected_logits, labels, scores, threshold)
