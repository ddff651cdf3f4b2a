"""Every path on a non-local TensorFlow file system: the data, the run directories, the
checkpoints, the --weights file and the export all on the in-process `ram://` file system,
through the same commands a user types, give what the same sequence gives on local paths."""

from __future__ import annotations

import _thread
import json
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.support.cli import invoke
from tests.support.images import upload_folder, write_colour_splits
from tests.support.runs import trained_weights
from vitcli.storage import files_below, local_copy, location

COMMON = ["--model", "vit-mu8", "--batch", "8", "--lr", "2e-3", "--warmup", "2"]
PRETRAIN_STEPS = 40
EVENTS = "events.out.tfevents."


def interrupt_after_first_checkpoint(run):
    """Ctrl-C (KeyboardInterrupt in the main thread, the path SIGINT and SIGTERM take) once
    the run's first checkpoint exists: a real stop of a real run, on whatever file system."""
    state = location(run) / "checkpoints" / "state.npz"

    def watch():
        deadline = time.monotonic() + 300
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        _thread.interrupt_main()

    threading.Thread(target=watch, daemon=True).start()


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def run_sequence(root) -> dict:
    """pretrain -> stop -> resume -> .npz -> finetune (higher resolution) -> evaluate ->
    export, every path below `root`."""
    data, pre, fine = root / "data", root / "pre", root / "fine"
    pretrain = ["pretrain", *COMMON, "--data", data, "--res", "16", "--steps", PRETRAIN_STEPS,
                "--checkpoint-every", "4", "--eval-every", "20", "--out", pre]
    interrupt_after_first_checkpoint(pre)
    stopped = invoke(*pretrain)
    assert stopped.exit_code == 130, stopped.output
    assert not (pre / "model.keras").exists() and (pre / "checkpoints" / "state.npz").is_file()
    resumed = ok(invoke(*pretrain, "--resume"))
    assert "resuming at step" in resumed.output
    ok(invoke("weights", "convert", pre / "model.keras", "--out", root / "pre.npz"))
    ok(invoke("finetune", *COMMON, "--weights", root / "pre.npz", "--data", data, "--res", "24",
              "--steps", "6", "--out", fine))
    evaluated = ok(invoke("evaluate", fine, "--data", data, "--json"))
    ok(invoke("export", fine, "--format", "savedmodel", "--out", root / "serving"))
    return {"metrics": json.loads(evaluated.stdout), "files": files_below(root)}


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    local = tmp_path_factory.mktemp("local")
    write_colour_splits(local / "data", train=8, test=4)
    remote = upload_folder(local / "data", f"ram://remote-paths-{time.time_ns()}/data").parent
    return {"local": (local, run_sequence(local)), "ram": (remote, run_sequence(remote))}


@pytest.mark.heavy
def test_a_run_on_ram_equals_the_same_run_on_local_paths(sequences):
    (local, on_disk), (remote, in_ram) = sequences["local"], sequences["ram"]
    with local_copy(remote / "fine" / "model.keras") as copied:
        got, want = trained_weights(copied), trained_weights(local / "fine" / "model.keras")
    assert set(got) == set(want)
    for path, value in want.items():
        np.testing.assert_allclose(got[path], value, rtol=1e-5, atol=1e-6, err_msg=path)
    assert _numbers(in_ram["metrics"]) == _numbers(on_disk["metrics"])
    assert in_ram["metrics"]["confusion_csv"].startswith("ram://")


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
    (_, on_disk), (_, in_ram) = sequences["local"], sequences["ram"]
    own = _own_files(in_ram["files"])
    assert own == _own_files(on_disk["files"])
    for expected in ("pre/config.yaml", "pre/metrics.jsonl", "pre/checkpoints/state.npz",
                     "pre/checkpoints/state.prev.npz", "fine/labels.txt", "fine/model.keras",
                     "fine/eval-test/confusion.csv", "serving/1/saved_model.pb", "pre.npz",
                     f"pre/tensorboard/{EVENTS}"):
        assert expected in own


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
