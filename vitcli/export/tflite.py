"""TFLite (LiteRT) export: one float-tensor signature, pixels in, probabilities and logits out."""

from __future__ import annotations

from pathlib import Path

import keras

from vitcli.export.converters import OUTPUTS, PIXELS_INPUT, quiet_converter, with_named_outputs


def write_tflite(model: keras.Model, path: Path) -> dict:
    """Converts the model with Keras' own LiteRT export (the TFLite converter), float32."""
    with quiet_converter():
        with_named_outputs(model).export(str(path), format="litert", verbose=False)
    return {"signature": "serving_default",
            "inputs": {PIXELS_INPUT: f"float32 {[None, *model.input_shape[1:]]}"},
            "outputs": list(OUTPUTS)}
