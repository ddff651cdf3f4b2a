"""Export Fashion-MNIST from Debian's IDX files into an image-folder data set.

Reads the four IDX files of Debian's ``dataset-fashion-mnist`` package and writes

    OUT/train/<class>/<index>.png
    OUT/test/<class>/<index>.png
    OUT/NOTICE        (the MIT licence of Fashion-MNIST, which must travel with the images)
    OUT/README.md     (what the folder is and how it was made)

Each PNG is a grayscale 28x28 image; <index> is its zero-padded position in the IDX file,
so every image can be traced back to the original data. Class folders use the official
names made safe for file systems ("T-shirt/top" -> "t-shirt_top", "Ankle boot" ->
"ankle_boot").

Selection is class-balanced and deterministic: the first N images of each class in file
order (Fashion-MNIST is stored shuffled, so this is a fair sample and needs no seed).

Usage:
    python examples/make_fashion_mnist.py                        # the bundled subset
    python examples/make_fashion_mnist.py --out data/fmnist --train-per-class 500
    python examples/make_fashion_mnist.py --full --out ~/fashion-mnist   # all 70,000

The output is written to a temporary folder next to OUT and renamed into place, so an
interrupted run never leaves a half-written data set; an existing OUT is replaced only
with --force.

Needs: ``apt-get install dataset-fashion-mnist``, numpy and Pillow.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

DEBIAN_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "fashion-mnist"
DEFAULT_TRAIN_PER_CLASS = 300
DEFAULT_TEST_PER_CLASS = 100

# Official label order (label i of the IDX files is CLASS_NAMES[i]).
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# IDX files prefixed "train" hold the training split, "t10k" the test split.
SPLIT_FILE_PREFIXES = {"train": "train", "test": "t10k"}

# Third byte of the IDX magic number -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Below this many images a process pool costs more to start than it saves.
PARALLEL_THRESHOLD = 4000

LICENCE_NOTICE = """\
The images in this folder are a subset of Fashion-MNIST
(https://github.com/zalandoresearch/fashion-mnist), converted to PNG from the
IDX files of Debian's dataset-fashion-mnist package. They are distributed under
the licence of Fashion-MNIST, reproduced below.

The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


class ExportError(Exception):
    """A problem reported to the user as one line, without a traceback."""


def folder_name(class_name: str) -> str:
    """Make an official class name safe as a folder name on every file system."""
    return class_name.lower().replace("/", "_").replace(" ", "_")


CLASS_FOLDERS = tuple(folder_name(name) for name in CLASS_NAMES)


# ----------------------------------------------------------------------------- IDX reading


def find_idx_file(source: Path, stem: str) -> Path:
    """Return the gzipped or plain IDX file called ``stem`` in ``source``."""
    for candidate in (source / f"{stem}.gz", source / stem):
        if candidate.is_file():
            return candidate
    raise ExportError(
        f"Fashion-MNIST not found: {source / stem}.gz is missing; install it with "
        "`sudo apt-get install dataset-fashion-mnist` or pass --source DIR"
    )


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file: 2 zero bytes, a dtype code, a dimension count, big-endian sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        raw = stream.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ExportError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype = IDX_DTYPES[raw[2]]
    dimension_count = raw[3]
    header_size = 4 + 4 * dimension_count
    shape = tuple(int(size) for size in np.frombuffer(raw, ">u4", dimension_count, offset=4))
    expected_bytes = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected_bytes:
        raise ExportError(
            f"{path} is truncated or corrupt: header says {expected_bytes} bytes, "
            f"file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype, offset=header_size).reshape(shape)


def read_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N, 28, 28], labels uint8 [N]) of one split."""
    prefix = SPLIT_FILE_PREFIXES[split]
    images = read_idx(find_idx_file(source, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_idx_file(source, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ExportError(
            f"{split} split: images {images.shape} and labels {labels.shape} do not match"
        )
    if labels.max() >= len(CLASS_NAMES):
        raise ExportError(f"{split} split: label {labels.max()} is not a Fashion-MNIST class")
    return images, labels


# ----------------------------------------------------------------------------- selection


def select_indices(labels: np.ndarray, per_class: int | None, split: str) -> np.ndarray:
    """The first ``per_class`` indices of every class in file order (all when None)."""
    if per_class is None:
        return np.arange(len(labels))
    chosen = []
    for label, class_name in enumerate(CLASS_NAMES):
        class_indices = np.flatnonzero(labels == label)
        if len(class_indices) < per_class:
            raise ExportError(
                f"{split} split has only {len(class_indices)} images of {class_name!r}, "
                f"fewer than the {per_class} asked for"
            )
        chosen.append(class_indices[:per_class])
    return np.sort(np.concatenate(chosen))


def image_path(root: Path, split: str, label: int, index: int) -> Path:
    """Where image ``index`` of ``split`` goes; the width fits the 60,000-image train file."""
    return root / split / CLASS_FOLDERS[label] / f"{index:05d}.png"


# ----------------------------------------------------------------------------- writing


def write_pngs(pixels: np.ndarray, paths: Sequence[str]) -> int:
    """Write each 28x28 array as an optimised grayscale PNG; return how many were written."""
    for image, path in zip(pixels, paths, strict=True):
        # A 2-D uint8 array becomes an 8-bit grayscale ("L") image.
        Image.fromarray(image).save(path, format="PNG", optimize=True)
    return len(paths)


def write_images(groups: list[tuple[np.ndarray, list[str]]], workers: int) -> None:
    """Encode every (pixels, paths) group, in several processes when there are enough images."""
    image_count = sum(len(paths) for _, paths in groups)
    if workers <= 1 or image_count < PARALLEL_THRESHOLD:
        for pixels, paths in groups:
            write_pngs(pixels, paths)
        return
    # One task per class folder: file creation dominates the cost, and processes that
    # create files in different folders do not wait on each other's directory locks.
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(write_pngs, pixels, paths) for pixels, paths in groups]
        for future in futures:
            future.result()


def export_split(
    source: Path, root: Path, split: str, per_class: int | None, workers: int
) -> dict[str, int]:
    """Write one split under ``root``; return the number of images per class folder."""
    images, labels = read_split(source, split)
    indices = select_indices(labels, per_class, split)
    for class_folder in CLASS_FOLDERS:
        (root / split / class_folder).mkdir(parents=True)
    groups = []
    for label in range(len(CLASS_NAMES)):
        class_indices = indices[labels[indices] == label]
        paths = [str(image_path(root, split, label, index)) for index in class_indices]
        groups.append((images[class_indices], paths))
    write_images(groups, workers)
    counts = np.bincount(labels[indices], minlength=len(CLASS_NAMES))
    return {folder: int(count) for folder, count in zip(CLASS_FOLDERS, counts, strict=True)}


def readme_text(command: str, counts: dict[str, dict[str, int]], per_class: dict) -> str:
    """The README.md that describes an exported folder."""
    if per_class["train"] is None:
        selection = "All images of both splits, in file order."
    else:
        selection = (
            f"A class-balanced subset: the first {per_class['train']} training and the first "
            f"{per_class['test']} test images of each class,\nin the order of the IDX files "
            "(Fashion-MNIST is stored shuffled, so no random seed is involved)."
        )
    rows = "\n".join(
        f"| {label} | {name} | `{folder}` | {counts['train'][folder]} | {counts['test'][folder]} |"
        for label, (name, folder) in enumerate(zip(CLASS_NAMES, CLASS_FOLDERS, strict=True))
    )
    total_train = sum(counts["train"].values())
    total_test = sum(counts["test"].values())
    return f"""\
# Fashion-MNIST as image folders

Grayscale 28x28 PNG images of Zalando article photos in 10 classes, from
[Fashion-MNIST](https://github.com/zalandoresearch/fashion-mnist) (MIT licence, see
`NOTICE`), converted from the IDX files that Debian's `dataset-fashion-mnist` package
installs in `/usr/share/datasets/fashion-mnist/`.

{selection}

Layout: `train/<class>/<index>.png` and `test/<class>/<index>.png`, where `<index>` is the
image's zero-padded position in its IDX file (`train-*` for train, `t10k-*` for test), so
each image can be traced back to the original data and label.

Made with:

    {command}

(add `--force` to replace an existing folder; `--full` exports all 70,000 images).

| label | official name | folder | train | test |
|---:|---|---|---:|---:|
{rows}
| | **total** | | **{total_train}** | **{total_test}** |
"""


def display_command(arguments: argparse.Namespace) -> str:
    """The command line that reproduces this export, without machine-specific noise."""
    parts = ["python examples/make_fashion_mnist.py", "--out", display_path(arguments.out)]
    if arguments.full:
        parts.append("--full")
    else:
        parts += ["--train-per-class", str(arguments.train_per_class)]
        parts += ["--test-per-class", str(arguments.test_per_class)]
    if arguments.source != DEBIAN_SOURCE:
        parts += ["--source", str(arguments.source)]
    return " ".join(parts)


def display_path(path: Path) -> str:
    """A path relative to the repository when it lies inside it, else as given."""
    repository = Path(__file__).resolve().parent.parent
    try:
        return str(path.resolve().relative_to(repository))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- placing


def replace_atomically(finished: Path, out: Path) -> None:
    """Rename ``finished`` to ``out``, moving an existing ``out`` aside first."""
    if not out.exists():
        finished.rename(out)
        return
    previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    out.rename(previous / out.name)
    finished.rename(out)
    shutil.rmtree(previous)


def export(arguments: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Export both splits into a temporary folder and put it in place as OUT."""
    out = arguments.out
    if (out.exists() or out.is_symlink()) and not arguments.force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    # Fail on a missing package before creating anything.
    for prefix in SPLIT_FILE_PREFIXES.values():
        for kind in ("images-idx3", "labels-idx1"):
            find_idx_file(arguments.source, f"{prefix}-{kind}-ubyte")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Same parent as OUT, so the final rename stays on one file system and is atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        per_class = {"train": arguments.train_per_class, "test": arguments.test_per_class}
        counts = {
            split: export_split(
                arguments.source, staging, split, per_class[split], arguments.workers
            )
            for split in ("train", "test")
        }
        (staging / "NOTICE").write_text(LICENCE_NOTICE, encoding="utf-8")
        readme = readme_text(display_command(arguments), counts, per_class)
        (staging / "README.md").write_text(readme, encoding="utf-8")
        # mkdtemp makes the folder private (0700); give it the usual permissions.
        staging.chmod(0o755)
        replace_atomically(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return counts


# ----------------------------------------------------------------------------- command line


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export Fashion-MNIST (Debian's IDX files) as a PNG image-folder data set."
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--train-per-class", type=int, help="training images per class")
    parser.add_argument("--test-per-class", type=int, help="test images per class")
    parser.add_argument("--full", action="store_true", help="all 60,000 + 10,000 images")
    parser.add_argument(
        "--source", type=Path, default=DEBIAN_SOURCE, help="folder holding the IDX files"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="encoding processes"
    )
    arguments = parser.parse_args(argv)
    if arguments.full:
        if arguments.train_per_class is not None or arguments.test_per_class is not None:
            parser.error("--full exports every image; drop --train/--test-per-class")
    else:
        if arguments.train_per_class is None:
            arguments.train_per_class = DEFAULT_TRAIN_PER_CLASS
        if arguments.test_per_class is None:
            arguments.test_per_class = DEFAULT_TEST_PER_CLASS
        if arguments.train_per_class < 1 or arguments.test_per_class < 1:
            parser.error("--train-per-class and --test-per-class must be at least 1")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    # Turn a kill into an exception so that the temporary folder is removed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    try:
        counts = export(arguments)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; {arguments.out} left as it was", file=sys.stderr)
        return 130
    total = sum(sum(split_counts.values()) for split_counts in counts.values())
    elapsed = time.perf_counter() - started
    print(
        f"wrote {sum(counts['train'].values())} train + {sum(counts['test'].values())} test "
        f"= {total} images to {arguments.out} in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
