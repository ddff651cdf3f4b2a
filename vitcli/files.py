"""File helpers shared by every command: atomic writes (files and folders), the cache home,
a full disk as one line, an exclusive directory lock, and SIGTERM taken like Ctrl-C so
interrupted work cleans up.

Every helper takes local paths and URLs (`vitcli.storage`). Locally a write goes to a
temporary beside its destination and is renamed into place (atomic). An object store such as
Cloud Storage has no atomic rename, but an object appears only once its upload is complete:
so a file is written locally, uploaded to a temporary object and copied onto its name (a
reader sees the old file or the whole new one), and a folder (a SavedModel) is written
locally and uploaded file by file with the file a reader opens first (`saved_model.pb`)
last, so a reader that finds that file finds the rest too. Object stores have no locks:
`DirectoryLock` does nothing there (two runs must not share one bucket folder)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import posixpath
import re
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from vitcli.errors import VitcliError
from vitcli.storage import RemotePath, copy_file, files_below, is_url, location, remove_tree

LOCK_FILE = ".vitcli.lock"
# errno values (and their messages, for errors re-raised as text) meaning "the disk is full".
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_DISK_MESSAGES = ("No space left on device", "Disk quota exceeded")
# Uploaded last when a folder is published to an object store: what readers open first.
FINISHING_FILES = ("saved_model.pb",)


def home_dir() -> Path:
    """vitcli's cache root: `$VITCLI_HOME` if set, else `~/.cache/vitcli`."""
    configured = os.environ.get("VITCLI_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "vitcli"


class DiskFullError(VitcliError):
    """A write failed because its file system is full (or over quota)."""

    def __init__(self, path: str | Path, hint: str | None = None):
        super().__init__(f"no space left on device writing {path}",
                         hint=hint or "free some space on that file system and try again")
        self.path = Path(path)


def is_full_disk(error: BaseException) -> bool:
    """Whether `error` (or an error it was raised from) says the disk is full."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in FULL_DISK_ERRNOS:
            return True
        if any(message in str(error) for message in FULL_DISK_MESSAGES):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def reports_full_disk(path: str | Path):
    """Turns a full disk while writing `path` into a DiskFullError (one line, the path)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        if is_full_disk(error):
            raise DiskFullError(path) from error
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sync(path: str | Path) -> None:
    """Flushes `path` to the disk, so that a rename after it never exposes an empty file
    after a power loss (a rename is durable before the data otherwise)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.EISDIR):  # not syncable here
            raise
    finally:
        os.close(descriptor)


def remove_path(path) -> None:
    """Removes a file or a folder tree (on any file system), if there is one."""
    remove_tree(path)


def upload_order(names: list[str]) -> list[str]:
    """Relative file names in the order a folder is uploaded: FINISHING_FILES last."""
    return sorted(names, key=lambda name: posixpath.basename(name) in FINISHING_FILES)


def _upload_folder(local: Path, path: RemotePath) -> None:
    """Copies the files of `local` below `path` in `upload_order`."""
    for name in upload_order(files_below(local)):
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_file(local / name, target)


def _publish(local: Path, path: RemotePath, before_replace=None) -> None:
    """Puts the finished local file or folder `local` at the URL `path` so that no reader
    sees half of it (see the module's docstring); a folder replaces what was there."""
    if local.is_dir():
        if before_replace is not None:
            before_replace()
        remove_tree(path)
        _upload_folder(local, path)
        return
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}{path.suffix}"
    try:
        copy_file(local, temporary)
        if before_replace is not None:
            before_replace()
        temporary.replace(path)
    finally:
        without_interruption(lambda: remove_tree(temporary))


def without_interruption(clean_up) -> None:
    """Runs `clean_up()` to the end even if Ctrl-C or SIGTERM arrive meanwhile (a second
    signal must not leave half a temporary behind), then re-raises the interruption."""
    interrupted = False
    while True:
        try:
            clean_up()
            break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt


def move_into_place(temporary: str | Path, path, before_replace=None) -> None:
    """Renames the finished `temporary` (beside `path`, so the rename is atomic) onto `path`,
    a file's data flushed to the disk first; `before_replace()` runs just before the rename
    (checkpoint rotation), so the window without a `path` is as short as can be. For a URL
    `path`, `temporary` is local and is published (`_publish`)."""
    if is_url(path):
        _publish(Path(temporary), location(path), before_replace)
        return
    if os.path.isfile(temporary):  # a folder (SavedModel) has no data of its own to flush
        _sync(temporary)
    if before_replace is not None:
        before_replace()
    os.replace(temporary, path)


@contextlib.contextmanager
def replacing(path: str | Path, temporary: str | Path, before_replace=None) -> Iterator[Path]:
    """Write-then-rename, for a file or a folder: the block writes `temporary` (a path beside
    `path`); when it succeeds, `temporary` is moved onto `path` (`move_into_place`). Whatever
    is left of it is removed in any case, Ctrl-C and SIGTERM included, so `path` is either as
    it was or complete."""
    temporary = Path(temporary)
    try:
        yield temporary
        move_into_place(temporary, path, before_replace)
    finally:
        without_interruption(lambda: remove_path(temporary))


def write_atomically(path: str | Path, write, before_replace=None) -> Path:
    """Calls `write(temporary_path)` and renames the result into place, so an interrupted
    write never leaves a half-written `path` behind.

    The temporary (`.NAME.<random>.SUFFIX`, same folder, so the rename is atomic) is removed on
    any failure; `before_replace()` runs once the new file is complete, just before the
    rename (checkpoint rotation). A full disk is a DiskFullError naming `path`. A URL `path`
    is written to a local temporary and published (module docstring).
    """
    if is_url(path):
        path = location(path)
        with reports_full_disk(path), local_temporary(path.name) as temporary:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(str(temporary))
            _publish(temporary, path, before_replace)
        return path
    path = Path(path)
    with reports_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix,
                                             dir=path.parent)
        os.close(handle)
        with replacing(path, temporary, before_replace):
            write(temporary)
            # mkstemp creates 0600; give the result the permissions a plain open() would.
            os.chmod(temporary, 0o666 & ~_current_umask())
    return path


@contextlib.contextmanager
def local_temporary(name: str) -> Iterator[Path]:
    """A local path called `name` in a fresh temporary folder, removed with all it holds
    after the block: where a file or folder bound for an object store is written first."""
    folder = tempfile.mkdtemp(prefix="vitcli-")
    try:
        yield Path(folder) / name
    finally:
        without_interruption(lambda: shutil.rmtree(folder, ignore_errors=True))


def is_temporary_of(name: str, file_name: str) -> bool:
    """Whether `file_name` is a temporary `write_atomically` made for a file called `name`
    (mkstemp's eight random characters between), which only a killed process leaves."""
    suffix = re.escape(Path(name).suffix)
    return re.fullmatch(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}{suffix}", file_name) is not None


def _command_line() -> str:
    """This process's command as a user typed it: `vitcli finetune ...` also when it was
    started as `python -m vitcli`."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program == "__main__.py":
        program = Path(sys.argv[0]).parent.name
    return shlex.join([program, *sys.argv[1:]])


def _shortened(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


class DirectoryLock:
    """An exclusive lock on a directory: `.vitcli.lock` in it, flock-ed on an open file
    descriptor, so the kernel releases it when the process dies (even by SIGKILL) and a
    stale file never blocks anyone. The file names the holder (pid, host, command) for the
    one-line refusal the next locker gets."""

    def __init__(self, directory, what: str = "directory"):
        self.directory = location(directory)
        self.path = self.directory / LOCK_FILE
        self.what = what
        self._descriptor: int | None = None

    def acquire(self) -> DirectoryLock:
        if is_url(self.directory):
            return self  # object stores have no locks (module docstring)
        while self._descriptor is None:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(descriptor)
                os.close(descriptor)
                raise VitcliError(f"{self.what} {self.directory} is in use by {holder}",
                                  hint="wait for it to finish, or stop it first") from None
            # The previous holder removes the file on release: if that happened between our
            # open and flock, our lock is on a deleted file that nobody else sees; retry.
            if self._still_linked(descriptor):
                self._descriptor = descriptor
            else:
                os.close(descriptor)
        os.ftruncate(self._descriptor, 0)
        os.write(self._descriptor, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
        }).encode())
        return self

    def _still_linked(self, descriptor: int) -> bool:
        try:
            return os.path.samestat(os.fstat(descriptor), os.stat(self.path))
        except FileNotFoundError:
            return False

    @staticmethod
    def _holder(descriptor: int) -> str:
        try:
            holder = json.loads(os.pread(descriptor, 65536, 0).decode())
            where = "" if holder["host"] == socket.gethostname() else f" on {holder['host']}"
            return f"pid {holder['pid']}{where} ({_shortened(holder['command'])})"
        except (ValueError, KeyError, TypeError):  # the holder has not written it yet
            return "another process"

    def release(self) -> None:
        """Removes the file while still holding it (see `acquire`), then unlocks."""
        if self._descriptor is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        os.close(self._descriptor)  # closing the last descriptor releases the flock
        self._descriptor = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block SIGTERM (`kill`, `docker stop`, a scheduler's pre-emption) raises
    KeyboardInterrupt, so it takes Ctrl-C's path: checkpoint, remove temporaries, exit.

    Signal handlers belong to the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
