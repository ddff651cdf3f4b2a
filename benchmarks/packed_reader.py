"""Packed data vs the image folder it was packed from: the time to index and to pack a folder
of JPEGs, and images/s of vitcli's training pipeline reading either.

1. Writes `--files` JPEGs (256x256, quality 90, `--classes` class folders) into `--dir` (a
   temporary folder unless given; an existing folder of the same size is reused). The images
   are smooth random colour fields plus pixel noise: about the size of a photo's JPEG at this
   resolution (pure noise would be 4x larger than any photo).
2. index: `open_source` of the folder with an empty cache (every file's header read and the
   file decoded once, `vitcli.data.index`).
3. pack: `vitcli.data.pack.pack_folder` (the cached index, then the shards, `--workers` threads).
4. images/s of `vitcli.data.pipeline.train_dataset` (inception crop to `--res` px, flip, batch
   `--batch`; the finetune defaults, no cache, shuffle buffer 10,000) over the folder and over
   the packed data, each in a fresh process (its own peak RSS), `--warmup` batches untimed,
   then `--batches` timed. The files were just written, so both read from the page cache.

The machine's other load (cores busy in other processes) is printed next to each timing.

    .venv/bin/python benchmarks/packed_reader.py                    # 2,000 files, ~2 min
    .venv/bin/python benchmarks/packed_reader.py --files 100000 --dir /data/jpegs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from machine import cpu_seconds, foreign_load  # noqa: E402

SIDE = 256


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_jpegs(root: Path, files: int, classes: int) -> float:
    """`files` JPEGs over `classes` folders; returns the seconds it took (0 if reused)."""
    import numpy as np
    from PIL import Image

    marker = root / f".complete-{files}-{classes}"
    if marker.exists():
        return 0.0
    if root.exists():
        shutil.rmtree(root)
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for index in range(files):
        folder = root / f"class{index % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((SIDE, SIDE), Image.BICUBIC), dtype=np.int16)
        noise = rng.integers(-12, 13, (SIDE, SIDE, 3), dtype=np.int16)
        pixels = np.clip(field + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:07d}.jpg", quality=90)
    marker.touch()
    return time.perf_counter() - started


def timed(function):
    """(result, seconds, other processes' load in cores) of `function()`."""
    before, started = cpu_seconds(), time.perf_counter()
    result = function()
    seconds = time.perf_counter() - started
    return result, seconds, foreign_load(before, cpu_seconds(), seconds)


def read(kind: str, data: str, args) -> dict:
    """images/s of the training pipeline over `data` (run in a process of its own)."""
    from vitcli.config import DataConfig
    from vitcli.data.pipeline import train_dataset
    from vitcli.data.sources import open_source

    config = DataConfig(source=data, train_crop="inception", val_split="0")
    split = open_source(config).split("train")
    dataset = train_dataset(split, config, image_size=args.res, batch_size=args.batch,
                            num_classes=args.classes, seed=0)
    batches = iter(dataset)
    for _ in range(args.warmup):
        next(batches)

    def run():
        for _ in range(args.batches):
            next(batches)

    _, seconds, load = timed(run)
    return {"reader": kind, "images_per_s": args.batches * args.batch / seconds,
            "seconds": seconds, "other_load": load, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dir", type=Path, help="where the JPEGs (and the packed data) go")
    parser.add_argument("--shards", type=int, help="default: pack's own (128 MiB each)")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--res", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--read", choices=["folder", "packed"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:  # a child process: one reader's figures as JSON
        print(json.dumps(read(args.read, args.data, args)))
        return
    base = args.dir or Path(tempfile.mkdtemp(prefix="vitcli-packed-bench-"))
    folder, packed = base / "jpegs", base / "packed"
    os.environ["VITCLI_HOME"] = tempfile.mkdtemp(prefix="vitcli-home-")  # a cold index
    generated = write_jpegs(folder, args.files, args.classes)
    size = sum(path.stat().st_size for path in folder.rglob("*.jpg"))
    print(f"{args.files:,} JPEGs, {size / args.files / 1024:.1f} KiB each on average "
          f"(written in {generated:.1f} s)", flush=True)

    from vitcli.config import DataConfig
    from vitcli.data.pack import pack_folder
    from vitcli.data.sources import open_source

    config = DataConfig(source=str(folder), val_split="0")
    _, index_s, index_load = timed(lambda: open_source(config))
    shutil.rmtree(packed, ignore_errors=True)
    result, pack_s, pack_load = timed(lambda: pack_folder(
        str(folder), str(packed), config, shards=args.shards, workers=args.workers))
    shards = sum(1 for path in packed.glob("*.tfrecord"))
    rows = [("index (cold: decode every file)", f"{index_s:.1f} s",
             f"{args.files / index_s:,.0f} files/s", index_load),
            (f"pack ({shards} shards, warm index)", f"{pack_s:.1f} s",
             f"{args.files / pack_s:,.0f} files/s", pack_load)]
    print(f"index + pack peak RSS {peak_rss_mib():,.0f} MiB; wrote {result.written} shards",
          flush=True)
    for kind, data in (("folder", folder), ("packed", packed)):
        child = subprocess.run([sys.executable, __file__, "--read", kind, "--data", str(data),
                                *(f"--{name}={getattr(args, name)}" for name in
                                  ("classes", "res", "batch", "warmup", "batches"))],
                               capture_output=True, text=True, check=True)
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append((f"train pipeline, {kind} ({args.res} px, batch {args.batch})",
                     f"{figures['seconds']:.1f} s", f"{figures['images_per_s']:,.0f} images/s "
                     f"(peak RSS {figures['peak_rss_mib']:,.0f} MiB)", figures["other_load"]))
    print("\n| step | time | rate | other load (cores) |\n|---|---|---|---|")
    for name, seconds, rate, load in rows:
        print(f"| {name} | {seconds} | {rate} | {load:.2f} |")
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
