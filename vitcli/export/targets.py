"""What an export may replace: a previous vitcli export of the same format, or a new
SavedModel version; anything else only with `overwrite` (`vitcli export --overwrite`), and
never the model being exported or its run's checkpoints (`protect`).

A file counts as an export of its format by its content, not its name (each format's
`recognises`: a `.keras` archive of a vitcli model, an `.npz` in the reference layout, a
TFLite flatbuffer, an ONNX model written by tf2onnx, Keras' exporter). A `.keras` or `.npz`
inside a run directory is that run's model or checkpoint, never an export.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

from vitcli.errors import VitcliError
from vitcli.export.formats import get_format
from vitcli.storage import is_url, local_copy, location
from vitcli.train.rundir import CONFIG_FILE

CHECKPOINTS = "checkpoints"  # a run directory's sub-folder, RunDirectory.checkpoints


def run_directory_of(path: Path) -> Path | None:
    """The run directory `path` belongs to (its folder or, for a checkpoint, the folder
    above), recognised by config.yaml beside checkpoints/; None if there is none."""
    for folder in list(path.parents)[:2]:
        if (folder / CONFIG_FILE).is_file() and (folder / CHECKPOINTS).is_dir():
            return folder
    return None


def protected_paths(source: Path) -> dict[Path, str]:
    """What an export of `source` must leave alone, each with what it is: the file itself
    and, when it belongs to a run directory, that run's checkpoints."""
    protected = {source: "the model being exported"}
    run = run_directory_of(source)
    if run is not None:
        protected[run / CHECKPOINTS] = "the source run's checkpoints"
    return protected


def _same_or_inside(path: Path, folder: Path) -> tuple[bool, bool]:
    """(`path` is `folder`, `path` is inside `folder`), following symbolic links."""
    path, folder = path.resolve(), folder.resolve()
    if is_url(path) or is_url(folder):  # object stores have no links
        return path == folder, folder in path.parents
    if path == folder or (path.exists() and folder.exists() and os.path.samefile(path, folder)):
        return True, False
    return False, folder in path.parents


def check_protected(destination: Path, protect: Mapping[Path, str]) -> None:
    """Refuses a destination that is, or is inside, one of the `protect` paths (which map
    to what they are, for the message), even with --overwrite."""
    for path, what in protect.items():
        same, inside = _same_or_inside(destination, location(path))
        if same:
            raise VitcliError(f"will not export to {destination}: it is {what}; choose "
                              f"another --out")
        if inside:
            raise VitcliError(f"will not export to {destination}: it is inside {path}, {what}; "
                              f"choose another --out")


def looks_like_export(fmt: str, path: Path) -> bool:
    """Whether the file at `path` is an artefact of `fmt` as vitcli writes it."""
    recognises = get_format(fmt).recognises
    try:
        with local_copy(path) as local:  # an object store's file is read locally
            return recognises is not None and recognises(local)
    except (OSError, zipfile.BadZipFile):
        return False


def _foreign_entries(base: Path) -> list[str]:
    """What in a SavedModel base folder is neither a version folder nor hidden (TF
    Serving's own rule for what it ignores is the same)."""
    if not base.is_dir():
        return []
    return sorted(entry.name for entry in base.iterdir() if not entry.name.startswith(".")
                  and not (entry.name.isdigit() and entry.is_dir()))


def _check_version_base(fmt: str, base: Path, overwrite: bool) -> None:
    foreign = _foreign_entries(base)
    if foreign and not overwrite:
        title = get_format(fmt).title
        raise VitcliError(f"{base} is not a {title} base folder (it holds {foreign[0]!r}"
                          f"{' and more' if len(foreign) > 1 else ''}); pass --overwrite to "
                          f"add a version folder to it anyway, or choose another --out")


def _check_file(fmt: str, destination: Path, overwrite: bool) -> None:
    if destination.is_dir():
        raise VitcliError(f"{destination} is a folder, not an export; choose another --out")
    if overwrite or not (destination.exists() or destination.is_symlink()):
        return
    run = run_directory_of(destination)
    if run is not None:
        raise VitcliError(f"{destination} belongs to the run in {run}; pass --overwrite to "
                          f"replace it, or choose another --out")
    if not looks_like_export(fmt, destination):
        raise VitcliError(f"{destination} exists and is not a vitcli {fmt} export; pass "
                          f"--overwrite to replace it, or choose another --out")


def check_replaceable(fmt: str, destination: Path, overwrite: bool) -> None:
    """Refuses, in one line, to replace anything but a previous export of `fmt` (for a
    versioned format, SavedModel: to add a version to a folder that is not its base) unless
    `overwrite`; even then only `destination` itself is replaced."""
    if get_format(fmt).versioned:
        _check_version_base(fmt, destination.parent, overwrite)
    else:
        _check_file(fmt, destination, overwrite)
