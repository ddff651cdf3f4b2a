"""Every path on a non-local TensorFlow file system: the data, the run directories, the
checkpoints, the --weights file and the export all on the in-process `ram://` file system
(the commands run in this process) and on Cloud Storage (`gs://`, a local emulator: the
commands run as processes, one of them killed with SIGKILL mid-run), through the same commands
a user types, give what the same sequence gives on local paths."""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.support.cli import invoke
from tests.support.gcs_emulator import gcs_environ
from tests.support.images import upload_folder, write_colour_splits
from tests.support.runs import trained_weights
from vitcli.storage import files_below, local_copy, location

COMMON = ["--model", "vit-mu8", "--batch", "8", "--lr", "2e-3", "--warmup", "2"]
PRETRAIN_STEPS = 40
EVENTS = "events.out.tfevents."


@contextlib.contextmanager
def interrupt_after_first_checkpoint(run):
    """Ctrl-C (KeyboardInterrupt in the main thread, the path SIGINT and SIGTERM take) once
    the run's first checkpoint exists: a real stop of a real run, on whatever file system.
    No time limit (a deadline would interrupt a slow run too early); the watch ends with
    the block, so a run that never checkpoints fails its exit-code check instead."""
    state = location(run) / "checkpoints" / "state.npz"
    done = threading.Event()

    def watch():
        while not state.exists():
            if done.wait(0.01):
                return
        _thread.interrupt_main()

    # A real Ctrl-C reaches Python's own handler; interrupt_main does nothing without it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGINT, previous)


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def pretrain_command(root) -> list:
    return ["pretrain", *COMMON, "--data", root / "data", "--res", "16", "--steps",
            PRETRAIN_STEPS, "--checkpoint-every", "4", "--eval-every", "20", "--out",
            root / "pre"]


def later_commands(root) -> list[list]:
    """After pre-training: its .npz -> finetune (higher resolution) -> evaluate -> export.
    (No name here is another's prefix: TensorFlow's ram:// lists `pre.npz` as a child `.npz`
    of `pre/`, as it finds children by prefix.)"""
    data, pre, fine = root / "data", root / "pre", root / "fine"
    return [["weights", "convert", pre / "model.keras", "--out", root / "start.npz"],
            ["finetune", *COMMON, "--weights", root / "start.npz", "--data", data, "--res", "24",
             "--steps", "6", "--out", fine],
            ["evaluate", fine, "--data", data, "--json"],
            ["export", fine, "--format", "savedmodel", "--out", root / "serving"]]


def check_stopped(root) -> None:
    pre = root / "pre"
    assert not (pre / "model.keras").exists() and (pre / "checkpoints" / "state.npz").is_file()


def run_sequence(root) -> dict:
    """pretrain -> stop -> resume -> .npz -> finetune -> evaluate -> export, every path below
    `root`, in this process."""
    with interrupt_after_first_checkpoint(root / "pre"):
        stopped = invoke(*pretrain_command(root))
    assert stopped.exit_code == 130, stopped.output
    check_stopped(root)
    assert "resuming at step" in ok(invoke(*pretrain_command(root), "--resume")).output
    outputs = [ok(invoke(*command)).stdout for command in later_commands(root)]
    return {"metrics": json.loads(outputs[2]), "files": files_below(root)}


def run_processes(root, environ) -> dict:
    """The same sequence as processes, the first pre-training killed (SIGKILL) as soon as its
    first checkpoint exists."""
    def command(arguments):
        return [sys.executable, "-m", "vitcli", *map(str, arguments)]

    process = subprocess.Popen(command(pretrain_command(root)), env=environ,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = root / "pre" / "checkpoints" / "state.npz"
    deadline = time.monotonic() + 1200  # a guard against a hang, not a time limit
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, process.stdout.read()
    check_stopped(root)
    outputs = []
    for arguments in [[*pretrain_command(root), "--resume"], *later_commands(root)]:
        done = subprocess.run(command(arguments), env=environ, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    assert "resuming at step" in outputs[0]
    return {"metrics": json.loads(outputs[3]), "files": files_below(root)}


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    local = tmp_path_factory.mktemp("local")
    write_colour_splits(local / "data", train=8, test=4)
    remote = upload_folder(local / "data", f"ram://remote-paths-{time.time_ns()}/data").parent
    return {"local": (local, run_sequence(local)), "ram": (remote, run_sequence(remote))}


@pytest.fixture(scope="module")
def on_cloud_storage(sequences, gcs_emulator):
    """The sequence on gs:// (the emulator), as processes; TensorFlow in this process is
    pointed at the emulator too, to upload the data and read the results."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("http_proxy", "HTTP_PROXY"):
            patch.delenv(name, raising=False)
        for name, value in gcs_emulator.environ.items():
            patch.setenv(name, value)
        local = sequences["local"][0]
        root = upload_folder(local / "data", f"{gcs_emulator.root}/{time.time_ns()}/data").parent
        environ = gcs_environ(gcs_emulator, {**os.environ, "COLUMNS": "120"})
        yield root, run_processes(root, environ)


def assert_same_run(local, on_disk, remote, elsewhere, tolerance: float) -> None:
    with local_copy(remote / "fine" / "model.keras") as copied:
        got, want = trained_weights(copied), trained_weights(local / "fine" / "model.keras")
    assert set(got) == set(want)
    for path, value in want.items():
        np.testing.assert_allclose(got[path], value, rtol=tolerance, atol=tolerance,
                                   err_msg=path)
    got, want = _numbers(elsewhere["metrics"]), _numbers(on_disk["metrics"])
    assert got.pop("top1") == want.pop("top1") and got.pop("confusion") == want.pop("confusion")
    np.testing.assert_allclose(got.pop("loss"), want.pop("loss"), rtol=tolerance)
    assert got.keys() == want.keys()
    assert elsewhere["metrics"]["confusion_csv"].startswith(str(remote))


@pytest.mark.heavy
def test_a_run_on_ram_equals_the_same_run_on_local_paths(sequences):
    (local, on_disk), (remote, in_ram) = sequences["local"], sequences["ram"]
    assert_same_run(local, on_disk, remote, in_ram, tolerance=1e-6)


@pytest.mark.heavy
def test_a_killed_run_on_cloud_storage_equals_the_local_run(sequences, on_cloud_storage):
    (local, on_disk), (remote, on_gcs) = sequences["local"], on_cloud_storage
    assert_same_run(local, on_disk, remote, on_gcs, tolerance=1e-4)
    assert _own_files(on_gcs["files"]) == _own_files(on_disk["files"])


def _numbers(report: dict) -> dict:
    """The report without the entries that name paths (model, data, files written)."""
    return {key: value for key, value in report.items()
            if key not in ("model", "data", "headline", "confusion_csv", "confusion_png")}


def _own_files(names: list[str]) -> list[str]:
    """The files vitcli wrote, TensorBoard's (named by time, host and pid) by their folder."""
    return sorted({name.split(EVENTS)[0] + EVENTS if EVENTS in name else name
                   for name in names if not name.startswith("data/")})


@pytest.mark.heavy
def test_the_run_directories_hold_the_same_files(sequences):
    (local, on_disk), (remote, _) = sequences["local"], sequences["ram"]
    own = _own_files(on_disk["files"])
    for expected in ("pre/config.yaml", "pre/metrics.jsonl", "pre/checkpoints/state.npz",
                     "pre/checkpoints/state.prev.npz", "fine/labels.txt", "fine/model.keras",
                     "fine/eval-test/confusion.csv", "serving/1/saved_model.pb", "start.npz",
                     f"pre/tensorboard/{EVENTS}"):
        assert expected in own
    # TensorFlow's ram:// lists folders by name prefix (`assets` also finds `assets.extra`),
    # so each file is looked up by name there; Cloud Storage's listing is compared whole below.
    for name in own:
        if name.endswith(EVENTS):
            assert any((remote / name).parent.glob(f"{EVENTS}*")), name
        else:
            assert (remote / name).is_file(), name
    assert (remote / "fine/labels.txt").read_text() == (local / "fine/labels.txt").read_text()
    # The recorded settings are the same but for where the data and the run are.
    settings = (remote / "fine/config.yaml").read_text().replace(str(remote), str(local))
    assert settings == (local / "fine/config.yaml").read_text()


@pytest.mark.heavy
def test_the_export_on_ram_serves_like_the_local_one(sequences):
    (local, _), (remote, _) = sequences["local"], sequences["ram"]
    image = (local / "data" / "test" / "red" / "0.png").read_bytes()
    outputs = []
    for root in (local, remote):
        serving = tf.saved_model.load(str(root / "serving" / "1"))
        signature = serving.signatures["serving_default"]
        outputs.append(signature(image_bytes=tf.constant([image]))["probabilities"].numpy())
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)
