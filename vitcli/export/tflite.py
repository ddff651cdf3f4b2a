"""TFLite (LiteRT) export: one float-tensor signature, pixels in, probabilities and logits out.

The interpreter runs other kernels (XNNPACK) and fuses ops differently from TensorFlow, so it
agrees with the Keras model to about 1e-3 rather than float32 round-off.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vitcli.export.record import ExportFormat, as_numpy, read_head

if TYPE_CHECKING:
    import keras


def write_tflite(model: keras.Model, path: Path) -> dict:
    """Converts the model with Keras' own LiteRT export (the TFLite converter), float32."""
    from vitcli.export.converters import (
        OUTPUTS,
        PIXELS_INPUT,
        quiet_converter,
        with_named_outputs,
    )

    with quiet_converter():
        with_named_outputs(model).export(str(path), format="litert", verbose=False)
    return {"signature": "serving_default",
            "inputs": {PIXELS_INPUT: f"float32 {[None, *model.input_shape[1:]]}"},
            "outputs": list(OUTPUTS)}


def _interpreter_class():
    """LiteRT's interpreter if installed, else TensorFlow's (deprecated, still in 2.21)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter


def run_tflite(path: str, inputs: dict) -> dict:
    """The TFLite interpreter on the pixels, through the file's signature."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        runner = _interpreter_class()(model_path=path).get_signature_runner()
    outputs = runner(pixels=inputs["pixels"])
    return {f"pixels/interpreter/{key}": as_numpy(value) for key, value in outputs.items()}


def is_tflite(path: Path) -> bool:
    return read_head(path)[4:8] == b"TFL3"  # the flatbuffer's file identifier


FORMAT = ExportFormat(name="tflite", title="TFLite", suffix=".tflite", tolerance=1e-3,
                      write=write_tflite, run=run_tflite, recognises=is_tflite)
