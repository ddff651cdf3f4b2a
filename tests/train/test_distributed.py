"""Strategies: mirrored over two logical CPUs and two multi-worker processes on 127.0.0.1
give the weights of a one-device run with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from tests.support import runs


def train_command(data, out, *extra, steps=6):
    return [sys.executable, "-m", "vitcli", "pretrain", "--model", "vit-mu8", "--data",
            str(data), "--res", "16", "--steps", str(steps), "--batch", "12", "--lr", "2e-3",
            "--warmup", "2", "--eval-every", "1000", "--checkpoint-every", "3",
            "--out", str(out), *extra]


def run(args, **env):
    completed = subprocess.run(args, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "COLUMNS": "200", **env})
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


# Summed in another order across replicas and workers: a looser atol than a resumed run's.
assert_same_weights = partial(runs.assert_same_weights, atol=2e-5)


@pytest.fixture(scope="module")
def one_device_run(colour_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    run(train_command(colour_folder, out, "--strategy", "default"))
    return out


@pytest.mark.heavy
def test_mirrored_over_two_cpus_matches_one_device(colour_folder, one_device_run, tmp_path):
    out = tmp_path / "run"
    stdout = run(train_command(colour_folder, out, "--strategy", "mirrored"),
                 VITCLI_CPU_DEVICES="2")
    assert "mirrored strategy" in stdout and "2 replica(s) x 1 micro-batch(es) x 6" in stdout
    assert_same_weights(out / "model.keras", one_device_run / "model.keras")


@pytest.mark.heavy
def test_accumulation_matches_the_full_batch(colour_folder, one_device_run, tmp_path):
    out = tmp_path / "run"
    stdout = run(train_command(colour_folder, out, "--strategy", "default", "--accum", "3"))
    assert "1 replica(s) x 3 micro-batch(es) x 4" in stdout
    assert_same_weights(out / "model.keras", one_device_run / "model.keras")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def start_workers(args, tmp_path: Path) -> list[subprocess.Popen]:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = []
    for index in range(2):
        scratch = tmp_path / f"tmp-{index}"
        scratch.mkdir(exist_ok=True)
        env = {**os.environ, "COLUMNS": "200", "TMPDIR": str(scratch),
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    return processes


@pytest.mark.heavy
def test_two_workers_train_together_like_one_device(colour_folder, one_device_run, tmp_path):
    out = tmp_path / "run"
    processes = start_workers(train_command(colour_folder, out, "--strategy", "multi-worker"),
                              tmp_path)
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(outputs)
    assert "multi-worker strategy" in outputs[0] and "2 replica(s)" in outputs[0]
    worker_copy = next((tmp_path / "tmp-1").glob("vitcli-worker-*/model.keras"))
    assert_same_weights(out / "model.keras", one_device_run / "model.keras")
    assert_same_weights(worker_copy, out / "model.keras")
    # Only the chief wrote the run directory.
    assert not list((tmp_path / "tmp-0").glob("vitcli-worker-*"))


@pytest.mark.heavy
def test_killed_worker_then_restarted_cluster_resumes(colour_folder, tmp_path):
    import signal
    import time

    steps = 30
    single = tmp_path / "single"
    run(train_command(colour_folder, single, "--strategy", "default", steps=steps))
    out = tmp_path / "run"
    args = train_command(colour_folder, out, "--strategy", "multi-worker", steps=steps)
    processes = start_workers(args, tmp_path)
    state = out / "checkpoints" / "state.npz"
    deadline = time.monotonic() + 240
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    processes[1].send_signal(signal.SIGKILL)  # a worker dies mid-run...
    processes[1].wait(timeout=60)
    processes[0].send_signal(signal.SIGKILL)  # ...and the job is restarted as a whole
    processes[0].wait(timeout=60)
    assert not (out / "model.keras").exists()
    restarted = start_workers([*args, "--resume"], tmp_path)
    outputs = [process.communicate(timeout=300)[0] for process in restarted]
    assert [process.returncode for process in restarted] == [0, 0], "\n".join(outputs)
    assert all("resuming at step" in output for output in outputs)
    assert_same_weights(out / "model.keras", single / "model.keras")
