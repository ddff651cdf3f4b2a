"""ONNX export through Keras' own `model.export(format="onnx")` (tf2onnx underneath).

Keras can write an invalid file without complaint (exact GELU, for one); the verification
step runs `onnx.checker` and onnxruntime on the result, which catches that.

An .onnx file is one protobuf message, and protobuf caps a message at 2 GiB. Larger models
need ONNX's external data (weights in side files), which Keras' exporter does not write: it
calls tf2onnx without `large_model` (whose output is a zip archive, not an .onnx file), and
tf2onnx first freezes the weights into a TensorFlow GraphDef, itself a protobuf under the
same limit. Keras passed `large_model` automatically for a while (keras-team/keras#22825) and
reverted it because it did not help (#22954). So a model whose weights alone reach the limit
(vit-h14: 632 M parameters, 2.35 GiB) is refused before any conversion work, in one line
naming the formats that do work.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from vitcli.errors import VitcliError
from vitcli.export.record import ExportFormat, read_head

if TYPE_CHECKING:
    import keras

MIB, GIB = 1 << 20, 1 << 30
PROTOBUF_LIMIT = 2 * GIB  # protobuf's maximum serialised message size
# vitcli's variables are float32 under every precision policy (mixed policies compute in
# 16 bits but keep float32 weights), and the converter freezes them as they are.
BYTES_PER_PARAMETER = 4
_size_limit = contextvars.ContextVar("onnx_size_limit", default=PROTOBUF_LIMIT)


@contextlib.contextmanager
def size_limit(limit_bytes: int) -> Iterator[None]:
    """Within the block, ONNX exports refuse models whose weights reach `limit_bytes` instead
    of PROTOBUF_LIMIT: for a consumer with a smaller limit, and for tests, which can then
    reach the refusal through `vitcli export` with a small model."""
    token = _size_limit.set(limit_bytes)
    try:
        yield
    finally:
        _size_limit.reset(token)


def check_onnx_size(parameters: int, bytes_per_parameter: int = BYTES_PER_PARAMETER,
                    limit_bytes: int | None = None, name: str = "the model") -> int:
    """The estimated bytes of the weights in an .onnx file (`parameters` x
    `bytes_per_parameter`); raises a one-line VitcliError naming the alternatives if that
    reaches `limit_bytes` (default: the current `size_limit`, PROTOBUF_LIMIT unless lowered)."""
    limit = _size_limit.get() if limit_bytes is None else limit_bytes
    size = parameters * bytes_per_parameter
    if size >= limit:
        # The alternatives are in the message, not a hint: the refusal is one line.
        raise VitcliError(
            f"{name} is too large for ONNX: its {parameters:,} parameters take "
            f"{_in_words(size)}, over the {_in_words(limit)} limit of an .onnx file (one "
            f"protobuf message; Keras' ONNX exporter writes no external data); use --format "
            f"savedmodel or --format tflite")
    return size


def _in_words(size: int) -> str:
    """2.35 GiB, 12 MiB or 1,000 bytes."""
    if size >= GIB:
        return f"{size / GIB:.3g} GiB"
    return f"{size / MIB:.3g} MiB" if size >= MIB else f"{size:,} bytes"


def _opset(path: Path) -> int | None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")),
                None)


def write_onnx(model: keras.Model, path: Path) -> dict:
    """Converts the model to ONNX, with `pixels` in and `probabilities`, `logits` out; a model
    over the protobuf limit is refused before the converter starts."""
    from vitcli.export.converters import (
        OUTPUTS,
        PIXELS_INPUT,
        quiet_converter,
        with_named_outputs,
    )

    size = check_onnx_size(model.count_params(), name=model.name)
    with quiet_converter():
        with_named_outputs(model).export(str(path), format="onnx", verbose=False)
    return {"inputs": {PIXELS_INPUT: f"float32 {[None, *model.input_shape[1:]]}"},
            "outputs": list(OUTPUTS), "opset": _opset(path), "estimated_weight_bytes": size}


def run_onnx(path: str, inputs: dict) -> dict:
    """`onnx.checker` on the file, then onnxruntime on the pixels."""
    import onnx
    import onnxruntime

    onnx.checker.check_model(path, full_check=True)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: inputs["pixels"]})
    return {f"pixels/onnxruntime/{name}": value for name, value in zip(names, values, strict=True)}


def is_onnx(path: Path) -> bool:
    """A ModelProto starting with ir_version (field 1, varint), tf2onnx's producer_name beside
    it: an ONNX file as Keras' exporter writes it."""
    head = read_head(path)
    return head[:1] == b"\x08" and b"tf2onnx" in head


# onnxruntime runs other kernels and fuses ops differently from TensorFlow.
FORMAT = ExportFormat(name="onnx", title="ONNX", suffix=".onnx", tolerance=1e-3,
                      write=write_onnx, run=run_onnx, recognises=is_onnx)
