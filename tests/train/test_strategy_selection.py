"""Strategy and precision selection, the TPU path included, on a machine without a TPU."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.checks import vitcli_error
from vitcli.train.precision import dtype_policy, resolve_precision
from vitcli.train.strategy import is_chief, make_strategy, resolve_name


@pytest.fixture
def clean_environment(monkeypatch):
    for name in ("TF_CONFIG", "TPU_NAME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_auto_picks_default_on_one_cpu(clean_environment):
    assert resolve_name("auto", None) == "default"


def test_auto_picks_tpu_only_when_one_is_named(clean_environment):
    assert resolve_name("auto", "local") == "tpu"
    clean_environment.setenv("TPU_NAME", "my-tpu")
    assert resolve_name("auto", None) == "tpu"


def test_auto_picks_multi_worker_from_tf_config(clean_environment):
    cluster = {"worker": ["127.0.0.1:1111", "127.0.0.1:2222"]}
    clean_environment.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                      "task": {"type": "worker", "index": 0}}))
    assert resolve_name("auto", None) == "multi-worker"


def test_unknown_strategy_and_precision_are_one_line_errors():
    assert "unknown strategy" in vitcli_error(resolve_name, "horovod", None)
    assert "unknown precision" in vitcli_error(resolve_precision, "fp8", "cpu")


def test_tpu_without_a_tpu_fails_fast_with_a_hint(clean_environment):
    start = time.monotonic()
    message = vitcli_error(make_strategy, "tpu", "local")
    assert "no tpu found" in message and time.monotonic() - start < 60


def test_multi_worker_without_tf_config_is_refused(clean_environment):
    assert "tf_config" in vitcli_error(make_strategy, "multi-worker")


@pytest.mark.parametrize("device, expected", [("tpu", "bf16"), ("gpu", "fp16"), ("cpu", "fp32")])
def test_auto_precision_per_device(device, expected):
    assert resolve_precision("auto", device) == expected
    assert resolve_precision("bf16", device) == "bf16"


def test_precision_policies():
    assert [dtype_policy(name) for name in ("fp32", "bf16", "fp16")] == [
        "float32", "mixed_bfloat16", "mixed_float16"]


def test_default_strategy_process_is_chief(clean_environment):
    assert is_chief(make_strategy("default"))
