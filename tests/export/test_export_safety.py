"""`vitcli export` is safe to run anywhere: no code is taken from the working directory, an
existing file is replaced only if it is an export of the same format (else --overwrite),
the target folder is locked while written, SIGTERM leaves no temporary behind, and every
bad input is one `error:` line that changes nothing on disk.

Most cases run the real CLI in this process (typer's CliRunner); isolation and SIGTERM
need the `vitcli` console script as a user starts it, from a folder of their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vitcli
from tests.support.cli import invoke
from tests.support.images import COLOURS
from vitcli.files import DirectoryLock
from vitcli.processes import run_module

NUM_CLASSES, IMAGE_SIZE = 3, 16
# Imported instead of the real modules, these leave a marker file and break the import.
PLANTED_MODULES = ("numpy", "tensorflow", "keras", "vitcli", "yaml", "typer")


# --- Fixtures: a tiny model file and a run directory around it. -----------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("source") / "tiny.keras"
    vitcli.build_model("vit-mu8", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE).save(path)
    return path


def _make_run(folder: Path, model: Path) -> Path:
    """A run directory as `vitcli pretrain` leaves it, as far as export reads it."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("command: pretrain\n")
    (folder / "labels.txt").write_text("".join(f"{name}\n" for name in COLOURS))
    (folder / "checkpoints" / "state.npz").write_bytes(b"a checkpoint")
    shutil.copy(model, folder / "model.keras")
    return folder


@pytest.fixture
def workspace(tmp_path, tiny_model, monkeypatch) -> Path:
    """A working directory holding the model, a run, a text file and another run."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(tiny_model, tmp_path / "tiny.keras")
    _make_run(tmp_path / "run", tiny_model)
    _make_run(tmp_path / "other-run", tiny_model)
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "empty-dir").mkdir()
    return tmp_path


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for a folder)."""
    return {str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
            for path in sorted(folder.rglob("*"))}


_invoke = partial(invoke, "export")  # `vitcli export ARGS`


def _one_error_line(result) -> str:
    """Exit code 1, no traceback, and exactly one `error:` line (a hint may follow it)."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[0] == errors[0], result.stderr
    assert all(line.strip().startswith("hint:") for line in lines[1:]), result.stderr
    return errors[0]


# --- Bad inputs: one line, nothing changed. -------------------------------------------------
BAD_INPUTS = [
    (["tiny.keras", "--format", "pb"], "unknown export format 'pb'"),
    (["missing.keras"], "no such file or named checkpoint"),
    (["empty-dir"], "is a directory without a model.keras"),
    (["tiny.keras", "--format", "onnx", "--out", "notes.txt/model.onnx"],
     "cannot write into notes.txt: it is a file, not a folder"),
    (["tiny.keras", "--out", "notes.txt/served"],
     "cannot create notes.txt/served: notes.txt is a file, not a folder"),
    (["tiny.keras", "--out", "/proc/x"], "cannot write to /proc/x"),
    (["tiny.keras", "--format", "npz", "--out", "/proc/x.npz"], "cannot write to /proc"),
    (["tiny.keras", "--labels", "missing.txt"], "cannot read --labels missing.txt"),
    (["tiny.keras", "--labels", "notes.txt"], "1 labels for a model with 3 classes"),
    (["tiny.keras", "--labels", "latin1.txt"], "is not UTF-8 text"),
    (["run", "--top-k", "0"], "top-k must be at least 1"),
    (["run", "--eval-crop", "inception"], "eval crop must be one of"),
    (["tiny.keras", "--format", "onnx", "--out", "model.tflite"], "onnx exports are '.onnx' files"),
    (["tiny.keras", "--format", "onnx", "--out", "notes.onnx"],
     "notes.onnx exists and is not a vitcli onnx export; pass --overwrite"),
    (["tiny.keras", "--format", "keras", "--out", "other-run/model.keras"],
     "belongs to the run in other-run; pass --overwrite"),
    (["tiny.keras", "--format", "keras", "--out", "tiny.keras"],
     "will not export to tiny.keras: it is the model being exported"),
    (["tiny.keras", "--format", "keras", "--out", "tiny.keras", "--overwrite"],
     "it is the model being exported"),
    (["run", "--format", "keras", "--out", "run"],
     "will not export to run/model.keras: it is the model being exported"),
    (["run", "--format", "npz", "--out", "run/checkpoints/state.npz", "--overwrite"],
     "it is inside run/checkpoints, the source run's checkpoints"),
    (["run/model.keras", "--out", "run/checkpoints/served"],
     "served/1: it is inside run/checkpoints, the source run's checkpoints"),
    (["run", "--out", "other-run"], "other-run is not a SavedModel base folder"),
    (["tiny.keras", "--format", "onnx", "--out", "folder-named.onnx"],
     "folder-named.onnx/model.onnx is a folder, not an export"),
]


@pytest.mark.parametrize(("arguments", "expected"), BAD_INPUTS,
                         ids=[" ".join(arguments) for arguments, _ in BAD_INPUTS])
def test_a_bad_input_is_one_line_and_changes_nothing(workspace, arguments, expected):
    (workspace / "notes.onnx").write_text("not an onnx model\n")
    (workspace / "latin1.txt").write_bytes("K\xe4nguru\nb\nc\n".encode("latin-1"))
    (workspace / "folder-named.onnx" / "model.onnx").mkdir(parents=True)
    before = _snapshot(workspace)
    line = _one_error_line(_invoke(*arguments))
    assert expected in line, line
    assert _snapshot(workspace) == before


def test_a_locked_savedmodel_base_names_its_holder(workspace):
    """While another process exports into a SavedModel base, a second export is refused in
    one line naming the first (here this test process holds the lock)."""
    (workspace / "served" / "1").mkdir(parents=True)
    with DirectoryLock(workspace / "served"):
        before = _snapshot(workspace)
        line = _one_error_line(_invoke("run", "--out", "served", "--no-verify"))
        assert f"served is in use by pid {os.getpid()}" in line, line
        assert _snapshot(workspace) == before


# --- What an export may replace. ------------------------------------------------------------
def test_a_previous_export_of_the_format_is_replaced_without_overwrite(workspace):
    assert _invoke("run", "--format", "keras", "--out", "out.keras", "--no-verify").exit_code == 0
    first = (workspace / "out.keras").stat().st_ino
    result = _invoke("tiny.keras", "--format", "keras", "--out", "out.keras", "--no-verify")
    assert result.exit_code == 0, result.output
    assert (workspace / "out.keras").stat().st_ino != first  # renamed into place anew
    assert not list(workspace.glob(".*"))  # no temporary, no lock file


def test_overwrite_replaces_only_the_target(workspace):
    (workspace / "exports").mkdir()
    (workspace / "exports" / "model.npz").write_bytes(b"someone's arrays")
    (workspace / "exports" / "keep.txt").write_text("beside it")
    before = _snapshot(workspace)
    _one_error_line(_invoke("tiny.keras", "--format", "npz", "--out", "exports", "--no-verify"))
    assert _snapshot(workspace) == before
    result = _invoke("tiny.keras", "--format", "npz", "--out", "exports", "--overwrite",
                     "--no-verify")
    assert result.exit_code == 0, result.output
    after = _snapshot(workspace)
    assert after.pop("exports/model.npz").startswith(b"PK")  # now a real .npz
    before.pop("exports/model.npz")
    assert after == before


def test_a_savedmodel_base_gets_a_new_version_and_keeps_the_old(workspace):
    (workspace / "served" / "1").mkdir(parents=True)
    (workspace / "served" / "1" / "saved_model.pb").write_bytes(b"version one")
    result = _invoke("run", "--out", "served", "--no-verify")
    assert result.exit_code == 0, result.output
    assert (workspace / "served" / "1" / "saved_model.pb").read_bytes() == b"version one"
    assert sorted(path.name for path in (workspace / "served").iterdir()) == ["1", "2"]
    assert (workspace / "served" / "2" / "saved_model.pb").is_file()


# --- Processes started by vitcli take no code from their surroundings. ----------------------
def _plant_modules(folder: Path, marker: Path) -> None:
    for name in PLANTED_MODULES:
        (folder / f"{name}.py").write_text(
            f"open({str(marker)!r}, 'a').write({name!r} + ' imported\\n')\n"
            f"raise ImportError('planted {name} imported')\n")


def _console_script() -> str:
    script = Path(sys.executable).parent / "vitcli"
    return str(script if script.is_file() else shutil.which("vitcli"))


def _user_environment(home: Path) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH, CPU only, a private VITCLI_HOME."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return environment | {"VITCLI_HOME": str(home), "CUDA_VISIBLE_DEVICES": "-1",
                          "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_run_module_ignores_the_working_directory_and_pythonpath(tmp_path, monkeypatch):
    """The child runs vitcli's module even with planted modules in the parent's working
    directory and on PYTHONPATH."""
    marker = tmp_path / "marker"
    _plant_modules(tmp_path, marker)
    monkeypatch.chdir(tmp_path)
    finished = run_module("vitcli.export.verify", ["--nothing"],
                          environment=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert "not enough values to unpack" in finished.stderr  # verify's own main() ran
    assert not marker.exists(), marker.read_text()


@pytest.mark.heavy
def test_commands_run_from_a_folder_with_planted_modules_import_none(tmp_path):
    """pretrain, export (with its fresh verification process), predict and evaluate, each
    started as the `vitcli` console script from a folder holding numpy.py, tensorflow.py,
    vitcli.py, ...: none of those files is ever imported."""
    folder, marker = tmp_path / "user", tmp_path / "marker"
    data = folder / "data"
    for index, (name, colour) in enumerate(COLOURS.items()):
        (data / name).mkdir(parents=True)
        for image in range(4):
            noise = np.random.default_rng(index * 10 + image).integers(-20, 20, (16, 16, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(data / name / f"{image}.png")
    _plant_modules(folder, marker)
    commands = [
        ["pretrain", "--model", "vit-mu8", "--res", "16", "--steps", "1", "--batch", "6",
         "--data", "data", "--out", "run"],
        ["export", "run", "--format", "keras", "--out", "exported.keras"],
        ["predict", "run", "data/red/0.png"],
        ["evaluate", "run", "--data", "data"],
    ]
    for command in commands:
        finished = subprocess.run([_console_script(), *command], cwd=folder, timeout=600,
                                  capture_output=True, text=True,
                                  env=_user_environment(tmp_path / "home"))
        assert finished.returncode == 0, (command, finished.stdout[-2000:],
                                          finished.stderr[-2000:])
        assert not marker.exists(), (command, marker.read_text())
    assert (folder / "exported.keras").is_file()


# --- SIGTERM. --------------------------------------------------------------------------------
def _wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.heavy
def test_sigterm_during_an_export_leaves_no_temporary(tmp_path, tiny_model):
    """SIGTERM to `vitcli export` once its hidden temporary exists: the export stops with
    Ctrl-C's exit code, and neither the temporary, the lock nor the new base folder stay."""
    served = tmp_path / "served"
    process = subprocess.Popen([_console_script(), "export", str(tiny_model), "--out",
                                str(served)], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env=_user_environment(tmp_path / "home"))
    try:
        _wait_for(lambda: served.is_dir() and any(".partial" in path.name
                                                  for path in served.iterdir()), process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode in (130, 143), stderr
    assert "Traceback" not in stderr, stderr
    assert not served.exists(), list(served.rglob("*"))
    assert [path.name for path in tmp_path.iterdir() if path.name != "home"] == []
