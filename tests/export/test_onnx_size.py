"""ONNX exports over protobuf's 2 GiB limit are refused up front, in one line.

vit-h14 (632 M parameters, 2.35 GiB in float32) is checked from its parameter count, so no
2.5 GB model is built; the CLI path is exercised with the tiny model under a lowered limit
(`size_limit`), which needs no monkeypatching.
"""

from __future__ import annotations

import pytest

from tests.support.cli import runner
from tests.support.export import TINY
from vitcli.cli.app import app
from vitcli.errors import VitcliError
from vitcli.export.onnx import PROTOBUF_LIMIT, check_onnx_size, size_limit
from vitcli.models.cost import parameter_count
from vitcli.models.registry import decode_variant


def _refusal(parameters: int, **options) -> str:
    with pytest.raises(VitcliError) as caught:
        check_onnx_size(parameters, **options)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_vit_h14_is_refused_naming_its_size_the_limit_and_the_alternatives():
    parameters = parameter_count(decode_variant("vit-h14"))
    assert parameters == 632_045_800
    message = _refusal(parameters, name="vit-h14")
    for part in ("vit-h14", "632,045,800 parameters", "2.35 GiB", "2 GiB limit",
                 "--format savedmodel", "--format tflite"):
        assert part in message, message


@pytest.mark.parametrize("variant", ["vit-b16", "vit-l16"])
def test_models_under_the_limit_pass_with_their_estimated_size(variant):
    parameters = parameter_count(decode_variant(variant, num_classes=21843))
    assert check_onnx_size(parameters) == 4 * parameters < PROTOBUF_LIMIT


def test_the_limit_itself_is_refused_and_one_parameter_less_is_not():
    limit_parameters = PROTOBUF_LIMIT // 4
    _refusal(limit_parameters)
    assert check_onnx_size(limit_parameters - 1) == PROTOBUF_LIMIT - 4
    assert check_onnx_size(limit_parameters, bytes_per_parameter=2) == PROTOBUF_LIMIT // 2


def test_an_explicit_limit_wins_over_the_current_one():
    with size_limit(100):
        assert check_onnx_size(10, limit_bytes=1000) == 40
        assert "100 bytes limit" in _refusal(25)
    assert check_onnx_size(25) == 100  # the lowered limit ends with the block


def test_vitcli_export_refuses_before_writing_anything(model, tmp_path):
    """`vitcli export --format onnx` of a model over the (lowered) limit: exit code 1, one
    error line and nothing at --out, neither the file nor its new folder."""
    saved = tmp_path / "tiny.keras"
    model.save(saved)
    out = tmp_path / "onnx" / "tiny.onnx"
    with size_limit(1000):
        result = runner.invoke(app, ["export", str(saved), "--format", "onnx",
                                     "--out", str(out)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert f"{TINY.name} is too large for ONNX" in lines[0] and "--format savedmodel" in lines[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.keras"]
