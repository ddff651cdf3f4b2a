"""Fine-tunes and exports ViT-B/16 and ViT-L/16 at 384 px on this machine, as a user would.

    .venv/bin/python benchmarks/real_size.py [OUT] [--photos DIR] [--cases b16 l16 l16-remat]
        [--h14]

For each case it writes an official-layout ImageNet-21k-shaped checkpoint (21,843 classes,
224 px, pre-logits as wide as the model) with random weights through the public API, then
runs, each under `/usr/bin/time -v`:

    vitcli finetune --model vit-b16 --weights B16.npz --data DATA --res 384 --steps 1 \
        --batch 64 --out RUN
    vitcli export RUN --format savedmodel --out SERVED

and records the batch plan the run printed, its peak RSS, the step's seconds, the wall times,
the load average and whether the export was verified in a fresh process. `--h14` also exports
an i21k-shaped ViT-H/14 (2.46 GiB of weights) as ONNX, which must be refused in one line, and
as SavedModel and TFLite, which must be verified.

DATA is made of real photographs (scikit-image's bundled samples; `--photos` takes any folder
holding the files named in CLASSES) and their flips, crops and rescales, saved as JPEG.
Everything goes under OUT (default /tmp/vitcli-real-size), each command's output to OUT/logs/;
the summary is printed as a Markdown table and written to benchmarks/real_size.json.

Without scikit-image installed:
    .venv/bin/pip install --target /tmp/skdata scikit-image
    .venv/bin/python benchmarks/real_size.py --photos /tmp/skdata/skimage/data
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
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
# --h14: an i21k-shaped ViT-H/14 (660 M parameters, 2.46 GiB) exported in each format; ONNX
# must refuse in one line (over protobuf's 2 GiB), the others must be verified.
H14, H14_REPRESENTATION = "vit-h14", 1280
H14_FORMATS = {"onnx": ".onnx", "savedmodel": "", "tflite": ".tflite"}
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
                path = folder / f"{Path(file).stem}-{index:02d}.jpg"
                if not path.exists():  # the same images each time: never rewrite one in use
                    image.save(path, quality=90)
    return sum(len(files) for files in CLASSES.values())


def make_checkpoint(variant: str, representation_size: int, path: Path) -> None:
    """An i21k-shaped .npz with random weights, written in a separate process (so this one
    never holds TensorFlow's memory while the measured runs go); kept for later runs."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random head (build_model's is zero): exports of the checkpoint itself are then
    # verified on probabilities that are not uniform.
    script = ("import sys, numpy, vitcli\n"
              "model = vitcli.build_model(sys.argv[1], num_classes=int(sys.argv[2]),"
              " image_size=int(sys.argv[3]), representation_size=int(sys.argv[4]))\n"
              "head, rng = model.get_layer('head'), numpy.random.default_rng(0)\n"
              "head.set_weights([rng.normal(0, 0.02, w.shape).astype('float32')"
              " for w in head.get_weights()])\n"
              "vitcli.save_npz(model, sys.argv[5])\n")
    partial = path.with_suffix(".partial.npz")
    subprocess.run([sys.executable, "-c", script, variant, str(I21K_CLASSES), str(I21K_RES),
                    str(representation_size), str(partial)], check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    partial.rename(path)


# --- Measuring a command. -------------------------------------------------------------------
class Sampler(threading.Thread):
    """Samples, every `interval` seconds, the RSS of process `pid` and its descendants, the
    1-minute load average and MemAvailable, and notes when the file `watch` first exists
    (a run's metrics.jsonl: the first step's record is written right after the step)."""

    def __init__(self, pid: int, watch: Path | None = None, interval: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.watch, self.interval = pid, watch, interval
        self.start_time, self.samples, self.watch_seen = time.perf_counter(), [], None
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            now = round(time.perf_counter() - self.start_time, 1)
            self.samples.append((now, tree_rss(self.pid), os.getloadavg()[0], mem_available()))
            if self.watch_seen is None and self.watch is not None and self.watch.exists():
                self.watch_seen = now

    def write(self, path: Path) -> None:
        path.write_text("seconds\trss_gib\tload_1min\tmem_available_gib\n" + "".join(
            f"{t}\t{rss / GIB:.3f}\t{load:.2f}\t{free / GIB:.2f}\n"
            for t, rss, load, free in self.samples))

    def summary(self) -> dict:
        samples = self.samples or [(0.0, 0, os.getloadavg()[0], mem_available())]
        peak = max(samples, key=lambda sample: sample[1])
        loads = [sample[2] for sample in samples]
        return {"load_avg_1min_mean": round(float(np.mean(loads)), 2),
                "load_avg_1min_max": round(max(loads), 2),
                "min_mem_available_gib": round(min(s[3] for s in samples) / GIB, 2),
                "sampled_peak_rss_gib": round(peak[1] / GIB, 2), "sampled_peak_at_s": peak[0],
                "metrics_written_at_s": self.watch_seen}


def tree_rss(pid: int) -> int:
    """VmRSS of `pid` and all its descendants, in bytes (0 once they have exited)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        status = Path(f"/proc/{current}/status")
        with contextlib.suppress(OSError):
            # A process that has exited but not been waited for has no VmRSS line.
            line = next((line for line in status.read_text().splitlines()
                         if line.startswith("VmRSS:")), "VmRSS: 0 kB")
            total += int(line.split()[1]) * 1024
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
    return total


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run_measured(command: list[str], log: Path, watch: Path | None = None) -> dict:
    """Runs `command` under /usr/bin/time -v with its stdout in `log` (each line stamped with
    seconds since the start in `log`.times), its stderr in `log`.err and its memory and the
    load sampled in `log`.rss.tsv; returns the exit status, wall seconds, /usr/bin/time's
    figures, the stamped lines and the samples' summary."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", TERM="dumb")
    stamped, start = [], time.perf_counter()
    with open(log.with_suffix(".err"), "w") as errors:
        process = subprocess.Popen(["/usr/bin/time", "-v", *command], stdout=subprocess.PIPE,
                                   stderr=errors, text=True, env=environment)
        sampler = Sampler(process.pid, watch)
        sampler.start()
        for line in process.stdout:
            stamped.append((round(time.perf_counter() - start, 1), line.rstrip("\n")))
        process.wait()
    wall = time.perf_counter() - start
    sampler.stopped.set()
    sampler.join()
    sampler.write(log.with_suffix(".rss.tsv"))
    log.write_text("".join(f"{line}\n" for _, line in stamped))
    log.with_suffix(".times").write_text("".join(f"{t:8.1f}  {line}\n" for t, line in stamped))
    return {"returncode": process.returncode, "wall_s": round(wall, 1),
            **time_figures(log.with_suffix(".err")), "lines": stamped, **sampler.summary()}


def time_figures(time_output: Path) -> dict:
    """Max RSS (GiB), CPU seconds and CPU share from /usr/bin/time -v's report."""
    text = time_output.read_text()

    def number(label: str) -> float | None:
        match = re.search(rf"{re.escape(label)}: ([\d.]+)", text)
        return float(match.group(1)) if match else None

    rss_kib = number("Maximum resident set size (kbytes)")
    user, system = number("User time (seconds)"), number("System time (seconds)")
    return {"max_rss_gib": round(rss_kib * 1024 / GIB, 2) if rss_kib else None,
            "cpu_s": round(user + system, 1) if user is not None and system is not None
            else None, "cpu_percent": number("Percent of CPU this job got")}


# --- One case. ------------------------------------------------------------------------------
def finetune(case: str, out: Path, data: Path) -> dict:
    """The measured `vitcli finetune` run of `case` and the figures read from its output."""
    variant, representation_size, flags = CASES[case]
    weights = out / "weights" / f"{variant}-i21k-random.npz"
    make_checkpoint(variant, representation_size, weights)
    run = out / "runs" / case
    remove(run)  # a fresh run each time (vitcli refuses to start over an existing run)
    command = [str(VITCLI), "finetune", "--model", variant, "--weights", str(weights),
               "--data", str(data), "--res", str(RES), "--steps", str(STEPS),
               "--batch", str(BATCH), "--out", str(run), *flags]
    measured = run_measured(command, out / "logs" / f"{case}-finetune.log",
                            watch=run / "metrics.jsonl")
    errors = [line for line in (out / "logs" / f"{case}-finetune.err").read_text().splitlines()
              if line.startswith("error:")]
    return {"command": " ".join(command[1:]), "run": str(run), "error_lines": errors,
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
    """Seconds of the training step: from the plan line on stdout (printed just before the
    loop starts) to the moment metrics.jsonl appears (its first record is written right
    after step 1), so it includes tracing the step function; also the loop's own meter
    (metrics.jsonl's images_per_sec, rounded to 0.01 image/s) and the time after the step
    (validation and saving the model, best model and checkpoint)."""
    metrics = run / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()] \
        if metrics.exists() else []
    rates = [record["images_per_sec"] for record in records if "images_per_sec" in record]
    plan, written = stamp_of(measured["lines"], "micro-batch(es)"), measured["metrics_written_at_s"]
    step = round(written - plan, 1) if None not in (plan, written) else None
    return {"step_s": step, "images_per_sec": rates[-1] if rates else None,
            "startup_s": plan,
            "after_step_s": round(measured["wall_s"] - written, 1) if written else None}


def stamp_of(lines: list, text: str) -> float | None:
    return next((stamp for stamp, line in lines if text in line), None)


def export(case: str, out: Path, run: str) -> dict:
    """The measured `vitcli export RUN --format savedmodel` and whether it was verified."""
    served = out / "served" / case
    remove(served)  # version 1 each time, not the next version of an earlier export
    command = [str(VITCLI), "export", run, "--format", "savedmodel", "--out", str(served)]
    measured = run_measured(command, out / "logs" / f"{case}-export.log")
    text = "\n".join(line for _, line in measured["lines"])
    verified = VERIFIED.search(text)
    return {"command": " ".join(command[1:]), "returncode": measured["returncode"],
            "wall_s": measured["wall_s"], "max_rss_gib": measured["max_rss_gib"],
            "verified_in_fresh_process": bool(verified),
            "max_abs_diff": float(verified.group(1)) if verified else None}


def h14_exports(out: Path) -> dict:
    """`vitcli export` of an i21k-shaped vit-h14 checkpoint in each of H14_FORMATS."""
    weights = out / "weights" / f"{H14}-i21k-random.npz"
    make_checkpoint(H14, H14_REPRESENTATION, weights)
    results = {}
    for fmt, suffix in H14_FORMATS.items():
        target = out / "served" / f"h14-{fmt}{suffix}"
        remove(target)
        print(f"--- h14: export {fmt}", flush=True)
        command = [str(VITCLI), "export", str(weights), "--format", fmt, "--out", str(target)]
        log = out / "logs" / f"h14-export-{fmt}.log"
        measured = run_measured(command, log)
        text = "\n".join(line for _, line in measured["lines"])
        verified = VERIFIED.search(text)
        errors = [line for line in log.with_suffix(".err").read_text().splitlines()
                  if line.startswith("error:")]
        results[fmt] = {key: measured[key] for key in ("returncode", "wall_s", "max_rss_gib")}
        results[fmt].update(
            verified_in_fresh_process=bool(verified), error_lines=errors,
            max_abs_diff=float(verified.group(1)) if verified else None,
            artefact_exists=target.exists(), artefact_bytes=size_of(target))
        print(json.dumps(results[fmt], indent=1), flush=True)
    return results


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def size_of(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) \
        if path.is_dir() else None


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
    rows = ["| case | model | res | batch | outcome | micro x accum | est. peak GiB "
            "| max RSS GiB | step s | run CPU s | finetune wall s | export wall s "
            "| export verified | load avg |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case, result in results.items():
        run, served = result["finetune"], result.get("export", {})
        rows.append(
            f"| {case} | {CASES[case][0]} | {RES} | {BATCH} | {outcome(run)} | "
            f"{run.get('micro_batch')} x {run.get('accum')} | {run.get('estimated_peak_gib')} "
            f"| {run['max_rss_gib']} | {run.get('step_s')} | {run.get('cpu_s')} "
            f"| {run['wall_s']} | {served.get('wall_s')} "
            f"| {served.get('verified_in_fresh_process')} "
            f"| {run['load_avg_1min_mean']} (max {run['load_avg_1min_max']}) |")
    return "\n".join(rows)


def source_version() -> dict:
    """The commit, and the content hashes of the modules the figures depend on most (the
    memory estimate, the training step), which may differ from the commit while they are
    being worked on."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()

    version = {"commit": git("rev-parse", "--short", "HEAD")}
    for module in ("memory", "step"):
        path = f"vitcli/train/{module}.py"
        version[f"{module}_py_blob"] = git("hash-object", path)[:10]
        version[f"{module}_py_modified"] = bool(git("status", "--porcelain", path))
    return version


def outcome(run: dict) -> str:
    """completed, killed (SIGKILL: on this machine the kernel's out-of-memory killer, see
    dmesg) or the exit status."""
    if run["returncode"] == 0:
        return "completed"
    return "killed" if run["returncode"] in (137, -9) else f"exit {run['returncode']}"


def earlier_results(path: Path) -> dict:
    """What earlier invocations measured (`--cases` reruns only some of the cases)."""
    earlier = json.loads(path.read_text()) if path.exists() else {}
    return {key: earlier[key] for key in ("results", "superseded", "h14_exports")
            if key in earlier}


def run_case(case: str, out: Path, data: Path) -> dict:
    print(f"--- {case}: finetune", flush=True)
    result = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "load_avg_at_start": [round(load, 2) for load in os.getloadavg()],
              "source": source_version(),
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
    parser.add_argument("--cases", nargs="*", choices=list(CASES), default=list(CASES))
    parser.add_argument("--h14", action="store_true",
                        help="also export an i21k-shaped vit-h14 as onnx, savedmodel, tflite")
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
              **earlier_results(arguments.json)}
    report.setdefault("results", {})
    for case in arguments.cases:
        if case in report["results"]:  # kept: a rerun may measure changed code
            report.setdefault("superseded", {}).setdefault(case, []).append(
                report["results"][case])
        report["results"][case] = run_case(case, out, data)
        arguments.json.write_text(json.dumps(report, indent=1) + "\n")
    if arguments.h14:
        if "h14_exports" in report:
            report.setdefault("superseded", {}).setdefault("h14_exports", []).append(
                report["h14_exports"])
        report["h14_exports"] = {"source": source_version(), **h14_exports(out)}
        arguments.json.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
