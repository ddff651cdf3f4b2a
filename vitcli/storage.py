"""Paths on any file system TensorFlow can reach: local paths stay `pathlib.Path` (their
behaviour unchanged), a URL (`gs://bucket/x`, `ram://x`, `s3://...` with TensorFlow's I/O
plugin) becomes a `RemotePath` that offers the same small part of the `pathlib` interface
through `tf.io.gfile`.

`location(text)` is the one place a path given by a user or read from a file is turned into
one of the two, so the rest of vitcli writes `path / "config.yaml"`, `path.is_dir()`,
`path.read_text()` whatever the file system. Writing whole files and folders so that no
reader ever sees half of one is `vitcli.files`' job (object stores have no atomic rename).

TensorFlow is imported on first use only: the CLI answers `--help` without it.
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SCHEME_SEPARATOR = "://"
# Web addresses are downloads (vitcli.weights.hub), not file systems.
WEB_SCHEMES = ("http", "https")


def is_url(path) -> bool:
    """Whether `path` names a file system other than the local one (`scheme://...`; not a
    web address)."""
    if isinstance(path, RemotePath):
        return True
    scheme, separator, _ = str(path).partition(SCHEME_SEPARATOR)
    return bool(separator) and scheme.isidentifier() and scheme.lower() not in WEB_SCHEMES


def location(path) -> Path | RemotePath:
    """`path` (text, a Path or a RemotePath) as a Path (local) or a RemotePath (a URL); a local
    path has `~` expanded."""
    if isinstance(path, RemotePath):
        return path
    if is_url(path):
        return RemotePath(str(path))
    return Path(path).expanduser()


def _gfile():
    import tensorflow as tf  # noqa: PLC0415 - slow import, only when a URL is used

    return tf.io.gfile


@contextlib.contextmanager
def os_errors(path) -> Iterator[None]:
    """TensorFlow's file errors as the OSError a local path would raise (FileNotFoundError,
    PermissionError, else OSError with its message), so callers handle both alike."""
    import tensorflow as tf  # noqa: PLC0415

    try:
        yield
    except tf.errors.NotFoundError as error:
        raise FileNotFoundError(errno.ENOENT, _first_line(error.message), str(path)) from None
    except tf.errors.PermissionDeniedError as error:
        raise PermissionError(errno.EACCES, _first_line(error.message), str(path)) from None
    except tf.errors.OpError as error:
        raise OSError(errno.EIO, _first_line(error.message), str(path)) from None


def _first_line(message: str) -> str:
    return (message or "error").splitlines()[0]


@dataclass(frozen=True)
class RemoteStat:
    """The part of `os.stat_result` vitcli reads."""

    st_size: int
    st_mtime: float
    st_mtime_ns: int


class RemotePath:
    """A path on a non-local TensorFlow file system, with pathlib's names for what it does.

    It has no `__fspath__` on purpose: handing one to `open()` or `os` fails at once
    instead of creating a local file named `gs:`."""

    __slots__ = ("_scheme", "_path")

    def __init__(self, url: str):
        scheme, separator, rest = str(url).partition(SCHEME_SEPARATOR)
        if not separator or not scheme:
            raise ValueError(f"not a URL: {url!r}")
        self._scheme = scheme
        # Normalised like a POSIX path ("a//b/" -> "a/b"), keeping the bucket first.
        self._path = posixpath.normpath(rest).lstrip("/") if rest.strip("/") else ""

    # -- pure path arithmetic ------------------------------------------------------------

    def __str__(self) -> str:
        return f"{self._scheme}{SCHEME_SEPARATOR}{self._path}"

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: RemotePath) -> bool:
        return str(self) < str(other)

    def __truediv__(self, other) -> RemotePath:
        other = str(other)
        if is_url(other):
            return RemotePath(other)
        return RemotePath(f"{self}/{other}" if self._path else f"{self}{other}")

    @property
    def _pure(self) -> PurePosixPath:
        return PurePosixPath(self._path or "/")

    @property
    def name(self) -> str:
        return self._pure.name

    @property
    def suffix(self) -> str:
        return self._pure.suffix

    @property
    def stem(self) -> str:
        return self._pure.stem

    @property
    def parts(self) -> tuple[str, ...]:
        return (f"{self._scheme}{SCHEME_SEPARATOR}", *PurePosixPath(self._path).parts)

    @property
    def parent(self) -> RemotePath:
        """The folder above; a root (`gs://bucket`: its first component) is its own parent,
        as `/` is locally."""
        if "/" not in self._path:
            return self
        return RemotePath(f"{self._scheme}{SCHEME_SEPARATOR}{posixpath.dirname(self._path)}")

    @property
    def parents(self) -> list[RemotePath]:
        found, path = [], self
        while path.parent != path:
            path = path.parent
            found.append(path)
        return found

    def with_name(self, name: str) -> RemotePath:
        return self.parent / name

    def with_suffix(self, suffix: str) -> RemotePath:
        return self.parent / (self.stem + suffix)

    def relative_to(self, other) -> PurePosixPath:
        other = location(other)
        prefix = str(other).rstrip("/") + "/"
        if not isinstance(other, RemotePath) or not (str(self) + "/").startswith(prefix):
            raise ValueError(f"{self} is not inside {other}")
        return PurePosixPath(str(self)[len(prefix):] or ".")

    def is_relative_to(self, other) -> bool:
        try:
            self.relative_to(other)
            return True
        except ValueError:
            return False

    def expanduser(self) -> RemotePath:
        return self

    def resolve(self) -> RemotePath:
        return self

    def absolute(self) -> RemotePath:
        return self

    def is_absolute(self) -> bool:
        return True

    # -- the file system -----------------------------------------------------------------

    def exists(self) -> bool:
        with os_errors(self):
            return _gfile().exists(str(self))

    def is_dir(self) -> bool:
        with os_errors(self):
            return _gfile().isdir(str(self))

    def is_file(self) -> bool:
        return self.exists() and not self.is_dir()

    def is_symlink(self) -> bool:
        return False  # object stores have no links

    def iterdir(self) -> Iterator[RemotePath]:
        # GCS lists sub-folders with a trailing "/"; names are the same without it.
        with os_errors(self):
            names = sorted(_gfile().listdir(str(self)))
        for name in names:
            yield self / name.rstrip("/")

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        for found in sorted(_gfile().glob(f"{self}/{pattern}")):
            yield RemotePath(found)

    def walk(self) -> Iterator[tuple[RemotePath, list[str], list[str]]]:
        """Like `Path.walk()` (top-down), names without trailing slashes."""
        for folder, folders, files in _gfile().walk(str(self)):
            yield (RemotePath(folder), [name.rstrip("/") for name in folders],
                   [name.rstrip("/") for name in files])

    def stat(self) -> RemoteStat:
        with os_errors(self):
            status = _gfile().stat(str(self))
        return RemoteStat(st_size=int(status.length), st_mtime=status.mtime_nsec / 1e9,
                          st_mtime_ns=int(status.mtime_nsec))

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        if self.exists():
            if exist_ok and self.is_dir():
                return
            raise FileExistsError(errno.EEXIST, "exists", str(self))
        if not parents and not self.parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such folder", str(self.parent))
        with os_errors(self):
            _gfile().makedirs(str(self))

    def open(self, mode: str = "r", encoding: str | None = None, newline: str | None = None):
        """A `tf.io.gfile.GFile` (text or binary by `mode`; text is UTF-8)."""
        return _gfile().GFile(str(self), mode)

    def read_bytes(self) -> bytes:
        with os_errors(self), self.open("rb") as handle:
            return handle.read()

    def read_text(self, encoding: str | None = None) -> str:
        return self.read_bytes().decode(encoding or "utf-8")

    def write_bytes(self, data: bytes) -> int:
        with os_errors(self), self.open("wb") as handle:
            handle.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str | None = None) -> int:
        return self.write_bytes(text.encode(encoding or "utf-8"))

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        if not self.exists():
            raise FileNotFoundError(errno.ENOENT, "no such file", str(self))
        with os_errors(self):
            _gfile().remove(str(self))

    def rmdir(self) -> None:
        if any(True for _ in self.iterdir()):
            raise OSError(errno.ENOTEMPTY, "folder not empty", str(self))
        with os_errors(self):
            _gfile().rmtree(str(self))

    def replace(self, target) -> RemotePath:
        """Renames a file onto `target` (an object store copies it: the target appears whole
        or not at all, but not at the same instant the source goes)."""
        target = location(target)
        with os_errors(self):
            _gfile().rename(str(self), str(target), overwrite=True)
        return target

    rename = replace


def remove_tree(path) -> None:
    """Removes a file or a folder tree at `path`, on any file system, if there is one."""
    path = location(path)
    if isinstance(path, RemotePath):
        if path.is_dir():
            _gfile().rmtree(str(path))
        elif path.exists():
            path.unlink()
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def local_copy(path) -> Iterator[Path]:
    """`path` itself when it is local; for a URL, a downloaded copy of the file or folder in
    a temporary folder that is removed after the block (for readers that need a local
    file: zip archives, Keras models)."""
    path = location(path)
    if not isinstance(path, RemotePath):
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix="vitcli-"))
    try:
        local = folder / (path.name or "download")
        if path.is_dir():
            for name in files_below(path):
                (local / name).parent.mkdir(parents=True, exist_ok=True)
                copy_file(path / name, local / name)
        else:
            copy_file(path, local)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def copy_file(source, target) -> None:
    """Copies one file between any two file systems, replacing `target`."""
    with os_errors(source):
        _gfile().copy(str(source), str(target), overwrite=True)


def files_below(folder) -> list[str]:
    """The relative paths ('a/b.txt') of every file below `folder`, sorted."""
    folder = location(folder)
    if isinstance(folder, RemotePath):
        walk = ((str(parent.relative_to(folder)), names) for parent, _, names in folder.walk())
    else:
        import os  # noqa: PLC0415

        walk = ((os.path.relpath(parent, folder), names) for parent, _, names in os.walk(folder))
    return sorted(name if base == "." else posixpath.join(base, name)
                  for base, names in walk for name in names)
