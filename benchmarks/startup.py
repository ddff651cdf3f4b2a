"""How long a user waits for the first training step: the real `vitcli pretrain` command,
from its launch to its first finished step (imports, data indexing, model building,
tracing and the step itself).

    .venv-bench/bin/python benchmarks/startup.py [--code DIR] [--label NAME]

Two runs: the demo's pre-training recipe (vit-mu7 at 21 px, the bundled data) and vit-b16 at
224 px (the bundled images upscaled by the pipeline; batch 32, one micro-batch, no
validation split). Each run logs every step; the first step's end is when its first metrics
line appears in metrics.jsonl (polled every 20 ms), measured from outside, so a vitcli
version that does not report it itself (`--code DIR`: another checkout, e.g. a
`git worktree` of an older commit) is measured the same way. The run's own report
(`first_step_seconds`) is shown next to it where present. Appends a section to
benchmarks/results.md and a "startup" entry to results.json (`--label` names the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import LoadMeter, wait_until_quiet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUNDLED = ROOT / "examples" / "data" / "fashion-mnist"
SECTION_TITLE = "## First training step"
RUNS = {
    "demo pre-training (vit-mu7, 21 px)": [
        "--config", "examples/recipes/fashion-mnist-pretrain.yaml", "--steps", "3"],
    "vit-b16, 224 px, batch 32": [
        "--model", "vit-b16", "--res", "224", "--steps", "2", "--batch", "32", "--accum", "1"],
}


def train_only_copy(directory: Path) -> Path:
    """A copy of the bundled training images alone (no val split: no validation pass at the
    end; vitcli does not follow symbolic links into a data folder)."""
    shutil.copytree(BUNDLED / "train", directory / "data" / "train")
    return directory / "data"


def first_step(arguments: list[str], code: Path | None, out: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "2",
           "TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}
    if code:
        env["PYTHONPATH"] = str(code)
    command = [sys.executable, "-m", "vitcli", "pretrain", *arguments, "--log-every", "1",
               "--out", str(out), "--from-scratch"]
    metrics = out / "metrics.jsonl"
    wait_until_quiet()
    with LoadMeter() as meter:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, cwd=code or ROOT,
                                   stderr=subprocess.PIPE, text=True)
        seen = None
        while process.poll() is None and seen is None:
            if metrics.exists() and metrics.read_text().strip():
                seen = time.perf_counter() - started
            time.sleep(0.02)
        _, errors = process.communicate()
    if process.returncode:
        return {"error": errors.strip().splitlines()[-1:]}
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [record for record in records if "loss" in record]
    return {"first_step_seconds_measured": round(seen, 2),
            "first_step_seconds_reported": steps[0].get("first_step_seconds"),
            "first_step_call_seconds_reported": steps[0].get("first_step_call_seconds"),
            "second_step_images_per_second": steps[1]["images_per_sec"] if len(steps) > 1
            else None, "foreign_load_cores": meter.load}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, help="a vitcli checkout to measure instead")
    parser.add_argument("--label", default="this version")
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "results.md")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="vitcli-startup-") as scratch:
        data = train_only_copy(Path(scratch))
        for name, arguments in RUNS.items():
            if "--config" not in arguments:
                arguments = [*arguments, "--data", str(data)]
            out = Path(scratch) / f"run-{len(results)}"
            result = {"run": name, "version": args.label,
                      **first_step(arguments, args.code, out)}
            print(json.dumps(result), flush=True)
            results.append(result)
    merge(args.json, args.markdown, results)


def merge(json_file: Path, markdown_file: Path, results: list[dict]) -> None:
    """Adds these rows to the results (rows of another --label are kept)."""
    report = json.loads(json_file.read_text()) if json_file.exists() else {}
    labels = {row["version"] for row in results}
    rows = [row for row in report.get("startup", []) if row["version"] not in labels] + results
    report["startup"] = rows
    json_file.write_text(json.dumps(report, indent=2) + "\n")
    lines = [SECTION_TITLE, "",
             "Command: `.venv-bench/bin/python benchmarks/startup.py` (the real `vitcli "
             "pretrain`, 2 threads; first step = launch to its first metrics line).", "",
             "| run | vitcli | first step after launch (s) | as the run reports it (s) "
             "| the step call itself (s) | other load (cores) |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['run']} | {row['version']} | failed: {row['error']} | | | |")
            continue
        lines.append(f"| {row['run']} | {row['version']} | {row['first_step_seconds_measured']} "
                     f"| {row['first_step_seconds_reported'] or ''} "
                     f"| {row['first_step_call_seconds_reported'] or ''} "
                     f"| {row['foreign_load_cores']} |")
    text = markdown_file.read_text() if markdown_file.exists() else ""
    before, _, after = text.partition(SECTION_TITLE)
    rest = after.split("\n## ", 1)[1] if "\n## " in after else ""
    text = before.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    if rest:
        text += "\n## " + rest
    markdown_file.write_text(text.lstrip("\n"))


if __name__ == "__main__":
    main()
