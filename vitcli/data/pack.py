"""Packing an image folder into TFRecord shards (`vitcli data pack`; the format and reading
rules are in `vitcli.data.packed_source`).

The folder is opened as training opens it (`open_folder`: the same checked files, classes,
split folders and held-out validation split), so the packed data set holds exactly the
folder's examples. Split s of n examples gets K_s shards (about `shards` in all, in
proportion to the splits' sizes, at least one each); shard k holds the split's examples k,
k + K_s, ... in order, each as a tf.train.Example of the file's bytes (unchanged), its class
index and its path relative to the folder.

Order of writing, so that no reader ever sees half a pack (every file through
`tf.io.gfile`: local paths, `gs://`, `ram://`): the plan (`.pack-plan.json`: everything the
index will say but the shards' sizes) first, then the shards in parallel, each written to
`.NAME.tmp-<8 hex digits>` and renamed onto its name when complete, then the index
(`vitcli-packed.json`) last. A run that was stopped resumes: the same command finds its plan,
keeps the shards whose file holds the planned number of records and writes the others. Into
a folder holding anything else (another pack, or files of someone else's) it writes only with
`overwrite`, and then removes only the files of an earlier pack, never anyone else's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import posixpath
import re
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import tensorflow as tf

from vitcli.config import TARGET_SHARD_BYTES, DataConfig, PackConfig, check_value
from vitcli.data.folder_source import open_folder
from vitcli.data.packed_source import FORMAT, INDEX_FILE, SPLIT_NAMES, VERSION
from vitcli.data.sources import MANIFEST_SUFFIX, TFDS_PREFIX, DataSource
from vitcli.data.stats import median_side
from vitcli.errors import VitcliError
from vitcli.files import LOCK_FILE, DirectoryLock, reports_full_disk
from vitcli.storage import is_url, location

PLAN_FILE = ".pack-plan.json"
REPORT_EVERY = 16  # images per progress report of a writer thread
SHARD_NAME = re.compile(r"(train|val|test)-\d{5}-of-\d{5}\.tfrecord")
TEMPORARY_NAME = re.compile(r"\.((train|val|test)-\d{5}-of-\d{5}\.tfrecord|vitcli-packed\.json|"
                            r"\.pack-plan\.json)\.tmp-[0-9a-f]{8}")
# progress(stage, done, total): stage "index" (files checked) or "pack" (images written)
PackProgress = Callable[[str, int, int], None]


@dataclass
class PackResult:
    """What a pack run did: the examples per split, and the shards it wrote or kept."""

    out: str
    class_names: list[str]
    examples: dict[str, int]
    written: int
    kept: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Member:
    path: str  # as the reader opens it
    label: int
    relative: str  # relative to the packed folder, "/"-separated


def pack_folder(source: str, out: str, data: DataConfig, *, shards: int | None = None,
                workers: int | None = None, overwrite: bool = False,
                progress: PackProgress | None = None) -> PackResult:
    """Packs the image folder `source` into `out` (see the module docstring); resumes an
    unfinished pack of the same folder and settings."""
    shards = check_value(PackConfig, "shards", shards)
    workers = check_value(PackConfig, "workers", workers) or os.cpu_count() or 1
    if source.startswith(TFDS_PREFIX) or source.lower().endswith(MANIFEST_SUFFIX):
        raise VitcliError(f"{source} is not an image folder: `vitcli data pack` packs image "
                          "folders", hint="give DIR/<class>/... or DIR/{train,val,test}/...")
    out = str(location(out)).rstrip("/")
    index_progress = (lambda done, total: progress("index", done, total)) if progress else None
    opened = open_folder(source, data, index_progress)
    root = str(location(source).resolve())
    _check_out(out, root)
    members = _members(opened, root)
    plan = make_plan(opened, members, data, shards, root, source)
    tf.io.gfile.makedirs(out)
    with DirectoryLock(out, "packed data folder"), reports_full_disk(out):
        kept = _prepare_out(out, plan, overwrite)
        todo = [(shard, members[name][shard["index"]::len(entry["shards"])])
                for name, entry in plan["splits"].items() for shard in entry["shards"]
                if shard["file"] not in kept]
        if todo or not tf.io.gfile.exists(posixpath.join(out, INDEX_FILE)):
            _write_json(out, PLAN_FILE, plan)
            _write_shards(out, todo, workers, progress)
            _write_json(out, INDEX_FILE, _index(out, plan))
    return PackResult(out, opened.class_names,
                      {name: entry["examples"] for name, entry in plan["splits"].items()},
                      written=len(todo), kept=len(kept), skipped=opened.skipped)


def _members(opened: DataSource, root: str) -> dict[str, list[_Member]]:
    """Each split's examples in the folder's order, with their paths relative to `root`."""
    return {name: [_Member(path, int(label), _relative(path, root))
                   for path, label in zip(split.files, split.labels, strict=True)]
            for name, split in opened.splits.items() if name in SPLIT_NAMES}


def make_plan(opened: DataSource, members: dict[str, list[_Member]], data: DataConfig,
              shards: int | None, root: str, source: str) -> dict:
    """Everything the index will say but the shards' sizes: what a rerun compares to know
    it is the same pack (the shard digests cover each member's path, label, size and mtime)."""
    everyone = [member for split in members.values() for member in split]
    stats = _stats([member.path for member in everyone])
    total = shards or max(1, math.ceil(sum(size for size, _ in stats.values())
                                       / TARGET_SHARD_BYTES))
    per_shard = math.ceil(len(everyone) / total)
    splits = {}
    for name in SPLIT_NAMES:
        if name not in members or not members[name]:
            continue
        split = members[name]
        count = min(len(split), max(1, math.ceil(len(split) / per_shard)))
        splits[name] = {"examples": len(split), "shards": [
            {"file": f"{name}-{index:05d}-of-{count:05d}.tfrecord", "index": index,
             "examples": len(split[index::count]), "digest": _digest(split[index::count], stats)}
            for index in range(count)]}
    train = opened.splits.get("train")
    return {"format": FORMAT, "version": VERSION, "source": root, "layout": opened.layout,
            "settings": {"val_split": data.val_split, "strict": data.strict, "shards": shards},
            "class_names": opened.class_names,
            "median_side": median_side(train) if train is not None else None,
            "skipped": [[_relative(path, source), reason] for path, reason in opened.skipped],
            "splits": splits}


def _relative(path: str, folder: str) -> str:
    """`path` (a file of `folder` as the folder was given) relative to it."""
    prefix = folder.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def _stats(paths: list[str]) -> dict[str, tuple[int, int]]:
    """(size, mtime in ns) of every file, asked for in parallel (an object store answers
    each in tens of milliseconds)."""
    def stat(path):
        status = tf.io.gfile.stat(path)
        return status.length, status.mtime_nsec

    with ThreadPoolExecutor(32 if any(is_url(path) for path in paths[:1]) else 4) as pool:
        return dict(zip(paths, pool.map(stat, paths), strict=True))


def _digest(members: list[_Member], stats: dict[str, tuple[int, int]]) -> str:
    text = json.dumps([[member.relative, member.label, *stats[member.path]]
                       for member in members])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _check_out(out: str, root: str) -> None:
    """Refuses an --out that is a file, or that lies inside the folder being packed (it
    would become a class folder of it)."""
    resolved = out if is_url(out) else str(location(out).resolve())
    if resolved == root or resolved.startswith(root.rstrip("/") + "/"):
        raise VitcliError(f"--out {out} is inside the folder being packed",
                          hint="choose a folder outside it")
    if tf.io.gfile.exists(out) and not tf.io.gfile.isdir(out):
        raise VitcliError(f"--out {out} is a file, not a folder", hint="choose another --out")


def _is_ours(name: str) -> bool:
    """Whether a file name is one a pack writes (index, plan, shard, temporary, lock)."""
    return (name in (INDEX_FILE, PLAN_FILE, LOCK_FILE) or SHARD_NAME.fullmatch(name) is not None
            or TEMPORARY_NAME.fullmatch(name) is not None)


def _prepare_out(out: str, plan: dict, overwrite: bool) -> set[str]:
    """Makes `out` ready for `plan`: the names of the finished shards to keep. Refuses a
    folder holding anything but an unfinished (or finished) pack of the same plan, unless
    `overwrite`; then removes only an earlier pack's files."""
    names = [name.rstrip("/") for name in tf.io.gfile.listdir(out)]
    foreign = sorted(name for name in names if not _is_ours(name))
    previous = _previous_plan(out, names)
    ours = [name for name in names if _is_ours(name) and name != LOCK_FILE]
    same = previous == _comparable(plan)
    if (foreign or (ours and not same)) and not overwrite:
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise VitcliError(f"--out {out} is not empty ({shown}) and holds no unfinished pack "
                              "of this folder", hint="choose an empty --out, or --overwrite to "
                              "pack into it (files that are not a pack's are left alone)")
        raise VitcliError(f"--out {out} holds a pack of another folder, other settings or "
                          "files that changed since", hint="--overwrite to replace it, or "
                          "choose another --out")
    kept = _finished_shards(out, plan, names) if same else set()
    stale = [name for name in ours if name not in kept and name not in (INDEX_FILE, PLAN_FILE)]
    if INDEX_FILE in names and (stale or not same or _missing(plan, kept)):
        tf.io.gfile.remove(posixpath.join(out, INDEX_FILE))  # first: no reader sees a mix
    for name in stale:
        tf.io.gfile.remove(posixpath.join(out, name))
    return kept


def _missing(plan: dict, kept: set[str]) -> bool:
    return any(shard["file"] not in kept for entry in plan["splits"].values()
               for shard in entry["shards"])


def _comparable(record: dict | None) -> dict | None:
    """A plan or an index without the shards' sizes (known only once written)."""
    if not isinstance(record, dict) or not isinstance(record.get("splits"), dict):
        return None
    copy = json.loads(json.dumps(record))
    for entry in copy["splits"].values():
        for shard in entry.get("shards", []):
            if isinstance(shard, dict):
                shard.pop("bytes", None)
    return copy


def _previous_plan(out: str, names: list[str]) -> dict | None:
    """The plan of the pack already in `out` (its plan file, else its index), or None."""
    for name in (PLAN_FILE, INDEX_FILE):
        if name in names:
            with contextlib.suppress(tf.errors.OpError, ValueError, UnicodeDecodeError):
                return _comparable(json.loads(
                    tf.io.gfile.GFile(posixpath.join(out, name), "rb").read()))
    return None


def _finished_shards(out: str, plan: dict, names: list[str]) -> set[str]:
    """The planned shards whose file is complete: as large as the index says (a finished
    pack), else holding the planned number of records (counted)."""
    sizes = {}
    with contextlib.suppress(tf.errors.OpError, ValueError, UnicodeDecodeError):
        index = json.loads(tf.io.gfile.GFile(posixpath.join(out, INDEX_FILE), "rb").read())
        sizes = {shard["file"]: shard["bytes"] for entry in index["splits"].values()
                 for shard in entry["shards"]}
    present = [shard for entry in plan["splits"].values() for shard in entry["shards"]
               if shard["file"] in names]

    def complete(shard) -> bool:
        path = posixpath.join(out, shard["file"])
        if shard["file"] in sizes:
            return tf.io.gfile.stat(path).length == sizes[shard["file"]]
        try:
            return _count_records(path) == shard["examples"]
        except tf.errors.OpError:  # truncated or damaged: written again
            return False

    with ThreadPoolExecutor(4) as pool:
        return {shard["file"] for shard, done in zip(present, pool.map(complete, present),
                                                     strict=True) if done}


def _count_records(path: str) -> int:
    return int(tf.data.TFRecordDataset(path).reduce(tf.constant(0, tf.int64),
                                                    lambda count, _: count + 1))


def _write_json(out: str, name: str, record: dict) -> None:
    """Writes `name` in `out` whole or not at all (a temporary, then a rename)."""
    temporary = posixpath.join(out, f".{name}.tmp-{secrets.token_hex(4)}")
    try:
        with tf.io.gfile.GFile(temporary, "wb") as handle:
            handle.write(json.dumps(record, indent=1).encode())
        tf.io.gfile.rename(temporary, posixpath.join(out, name), overwrite=True)
    finally:
        _remove_quietly(temporary)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(tf.errors.OpError):
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)


def _index(out: str, plan: dict) -> dict:
    """The plan with each shard's size, as written."""
    index = json.loads(json.dumps(plan))
    for entry in index["splits"].values():
        for shard in entry["shards"]:
            shard["bytes"] = tf.io.gfile.stat(posixpath.join(out, shard["file"])).length
    return index


def example_record(data: bytes, label: int, relative: str) -> bytes:
    """One serialized tf.train.Example: image (encoded bytes), label (int64), path."""
    feature = tf.train.Feature
    return tf.train.Example(features=tf.train.Features(feature={
        "image": feature(bytes_list=tf.train.BytesList(value=[data])),
        "label": feature(int64_list=tf.train.Int64List(value=[label])),
        "path": feature(bytes_list=tf.train.BytesList(value=[relative.encode()])),
    })).SerializeToString()


class _Counter:
    """Images written so far, reported from the writer threads."""

    def __init__(self, total: int, progress: PackProgress | None):
        self.done, self.total, self.progress = 0, total, progress
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self.done += count
            if self.progress:
                self.progress("pack", self.done, self.total)


def _write_shards(out: str, todo: list, workers: int, progress: PackProgress | None) -> None:
    """Writes the shards in parallel; the first failure (or Ctrl-C) stops the others, whose
    temporaries are removed."""
    counter = _Counter(sum(len(members) for _, members in todo), progress)
    counter.add(0)
    stop = threading.Event()
    with ThreadPoolExecutor(max(1, min(workers, len(todo)))) as pool:
        futures = [pool.submit(_write_shard, out, shard, members, counter, stop)
                   for shard, members in todo]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failures = [error for future in futures
                        if future in done and (error := future.exception()) is not None]
            # The cause, not a shard that stopped because of it (both may be done by now).
            causes = [error for error in failures if not isinstance(error, _Stopped)]
            if failures:
                raise (causes or failures)[0]
        finally:
            stop.set()
            for future in futures:
                future.cancel()


class _Stopped(Exception):
    """Another shard failed, or the run was interrupted."""


def _write_shard(out: str, shard: dict, members: list[_Member], counter: _Counter,
                 stop: threading.Event) -> None:
    final = posixpath.join(out, shard["file"])
    temporary = posixpath.join(out, f".{shard['file']}.tmp-{secrets.token_hex(4)}")
    pending = 0
    try:
        with tf.io.TFRecordWriter(temporary) as writer:
            for member in members:
                if stop.is_set():
                    raise _Stopped
                writer.write(example_record(_read(member.path), member.label, member.relative))
                pending += 1
                if pending == REPORT_EVERY:
                    counter.add(pending)
                    pending = 0
        tf.io.gfile.rename(temporary, final, overwrite=True)
        counter.add(pending)
    except BaseException:
        stop.set()  # at once: the pool's threads must not start another shard meanwhile
        raise
    finally:
        _remove_quietly(temporary)


def _read(path: str) -> bytes:
    try:
        return tf.io.gfile.GFile(path, "rb").read()
    except tf.errors.OpError as error:
        reason = (error.message or "unreadable").splitlines()[0].removeprefix(f"{path}; ")
        raise VitcliError(f"cannot read {path}: {reason} (changed since it was checked?)",
                          hint="run the pack again: it checks the folder again and "
                               "resumes") from None
