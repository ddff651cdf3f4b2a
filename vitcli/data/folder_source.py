"""Image folder sources: `DIR/<class>/...` (a stratified validation split is then held out of
it) or `DIR/{train, val|validation, test}/<class>/...`, opened as a `DataSource`.

Images may sit in nested folders inside a class folder. Class names are the sorted class
folders of the train folder; a name that cannot be one line of labels.txt (a line break or
another control character) is refused. Every file is checked once through the cached index
(`vitcli.data.index`); files TensorFlow cannot decode (or that declare more pixels than the
limit) are left out and listed in `DataSource.skipped`, or are an error with `config.strict`.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections import defaultdict
from pathlib import Path

from vitcli.config import DataConfig
from vitcli.data.index import FolderIndex, IndexEntry, Progress, index_folder
from vitcli.data.sources import DataSource, Split, parse_fraction
from vitcli.errors import VitcliError
from vitcli.storage import location

SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
# The held-out validation files of a class are the ones whose salted path hashes sort first:
# a fixed choice that moves few files when files are added.
HOLDOUT_SALT = b"vitcli-validation-holdout-1"
LAYOUT_HINT = "expected DIR/<class>/<image> or DIR/{train,val,test}/<class>/<image>"
PLAIN_LAYOUT = "a plain class folder"
# Characters that would split a class name over lines of labels.txt (str.splitlines splits
# at every control character of category Cc among others, and at U+2028/U+2029).
_LINE_BREAKING_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def open_folder(source: str, config: DataConfig, progress: Progress | None = None, *,
                with_all: bool = False) -> DataSource:
    """Indexes the folder, works out its layout and builds its splits (`with_all`: also `all`,
    every image of a plain class folder)."""
    root = _existing_folder(source)
    folders = _split_folders(root)
    class_names = _class_names(root, folders)  # layout errors come before the slow index
    index = index_folder(root, progress)
    groups = _group_entries(index, split_layout="" not in folders.values())
    skipped = _skipped(source, folders, class_names, groups)
    if config.strict and skipped:
        path, reason = skipped[0]
        raise VitcliError(f"{len(skipped)} unusable file(s) in {source}, e.g. {path}: {reason}",
                          hint="fix or remove them, or leave out --strict to skip them")
    by_split = {name: _class_files(root, folder, class_names, groups)
                for name, folder in folders.items()}
    plain = folders == {"train": ""}
    if plain and with_all:
        by_split["all"] = by_split["train"]
    if "val" not in by_split and "train" in by_split:
        by_split["train"], held_out = hold_out(by_split["train"], holdout_fraction(config))
        if any(held_out):
            by_split["val"] = held_out
    splits = {name: _folder_split(name, index.root, by_split[name])
              for name in ("all", "train", "val", "test") if name in by_split}
    present = [folders[name] for name in ("train", "val", "test") if name in folders]
    layout = PLAIN_LAYOUT if plain else f"{'/'.join(present)} folders"
    return DataSource(f"image folder {source}", class_names, splits, skipped, layout=layout)


def _existing_folder(source: str) -> Path:
    path = location(source)
    if not path.exists():
        raise VitcliError(f"no such folder: {source}", hint=LAYOUT_HINT)
    if not path.is_dir():
        raise VitcliError(f"{source} is a file, not a folder",
                          hint="give the folder that holds one sub-folder per class")
    return path


def _subfolders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders."""
    return sorted(entry.name for entry in folder.iterdir()
                  if entry.is_dir() and not entry.name.startswith("."))


def _split_folders(root: Path) -> dict[str, str]:
    """Split name -> folder relative to the root; {"train": ""} for a folder of class folders."""
    folders = _subfolders(root)
    if not folders:
        raise VitcliError(f"no class folders in {root}", hint=LAYOUT_HINT)
    split_like = [name for name in folders if name in SPLIT_FOLDERS]
    if len(split_like) < len(folders):
        if "train" in split_like:
            others = ", ".join(name for name in folders if name not in SPLIT_FOLDERS)
            raise VitcliError(f"{root} mixes split folders with other folders ({others})",
                              hint=LAYOUT_HINT)
        return {"train": ""}
    if "val" in split_like and "validation" in split_like:
        raise VitcliError(f"{root} has both val/ and validation/", hint="keep one of them")
    return {SPLIT_FOLDERS[name]: name for name in split_like}


def _class_names(root: Path, folders: dict[str, str]) -> list[str]:
    """The train folder's class folders; the other splits may lack some but add none."""
    reference = next(name for name in ("train", "val", "test") if name in folders)
    names = {}
    for split, folder in folders.items():
        names[split] = _subfolders(root / folder)
        if not names[split]:
            raise VitcliError(f"no class folders in {root / folder}", hint=LAYOUT_HINT)
        for name in names[split]:
            _check_class_name(root / folder, name)
    for split, classes in names.items():
        extra = sorted(set(classes) - set(names[reference]))
        if extra:
            raise VitcliError(
                f"{root / folders[split]} has class folders that {reference} lacks: "
                f"{', '.join(extra)}", hint=f"every class needs a folder in {reference}/")
    return names[reference]


def fits_one_line(name: str) -> bool:
    """Whether a class name can be one line of labels.txt (no line break or other control
    character)."""
    return not any(unicodedata.category(character) in _LINE_BREAKING_CATEGORIES
                   for character in name)


def _check_class_name(folder: Path, name: str) -> None:
    """Refuses a class folder whose name cannot be one line of labels.txt."""
    if not fits_one_line(name):
        # repr() escapes the offending characters, so the message stays one line.
        raise VitcliError(f"class folder {name!r} in {folder} has a line break or control "
                          "character in its name, which labels.txt cannot hold",
                          hint="rename the folder")


def _group_entries(index: FolderIndex, split_layout: bool) -> dict[tuple[str, str], list]:
    """Index entries by (split folder, class folder); files outside class folders are dropped."""
    groups: dict[tuple[str, str], list[IndexEntry]] = defaultdict(list)
    for entry in index.entries:
        parts = entry.path.split("/")
        if not split_layout:
            groups[("", parts[0])].append(entry)
        elif len(parts) >= 3:
            groups[(parts[0], parts[1])].append(entry)
    return groups


def _skipped(source: str, folders: dict[str, str], class_names: list[str],
             groups: dict[tuple[str, str], list]) -> list[tuple[str, str]]:
    """(path as given, reason) of every unusable file inside a class folder of a split."""
    return [(os.path.join(source, entry.path), entry.error)
            for folder in folders.values() for name in class_names
            for entry in groups.get((folder, name), []) if entry.error]


def _class_files(root: Path, folder: str, class_names: list[str],
                 groups: dict[tuple[str, str], list]) -> list[list[str]]:
    """Usable relative paths per class (in class order); an empty class folder is an error."""
    per_class = []
    for name in class_names:
        entries = groups.get((folder, name), [])
        usable = [entry.path for entry in entries if entry.error is None]
        if not usable and (root / folder / name).is_dir():
            bad = f" ({len(entries)} unusable file(s) skipped)" if entries else ""
            raise VitcliError(f"class folder {root / folder / name} has no images{bad}",
                              hint="add images to it or remove it")
        per_class.append(usable)
    return per_class


def holdout_fraction(config: DataConfig) -> float:
    """config.val_split as the fraction of train to hold out when there is no val/ folder."""
    fraction = parse_fraction(config.val_split.strip() or "0")
    if fraction is None or not 0.0 <= fraction < 1.0:
        raise VitcliError(
            f"val_split '{config.val_split}' is not a fraction in [0, 1)",
            hint="an image folder without a val/ folder holds out a fraction such as 0.1")
    return fraction


def hold_out(per_class: list[list[str]], fraction: float) -> tuple[list, list]:
    """Stratified split: round(n * fraction) files of each class of n >= 2 files (at least one,
    and never all) go to validation; the rest stay in train."""
    train, held_out = [], []
    for paths in per_class:
        count = 0
        if fraction > 0 and len(paths) >= 2:
            count = min(len(paths) - 1, max(1, round(len(paths) * fraction)))
        ranked = sorted(paths, key=lambda path: hashlib.sha256(HOLDOUT_SALT + path.encode())
                        .digest())
        chosen = set(ranked[:count])
        train.append([path for path in paths if path not in chosen])
        held_out.append([path for path in paths if path in chosen])
    return train, held_out


def _folder_split(name: str, root: Path, per_class: list[list[str]]) -> Split:
    """A Split of absolute paths in class order, each class's files in path order."""
    files = [str(root / path) for paths in per_class for path in paths]
    labels = [label for label, paths in enumerate(per_class) for _ in paths]
    return Split(name, len(files), files=files, labels=labels)
