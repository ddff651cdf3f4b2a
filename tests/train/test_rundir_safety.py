"""The run directory is safe: vitcli refuses to write into a folder that is not its own,
replaces only its own files, leaves nothing behind after a refused or failed start, locks
a run while it trains, and resumes through a torn metrics line, a damaged checkpoint and a
full disk; a resume that would mix runs is refused before anything changes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.support.cli import error_lines, invoke, runner
from tests.support.images import write_colour_folder
from tests.support.runs import assert_same_weights, checkpoint_step
from vitcli.cli.app import app
from vitcli.config import RunConfig, resolve_run_config
from vitcli.errors import VitcliError
from vitcli.files import DirectoryLock, terminate_as_interrupt
from vitcli.train.callbacks import TrainingCallbacks
from vitcli.train.run import run_training

TINY = ("--model", "vit-mu8", "--res", "16", "--batch", "6", "--lr", "2e-3", "--warmup", "1")
# 4 steps, a checkpoint every 2: state.npz (step 4) and state.prev.npz (step 2) at the end.
SHORT = ("--steps", "4", "--checkpoint-every", "2", "--eval-every", "2", "--log-every", "1")
needs_overwrite = pytest.mark.skipif(
    "overwrite" not in {field.name for field in dataclasses.fields(RunConfig)},
    reason="RunConfig.overwrite / --overwrite are not in the CLI yet")


def pretrain(data, out, *extra, command="pretrain"):
    return invoke(command, *TINY, "--data", data, "--out", out, *extra)


def pretrain_args(data, out, *extra) -> list[str]:
    return [sys.executable, "-m", "vitcli", "pretrain", *TINY, "--data", str(data),
            "--out", str(out), *map(str, extra)]


def snapshot(folder) -> dict[str, str]:
    """Every file and folder under `folder`: a file's sha256, or '<dir>'."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        entries[key] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def temporaries(folder) -> list[str]:
    return [path.name for path in folder.rglob(".*") if path.name != ".vitcli-run"]


@pytest.fixture(scope="module")
def finished_run(colour_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    result = pretrain(colour_folder, out, *SHORT)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


def foreign_folder(path):
    """A folder of someone else's, with names vitcli also uses inside its own folders."""
    (path / "checkpoints").mkdir(parents=True)
    (path / "tensorboard").mkdir()
    (path / "notes.txt").write_text("mine\n")
    (path / "checkpoints" / "epoch-3.pt").write_bytes(os.urandom(64))
    (path / "tensorboard" / "README").write_text("not vitcli's\n")
    return path


def test_foreign_folder_is_refused_and_untouched(colour_folder, tmp_path):
    out = foreign_folder(tmp_path / "mine")
    before = snapshot(out)
    result = pretrain(colour_folder, out, *SHORT)
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: {out} is not empty and is not a vitcli run "
                                   "directory"]
    assert "--overwrite" in result.stderr
    assert snapshot(out) == before


@needs_overwrite
def test_overwrite_replaces_only_vitcli_files(colour_folder, tmp_path):
    out = foreign_folder(tmp_path / "mine")
    (out / "config.yaml").write_text("theirs: true\n")  # a vitcli name: replaced
    theirs = {name: digest for name, digest in snapshot(out).items() if name != "config.yaml"}
    result = pretrain(colour_folder, out, "--steps", 2, "--checkpoint-every", 1, "--overwrite")
    assert result.exit_code == 0, result.output
    assert theirs.items() <= snapshot(out).items()
    assert (out / ".vitcli-run").is_file() and (out / "model.keras").is_file()
    # A vitcli run again with --overwrite: its files are replaced (one step now), theirs kept.
    result = pretrain(colour_folder, out, "--steps", 1, "--overwrite")
    assert result.exit_code == 0, result.output
    assert theirs.items() <= snapshot(out).items()
    assert not (out / "checkpoints" / "state.prev.npz").exists()
    assert checkpoint_step(out / "checkpoints" / "state.npz") == 1
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 1


@pytest.mark.parametrize("case", ["no classes", "bad checkpoint", "--model mismatch"])
def test_refused_start_leaves_no_directory(case, colour_folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "runs" / "new"
    if case == "no classes":
        (tmp_path / "empty").mkdir()
        result = pretrain(tmp_path / "empty", out)
    elif case == "bad checkpoint":
        (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
        result = pretrain(colour_folder, out, "--weights", tmp_path / "bad.npz",
                          command="finetune")
    else:  # the tiny checkpoint is 32 wide and 2 deep: no registry variant
        result = runner.invoke(app, ["finetune", "--model", "vit-ti16", "--weights",
                                     str(tiny_checkpoint), "--data", str(colour_folder),
                                     "--out", str(out)])
        assert error_lines(result) == [
            "error: --model vit-ti16 does not match the checkpoint: width 32 (not 192), "
            "depth 2 (not 12), heads 4 (not 3), MLP 64 (not 768), patch 8 (not 16)"]
    assert result.exit_code == 1 and len(error_lines(result)) == 1, result.output
    assert not (tmp_path / "runs").exists()


class _FailsAtStart(TrainingCallbacks):
    def on_start(self, info: dict) -> None:
        raise VitcliError("failed after the run directory was made")


def test_start_failing_before_its_first_checkpoint_leaves_nothing(colour_folder, tmp_path):
    out = tmp_path / "runs" / "new"
    config = resolve_run_config("pretrain", None, {
        "model": "vit-mu8", "image_size": 16, "out": str(out),
        "data": {"source": str(colour_folder)}, "train": {"steps": 2, "batch_size": 6}})
    with pytest.raises(VitcliError, match="failed after"):
        run_training(config, _FailsAtStart())
    assert not (tmp_path / "runs").exists()
    # ... and in a folder that existed (empty), only vitcli's files go.
    out.mkdir(parents=True)
    with pytest.raises(VitcliError, match="failed after"):
        run_training(config, _FailsAtStart())
    assert out.is_dir() and not any(out.iterdir())


def _wait_for(condition, process, timeout=240):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_second_start_on_a_locked_run_gets_one_line(colour_folder, tmp_path):
    out = tmp_path / "run"
    metrics = out / "metrics.jsonl"
    holder = subprocess.Popen(
        pretrain_args(colour_folder, out, "--steps", 100000, "--log-every", 1,
                      "--checkpoint-every", 100000, "--eval-every", 100000),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: metrics.exists() and metrics.stat().st_size > 0, holder)
        result = pretrain(colour_folder, out, "--resume")
        assert result.exit_code == 1
        assert len(error_lines(result)) == 1, result.stderr
        assert error_lines(result)[0].startswith(
            f"error: run directory {out} is in use by pid {holder.pid} (vitcli pretrain --model")
        holder.send_signal(signal.SIGTERM)  # taken as Ctrl-C: a checkpoint, then exit 130
        assert holder.wait(timeout=120) == 130, holder.stderr.read()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert checkpoint_step(out / "checkpoints" / "state.npz") >= 1
    assert temporaries(out) == []  # no temporary, and the lock file is gone


def test_directory_lock_names_its_holder_and_a_stale_file_blocks_nobody(tmp_path):
    # What a SIGKILLed holder leaves: the file, but no lock (the kernel released it).
    (tmp_path / ".vitcli.lock").write_text('{"pid": 1, "host": "gone", "command": "x"}')
    with DirectoryLock(tmp_path, "run directory"):
        # flock belongs to an open file, so a second open in this same process is refused too.
        message = rf"run directory {re.escape(str(tmp_path))} is in use by pid {os.getpid()} \("
        with pytest.raises(VitcliError, match=message):
            DirectoryLock(tmp_path, "run directory").acquire()
    assert not (tmp_path / ".vitcli.lock").exists()
    with DirectoryLock(tmp_path):
        pass


def test_sigterm_takes_the_ctrl_c_path():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler runs at the next instruction
    assert signal.getsignal(signal.SIGTERM) == before


def test_torn_last_metrics_line_is_dropped_on_resume(colour_folder, run_copy):
    metrics = run_copy / "metrics.jsonl"
    records = metrics.read_text()
    with open(metrics, "a") as handle:
        handle.write('{"step": 5, "loss": 0.9')  # a write cut short
    result = pretrain(colour_folder, run_copy, *SHORT, "--resume")
    assert result.exit_code == 0, result.output
    assert "dropping the incomplete last line" in result.output
    assert metrics.read_text() == records


def test_foreign_metrics_line_is_refused_before_anything_changes(colour_folder, run_copy):
    metrics = run_copy / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join([lines[0], "hello from another program\n", *lines[1:]]))
    before = snapshot(run_copy)
    result = pretrain(colour_folder, run_copy, *SHORT, "--resume")
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: {metrics} line 2 is not a vitcli metrics record: "
                                   "'hello from another program'"]
    assert snapshot(run_copy) == before


def test_changed_class_list_is_refused_before_anything_changes(run_copy, tmp_path):
    data = write_colour_folder(tmp_path / "data")
    (data / "blue").rename(data / "yellow")
    before = snapshot(run_copy)
    result = pretrain(data, run_copy, *SHORT, "--resume")
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: the data's classes differ from the run's "
                                   f"labels.txt in {run_copy}: added yellow; removed blue"]
    assert snapshot(run_copy) == before


def test_damaged_latest_checkpoint_falls_back_to_the_previous(colour_folder, finished_run,
                                                               run_copy):
    latest = run_copy / "checkpoints" / "state.npz"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated
    result = pretrain(colour_folder, run_copy, *SHORT, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming from state.prev.npz (step 2)" in result.output
    assert "resuming at step 2" in result.output
    assert checkpoint_step(latest) == 4
    assert checkpoint_step(run_copy / "checkpoints" / "state.prev.npz") == 2
    assert_same_weights(run_copy / "model.keras", finished_run / "model.keras")


# Run inside a private mount namespace: the tmpfs is seen by these commands only and goes
# away with them. 12 MiB holds one checkpoint of vit-mu8 (8.5 MB) but not a second beside it.
FULL_DISK_SCRIPT = """
set -u
mount -t tmpfs -o size=12m vitcli-test "$DISK" || exit 97
"$@" > "$LOGS/full.out" 2> "$LOGS/full.err"; echo $? > "$LOGS/full.rc"
cp -a "$DISK/run" "$LOGS/after-full"
mount -o remount,size=64m "$DISK"  # space freed
"$@" --resume > "$LOGS/resumed.out" 2>&1; echo $? > "$LOGS/resumed.rc"
"""


@pytest.mark.heavy
def test_full_disk_is_one_line_and_the_run_resumes(colour_folder, tmp_path):
    """A real full file system (a small tmpfs, not a mock): the second checkpoint does not
    fit; the error is one line, the first checkpoint is intact and the run resumes."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux's unshare for a private tmpfs")
    disk, logs = tmp_path / "disk", tmp_path / "logs"
    disk.mkdir(), logs.mkdir()
    namespace = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace[1:1] = ["--user", "--map-root-user"]
    args = pretrain_args(colour_folder, disk / "run", "--steps", 6, "--checkpoint-every", 2,
                         "--eval-every", 1000)
    completed = subprocess.run([*namespace, "sh", "-c", FULL_DISK_SCRIPT, "sh", *args],
                               env={**os.environ, "DISK": str(disk), "LOGS": str(logs),
                                    "COLUMNS": "200"}, capture_output=True, text=True,
                               timeout=600)
    if completed.returncode != 0 or not (logs / "full.rc").exists():
        pytest.skip(f"cannot mount a tmpfs here: {completed.stderr.strip()}")
    errors = (logs / "full.err").read_text()
    assert (logs / "full.rc").read_text().strip() == "1", errors
    state = disk / "run" / "checkpoints" / "state.npz"
    assert [line for line in errors.splitlines() if line.startswith("error:")] == [
        f"error: no space left on device writing {state}"]
    assert "--resume" in errors
    kept = logs / "after-full"
    assert checkpoint_step(kept / "checkpoints" / "state.npz") == 2
    assert temporaries(kept) == []
    resumed = (logs / "resumed.out").read_text()
    assert (logs / "resumed.rc").read_text().strip() == "0", resumed
    assert "resuming at step 2" in resumed
