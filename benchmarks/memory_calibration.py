"""Calibrates vitcli.train.memory's estimate against the peak RSS of real training steps.

    .venv/bin/python benchmarks/memory_calibration.py [--only NAME ...] [--out FILE]

For each case, two fresh processes build the model and run `vitcli.train_steps` on two
batches (SGD; one micro-batch per step unless the case accumulates) at micro-batch sizes
b1 < b2 and report their peak RSS (ru_maxrss). (RSS(b2) - RSS(b1)) / (b2 - b1) is the
measured cost of one more image, and RSS(b1) - b1 x that is the measured fixed part; both
are written next to the estimates of `training_bytes_per_image` and `fixed_training_bytes`
to benchmarks/memory_calibration.json.
The estimate must never be below the measurement: on a CPU an under-estimate is a killed run.

Cases run one at a time (each process's peak is its own), each once the machine has 1.3x
its estimated peak free (other jobs share it); the biggest needs ~6 GiB. `baseline` is a
tiny model's whole training process: TensorFlow's own footprint. Rows of cases not run are
kept in the results file. ~25 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1 << 20
# How long a case waits for enough free memory before it is skipped.
MEMORY_WAIT_SECONDS = float(os.environ.get("MEMORY_WAIT_SECONDS", "900"))


@dataclass(frozen=True)
class Case:
    variant: str
    resolution: int
    sizes: tuple[int, ...]  # micro-batch sizes b1 < b2 (one size: the whole process only)
    precision: str = "fp32"
    remat: bool = False
    accum: int = 1  # micro-batches per step: the global batch is accum x micro-batch
    overrides: dict = field(default_factory=dict)  # ModelConfig fields


CASES = {
    "baseline": Case("vit-mu8", 32, (1,)),
    "vit-ti16@224": Case("vit-ti16", 224, (2, 8)),
    "vit-ti16@384": Case("vit-ti16", 384, (2, 6)),
    "vit-ti16@224 remat": Case("vit-ti16", 224, (2, 8), remat=True),
    "vit-ti16@384 remat": Case("vit-ti16", 384, (2, 6), remat=True),
    "vit-ti16@224 bf16": Case("vit-ti16", 224, (2, 8), precision="bf16"),
    "vit-ti16@384 bf16": Case("vit-ti16", 384, (2, 6), precision="bf16"),
    # Custom shapes that separate the T*D, T*M and per-block terms of the formula.
    "vit-ti16@224 mlp x2": Case("vit-ti16", 224, (2, 8), overrides={"mlp_dim": 1536}),
    "vit-ti16@224 depth 6": Case("vit-ti16", 224, (2, 8), overrides={"depth": 6}),
    "vit-s16@224": Case("vit-s16", 224, (2, 8)),
    "vit-b16@224": Case("vit-b16", 224, (1, 4)),
    "vit-b16@224 remat": Case("vit-b16", 224, (1, 4), remat=True),
    # Accumulation: is a micro-batch image still a micro-batch image? (vitcli.train.memory's
    # ACCUM_OVERLAP and UNROLLED_GRAPH_BYTES_PER_BLOCK say what these found.)
    "vit-ti16@224 accum 2": Case("vit-ti16", 224, (2, 8), accum=2),
    "vit-ti16@224 accum 8": Case("vit-ti16", 224, (1, 4), accum=8),
    "vit-b16@224 accum 2": Case("vit-b16", 224, (1, 3), accum=2),
    "vit-b16@384": Case("vit-b16", 384, (1, 3)),
    "r-vit-ti16@224": Case("r-vit-ti16", 224, (2, 8)),
    "r26-vit-s32@224": Case("r26-vit-s32", 224, (1, 4)),
    "r50-vit-b16@224": Case("r50-vit-b16", 224, (1, 3)),
    # Pure ResNets: all conv parameters (weight standardisation), no tokens.
    "bit-r26@224": Case("bit-r26", 224, (1, 4)),
    "bit-r26@32": Case("bit-r26", 32, (8, 64)),
}


def model_config(case: Case):
    from vitcli.models.registry import decode_variant

    return decode_variant(case.variant, num_classes=10, image_size=case.resolution,
                          **case.overrides)


def measure(name: str, micro_batch: int) -> dict:
    """In this (fresh) process: build, train two steps of `micro_batch` x accum images,
    report the peak RSS."""
    import resource

    import numpy as np

    import vitcli
    from vitcli.models.vit import build_vit
    from vitcli.train.memory import remat_scope
    from vitcli.train.precision import dtype_policy

    case = CASES[name]
    with remat_scope(case.remat):
        model = build_vit(model_config(case), dtype=dtype_policy(case.precision))
    rng = np.random.default_rng(0)
    batch, size = micro_batch * case.accum, case.resolution
    batches = [(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
                rng.integers(0, 10, (batch,))) for _ in range(2)]
    start = time.perf_counter()
    losses = vitcli.train_steps(model, batches, learning_rate=0.01, warmup_steps=0,
                                accum_steps=case.accum)
    return {"micro_batch": micro_batch,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "seconds": round(time.perf_counter() - start, 1),
            "finite": bool(np.isfinite(losses).all())}


def wait_for_memory(needed: int, log=print) -> bool:
    """Waits (up to MEMORY_WAIT_SECONDS) until this machine has `needed` bytes free: other
    jobs share it, and running out would kill a process (maybe theirs)."""
    from vitcli.train.memory import cpu_available_bytes

    deadline = time.monotonic() + MEMORY_WAIT_SECONDS
    while cpu_available_bytes() < needed:
        if time.monotonic() > deadline:
            return False
        log(f"    waiting for {needed / (1 << 30):.1f} GiB of free memory", flush=True)
        time.sleep(20)
    return True


def run_worker(name: str, micro_batch: int) -> dict:
    """`measure` in a subprocess of its own, so that its peak RSS is this case's alone."""
    command = [sys.executable, __file__, "--worker", name, str(micro_batch)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"{name} at micro-batch {micro_batch} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def estimates(case: Case) -> dict:
    """The estimate of a case: per micro-batch image and fixed, accumulation included (what
    `plan_peak_bytes` adds up), in bytes."""
    from vitcli.models.cost import parameter_count
    from vitcli.train import memory

    config = model_config(case)
    per_image = memory.training_bytes_per_image(config, case.precision, case.remat)
    fixed = memory.fixed_training_bytes(config, "sgd", "float32", accum=case.accum > 1,
                                        precision=case.precision, remat=case.remat)
    if case.accum > 1:
        per_micro_batch, overlap = memory.accumulation_costs(config)
        fixed += (case.accum - 1) * per_micro_batch
        per_image = round(overlap * per_image)
    return {"tokens": config.num_tokens, "parameters": parameter_count(config),
            "per_image": per_image, "fixed": fixed}


def mib(size: float) -> float:
    return round(size / MIB, 1)


def calibrate(name: str) -> dict:
    """Both runs of a case, compared with the estimate."""
    case = CASES[name]
    estimate = estimates(case)
    runs = []
    for size in case.sizes:
        if not wait_for_memory(int(1.3 * (estimate["fixed"] + size * estimate["per_image"]))):
            return {"name": name, **asdict(case), "skipped": "not enough free memory"}
        runs.append(run_worker(name, size))
    return compare(name, runs)


def compare(name: str, runs: list[dict]) -> dict:
    """A case's row: its measured runs next to the current estimate (MiB)."""
    case = CASES[name]
    estimate = estimates(case)
    row = {"name": name, **asdict(case), **estimate, "runs": runs}
    peaks = [run["peak_rss"] for run in runs]
    if len(case.sizes) == 1:
        return {**row, "peak_measured_mib": mib(peaks[0]),
                "peak_estimated_mib": mib(estimate["fixed"] + estimate["per_image"])}
    (small, large) = case.sizes
    per_image = (peaks[1] - peaks[0]) / (large - small)
    return {**row,
            "per_image_measured_mib": mib(per_image),
            "per_image_estimated_mib": mib(estimate["per_image"]),
            "per_image_ratio": round(estimate["per_image"] / per_image, 3),
            "fixed_measured_mib": mib(peaks[0] - small * per_image),
            "fixed_estimated_mib": mib(estimate["fixed"]),
            "peak_measured_mib": mib(peaks[1]),
            "peak_estimated_mib": mib(estimate["fixed"] + large * estimate["per_image"])}


def machine() -> dict:
    import keras
    import tensorflow as tf

    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    return {"cpus": os.cpu_count(), "mem_total_gib": round(int(meminfo[1]) / (1 << 20), 1),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__}


def print_row(row: dict) -> None:
    name = f"{row['name']:22s}"
    if "skipped" in row:
        print(f"{name} skipped: {row['skipped']}", flush=True)
    elif "per_image_measured_mib" not in row:
        print(f"{name} peak {row['peak_measured_mib']:7.1f} measured "
              f"{row['peak_estimated_mib']:7.1f} estimated MiB", flush=True)
    else:
        print(f"{name} per image {row['per_image_measured_mib']:6.1f} measured "
              f"{row['per_image_estimated_mib']:6.1f} estimated (x{row['per_image_ratio']:.2f})"
              f"  fixed {row['fixed_measured_mib']:6.1f} / {row['fixed_estimated_mib']:6.1f}"
              f"  peak {row['peak_measured_mib']:6.1f} / {row['peak_estimated_mib']:6.1f} MiB",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CASES), help="cases to run")
    parser.add_argument("--out", default=str(HERE / "memory_calibration.json"))
    parser.add_argument("--reestimate", action="store_true",
                        help="recompute the estimates of the stored rows, without measuring")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]))))
        return
    out = Path(args.out)
    # Cases not run this time keep their earlier rows.
    rows = {row["name"]: row for row in
            (json.loads(out.read_text())["cases"] if out.exists() else [])}
    for name in args.only or CASES:
        if args.reestimate:
            if "runs" not in rows.get(name, {}):
                continue
            rows[name] = compare(name, rows[name]["runs"])
        else:
            rows[name] = calibrate(name)
        print_row(rows[name])
        ordered = [rows[name] for name in CASES if name in rows]
        out.write_text(json.dumps({"machine": machine(), "cases": ordered}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
