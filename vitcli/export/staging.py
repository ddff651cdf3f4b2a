"""Write-then-rename under a lock: the folder an export goes into is locked while the export
is written, the artefact is built at a hidden temporary path beside its destination and
moved into place only once it has been verified, so a failed or interrupted export (Ctrl-C,
or SIGTERM under `vitcli.files.terminate_as_interrupt`) never leaves a half-written
artefact or the folders made for it behind."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from vitcli.errors import VitcliError
from vitcli.files import DirectoryLock, local_temporary, replacing, without_interruption
from vitcli.storage import is_url

PARTIAL = ".partial"  # in every temporary's name, so tests and people can spot one


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            break
        missing.append(path)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Removes those of `folders` (deepest first) that are empty; another export may have
    put something into one meanwhile, which then stays."""
    for folder in folders:
        with suppress(OSError):
            folder.rmdir()


def _check_creatable(folder: Path) -> None:
    """A one-line refusal when `folder` is, or would be below, something that is not a
    folder (`--out notes.txt/model.onnx`)."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if existing == folder and not existing.is_dir():
        raise VitcliError(f"cannot write into {folder}: it is a file, not a folder")
    if not existing.is_dir():
        raise VitcliError(f"cannot create {folder}: {existing} is a file, not a folder")


@contextmanager
def locked_folder(folder: Path, what: str = "export folder") -> Iterator[None]:
    """Creates `folder` if needed and holds its `DirectoryLock` for the block (a second
    export into it is refused in one line naming this one); if the block fails, the
    folders created here are removed again."""
    if is_url(folder):  # folders appear as objects are written; there are no locks
        yield
        return
    _check_creatable(folder)
    created = _missing_folders(folder)
    succeeded = False
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock = DirectoryLock(folder, what=what).acquire()
        except OSError as error:  # read-only, /proc, no permission: one line, not a traceback
            raise VitcliError(f"cannot write to {folder}: {error.strerror or error}") from None
        try:
            yield
            succeeded = True
        finally:
            lock.release()  # first: the lock file is in the folder that may be removed
    finally:
        if not succeeded:
            without_interruption(lambda: _remove_empty(created))


@contextmanager
def staged(destination: Path) -> Iterator[Path]:
    """Yields a temporary path beside `destination` (same suffix, as converters check it)
    and renames it to `destination` when the block succeeds (`vitcli.files.replacing`); on
    any failure, Ctrl-C and SIGTERM included, the temporary path and the folders created for
    it are removed. For a URL `destination` the temporary is local, and is published to the
    object store once complete (`vitcli.files`)."""
    if is_url(destination):
        name = f"{destination.stem}{PARTIAL}{destination.suffix}"
        with local_temporary(name) as temporary, replacing(destination, temporary):
            yield temporary
        return
    created = _missing_folders(destination.parent)
    # A leading dot and a non-integer name: TF Serving ignores it while it is being written.
    temporary = destination.parent / (
        f".{destination.stem}.{secrets.token_hex(4)}{PARTIAL}{destination.suffix}")
    written = succeeded = False
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with replacing(destination, temporary):
            yield temporary
            written = True
        succeeded = True
    except OSError as error:
        if not written:
            raise
        raise VitcliError(f"cannot move the export into place at {destination}: "
                          f"{error.strerror or error}") from None
    finally:
        if not succeeded:
            without_interruption(lambda: _remove_empty(created))
