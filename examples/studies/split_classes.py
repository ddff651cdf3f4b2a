"""Split Fashion-MNIST's classes for honest transfer: pre-train on five, transfer to the others.

From an image folder made by `examples/make_fashion_mnist.py` (DIR/{train,test}/<class>/),
build symbolic links (no image is copied) to

    OUT/pretrain-<N>/train/<class>/   N training images of the five pre-training classes
    OUT/pretrain-<N>/val/<class>/     validation: the pre-training classes' first test images
    OUT/transfer/train/<class>/       the transfer classes' first training images
    OUT/transfer/val/<class>/         the next ones (fine-tuning's validation)
    OUT/transfer/test/<class>/        all their test images

Pre-training classes (the even labels): t-shirt_top, pullover, coat, shirt, bag: the upper
body garments, the most confusable group of the data set, and bags. Transfer classes (the
odd labels): trouser, dress, sandal, sneaker, ankle_boot: other garment shapes and all the
footwear, which the pre-trained model has never been asked to tell apart.

Every subset is class-balanced and deterministic: the first n images of each class in file
order (Fashion-MNIST is stored shuffled, so this is a fair sample), and each smaller
pre-training set is contained in the larger ones. A full class (`None`) links the class
folder itself. The folder is built in a temporary place and renamed, and reused when its
settings (stored in OUT/split.json) are unchanged.

    python examples/studies/split_classes.py --data data/fashion-mnist-full --out runs/studies/data
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

PRETRAIN_CLASSES = ("t-shirt_top", "pullover", "coat", "shirt", "bag")  # labels 0, 2, 4, 6, 8
TRANSFER_CLASSES = ("trouser", "dress", "sandal", "sneaker", "ankle_boot")  # labels 1, 3, ...


@dataclass(frozen=True)
class SplitSizes:
    """Images per class in each part (None: all of them)."""

    pretrain: tuple[int | None, ...] = (200, 1000, None)  # 1k, 5k and all 30k images
    pretrain_val: int = 100  # of the pre-training classes' test images
    transfer_train: int = 200  # 1,000 images in all, as VTAB-1k
    transfer_val: int = 50
    transfer_test: int | None = None  # all 1,000 per class


TINY_SIZES = SplitSizes(pretrain=(10, None), pretrain_val=5, transfer_train=30,
                        transfer_val=5, transfer_test=10)


def pretrain_name(per_class: int | None) -> str:
    """The folder of a pre-training set: pretrain-1000 (5 x 200 images) or pretrain-all."""
    return "pretrain-all" if per_class is None else f"pretrain-{per_class * len(PRETRAIN_CLASSES)}"


def _link(source: Path, target: Path, first: int | None, skip: int = 0) -> int:
    """Link the images `skip`..`skip + first` of `source` (a class folder, file order) into
    `target`; all of them as one folder link when `first` is None. Returns the count."""
    files = sorted(path.name for path in source.iterdir() if not path.name.startswith("."))
    if first is None and skip == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source.resolve(), target_is_directory=True)
        return len(files)
    chosen = files[skip:] if first is None else files[skip:skip + first]
    if first is not None and len(chosen) < first:
        raise SystemExit(f"error: {source} has {len(files)} images, fewer than the "
                         f"{skip + first} this split needs")
    target.mkdir(parents=True)
    for name in chosen:
        (target / name).symlink_to((source / name).resolve())
    return len(chosen)


def _build(data: Path, staging: Path, sizes: SplitSizes) -> dict:
    counts = {}
    for per_class in sizes.pretrain:
        name = pretrain_name(per_class)
        counts[name] = {
            "train": sum(_link(data / "train" / c, staging / name / "train" / c, per_class)
                         for c in PRETRAIN_CLASSES),
            "val": sum(_link(data / "test" / c, staging / name / "val" / c, sizes.pretrain_val)
                       for c in PRETRAIN_CLASSES)}
    transfer = staging / "transfer"
    counts["transfer"] = {
        "train": sum(_link(data / "train" / c, transfer / "train" / c, sizes.transfer_train)
                     for c in TRANSFER_CLASSES),
        "val": sum(_link(data / "train" / c, transfer / "val" / c, sizes.transfer_val,
                         skip=sizes.transfer_train) for c in TRANSFER_CLASSES),
        "test": sum(_link(data / "test" / c, transfer / "test" / c, sizes.transfer_test)
                    for c in TRANSFER_CLASSES)}
    return counts


def build_split(data: Path, out: Path, sizes: SplitSizes = SplitSizes()) -> dict:
    """Build (or reuse) the split folders; returns {folder: {part: image count}}."""
    data, out = Path(data).resolve(), Path(out)
    settings = {"data": str(data), "sizes": asdict(sizes)}
    record = out / "split.json"
    if record.is_file():
        stored = json.loads(record.read_text())
        if stored["settings"] == json.loads(json.dumps(settings)):
            return stored["counts"]
    for part in ("train", "test"):
        if not (data / part).is_dir():
            raise SystemExit(f"error: {data / part} is missing; make the data with "
                             "`python examples/make_fashion_mnist.py --full --out "
                             "data/fashion-mnist-full`")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        counts = _build(data, staging, sizes)
        (staging / "split.json").write_text(json.dumps({"settings": settings, "counts": counts},
                                                       indent=1))
        staging.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist-full"))
    parser.add_argument("--out", type=Path, default=Path("runs/studies/data"))
    parser.add_argument("--tiny", action="store_true", help="a few images per class (tests)")
    args = parser.parse_args(argv)
    counts = build_split(args.data, args.out, TINY_SIZES if args.tiny else SplitSizes())
    for name, parts in counts.items():
        print(f"{args.out / name}: " + ", ".join(f"{k} {v:,}" for k, v in parts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
