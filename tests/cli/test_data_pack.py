"""`vitcli data pack`, and packed data given to --data: training on it, resuming exactly,
evaluating, and every refusal as one line."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support.cli import invoke, one_error_line
from tests.support.images import write_colour_folder
from tests.support.runs import assert_same_weights

TINY = ("--model", "vit-mu8", "--res", "16", "--batch", "6", "--lr", "2e-3", "--warmup", "1")
# 4 steps, a checkpoint every 2: state.npz (step 4) and state.prev.npz (step 2) at the end.
SHORT = ("--steps", "4", "--checkpoint-every", "2", "--eval-every", "2", "--log-every", "1")


@pytest.fixture(scope="module")
def packed(colour_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "colours"
    result = invoke("data", "pack", colour_folder, "--out", out, "--shards", 4)
    assert result.exit_code == 0, result.output
    assert f"packed 33 train, 3 val images of 3 classes into {out} (5 shard(s) written, " \
           "0 kept)" in " ".join(result.stdout.split())
    return out


@pytest.fixture(scope="module")
def finished_run(packed, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    result = invoke("pretrain", *TINY, *SHORT, "--data", packed, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_pretraining_on_packed_data(packed, finished_run):
    records = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text()
               .splitlines()]
    assert records[-1]["step"] == 4 and (finished_run / "model.keras").exists()
    assert str(packed) in (finished_run / "config.yaml").read_text()
    assert (finished_run / "labels.txt").read_text().split() == ["blue", "green", "red"]


def test_a_run_on_packed_data_resumes_exactly(packed, finished_run, tmp_path):
    run = shutil.copytree(finished_run, tmp_path / "run")
    latest = run / "checkpoints" / "state.npz"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # damaged: step 2
    result = invoke("pretrain", *TINY, *SHORT, "--data", packed, "--out", run, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming at step 2" in result.output
    assert_same_weights(run / "model.keras", finished_run / "model.keras")


def test_evaluating_packed_data_matches_its_folder(run_dir, plain_folder, tmp_path):
    packed = tmp_path / "packed"
    assert invoke("data", "pack", plain_folder, "--out", packed).exit_code == 0
    reports = []
    for data in (plain_folder, packed):
        result = invoke("evaluate", run_dir, "--data", data, "--json", "--out", tmp_path / "e")
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.stdout))
    folder, packed_report = reports
    assert (packed_report["split"], packed_report["examples"]) == ("all", 15)
    assert packed_report["top1"] == pytest.approx(folder["top1"])
    assert packed_report["data"] == f"packed data {packed}"


def test_a_rerun_of_a_finished_pack_writes_nothing(packed, colour_folder):
    result = invoke("data", "pack", colour_folder, "--out", packed, "--shards", 4)
    assert result.exit_code == 0, result.output
    assert "(0 shard(s) written, 5 kept)" in " ".join(result.stdout.split())


@pytest.mark.parametrize(("args", "message"), [
    (("--shards", "0"), "--shards (number of shards) must be"),
    (("--workers", "0"), "--workers (writer threads) must be"),
])
def test_bad_settings_are_one_line(colour_folder, tmp_path, args, message):
    line = one_error_line(invoke("data", "pack", colour_folder, "--out", tmp_path / "o", *args))
    assert message in line
    assert not (tmp_path / "o").exists()


def test_a_missing_folder_is_one_line(tmp_path):
    line = one_error_line(invoke("data", "pack", tmp_path / "nope", "--out", tmp_path / "o"))
    assert "no such folder" in line


def test_without_out_the_pack_goes_beside_the_folder(tmp_path):
    folder = write_colour_folder(tmp_path / "colours", per_class=3)
    result = invoke("data", "pack", f"{folder}/")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "colours-packed" / "vitcli-packed.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["colours", "colours-packed"]


def test_a_folder_that_is_not_empty_is_refused(colour_folder, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    line = one_error_line(invoke("data", "pack", colour_folder, "--out", tmp_path / "o"))
    assert "is not empty (notes.txt)" in line
    assert [path.name for path in (tmp_path / "o").iterdir()] == ["notes.txt"]


def test_a_damaged_shard_stops_training_with_one_line(packed, tmp_path):
    copy = shutil.copytree(packed, tmp_path / "packed")
    shard = copy / "train-00001-of-00004.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = invoke("pretrain", *TINY, "--steps", "8", "--data", copy, "--out", tmp_path / "r")
    line = one_error_line(result)
    assert line.startswith("error: damaged data: corrupted record at")
    missing = shutil.copytree(packed, tmp_path / "missing")
    (missing / "val-00000-of-00001.tfrecord").unlink()
    line = one_error_line(invoke("pretrain", *TINY, "--steps", "2", "--data", missing,
                                 "--out", tmp_path / "r2"))
    assert "lacks its shard val-00000-of-00001.tfrecord" in line
