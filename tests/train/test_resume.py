"""A run killed mid-way (a real signal to a real process) resumes to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import vitcli
from tests.support.runs import checkpoint_step

STEPS = 40


def command(data, out, *extra):
    return [sys.executable, "-m", "vitcli", "pretrain", "--model", "vit-mu8", "--data",
            str(data), "--res", "16", "--steps", str(STEPS), "--batch", "12", "--lr", "2e-3",
            "--warmup", "5", "--checkpoint-every", "5", "--eval-every", "20", "--out", str(out),
            *extra]


def run_to_end(args):
    completed = subprocess.run(args, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "COLUMNS": "120"})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


def start_and_stop(args, out, stop_signal) -> subprocess.Popen:
    """Starts a run and sends `stop_signal` as soon as its first checkpoint exists."""
    # SIGINT as from a terminal: a child inherits an ignored SIGINT (and Python then leaves
    # it ignored), so the run starts with the default whatever this process does with it.
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = out / "checkpoints" / "state.npz"
    deadline = time.monotonic() + 1200  # a guard against a hang, not a time limit
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(stop_signal)
    process.wait(timeout=60)
    return process


def final_weights(out):
    return [weight.numpy() for weight in vitcli.load_checkpoint(out / "model.keras").weights]


@pytest.fixture(scope="module")
def uninterrupted(colour_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    run_to_end(command(colour_folder, out))
    return out


@pytest.mark.heavy
@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_same_weights(colour_folder, uninterrupted, tmp_path, stop_signal):
    out = tmp_path / "run"
    process = start_and_stop(command(colour_folder, out), out, stop_signal)
    expected_code = -signal.SIGKILL if stop_signal == signal.SIGKILL else 130
    assert process.returncode == expected_code, process.stdout.read()
    stopped_at = checkpoint_step(out)
    assert 0 < stopped_at < STEPS and not (out / "model.keras").exists()
    resumed = run_to_end(command(colour_folder, out, "--resume"))
    assert f"resuming at step {stopped_at}" in resumed.stdout
    for got, want in zip(final_weights(out), final_weights(uninterrupted), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == STEPS
