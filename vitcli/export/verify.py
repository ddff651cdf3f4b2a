"""Runs an exported artefact in a fresh process and saves what it returns:

    python -m vitcli.export.verify FORMAT ARTEFACT INPUTS.npz OUTPUTS.npz

A fresh process proves the artefact stands alone: nothing of the exporting process (Keras
objects, registered layers, traced functions) can stand in for what the file lacks.
INPUTS.npz holds `pixels` (float32 NHWC in [0, 255]) and, for a SavedModel, `encoded/<i>`
(encoded images as uint8 bytes). OUTPUTS.npz keys are `<input kind>/<route>/<output>`:
the input kind is `pixels` or `images`, the route says how the artefact was run.
"""

from __future__ import annotations

import sys

import numpy as np


def _as_numpy(value) -> np.ndarray:
    array = np.asarray(value)
    # Strings come back as object arrays of bytes; .npz stores them pickle-free as bytes.
    return array.astype(bytes) if array.dtype == object else array


def run_vitcli_checkpoint(path: str, inputs: dict) -> dict[str, np.ndarray]:
    """`.keras` and `.npz`: what vitcli itself loads, called on the pixels."""
    from vitcli.weights.checkpoint import load_checkpoint

    model = load_checkpoint(path)
    return {"pixels/load_checkpoint/logits": _as_numpy(model(inputs["pixels"], training=False))}


def _run_savedmodel_eager(path: str, feeds: dict) -> dict[str, np.ndarray]:
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    results = {}
    for kind, (signature, name, value) in feeds.items():
        outputs = loaded.signatures[signature](**{name: tf.constant(value)})
        results.update({f"{kind}/tf.saved_model.load/{key}": _as_numpy(output)
                        for key, output in outputs.items()})
    return results


def _run_savedmodel_session(path: str, feeds: dict) -> dict[str, np.ndarray]:
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
            results.update({f"{kind}/session/{key}": _as_numpy(output)
                            for key, output in zip(keys, fetched, strict=True)})
    return results


def run_savedmodel(path: str, inputs: dict) -> dict[str, np.ndarray]:
    """Both signatures, both through `tf.saved_model.load` and through a TF1 session."""
    from vitcli.export.savedmodel import (
        IMAGE_INPUT,
        PIXELS_INPUT,
        PIXELS_SIGNATURE,
        SERVING_SIGNATURE,
    )

    encoded = np.array([inputs[key].tobytes() for key in sorted(inputs)
                        if key.startswith("encoded/")], dtype=object)
    feeds = {"pixels": (PIXELS_SIGNATURE, PIXELS_INPUT, inputs["pixels"]),
             "images": (SERVING_SIGNATURE, IMAGE_INPUT, encoded)}
    return {**_run_savedmodel_eager(path, feeds), **_run_savedmodel_session(path, feeds)}


def _interpreter_class():
    """LiteRT's interpreter if installed, else TensorFlow's (deprecated, still in 2.21)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter


def run_tflite(path: str, inputs: dict) -> dict[str, np.ndarray]:
    """The TFLite interpreter on the pixels, through the file's signature."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        runner = _interpreter_class()(model_path=path).get_signature_runner()
    outputs = runner(pixels=inputs["pixels"])
    return {f"pixels/interpreter/{key}": _as_numpy(value) for key, value in outputs.items()}


def run_onnx(path: str, inputs: dict) -> dict[str, np.ndarray]:
    """`onnx.checker` on the file, then onnxruntime on the pixels."""
    import onnx
    import onnxruntime

    onnx.checker.check_model(path, full_check=True)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: inputs["pixels"]})
    return {f"pixels/onnxruntime/{name}": value for name, value in zip(names, values, strict=True)}


RUNNERS = {
    "savedmodel": run_savedmodel,
    "keras": run_vitcli_checkpoint,
    "npz": run_vitcli_checkpoint,
    "tflite": run_tflite,
    "onnx": run_onnx,
}


def main(arguments: list[str]) -> int:
    fmt, artefact, inputs_path, outputs_path = arguments
    with np.load(inputs_path, allow_pickle=False) as archive:
        inputs = {key: archive[key] for key in archive.files}
    np.savez(outputs_path, **RUNNERS[fmt](artefact, inputs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
