"""ONNX export through Keras' own `model.export(format="onnx")` (tf2onnx underneath).

Keras can write an invalid file without complaint (exact GELU, for one); the verification
step runs `onnx.checker` and onnxruntime on the result, which catches that.
"""

from __future__ import annotations

from pathlib import Path

import keras

from vitcli.export.converters import OUTPUTS, PIXELS_INPUT, quiet_converter, with_named_outputs


def _opset(path: Path) -> int | None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")),
                None)


def write_onnx(model: keras.Model, path: Path) -> dict:
    """Converts the model to ONNX, with `pixels` in and `probabilities`, `logits` out."""
    with quiet_converter():
        with_named_outputs(model).export(str(path), format="onnx", verbose=False)
    return {"inputs": {PIXELS_INPUT: f"float32 {[None, *model.input_shape[1:]]}"},
            "outputs": list(OUTPUTS), "opset": _opset(path)}
