"""`vitcli models` through the CLI, in this process and as a fresh one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.cli import invoke

# docs/reference.md §2: parameter counts with a 1000-class head at 224 px.
REFERENCE_PARAMS = {
    "vit-ti16": 5_717_416, "vit-s16": 22_050_664, "vit-b8": 86_576_872,
    "vit-b16": 86_567_656, "vit-b32": 88_224_232, "vit-l16": 304_326_632,
    "vit-l32": 306_535_400, "vit-h14": 632_045_800, "r50-vit-b16": 98_659_112,
    "r50-vit-l32": 328_994_856, "r26-vit-s32": 36_431_912, "r26-vit-b32": 101_383_976,
    "r-vit-ti16": 6_337_704,
}


def test_models_json_lists_every_variant_with_reference_params():
    result = invoke("models", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for name, params in REFERENCE_PARAMS.items():
        assert rows[name]["params"] == params, name
    # ViT-B/16 at 224 px is 17.6 GMACs in the literature (timm, fvcore): 35.1 GFLOPs.
    assert rows["vit-b16"]["gflops_224"] == pytest.approx(2 * 17.56, abs=0.1)
    assert rows["vit-b16"]["gflops_384"] > rows["vit-b16"]["gflops_224"] * 3


def test_models_table_shows_every_variant():
    result = invoke("models")
    assert result.exit_code == 0
    for name in REFERENCE_PARAMS:
        assert name in result.stdout
    assert "86,567,656" in result.stdout
    assert "vit-b16-augreg" in result.stdout and "vit-h14-i21k" in result.stdout


def test_console_script_runs_in_a_fresh_process():
    completed = subprocess.run([sys.executable, "-m", "vitcli", "models", "--json"],
                               capture_output=True, text=True, timeout=120, check=True)
    assert {row["name"] for row in json.loads(completed.stdout)} >= set(REFERENCE_PARAMS)
