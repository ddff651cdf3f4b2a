"""The study scripts' plumbing (examples/studies/), not their results.

Every script runs with --tiny on the bundled Fashion-MNIST in this process, with vitcli
replaced by a stand-in that checks each command line with vitcli's own parser and
settings checks (no data, no training) and writes what a finished run leaves behind. Then:
the CSV's columns, rows and values, a real PNG, and a second run that reuses every result
and writes the same CSV. One heavy test drives the real vitcli through the shared helpers.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import typer

from vitcli.cli.app import app
from vitcli.config import resolve_run_config, settings_from_options

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "examples" / "studies"
BUNDLED = ROOT / "examples" / "data" / "fashion-mnist"
sys.path.insert(0, str(STUDIES))
common = importlib.import_module("common")

COMMANDS = typer.main.get_command(app).commands

# study: (CSV columns, rows of the --tiny run, columns holding accuracies)
EXPECTED = {
    "data_size": (["model", "pretrain_images", "seed", "pretrain_lr", "finetune_lr",
                   "pretrain_val_top1", "fewshot5", "fewshot25", "finetune_top1"], 6,
                  ["pretrain_val_top1", "fewshot5", "fewshot25", "finetune_top1"]),
    "compute": (["model", "res", "pretrain_images", "seed", "pretrain_lr", "finetune_lr",
                 "forward_mflops", "pretrain_tflops", "pretrain_val_top1", "fewshot25",
                 "finetune_top1"], 6,
                ["pretrain_val_top1", "fewshot25", "finetune_top1"]),
    "resolution": (["pretrain_res", "finetune_res", "seed", "finetune_lr", "finetune_top1"], 2,
                   ["finetune_top1"]),
    "posemb_pooling": (["posemb", "classifier", "lr", "seed", "pretrain_val_top1", "fewshot25",
                        "lr_sweep"], 4, ["pretrain_val_top1", "fewshot25"]),
    "mpp": (["start", "seed", "finetune_lr", "finetune_top1", "lr_sweep"], 3,
            ["finetune_top1"]),
}


def score(args) -> float:
    """A made-up accuracy in [0.2, 1), fixed by the command line."""
    digest = hashlib.sha256(" ".join(args).encode()).digest()
    return 0.2 + 0.8 * digest[0] / 256


def checked(args: list[str]) -> dict:
    """The parameters of `vitcli ARGS` as vitcli's parser reads them; for training commands
    also every setting checked as vitcli checks it before touching data."""
    command, rest = args[0], args[1:]
    params = COMMANDS[command].make_context(command, list(rest)).params
    if command in ("pretrain", "finetune"):
        options = {**params, "from_scratch": params["from_scratch"] or None,
                   "out": str(params["out"]) if params["out"] else None}
        resolve_run_config(command, None, settings_from_options(options))
    return params


class FakeVitcli:
    """Stands in for Study.vitcli: records each call and writes what vitcli would."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, study, args, log_name) -> str:
        args = [str(arg) for arg in args]
        self.calls.append(args)
        params = checked(args)
        if args[0] == "evaluate":
            report = {"top1": score(args), "split": "test"}
            if params["few_shot"]:
                shots = [int(n) for n in params["few_shot"]]
                report["few_shot"] = {f"{n}shot": {"accuracy": score([*args, str(n)])}
                                      for n in shots}
            return json.dumps(report)
        out = Path(params["out"])
        assert Path(params["data"]).is_dir(), params["data"]
        if params["weights"]:
            assert (Path(params["weights"]) / "model.keras").is_file()
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n" +
                                           json.dumps({"step": 2, "val_top1": score(args)}))
        (out / "model.keras").write_bytes(b"a finished run")
        return ""


@pytest.fixture
def fake_vitcli(monkeypatch):
    fake = FakeVitcli()
    monkeypatch.setattr(common.Study, "vitcli", lambda study, args, log_name:
                        fake(study, args, log_name))
    return fake


def run_study(name: str, tmp_path: Path, *extra: str) -> Path:
    module = importlib.import_module(name)
    argv = ["--tiny", "--data", str(BUNDLED), "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "out"), *extra]
    assert module.main(argv) == 0
    return tmp_path / "out" / f"{name}.csv"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_study_plumbing(name, tmp_path, fake_vitcli):
    columns, row_count, accuracies = EXPECTED[name]
    table = run_study(name, tmp_path)
    assert fake_vitcli.calls, "the study ran nothing"
    with open(table) as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == columns
    assert len(rows) == row_count
    for row in rows:
        for column in accuracies:
            if row[column] != "":  # data_size's from-scratch rows have no probe
                assert 0 <= float(row[column]) <= 1 and math.isfinite(float(row[column]))
    figure = table.with_suffix(".png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.stat().st_size > 10_000

    # A second run reuses every run and evaluation, and writes the same table.
    before = table.read_text()
    fake_vitcli.calls.clear()
    run_study(name, tmp_path)
    assert fake_vitcli.calls == []
    assert table.read_text() == before


def option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def test_each_model_gets_its_better_learning_rates(tmp_path, fake_vitcli):
    """data_size's rates per model are the candidates' better ones by validation top-1: the
    pre-training rate on all pre-training images, then the fine-tuning rate from that run
    (and the from-scratch fine-tune its own); and --seeds N runs seeds 0..N-1."""
    with open(run_study("data_size", tmp_path, "--seeds", "2")) as stream:
        rows = list(csv.DictReader(stream))
    calls = fake_vitcli.calls
    assert {row["seed"] for row in rows} == {"0", "1"} and len(rows) == 12
    for model in ("vit-mu4", "bit-r26"):
        tuning = {float(option(call, "--lr")): score(call) for call in calls
                  if call[0] == "pretrain" and option(call, "--model") == model
                  and option(call, "--data").endswith("pretrain-all")
                  and option(call, "--seed") == "0"}
        assert sorted(tuning) == sorted(common.PRETRAIN_LRS)
        pretrain_lr = max(tuning, key=tuning.get)
        starts = {"scratch": None}
        for call in calls:
            if (call[0] == "pretrain" and option(call, "--model") == model
                    and float(option(call, "--lr")) == pretrain_lr
                    and option(call, "--data").endswith("pretrain-all")
                    and option(call, "--seed") == "0"):
                starts["pretrained"] = option(call, "--out")
        wanted = {}
        for start, run in starts.items():
            sweep = {float(option(call, "--lr")): score(call) for call in calls
                     if call[0] == "finetune" and option(call, "--seed") == "0"
                     and (run is not None and "--weights" in call
                          and option(call, "--weights") == run
                          or run is None and "--from-scratch" in call
                          and option(call, "--model") == model)}
            assert sorted(sweep) == sorted(common.FINETUNE_LRS)
            wanted[start] = max(sweep, key=sweep.get)
        mine = [row for row in rows if row["model"] == model]
        assert {float(row["pretrain_lr"]) for row in mine if row["pretrain_lr"]} == {pretrain_lr}
        assert {float(row["finetune_lr"]) for row in mine if row["pretrain_lr"]} == {
            wanted["pretrained"]}
        assert {float(row["finetune_lr"]) for row in mine if not row["pretrain_lr"]} == {
            wanted["scratch"]}
        # Every pre-training run of the model used the tuned rate but the tuning's own.
        used = {float(option(call, "--lr")) for call in calls if call[0] == "pretrain"
                and option(call, "--model") == model
                and not option(call, "--data").endswith("pretrain-all")}
        assert used == {pretrain_lr}


def test_interrupted_run_resumes(tmp_path, fake_vitcli):
    """A run without model.keras but with checkpoints is continued with --resume; one
    without checkpoints (a failed start) is started again with --overwrite."""
    run_study("resolution", tmp_path)
    runs = sorted((tmp_path / "work" / "runs").iterdir())
    interrupted, failed = runs[0], runs[1]
    (interrupted / "model.keras").unlink()
    (interrupted / "checkpoints").mkdir()
    (failed / "model.keras").unlink()
    fake_vitcli.calls.clear()
    run_study("resolution", tmp_path)
    flags = {Path(call[call.index("--out") + 1]).name: call[-1] for call in fake_vitcli.calls
             if "--out" in call and call[0] != "evaluate"}
    assert flags == {interrupted.name: "--resume", failed.name: "--overwrite"}


def test_split_classes(tmp_path):
    """Five classes each side, no class on both, links not copies, nested subsets."""
    split = importlib.import_module("split_classes")
    counts = split.build_split(BUNDLED, tmp_path / "split", split.TINY_SIZES)
    assert set(split.PRETRAIN_CLASSES).isdisjoint(split.TRANSFER_CLASSES)
    small, full = tmp_path / "split" / "pretrain-50", tmp_path / "split" / "pretrain-all"
    assert counts["pretrain-50"]["train"] == 50 and counts["pretrain-all"]["train"] == 1500
    assert sorted(p.name for p in (small / "train").iterdir()) == sorted(split.PRETRAIN_CLASSES)
    transfer = tmp_path / "split" / "transfer"
    assert sorted(p.name for p in (transfer / "test").iterdir()) == sorted(
        split.TRANSFER_CLASSES)
    for image in (small / "train" / "bag").iterdir():
        assert image.is_symlink()
        assert (full / "train" / "bag" / image.name).resolve() == image.resolve()
    train = {p.name for p in (transfer / "train" / "dress").iterdir()}
    val = {p.name for p in (transfer / "val" / "dress").iterdir()}
    assert len(train) == 30 and len(val) == 5 and not train & val
    # Built once: the same settings reuse the folder, other settings rebuild it.
    stamp = (tmp_path / "split" / "split.json").stat().st_mtime_ns
    split.build_split(BUNDLED, tmp_path / "split", split.TINY_SIZES)
    assert (tmp_path / "split" / "split.json").stat().st_mtime_ns == stamp


@pytest.mark.heavy
def test_real_vitcli_through_the_helpers(tmp_path):
    """pretrain -> few-shot probe -> fine-tune -> test top-1 with the real vitcli (two steps
    each), then the same calls again answered from the finished runs."""
    args = common.parse_args("real", "", ["--tiny", "--data", str(BUNDLED),
                                          "--work", str(tmp_path)])
    study = common.Study(args)

    def chain():
        run = study.pretrain("pretrain", "vit-mu7", study.pretrain_data(10), 14, 2, lr=1e-3)
        tuned = study.finetune("finetune", run, 14, 2, lr=0.01)
        return (common.val_top1(run), study.few_shot(run, (1, 5)), study.test_top1(tuned))

    first = chain()
    val, shots, top1 = first
    assert 0 <= val <= 1 and 0 <= top1 <= 1 and set(shots) == {1, 5}
    assert all(0 <= accuracy <= 1 for accuracy in shots.values())

    def logs():
        return {path.name: path.stat().st_size for path in (tmp_path / "logs").iterdir()}

    before = logs()
    assert chain() == first
    assert logs() == before  # nothing ran again
