"""What every study script shares: its command line, vitcli runs that resume, CSV and figure.

A study calls `vitcli` (the one next to this Python) as a subprocess, as a user would, and
logs each call's output under WORK/logs/. Runs live in WORK/runs/<name>-<hash>/, where the
hash covers the exact arguments: a finished run (its model.keras) is reused, an interrupted
one is continued with --resume, and two studies that need the same run share it. Evaluations
are cached as JSON next to the run, so a study run again only redraws its CSV and figure.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from split_classes import TINY_SIZES, SplitSizes, build_split, pretrain_name  # noqa: E402

VITCLI = str(Path(sys.executable).with_name("vitcli"))
BATCH = 64  # every pre-training and fine-tuning run
# The learning rates a study tunes per model, as the paper tunes each model's own
# (`Study.tuned_rates`): AdamW pre-training and SGD fine-tuning.
PRETRAIN_LRS = (1e-3, 3e-3)
FINETUNE_LRS = (0.03, 0.1)
ROOT = Path(__file__).resolve().parents[2]


def parse_args(name: str, description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", type=Path, default=None,
                        help="runs, logs and the class split [default: runs/studies, "
                             "runs/studies-tiny with --tiny]")
    parser.add_argument("--data", type=Path, default=ROOT / "data/fashion-mnist-full",
                        help="Fashion-MNIST as make_fashion_mnist.py --full writes it")
    parser.add_argument("--out", type=Path, default=None,
                        help="where <study>.csv and <study>.png go [default: docs/studies, "
                             "WORK/results with --tiny]")
    parser.add_argument("--tiny", action="store_true",
                        help="a few steps on a few images, one seed: checks the plumbing only")
    parser.add_argument("--seeds", type=int, default=None, choices=range(1, 11), metavar="N",
                        help="seeds 0..N-1 where the study runs several [default: 3, 1 with "
                             "--tiny]")
    args = parser.parse_args(argv)
    args.work = args.work or ROOT / ("runs/studies-tiny" if args.tiny else "runs/studies")
    args.out = args.out or (args.work / "results" if args.tiny else ROOT / "docs/studies")
    args.name = name
    return args


class Study:
    """One study's runs: `train`, `evaluate`, then `write_csv` and `save_figure`."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.name, self.tiny = args, args.name, args.tiny
        self.work = Path(args.work).resolve()
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        self.sizes = TINY_SIZES if self.tiny else SplitSizes()
        self.seeds = range(args.seeds or (1 if self.tiny else 3))
        self.split = self.work / "data"
        build_split(args.data, self.split, self.sizes)

    # ------------------------------------------------------------------ data

    def pretrain_data(self, per_class: int | None) -> Path:
        return self.split / pretrain_name(per_class)

    @property
    def transfer_data(self) -> Path:
        return self.split / "transfer"

    # ------------------------------------------------------------------ vitcli

    def log(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{self.name} {elapsed / 60:5.1f} min] {message}", flush=True)

    def vitcli(self, args: list, log_name: str) -> str:
        """Run `vitcli ARGS`; its stderr (and stdout unless captured) goes to a log file.
        Returns stdout. A failure stops the study, naming the log."""
        args = [str(arg) for arg in args]
        log = self.logs / f"{log_name}.log"
        with open(log, "a") as stream:
            stream.write(f"\n$ vitcli {' '.join(args)}\n")
            stream.flush()
            result = subprocess.run([VITCLI, *args], stdout=subprocess.PIPE, stderr=stream,
                                    text=True, env={**os.environ, "COLUMNS": "120"})
            stream.write(result.stdout)
        if result.returncode:
            tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
            raise SystemExit(f"vitcli {args[0]} failed ({result.returncode}); {log}:\n{tail}")
        return result.stdout

    def train(self, command: str, label: str, args: list) -> Path:
        """`vitcli pretrain|finetune ARGS --out RUN`, RUN named by `label` and a hash of the
        arguments; reused when finished, resumed when interrupted."""
        args = [str(arg) for arg in args]
        # The hash does not depend on where WORK is, so a moved work folder is still reused.
        key = [command, *(arg.replace(str(self.work), "$WORK") for arg in args)]
        digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:8]
        run = self.work / "runs" / f"{label}-{digest}"
        if (run / "model.keras").is_file():
            self.log(f"{command} {label}: reused")
            return run
        resume = ["--resume"] if (run / "checkpoints").is_dir() else []
        if run.exists() and not resume:
            resume = ["--overwrite"]  # a start that failed before its first checkpoint
        started = time.perf_counter()
        self.vitcli([command, *args, "--out", run, *resume], label)
        self.log(f"{command} {label}: {time.perf_counter() - started:.0f} s")
        return run

    def evaluate(self, run: Path, data: Path, few_shot: str | None = None) -> dict:
        """`vitcli evaluate RUN --data DATA --json [--few-shot N,N]`, cached in RUN."""
        tag = "eval" + (f"-fewshot{few_shot.replace(',', '-')}" if few_shot else "")
        cached = run / f"{tag}.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        args = ["evaluate", run, "--data", data, "--json", "--out", run / tag]
        if few_shot:
            args += ["--few-shot", few_shot]
        report = json.loads(self.vitcli(args, run.name))
        cached.write_text(json.dumps(report))
        return report

    def few_shot(self, run: Path, shots: tuple[int, ...] = (5, 25)) -> dict[int, float]:
        """Mean n-shot linear-probe accuracy on the transfer test set, by n."""
        report = self.evaluate(run, self.transfer_data, ",".join(map(str, shots)))
        return {n: report["few_shot"][f"{n}shot"]["accuracy"] for n in shots}

    def test_top1(self, run: Path) -> float:
        return self.evaluate(run, self.transfer_data)["top1"]

    def pretrain(self, label: str, model: str, data: Path, res, steps: int, *, lr: float,
                 seed: int = 0, extra: tuple = ()) -> Path:
        """The pre-training recipe of every study: examples/recipes/fashion-mnist-pretrain.yaml
        (AdamW, batch 64, weight decay 0.1, plain resize) with a warm-up of a tenth of the run
        (at most 50 steps), validated once at the end."""
        return self.train("pretrain", label, [
            "--model", model, "--data", data, "--res", res, "--steps", steps,
            "--batch", BATCH, "--lr", lr, "--warmup", max(1, min(50, steps // 10)),
            "--weight-decay", 0.1, "--train-crop", "resize", "--eval-every", steps,
            "--checkpoint-every", 100, "--seed", seed, *extra])

    def finetune(self, label: str, start: Path | None, res, steps: int, *, lr: float,
                 seed: int = 0, extra: tuple = ()) -> Path:
        """The transfer recipe: the reference's fine-tuning (SGD momentum 0.9, warm-up then
        cosine, clipping at 1, a new zero head) on the 1,000 transfer training images,
        from `start` (a run), or from random weights when `start` is None (`extra` then
        names the model)."""
        weights = ["--weights", start] if start is not None else ["--from-scratch"]
        return self.train("finetune", label, [
            *weights, "--data", self.transfer_data, "--res", res, "--steps", steps,
            "--batch", BATCH, "--lr", lr, "--warmup", max(1, steps // 10),
            "--train-crop", "resize", "--eval-every", steps, "--checkpoint-every", 100,
            "--seed", seed, *extra])

    def tuned_rates(self, model: str, res, steps: int, ft_steps: int) -> tuple[float, float]:
        """A model's own learning rates: the pre-training rate of PRETRAIN_LRS with the
        better validation top-1 after STEPS on all pre-training images (seed 0), then the
        fine-tuning rate of FINETUNE_LRS with the better transfer validation top-1 from that
        run. The runs are the ones a study would make anyway, so tuning costs one extra
        pre-training and one extra fine-tune per model."""
        data = self.pretrain_data(None)
        runs = {lr: self.pretrain(f"pretrain-{model}-{data.name}", model, data, res, steps,
                                  lr=lr) for lr in PRETRAIN_LRS}
        pretrain_lr = max(runs, key=lambda lr: val_top1(runs[lr]))
        finetune_lr = self.best_finetune_lr(f"finetune-{model}-{data.name}", runs[pretrain_lr],
                                            res, ft_steps)
        self.log(f"{model}: pre-training lr {pretrain_lr:g}, fine-tuning lr {finetune_lr:g}")
        return pretrain_lr, finetune_lr

    def best_finetune_lr(self, label: str, start: Path | None, res, steps: int,
                         extra: tuple = ()) -> float:
        """The rate of FINETUNE_LRS whose fine-tune (seed 0) has the better validation top-1."""
        return max(FINETUNE_LRS, key=lambda lr: val_top1(
            self.finetune(label, start, res, steps, lr=lr, extra=extra)))

    # ------------------------------------------------------------------ results

    def write_csv(self, rows: list[dict]) -> Path:
        path = Path(self.args.out) / f"{self.name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({key: fmt(value) for key, value in row.items()} for row in rows)
        return path

    def save_figure(self, figure) -> Path:
        path = Path(self.args.out) / f"{self.name}.png"
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path

    def finish(self, *paths: Path) -> None:
        elapsed = time.perf_counter() - self.started
        self.log(f"done in {elapsed / 60:.1f} min: " + ", ".join(map(str, paths)))


def seeded(label: str, seed: int) -> str:
    """A run's label for a seed; seed 0's carry no suffix, so studies share them."""
    return label if seed == 0 else f"{label}-seed{seed}"


def val_top1(run: Path) -> float:
    """The run's last validation top-1 (its own classes), from metrics.jsonl."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["val_top1"] for r in records if "val_top1" in r][-1]


def fmt(value):
    """CSV cells: accuracies and FLOPs as plain numbers, four decimals at most."""
    return f"{value:.4f}".rstrip("0").rstrip(".") if isinstance(value, float) else value


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = list(values)
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
