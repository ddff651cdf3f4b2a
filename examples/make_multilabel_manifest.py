"""Write a multi-label CSV manifest for the bundled Fashion-MNIST folders.

Each image gets two labels: its class and its super-class,

    footwear:  sandal, sneaker, ankle_boot
    clothing:  t-shirt_top, trouser, pullover, dress, coat, shirt
    accessory: bag

so the manifest has 13 classes and every row two of them. The `split` column keeps the
folders' train/test split (vitcli holds validation out of train). Paths are relative to the
data folder, where the manifest is written:

    file,labels,split
    train/ankle_boot/00000.png,ankle_boot;footwear,train

Usage:
    python examples/make_multilabel_manifest.py    # -> examples/data/fashion-mnist/multilabel.csv
    python examples/make_multilabel_manifest.py --data DIR --out DIR/labels.csv

    vitcli finetune --model vit-mu7 --from-scratch --res 28 \
        --data examples/data/fashion-mnist/multilabel.csv ...
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

SUPER_CLASSES = {
    "footwear": ("sandal", "sneaker", "ankle_boot"),
    "clothing": ("t-shirt_top", "trouser", "pullover", "dress", "coat", "shirt"),
    "accessory": ("bag",),
}
SUPER_CLASS_OF = {name: group for group, names in SUPER_CLASSES.items() for name in names}
SPLITS = ("train", "test")


def manifest_rows(data: Path) -> list[tuple[str, str, str]]:
    """(file relative to `data`, "class;super-class", split) for every PNG, sorted by path."""
    rows = []
    for split in SPLITS:
        for folder in sorted((data / split).iterdir()):
            if not folder.is_dir():
                continue
            if folder.name not in SUPER_CLASS_OF:
                sys.exit(f"error: {folder} is not a Fashion-MNIST class folder")
            labels = f"{folder.name};{SUPER_CLASS_OF[folder.name]}"
            rows += [(image.relative_to(data).as_posix(), labels, split)
                     for image in sorted(folder.glob("*.png"))]
    return rows


def write_manifest(rows: list[tuple[str, str, str]], out: Path) -> None:
    """Writes the CSV next to its final name, then renames it into place."""
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["file", "labels", "split"])
            writer.writerows(rows)
        os.replace(temporary, out)
    except BaseException:
        os.unlink(temporary)
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("examples/data/fashion-mnist"),
                        help="the Fashion-MNIST folder with train/ and test/")
    parser.add_argument("--out", type=Path, default=None,
                        help="the manifest to write (default: DATA/multilabel.csv); it must "
                             "lie in DATA, as the paths are relative to its folder")
    arguments = parser.parse_args(argv)
    out = arguments.out or arguments.data / "multilabel.csv"
    if out.resolve().parent != arguments.data.resolve():
        sys.exit(f"error: write the manifest into {arguments.data} (its paths are relative "
                 "to the manifest's folder)")
    rows = manifest_rows(arguments.data)
    write_manifest(rows, out)
    counts = {split: sum(row[2] == split for row in rows) for split in SPLITS}
    print(f"wrote {out}: {len(rows)} images ({counts['train']} train, {counts['test']} test), "
          f"{len(SUPER_CLASS_OF) + len(SUPER_CLASSES)} classes")


if __name__ == "__main__":
    main()
