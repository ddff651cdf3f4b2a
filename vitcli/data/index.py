"""The checked, cached index of an image folder: every file decoded once, bad ones remembered.

`index_folder(root)` walks `root`, decodes every file that lies inside a sub-folder with the
same TensorFlow op that training uses, and records why each bad file is bad. Before anything is
decoded, each file's header is read: an image declaring more pixels than
`VITCLI_MAX_IMAGE_PIXELS` (`vitcli.data.headers`) is never decoded, only reported. The result is
cached as JSON in `home_dir()/index/<sha256 of the absolute path, 24 hex digits>.json`:

    {"version": 1, "root": "/abs/root", "signature": "<sha256>", "max_pixels": 89478485,
     "files": {"cat/1.jpg": [size, mtime_ns, null], "cat/2.jpg": [size, mtime_ns, "empty file"]}}

The signature hashes every indexed (relative path, size, mtime_ns): an unchanged folder has the
cached signature and, file by file, the cached size and mtime, so nothing is decoded. When the
folder changed, only new or changed files are decoded again, and the cache is rewritten
atomically (temporary file, then rename). Files over the pixel limit are not remembered (a
raised limit checks them again), and a cache built under a higher limit is not used (its
images were judged against that limit).

Which files count: hidden files and folders (a name starting with "."), `Thumbs.db`,
`desktop.ini` and anything that is not a regular file (a FIFO would block the read) are
ignored, and so are files directly in `root` (e.g. a LICENSE.txt next to the class folders)
unless `top_level` asks for them (`vitcli predict` on a folder of images).
Every other file is judged by its content, not its extension: its first bytes name the format
as TensorFlow sniffs it, so a PNG named `.jpg` is used and a `.txt` file is reported as not an
image (without being read whole: a video among the images costs a 16-byte read). Unreadable files
(permissions, I/O errors) are reported but not cached, so they are checked again next time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import tensorflow as tf

from vitcli.data import headers, ops
from vitcli.errors import VitcliError
from vitcli.files import DiskFullError, home_dir, write_atomically
from vitcli.storage import is_url, location

INDEX_VERSION = 1
Progress = Callable[[int, int], None]
UNREADABLE = "unreadable"
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image TensorFlow can decode (JPEG, PNG, GIF, BMP, WebP)"
CHECK_BATCH = 64  # files per progress report
REMOTE_STAT_THREADS = 32  # an object store answers each stat in tens of milliseconds
IGNORED_NAMES = frozenset({"Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class IndexEntry:
    """One file under the root: where it is, its stat, and why it is unusable (None if usable)."""

    path: str  # relative to the root, "/"-separated
    size: int
    mtime_ns: int
    error: str | None


@dataclass(frozen=True)
class FolderIndex:
    """Every file of a folder, sorted by path; `checked` counts the files decoded to build it."""

    root: Path
    entries: list[IndexEntry]
    checked: int
    cache_file: Path


def cache_file(root: Path, listed: bool = False) -> Path:
    """Where the index of `root` (an absolute path) is cached; `listed`: the index of the files
    a list names (a manifest's), kept apart from the whole folder's."""
    key = hashlib.sha256(str(root).encode() + (b"\0listed" if listed else b"")).hexdigest()[:24]
    return home_dir() / "index" / f"{key}.json"


def index_folder(root: str | os.PathLike, progress: Progress | None = None, *,
                 top_level: bool = False, files: list[str] | None = None) -> FolderIndex:
    """The index of `root`, from the cache when the folder is unchanged, else (re)checked;
    `progress(done, total)` is called while new or changed files are decoded. `top_level`
    includes the files directly in `root`. `files` (relative "/"-separated paths, e.g. a
    manifest's) indexes those regular files instead of walking the folder."""
    root = location(root).resolve()
    stats = scan(root, top_level=top_level) if files is None else listed_stats(root, files)
    signature = folder_signature(stats)
    path = cache_file(root, listed=files is not None)
    limit = headers.max_image_pixels()
    cached = _load_cache(path, root, limit)
    known = {name: record for name, record in cached.get("files", {}).items()
             if stats.get(name) == tuple(record[:2])}
    to_check = [name for name in stats if name not in known]
    for name, error in check_files(root, to_check, progress).items():
        known[name] = [*stats[name], error]
    if to_check or cached.get("signature") != signature:
        # An unreadable file (permissions, I/O) may be fixed without its mtime changing, so it
        # is not remembered and is checked again next time.
        lasting = {name: known[name] for name in stats if not _is_transient(known[name][2])}
        _save_cache(path, root, signature, lasting, limit)
    entries = [IndexEntry(name, *stats[name], known[name][2]) for name in sorted(stats)]
    return FolderIndex(root, entries, len(to_check), path)


def _is_transient(error: str | None) -> bool:
    """Whether a file's judgement may change without the file changing: it could not be read
    (permissions, I/O), or it is over a pixel limit that may be raised."""
    return bool(error) and error.startswith((UNREADABLE, headers.TOO_LARGE))


def _is_candidate(name: str) -> bool:
    return not name.startswith(".") and name not in IGNORED_NAMES


def scan(root: Path, top_level: bool = False) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every candidate file under `root` by relative path, following
    symbolic links to folders but never into a loop; files directly in `root` only with
    `top_level`."""
    if is_url(root):
        return _scan_remote(root, top_level)
    stats: dict[str, tuple[int, int]] = {}
    visited: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            subfolders[:] = []
            continue
        visited.add(real)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = Path(folder).relative_to(root)
        if relative == Path(".") and not top_level:
            continue  # files next to the class folders are not data
        for name in files:
            if not _is_candidate(name):
                continue
            with contextlib.suppress(OSError):  # a dangling link or a file removed meanwhile
                status = os.stat(os.path.join(folder, name))
                if stat.S_ISREG(status.st_mode):  # never a FIFO, whose read would block
                    stats[(relative / name).as_posix()] = (status.st_size, status.st_mtime_ns)
    return stats


def _scan_remote(root, top_level: bool) -> dict[str, tuple[int, int]]:
    """`scan` on an object store: the walk lists names, the stats are asked for in parallel
    (one request each)."""
    names = []
    for folder, subfolders, files in root.walk():
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = folder.relative_to(root).as_posix()
        if relative == "." and not top_level:
            continue
        if any(part.startswith(".") for part in PurePosixPath(relative).parts):
            continue  # gfile's walk does not honour the pruning above
        names.extend(name if relative == "." else f"{relative}/{name}"
                     for name in files if _is_candidate(name))
    return listed_stats(root, names)


def listed_stats(root: Path, files: list[str]) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of each of `files` under `root` that is a regular file (never a FIFO,
    whose read would block); the others are left out."""
    if is_url(root):
        with ThreadPoolExecutor(REMOTE_STAT_THREADS) as pool:
            found = pool.map(lambda name: _remote_stat(root / name), files)
            return {name: status for name, status in zip(files, found, strict=True)
                    if status is not None}
    stats: dict[str, tuple[int, int]] = {}
    for name in files:
        with contextlib.suppress(OSError):
            status = os.stat(root / name)
            if stat.S_ISREG(status.st_mode):
                stats[name] = (status.st_size, status.st_mtime_ns)
    return stats


def _remote_stat(path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except tf.errors.OpError:  # removed meanwhile, or not readable
        return None
    return status.st_size, status.st_mtime_ns


def folder_signature(stats: dict[str, tuple[int, int]]) -> str:
    """A hash of every (relative path, size, mtime_ns): equal hashes mean an unchanged folder."""
    text = json.dumps(sorted((name, *stat) for name, stat in stats.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def check_files(root: Path, names: list[str], progress: Progress | None = None
                ) -> dict[str, str | None]:
    """Why each relative name is not a usable image (None when it is); `progress(done, total)`
    follows along."""
    errors = check_paths([root / name for name in names], progress)
    return dict(zip(names, errors, strict=True))


def check_paths(paths: list[Path], progress: Progress | None = None) -> list[str | None]:
    """Why each file is not a usable image (None when it is): judged from its first bytes (not
    an image format, or a header declaring too many pixels: then it is never read whole or
    decoded), else by TensorFlow decoding it. The one check behind training, evaluation and
    prediction."""
    limit = headers.max_image_pixels()
    errors = [_header_error(path, limit) for path in paths]
    pending = [position for position, error in enumerate(errors) if error is None]
    decodable = _decodable([paths[position] for position in pending], progress, len(paths))
    for rank, position in enumerate(pending):
        if rank not in decodable:
            # Only the (rare) failures are decoded again, one by one, to learn why they failed.
            errors[position] = _check_one(paths[position])
    return errors


def check_images(paths: list[Path]) -> None:
    """Refuses, in one line, the first of `paths` that is not a usable image (`check_paths`):
    for files named one by one, where a bad one is an error rather than skipped."""
    for path, error in zip(paths, check_paths(paths), strict=True):
        if error is not None:
            raise VitcliError(f"cannot read image '{path}': {error}")


def _header_error(path: Path, limit: int) -> str | None:
    """Why the file is refused from its first bytes alone (unreadable, empty, not an image
    format TensorFlow decodes, or too large), or None; so neither a video nor an image bomb
    is ever read whole or decoded."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
            if not head:
                return EMPTY
            if headers.image_format(head) is None:
                return NOT_AN_IMAGE
            handle.seek(0)
            return headers.size_error(handle, limit)
    except OSError as error:
        return f"{UNREADABLE} ({error.strerror or error})"
    except tf.errors.OpError as error:  # a URL's file, through TensorFlow
        return f"{UNREADABLE} ({_clean_message(error.message)})"


def _decodable(paths: list[Path], progress: Progress | None, total: int) -> set[int]:
    """Positions in `paths` of the files TensorFlow decodes, found by a parallel tf.data pass
    that drops the failures; progress counts out of `total` files, and those judged before
    (by their headers) are done with the failures, at the end."""
    decodable: set[int] = set()
    done = 0
    for positions in _decoded_positions(paths):
        decodable.update(positions.numpy().tolist())
        done += len(positions)
        if progress:
            progress(done, total)
    if progress and done < total:
        progress(total, total)  # the failures, dropped above or judged before, are done too
    return decodable


def _decoded_positions(paths: list[Path]):
    """Batches of the positions in `paths` whose files decode (a parallel tf.data pass)."""
    if not paths:
        return
    tensor = tf.constant([str(path) for path in paths])

    def decode(position, path):
        return position, tf.shape(ops.decode_image(tf.io.read_file(path)))

    dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(paths)), tensor))
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    for positions, _ in dataset.ignore_errors().batch(CHECK_BATCH):
        yield positions


def _check_one(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"{UNREADABLE} ({error.strerror or error})"
    except tf.errors.OpError as error:
        return f"{UNREADABLE} ({_clean_message(error.message)})"
    return decode_error(data) or "could not be decoded in the pipeline"


def decode_error(data: bytes) -> str | None:
    """Why TensorFlow cannot (or must not) decode `data` as an image, or None when it can:
    an image over the pixel limit is refused from its header, never decoded."""
    if not data:
        return EMPTY
    too_large = headers.size_error(io.BytesIO(data), headers.max_image_pixels())
    if too_large:
        return too_large
    try:
        ops.decode_image(tf.constant(data))
    except tf.errors.OpError as error:
        message = _clean_message(error.message)
        if message.startswith("Unknown image file format"):
            return NOT_AN_IMAGE
        return f"corrupt or truncated image ({message})"
    return None


def _clean_message(message: str) -> str:
    """TensorFlow's error text without its `{{function_node ...}}` prefix and `[Op:...]` suffix."""
    message = message.split("}}", 1)[-1].strip()
    message = message.split(" [Op:", 1)[0].strip()
    return message.splitlines()[0] if message else "unknown error"


def _load_cache(path: Path, root: Path, limit: int) -> dict:
    """The cached index of `root`, or {} when there is none, it is unusable, or it was built
    under a higher pixel limit than `limit` (or none: caches from before the limit)."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    valid = (isinstance(cached, dict) and cached.get("version") == INDEX_VERSION
             and cached.get("root") == str(root) and isinstance(cached.get("files"), dict)
             and isinstance(cached.get("max_pixels"), int) and cached["max_pixels"] <= limit)
    return cached if valid else {}


def _save_cache(path: Path, root: Path, signature: str, files: dict[str, list],
                limit: int) -> None:
    """Writes the index atomically; a cache that cannot be written only costs a re-check."""
    record = {"version": INDEX_VERSION, "root": str(root), "signature": signature,
              "max_pixels": limit, "files": files}
    with contextlib.suppress(OSError, DiskFullError):
        write_atomically(path, lambda temporary: Path(temporary).write_text(json.dumps(record)))
