"""Fine-tunes and exports ViT-B/16 and ViT-L/16 at 384 px on this machine, as a user would.

    .venv/bin/python benchmarks/real_size.py [OUT] [--photos DIR] [--cases b16 l16 l16-remat]

For each case it writes an official-layout ImageNet-21k-shaped checkpoint (21,843 classes,
224 px, pre-logits as wide as the model) with random weights through the public API, then
runs, each under `/usr/bin/time -v`:

    vitcli finetune --model vit-b16 --weights B16.npz --data DATA --res 384 --steps 1 \
        --batch 64 --out RUN
    vitcli export RUN --format savedmodel --out SERVED

and records the batch plan the run printed, its peak RSS, the step's seconds, the wall times,
the load average and whether the export was verified in a fresh process. DATA is made of real
photographs (scikit-image's bundled samples; `--photos` takes any folder holding the files
named in CLASSES) and their flips, crops and rescales, saved as JPEG. Everything goes under
OUT (default /tmp/vitcli-real-size), each command's output to OUT/logs/; the summary is
printed as a Markdown table and written to benchmarks/real_size.json.

Without scikit-image installed:
    .venv/bin/pip install --target /tmp/skdata scikit-image
    .venv/bin/python benchmarks/real_size.py --photos /tmp/skdata/skimage/data
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VITCLI = ROOT / ".venv" / "bin" / "vitcli"
GIB = 1 << 30

# The classes of the data folder and the real photographs each is derived from.
CLASSES = {
    "people": ["astronaut.png", "camera.png"],
    "vehicles": ["rocket.jpg", "motorcycle_left.png", "motorcycle_right.png"],
    "surfaces": ["brick.png", "grass.png", "gravel.png"],
}
IMAGES_PER_CLASS = 45  # 135 images: a 10 % hold-out leaves > 64 for one training batch

# name: (variant, pre-logits width of the i21k checkpoint, extra finetune flags)
CASES = {
    "b16": ("vit-b16", 768, []),
    "l16": ("vit-l16", 1024, []),
    "l16-remat": ("vit-l16", 1024, ["--remat"]),
}
I21K_CLASSES, I21K_RES = 21843, 224
RES, BATCH, STEPS = 384, 64, 1

PLAN = re.compile(r"global batch (\d+) = (\d+) replica\(s\) x (\d+) micro-batch\(es\) x (\d+)"
                  r"; estimated peak ([\d.]+) GiB of ([\d.]+) GiB available \(--accum auto\)")
POSEMB = "position embeddings 14x14 -> 24x24"
VERIFIED = re.compile(r"verified in a fresh process: max \|diff\| (\S+)\)")


# --- Data and weights. ----------------------------------------------------------------------
def default_photos() -> Path | None:
    """scikit-image's bundled sample photographs, if scikit-image can be found."""
    spec = importlib.util.find_spec("skimage")
    return Path(spec.origin).parent / "data" if spec and spec.origin else None


def variants(photo, count: int, rng: np.random.Generator) -> list:
    """`count` versions of one photo: the original, then random crops (50-100 % of each side),
    half of them mirrored, rescaled to 256-640 px on the longer side."""
    from PIL import Image, ImageOps

    images = [photo]
    while len(images) < count:
        width, height = photo.size
        crop_w, crop_h = (int(side * rng.uniform(0.5, 1.0)) for side in (width, height))
        left, top = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
        image = photo.crop((left, top, left + crop_w, top + crop_h))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        scale = rng.uniform(256, 640) / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        images.append(image.resize(size, Image.Resampling.BICUBIC))
    return images


def make_data(photos: Path, data: Path) -> int:
    """DATA/<class>/<photo>-<i>.jpg, IMAGES_PER_CLASS per class; returns the photos used."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, files in CLASSES.items():
        folder = data / name
        folder.mkdir(parents=True, exist_ok=True)
        counts = np.array_split(np.arange(IMAGES_PER_CLASS), len(files))
        for file, indices in zip(files, counts, strict=True):
            photo = Image.open(photos / file).convert("RGB")
            for index, image in enumerate(variants(photo, len(indices), rng)):
                image.save(folder / f"{Path(file).stem}-{index:02d}.jpg", quality=90)
    return sum(len(files) for files in CLASSES.values())


def make_checkpoint(variant: str, representation_size: int, path: Path) -> None:
    """An i21k-shaped .npz with random weights, written in a separate process (so this one
    never holds TensorFlow's memory while the measured runs go)."""
    if path.exists():
        return
    script = ("import sys, vitcli\n"
              "model = vitcli.build_model(sys.argv[1], num_classes=int(sys.argv[2]),"
              " image_size=int(sys.argv[3]), representation_size=int(sys.argv[4]))\n"
              "vitcli.save_npz(model, sys.argv[5])\n")
    partial = path.with_suffix(".partial.npz")
    subprocess.run([sys.executable, "-c", script, variant, str(I21K_CLASSES), str(I21K_RES),
                    str(representation_size), str(partial)], check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    partial.rename(path)


# --- Measuring a command. -------------------------------------------------------------------
class Sampler(threading.Thread):
    """Samples the 1-minute load average and MemAvailable every `interval` seconds."""

    def __init__(self, interval: float = 2.0):
        super().__init__(daemon=True)
        self.interval, self.loads, self.available = interval, [], []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.loads.append(os.getloadavg()[0])
            self.available.append(mem_available())

    def summary(self) -> dict:
        loads = self.loads or [os.getloadavg()[0]]
        return {"load_avg_1min_mean": round(float(np.mean(loads)), 2),
                "load_avg_1min_max": round(max(loads), 2),
                "min_mem_available_gib": round(min(self.available or [mem_available()])
                                               / GIB, 2)}


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run_measured(command: list[str], log: Path) -> dict:
    """Runs `command` under /usr/bin/time -v with its stdout in `log` (each line stamped with
    seconds since the start in `log`.times) and its stderr in `log`.err; returns the exit
    status, wall seconds, max RSS, the stamped lines and the load during the run."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", TERM="dumb")
    sampler, stamped = Sampler(), []
    start = time.perf_counter()
    sampler.start()
    with open(log.with_suffix(".err"), "w") as errors:
        process = subprocess.Popen(["/usr/bin/time", "-v", *command], stdout=subprocess.PIPE,
                                   stderr=errors, text=True, env=environment)
        for line in process.stdout:
            stamped.append((round(time.perf_counter() - start, 1), line.rstrip("\n")))
        process.wait()
    wall = time.perf_counter() - start
    sampler.stopped.set()
    log.write_text("".join(f"{line}\n" for _, line in stamped))
    log.with_suffix(".times").write_text("".join(f"{t:8.1f}  {line}\n" for t, line in stamped))
    return {"returncode": process.returncode, "wall_s": round(wall, 1),
            "max_rss_gib": max_rss_gib(log.with_suffix(".err")), "lines": stamped,
            **sampler.summary()}


def max_rss_gib(time_output: Path) -> float | None:
    """`Maximum resident set size (kbytes)` from /usr/bin/time -v's report, in GiB."""
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_output.read_text())
    return round(int(match.group(1)) * 1024 / GIB, 2) if match else None


# --- One case. ------------------------------------------------------------------------------
def finetune(case: str, out: Path, data: Path) -> dict:
    """The measured `vitcli finetune` run of `case` and the figures read from its output."""
    variant, representation_size, flags = CASES[case]
    weights = out / "weights" / f"{variant}-i21k-random.npz"
    weights.parent.mkdir(parents=True, exist_ok=True)
    make_checkpoint(variant, representation_size, weights)
    run = out / "runs" / case
    command = [str(VITCLI), "finetune", "--model", variant, "--weights", str(weights),
               "--data", str(data), "--res", str(RES), "--steps", str(STEPS),
               "--batch", str(BATCH), "--out", str(run), *flags]
    measured = run_measured(command, out / "logs" / f"{case}-finetune.log")
    return {"command": " ".join(command[1:]), "run": str(run),
            **plan_figures(measured), **step_figures(run, measured)}


def plan_figures(measured: dict) -> dict:
    """The batch plan and the position-embedding line the run printed."""
    text = "\n".join(line for _, line in measured["lines"])
    plan = PLAN.search(text)
    figures = {key: value for key, value in measured.items() if key != "lines"}
    figures["posemb_line_printed"] = POSEMB in text
    if plan:
        _, replicas, accum, micro, peak, budget = plan.groups()
        figures.update(replicas=int(replicas), accum=int(accum), micro_batch=int(micro),
                       estimated_peak_gib=float(peak), budget_gib=float(budget))
    return figures


def step_figures(run: Path, measured: dict) -> dict:
    """Seconds of the training step: from metrics.jsonl's images_per_sec (the loop's meter,
    started just before the first step, so it includes tracing the step function), and the
    stdout time stamps of the plan (printed just before the loop) and of the summary."""
    metrics = run / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] \
        if metrics.exists() else []
    rates = [record["images_per_sec"] for record in records if "images_per_sec" in record]
    stamps = {"plan": stamp_of(measured["lines"], "micro-batch(es)"),
              "summary": stamp_of(measured["lines"], "run summary")}
    return {"step_s": round(BATCH / rates[-1], 1) if rates else None,
            "images_per_sec": rates[-1] if rates else None,
            "startup_s": stamps["plan"],
            "plan_to_summary_s": round(stamps["summary"] - stamps["plan"], 1)
            if None not in stamps.values() else None}


def stamp_of(lines: list, text: str) -> float | None:
    return next((stamp for stamp, line in lines if text in line), None)


def export(case: str, out: Path, run: str) -> dict:
    """The measured `vitcli export RUN --format savedmodel` and whether it was verified."""
    served = out / "served" / case
    command = [str(VITCLI), "export", run, "--format", "savedmodel", "--out", str(served)]
    measured = run_measured(command, out / "logs" / f"{case}-export.log")
    text = "\n".join(line for _, line in measured["lines"])
    verified = VERIFIED.search(text)
    return {"command": " ".join(command[1:]), "returncode": measured["returncode"],
            "wall_s": measured["wall_s"], "max_rss_gib": measured["max_rss_gib"],
            "verified_in_fresh_process": bool(verified),
            "max_abs_diff": float(verified.group(1)) if verified else None}


# --- The report. ----------------------------------------------------------------------------
def machine() -> dict:
    memory = next(line for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(int(memory.split()[1]) * 1024 / GIB, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def table(results: dict) -> str:
    """The summary as a Markdown table."""
    rows = ["| case | model | res | batch | micro x accum | est. peak GiB | max RSS GiB "
            "| s/step | finetune wall s | export wall s | export verified | load avg |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case, result in results.items():
        run, served = result["finetune"], result.get("export", {})
        rows.append(
            f"| {case} | {CASES[case][0]} | {RES} | {BATCH} | "
            f"{run.get('micro_batch')} x {run.get('accum')} | {run.get('estimated_peak_gib')} "
            f"| {run['max_rss_gib']} | {run['step_s']} | {run['wall_s']} | "
            f"{served.get('wall_s')} | {served.get('verified_in_fresh_process')} "
            f"| {run['load_avg_1min_mean']} (max {run['load_avg_1min_max']}) |")
    return "\n".join(rows)


def earlier_results(path: Path) -> dict:
    """The cases an earlier invocation measured (`--cases` reruns only some of them)."""
    return json.loads(path.read_text()).get("results", {}) if path.exists() else {}


def run_case(case: str, out: Path, data: Path) -> dict:
    print(f"--- {case}: finetune", flush=True)
    result = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "load_avg_at_start": [round(load, 2) for load in os.getloadavg()],
              "finetune": finetune(case, out, data)}
    print(json.dumps(result["finetune"], indent=1), flush=True)
    if result["finetune"]["returncode"] == 0:
        print(f"--- {case}: export", flush=True)
        result["export"] = export(case, out, result["finetune"]["run"])
        print(json.dumps(result["export"], indent=1), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("/tmp/vitcli-real-size"))
    parser.add_argument("--photos", type=Path, default=default_photos(),
                        help="folder holding the photographs named in CLASSES "
                        "(default: scikit-image's data folder)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--json", type=Path, default=HERE / "real_size.json")
    arguments = parser.parse_args()
    if arguments.photos is None or not arguments.photos.is_dir():
        parser.error("no photographs: pip install --target /tmp/skdata scikit-image, then "
                     "--photos /tmp/skdata/skimage/data")
    out = arguments.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    os.environ["VITCLI_HOME"] = str(out / "home")  # the data index cache stays under OUT too
    data = out / "data"
    photos = make_data(arguments.photos, data)
    report = {"machine": machine(),
              "data": {"folder": str(data), "real_photos": photos,
                       "images": IMAGES_PER_CLASS * len(CLASSES), "classes": CLASSES},
              "results": earlier_results(arguments.json)}
    for case in arguments.cases:
        report["results"][case] = run_case(case, out, data)
        arguments.json.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
