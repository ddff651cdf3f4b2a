"""Calibrates vitcli.train.memory's estimate against the peak RSS of real training steps.

    .venv/bin/python benchmarks/memory_calibration.py [--only NAME ...] [--out FILE]

For each case, two fresh processes build the model and run `vitcli.train_steps` on two
batches (SGD, no accumulation) at micro-batch sizes b1 < b2 and report their peak RSS
(ru_maxrss). (RSS(b2) - RSS(b1)) / (b2 - b1) is the measured cost of one more image, and
RSS(b1) - b1 x that is the measured fixed part; both are written next to the estimates of
`training_bytes_per_image` and `fixed_training_bytes` to benchmarks/memory_calibration.json.
The estimate must never be below the measurement: on a CPU an under-estimate is a killed run.

Cases run one at a time (each process's peak is its own); the biggest need ~5 GiB.
The framework baseline (vitcli.train.memory.FRAMEWORK_BYTES["cpu"]) is the `baseline`
case: a tiny model's whole training process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1 << 20

# name: (variant, resolution, precision, remat, (b1, b2), config overrides)
CASES = {
    "baseline": ("vit-mu8", 32, "fp32", False, (1,), {}),
    "vit-ti16@224": ("vit-ti16", 224, "fp32", False, (2, 8), {}),
    "vit-ti16@384": ("vit-ti16", 384, "fp32", False, (2, 6), {}),
    "vit-ti16@224 remat": ("vit-ti16", 224, "fp32", True, (2, 8), {}),
    "vit-ti16@384 remat": ("vit-ti16", 384, "fp32", True, (2, 6), {}),
    "vit-ti16@224 bf16": ("vit-ti16", 224, "bf16", False, (2, 8), {}),
    "vit-ti16@384 bf16": ("vit-ti16", 384, "bf16", False, (2, 6), {}),
    # Custom shapes that separate the T*D, T*M and per-block terms of the formula.
    "vit-ti16@224 mlp x2": ("vit-ti16", 224, "fp32", False, (2, 8), {"mlp_dim": 1536}),
    "vit-ti16@224 depth 6": ("vit-ti16", 224, "fp32", False, (2, 8), {"depth": 6}),
    "vit-s16@224": ("vit-s16", 224, "fp32", False, (2, 8), {}),
    "vit-b16@224": ("vit-b16", 224, "fp32", False, (1, 4), {}),
    "vit-b16@224 remat": ("vit-b16", 224, "fp32", True, (1, 4), {}),
    "vit-b16@384": ("vit-b16", 384, "fp32", False, (1, 3), {}),
    "r-vit-ti16@224": ("r-vit-ti16", 224, "fp32", False, (2, 8), {}),
    "r26-vit-s32@224": ("r26-vit-s32", 224, "fp32", False, (1, 4), {}),
}


def model_config(name: str):
    from vitcli.models.registry import decode_variant

    variant, resolution, _, _, _, overrides = CASES[name]
    return decode_variant(variant, num_classes=10, image_size=resolution, **overrides)


def measure(name: str, batch: int) -> dict:
    """In this (fresh) process: build, train two steps of `batch` images, report peak RSS."""
    import resource

    import numpy as np

    import vitcli
    from vitcli.models.vit import build_vit
    from vitcli.train.memory import remat_scope
    from vitcli.train.precision import dtype_policy

    _, resolution, precision, remat, _, _ = CASES[name]
    with remat_scope(remat):
        model = build_vit(model_config(name), dtype=dtype_policy(precision))
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (batch, resolution, resolution, 3), dtype=np.uint8),
                rng.integers(0, 10, (batch,))) for _ in range(2)]
    start = time.perf_counter()
    losses = vitcli.train_steps(model, batches, learning_rate=0.01, warmup_steps=0,
                                accum_steps=1)
    return {"batch": batch, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "seconds": round(time.perf_counter() - start, 1),
            "finite": bool(np.isfinite(losses).all())}


def run_worker(name: str, batch: int) -> dict:
    """`measure` in a subprocess of its own, so that its peak RSS is this case's alone."""
    command = [sys.executable, __file__, "--worker", name, str(batch)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"{name} at batch {batch} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def estimates(name: str) -> dict:
    from vitcli.models.cost import parameter_count
    from vitcli.train.memory import fixed_training_bytes, training_bytes_per_image

    _, _, precision, remat, _, _ = CASES[name]
    config = model_config(name)
    return {"tokens": config.num_tokens, "parameters": parameter_count(config),
            "per_image": training_bytes_per_image(config, precision, remat),
            "fixed": fixed_training_bytes(config, "sgd", "float32")}


def calibrate(name: str) -> dict:
    """Both runs of a case and the comparison with the estimate (MiB)."""
    variant, resolution, precision, remat, sizes, overrides = CASES[name]
    runs = [run_worker(name, batch) for batch in sizes]
    estimate = estimates(name)
    row = {"name": name, "variant": variant, "resolution": resolution, "precision": precision,
           "remat": remat, "overrides": overrides, **estimate, "runs": runs}
    peaks = [run["peak_rss"] for run in runs]
    if len(sizes) == 1:
        row["measured_peak_mib"] = round(peaks[0] / MIB, 1)
        return row
    per_image = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    fixed = peaks[0] - sizes[0] * per_image
    row.update(
        per_image_measured_mib=round(per_image / MIB, 1),
        per_image_estimated_mib=round(estimate["per_image"] / MIB, 1),
        per_image_ratio=round(estimate["per_image"] / per_image, 3),
        fixed_measured_mib=round(fixed / MIB, 1),
        fixed_estimated_mib=round(estimate["fixed"] / MIB, 1),
        peak_measured_mib=round(peaks[1] / MIB, 1),
        peak_estimated_mib=round((estimate["fixed"] + sizes[1] * estimate["per_image"]) / MIB,
                                 1),
    )
    return row


def machine() -> dict:
    import keras
    import tensorflow as tf

    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    return {"cpus": os.cpu_count(), "mem_total_gib": round(int(meminfo[1]) / (1 << 20), 1),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__}


def print_row(row: dict) -> None:
    if "per_image_measured_mib" not in row:
        print(f"{row['name']:24s} peak {row['measured_peak_mib']:8.1f} MiB", flush=True)
        return
    print(f"{row['name']:24s} per image {row['per_image_measured_mib']:7.1f} measured "
          f"{row['per_image_estimated_mib']:7.1f} estimated (x{row['per_image_ratio']:.2f})  "
          f"fixed {row['fixed_measured_mib']:7.1f} / {row['fixed_estimated_mib']:7.1f}  "
          f"peak {row['peak_measured_mib']:7.1f} / {row['peak_estimated_mib']:7.1f} MiB",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CASES), help="cases to run")
    parser.add_argument("--out", default=str(HERE / "memory_calibration.json"))
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]))))
        return
    rows = []
    for name in args.only or CASES:
        rows.append(calibrate(name))
        print_row(rows[-1])
    Path(args.out).write_text(json.dumps({"machine": machine(), "cases": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
