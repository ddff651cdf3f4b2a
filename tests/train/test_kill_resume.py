"""A run SIGKILLed five times at random moments (two of them while a checkpoint is being
written), resumed with --resume after each, ends at the weights of an uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support.runs import trained_weights

STEPS = 40
KILLS = 5
DURING_WRITE = (1, 3)  # which kills wait for a checkpoint's temporary file


def command(data, out, *extra) -> list[str]:
    return [sys.executable, "-m", "vitcli", "pretrain", "--model", "vit-mu8", "--data",
            str(data), "--res", "16", "--steps", str(STEPS), "--batch", "6", "--lr", "2e-3",
            "--warmup", "3", "--checkpoint-every", "2", "--log-every", "1",
            "--eval-every", "1000", "--out", str(out), *extra]


def run_to_end(args, log) -> str:
    with open(log, "w") as handle:
        completed = subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT, timeout=300,
                                   env={**os.environ, "COLUMNS": "200"})
    assert completed.returncode == 0, log.read_text()
    return log.read_text()


def logged_step(out) -> int:
    """The last step in metrics.jsonl (an incomplete last line ignored)."""
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = []
    for line in lines:
        with contextlib.suppress(ValueError):  # a line being written
            steps.append(json.loads(line)["step"])
    return max(steps, default=0)


def inode(path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def checkpoint_temporaries(out) -> list[str]:
    folder = out / "checkpoints"
    return [entry.name for entry in os.scandir(folder)
            if entry.name.startswith(".state.npz.")] if folder.is_dir() else []


def wait_for(condition, process, log, poll=0.01, timeout=240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before the kill:\n{log.read_text()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


def kill_once(args, out, log, target: int, during_write: bool, delay: float) -> bool:
    """Starts the run, SIGKILLs it once it has logged step `target` (then after `delay`
    seconds, or as soon as a checkpoint's temporary file appears); returns whether a
    temporary was left behind."""
    # A resume rewrites metrics.jsonl (a new file) first: until then its steps are stale.
    stale = inode(out / "metrics.jsonl")
    with open(log, "w") as handle:
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT,
                                   env={**os.environ, "COLUMNS": "200"})
    try:
        wait_for(lambda: inode(out / "metrics.jsonl") not in (None, stale)
                 and logged_step(out) >= target, process, log)
        if during_write:
            wait_for(lambda: checkpoint_temporaries(out), process, log, poll=0.0005)
        else:
            time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return bool(checkpoint_temporaries(out))


def final_weights(out) -> dict[str, np.ndarray]:
    return trained_weights(out / "model.keras")


@pytest.mark.heavy
def test_five_kills_resume_to_the_uninterrupted_weights(colour_folder, tmp_path):
    rng = random.Random(9)
    straight, out = tmp_path / "straight", tmp_path / "killed"
    run_to_end(command(colour_folder, straight), tmp_path / "straight.log")
    targets = sorted(rng.sample(range(3, STEPS - 10), KILLS))
    left_temporary = []
    for kill, target in enumerate(targets):
        extra = ("--resume",) if kill else ()
        left_temporary.append(kill_once(
            command(colour_folder, out, *extra), out, tmp_path / f"kill{kill}.log", target,
            during_write=kill in DURING_WRITE, delay=rng.uniform(0, 0.1)))
    assert any(left_temporary), "no kill landed during a checkpoint write"
    assert not (out / "model.keras").exists()
    resumed = run_to_end(command(colour_folder, out, "--resume"), tmp_path / "resumed.log")
    assert "resuming at step" in resumed
    got, want = final_weights(out), final_weights(straight)
    assert set(got) == set(want)
    for path, value in want.items():
        np.testing.assert_allclose(got[path], value, rtol=1e-4, atol=1e-5, err_msg=path)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [record["step"] for record in records if "loss" in record]
    assert train_steps == list(range(1, STEPS + 1))
    assert checkpoint_temporaries(out) == [] and not (out / ".vitcli.lock").exists()
