"""Write-then-rename: an artefact is built at a temporary path beside its destination and
moved into place only once it has been verified, so a failed or interrupted export never
leaves a half-written artefact behind."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _missing_folders(path: Path) -> list[Path]:
    """The ancestors of `path` that do not exist yet, deepest first."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def remove_path(path: Path) -> None:
    """Removes a file or a folder tree, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def staged(destination: Path) -> Iterator[Path]:
    """Yields a temporary path beside `destination` (same suffix, as converters check it)
    and renames it to `destination` when the block succeeds; on any failure, Ctrl-C
    included, the temporary path and the folders created for it are removed."""
    created = _missing_folders(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot and a non-integer name: TF Serving ignores it while it is being written.
    temporary = destination.parent / (
        f".{destination.stem}.{secrets.token_hex(4)}.partial{destination.suffix}")
    succeeded = False
    try:
        yield temporary
        os.replace(temporary, destination)
        succeeded = True
    finally:
        remove_path(temporary)
        if not succeeded:
            for folder in created:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
