"""CSV manifest sources (`--data PATH.csv`): a list of images with any number of labels each.

    file,labels,split
    beach/001.jpg,sea;sky;people,train
    beach/002.jpg,sea;sky,test

`file` is a path relative to the manifest's folder ("/"-separated, never leading outside it),
`labels` one or more class names separated by `;`, and the optional `split` column says train,
val (or validation) or test. Class names are the sorted union of every row's labels; a row's
label is a multi-hot vector over them (`DataSource.multi_label`). A manifest is always
multi-label data, even when every row happens to have one label.

Every listed file is judged by its content with the check image folders get (the cached index
of `vitcli.data.index`, over the listed files only): unusable images are left out and listed
in `DataSource.skipped` (an error with `config.strict`). A file that does not exist, a header
that is not `file,labels[,split]`, a row without labels, a path outside the folder, a file
listed twice or an unknown split is an error, in one line naming the manifest's line.

Without val rows, validation is held out of train by the image folders' rule (round(n *
val_split) of each group of n >= 2, chosen by salted path hash), grouping each example by its
rarest label; without a split column every row is train, and `evaluate` also gets `all`.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
from collections import Counter
from pathlib import Path

import numpy as np

from vitcli.config import DataConfig
from vitcli.data.folder_source import SPLIT_FOLDERS, fits_one_line, hold_out, holdout_fraction
from vitcli.data.index import Progress, index_folder
from vitcli.data.sources import DataSource, Split
from vitcli.errors import VitcliError
from vitcli.storage import location

COLUMNS = ("file", "labels", "split")
REQUIRED_COLUMNS = ("file", "labels")
LABEL_SEPARATOR = ";"
MANIFEST_LAYOUT = "a CSV manifest"
FORMAT_HINT = ("a manifest is a CSV file with the header file,labels (and optionally split); "
               "labels separated by ';', files relative to the manifest's folder")

Row = tuple[str, tuple[str, ...], str]  # (relative path, labels, split or "")


def open_manifest(source: str, config: DataConfig, progress: Progress | None = None, *,
                  with_all: bool = False) -> DataSource:
    """Reads and checks the manifest, checks its images and builds its splits (`with_all`:
    also `all`, every usable row of a manifest without a split column)."""
    manifest = _existing_manifest(source)
    rows, has_splits = read_manifest(manifest)
    class_names = sorted({label for _, labels, _ in rows for label in labels})
    index = index_folder(manifest.parent, progress, files=[path for path, _, _ in rows])
    # A file removed since the manifest was read is not in the index: unusable as well.
    errors = {path: "does not exist" for path, _, _ in rows}
    errors.update({entry.path: entry.error for entry in index.entries})
    shown = os.path.dirname(source)
    skipped = [(os.path.join(shown, path), errors[path]) for path, _, _ in rows if errors[path]]
    if config.strict and skipped:
        path, reason = skipped[0]
        raise VitcliError(f"{len(skipped)} unusable file(s) in {source}, e.g. {path}: {reason}",
                          hint="fix or remove them, or leave out --strict to skip them")
    usable = [row for row in rows if errors[row[0]] is None]
    by_split = {name: [row for row in usable if (row[2] or "train") == name]
                for name in ("train", "val", "test")}
    if with_all and not has_splits:
        by_split["all"] = usable
    if not by_split["val"]:
        by_split["train"], by_split["val"] = _hold_out_rows(by_split["train"],
                                                            holdout_fraction(config))
    splits = {name: _manifest_split(name, index.root, by_split[name], class_names)
              for name in ("all", "train", "val", "test") if by_split.get(name)}
    return DataSource(f"manifest {source}", class_names, splits, skipped,
                      layout=MANIFEST_LAYOUT, multi_label=True)


def _existing_manifest(source: str) -> Path:
    path = location(source)
    if not path.exists():
        raise VitcliError(f"no such manifest: {source}", hint=FORMAT_HINT)
    if not path.is_file():
        raise VitcliError(f"manifest {source} is not a file", hint=FORMAT_HINT)
    return path


def read_manifest(manifest: Path) -> tuple[list[Row], bool]:
    """(the checked rows, whether there is a split column); the first problem is one line."""
    try:
        text = manifest.read_bytes().decode("utf-8-sig")
        with io.StringIO(text, newline="") as handle:
            reader = csv.reader(handle)
            # line_num: the line a record ends on (a quoted field may span lines)
            numbered = [(reader.line_num, line) for line in reader
                        if any(field.strip() for field in line)]
    except UnicodeDecodeError:
        raise VitcliError(f"manifest {manifest} is not UTF-8 text", hint=FORMAT_HINT) from None
    except csv.Error as error:
        raise VitcliError(f"manifest {manifest} is not valid CSV: {error}",
                          hint=FORMAT_HINT) from None
    except OSError as error:
        raise VitcliError(f"cannot read manifest {manifest}: {error.strerror or error}") from None
    if not numbered:
        raise VitcliError(f"manifest {manifest} is empty", hint=FORMAT_HINT)
    columns = _columns(manifest, numbered[0][1])
    rows, seen = [], {}
    for number, line in numbered[1:]:
        row = _row(manifest, number, line, columns)
        if row[0] in seen:
            raise VitcliError(f"{manifest} line {number}: {row[0]} is listed twice (first on "
                              f"line {seen[row[0]]})", hint="list every file once")
        seen[row[0]] = number
        rows.append(row)
    if not rows:
        raise VitcliError(f"manifest {manifest} lists no files", hint=FORMAT_HINT)
    _check_files_exist(manifest, rows, seen)
    return rows, "split" in columns


def _columns(manifest: Path, header: list[str]) -> dict[str, int]:
    """Column name -> position, from the header row."""
    names = [name.strip() for name in header]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise VitcliError(f"manifest {manifest} has an unknown column {unknown[0]!r} in its "
                          f"header {','.join(names)!r}", hint=FORMAT_HINT)
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise VitcliError(f"manifest {manifest} has no {name!r} column in its header "
                              f"{','.join(names)!r}", hint=FORMAT_HINT)
    if len(set(names)) != len(names):
        raise VitcliError(f"manifest {manifest} names a column twice in its header "
                          f"{','.join(names)!r}", hint=FORMAT_HINT)
    return {name: position for position, name in enumerate(names)}


def _row(manifest: Path, number: int, line: list[str], columns: dict[str, int]) -> Row:
    """One line as (relative path, labels, split), or a one-line error saying what is wrong."""
    where = f"{manifest} line {number}"
    if len(line) != len(columns):
        raise VitcliError(f"{where} has {len(line)} fields, the header {len(columns)}",
                          hint="quote a field that holds a comma")
    path = _relative_path(where, line[columns["file"]].strip())
    text = line[columns["labels"]].strip()
    labels = tuple(sorted({label.strip() for label in text.split(LABEL_SEPARATOR)}))
    if not text:
        raise VitcliError(f"{where} ({path}) has no labels",
                          hint="give each file at least one label")
    if not all(labels):
        raise VitcliError(f"{where} ({path}) has an empty label in {text!r}",
                          hint=f"separate labels by a single '{LABEL_SEPARATOR}'")
    bad = next((label for label in labels if not fits_one_line(label)), None)
    if bad is not None:
        raise VitcliError(f"{where} has a label with a line break or control character "
                          f"({bad!r}), which labels.txt cannot hold")
    split = line[columns["split"]].strip() if "split" in columns else ""
    if "split" in columns and split not in SPLIT_FOLDERS:
        raise VitcliError(f"{where} ({path}) has the unknown split {split!r}",
                          hint="use train, val (or validation) or test")
    return path, labels, SPLIT_FOLDERS.get(split, "")


def _relative_path(where: str, text: str) -> str:
    """The file as a normalised "/"-separated path inside the manifest's folder."""
    if not text:
        raise VitcliError(f"{where} has no file", hint=FORMAT_HINT)
    path = posixpath.normpath(text)
    if posixpath.isabs(path) or os.path.isabs(text) or path == ".." or \
            path.startswith("../"):
        raise VitcliError(f"{where}: {text} is outside the manifest's folder",
                          hint="give paths relative to the folder that holds the manifest, "
                               "inside it")
    return path


def _check_files_exist(manifest: Path, rows: list[Row], lines: dict[str, int]) -> None:
    """A listed file that is missing (or no regular file) is an error: the manifest is wrong."""
    folder = manifest.parent
    for path, _, _ in rows:
        if not (folder / path).is_file():
            what = "is not a file" if (folder / path).exists() else "does not exist"
            raise VitcliError(f"{manifest} line {lines[path]}: {folder / path} {what}",
                              hint="fix the path (relative to the manifest's folder) or remove "
                                   "the line")


def _hold_out_rows(rows: list[Row], fraction: float) -> tuple[list[Row], list[Row]]:
    """(train, val): the image folders' hold-out, each row grouped by its rarest label
    (ties: the first in class order), so every label keeps its share in both."""
    counts = Counter(label for _, labels, _ in rows for label in labels)
    groups: dict[str, list[str]] = {}
    for path, labels, _ in rows:
        rarest = min(labels, key=lambda label: (counts[label], label))
        groups.setdefault(rarest, []).append(path)
    _, held_out = hold_out([groups[label] for label in sorted(groups)], fraction)
    chosen = {path for paths in held_out for path in paths}
    return ([row for row in rows if row[0] not in chosen],
            [row for row in rows if row[0] in chosen])


def _manifest_split(name: str, root: Path, rows: list[Row], class_names: list[str]) -> Split:
    """A Split of absolute paths in manifest order, labels as multi-hot uint8 rows."""
    position = {label: index for index, label in enumerate(class_names)}
    labels = np.zeros((len(rows), len(class_names)), np.uint8)
    for example, (_, names, _) in enumerate(rows):
        labels[example, [position[label] for label in names]] = 1
    files = [str(root / path) for path, _, _ in rows]
    return Split(name, len(files), files=files, labels=labels)
