"""The run directory (README, "Architecture"): config.yaml, labels.txt, metrics.jsonl, TensorBoard
logs, checkpoints/ (resume), model.keras (final) and best.keras (best validation), and the
marker `.vitcli-run` that says the folder is a vitcli run.

vitcli only ever writes, replaces or removes these files of its own: a start is checked
(`RunDirectory.check`) before anything is created, the directory is locked while training,
and a start that fails before its first checkpoint removes what it wrote.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import yaml

from vitcli.config import RunConfig
from vitcli.errors import VitcliError
from vitcli.files import (
    LOCK_FILE,
    DirectoryLock,
    is_temporary_of,
    reports_full_disk,
    write_atomically,
)
from vitcli.storage import location
from vitcli.train.state import STATE_FILES, has_state

MARKER_FILE = ".vitcli-run"
CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.txt"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.keras"
BEST_FILE = "best.keras"
OWN_FILES = (MARKER_FILE, CONFIG_FILE, LABELS_FILE, METRICS_FILE, MODEL_FILE, BEST_FILE)
TENSORBOARD_EVENTS = "events.out.tfevents."
COMMANDS = ("finetune", "pretrain")


def _remove_entries(folder: Path, matches, remove_folder: bool = False) -> None:
    """Removes the files of `folder` whose names `matches`; nothing else. With
    `remove_folder`, the folder too when that leaves it empty."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if matches(entry.name) and (entry.is_file() or entry.is_symlink()):
            entry.unlink()
    if remove_folder and not any(folder.iterdir()):
        folder.rmdir()


def _own(names, temporaries_only: bool = False):
    """A name test: one of `names` or a temporary of one."""
    def matches(file_name: str) -> bool:
        return (not temporaries_only and file_name in names) or any(
            is_temporary_of(name, file_name) for name in names)

    return matches


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class RunDirectory:
    """Paths and writers of one run; every file is written atomically."""

    def __init__(self, path: str | Path):
        self.path = location(path)
        self.checkpoints = self.path / "checkpoints"
        self.tensorboard = self.path / "tensorboard"
        self._writer = None

    # -- what is there ------------------------------------------------------------------

    def is_run(self) -> bool:
        """Whether the folder holds a vitcli run: its marker, or (runs started before the
        marker existed) a config.yaml of a training command."""
        if (self.path / MARKER_FILE).is_file():
            return True
        try:
            config = yaml.safe_load((self.path / CONFIG_FILE).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return False
        return isinstance(config, dict) and config.get("command") in COMMANDS

    def check(self, config: RunConfig, class_names: list[str]) -> list[str]:
        """Refuses, before anything is written, a start that would harm what is in the folder;
        returns the warnings of a resume (a torn last metrics line)."""
        overwrite = getattr(config, "overwrite", False)
        if config.resume and overwrite:
            raise VitcliError("--resume continues a run and --overwrite starts it again",
                              hint="give one of them")
        if self.path.exists() and not self.path.is_dir():
            raise VitcliError(f"run directory {self.path} exists and is not a directory",
                              hint="choose another --out")
        if not self.path.is_dir() or overwrite:
            return []
        if not self.is_run():
            if any(entry.name != LOCK_FILE for entry in self.path.iterdir()):
                raise VitcliError(
                    f"{self.path} is not empty and is not a vitcli run directory",
                    hint="choose another --out, or add --overwrite to write the run's files "
                    "into it (nothing else there is touched)")
            return []
        if not config.resume:
            raise VitcliError(f"run directory {self.path} already holds a run",
                              hint="add --resume to continue it, --overwrite to start it "
                              "again, or choose another --out")
        self._check_classes(class_names)
        return parse_metrics(self.path)[1]

    def _check_classes(self, class_names: list[str]) -> None:
        path = self.path / LABELS_FILE
        if not path.is_file():
            return
        recorded, current = path.read_text().splitlines(), list(class_names)
        if recorded == current:
            return
        added = [name for name in current if name not in recorded]
        removed = [name for name in recorded if name not in current]
        changes = "; ".join([*([f"added {_listing(added)}"] if added else []),
                             *([f"removed {_listing(removed)}"] if removed else [])])
        raise VitcliError(f"the data's classes differ from the run's labels.txt in {self.path}: "
                          f"{changes or 'the same classes in another order'}",
                          hint="resume with the data the run started with, or start a new "
                          "run (another --out, or --overwrite)")

    # -- owning it while training ---------------------------------------------------------

    @contextlib.contextmanager
    def claim(self, config: RunConfig, class_names: list[str], warn=lambda line: None):
        """Checks, creates and locks the folder for one training process; a start that
        fails before its first checkpoint removes what it wrote (and the folders it
        created, when that leaves them empty) so that the corrected command just works."""
        self.check(config, class_names)  # before anything is created
        created = [parent for parent in (self.path, *self.path.parents) if not parent.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(self.path, "run directory")
        fresh = failed = False
        try:
            lock.acquire()
            # Again, now that no other vitcli process can change the folder.
            warnings = self.check(config, class_names)
            fresh = not (config.resume and self.is_run())
            self._remove_files(stale_only=not fresh)
            if not (self.path / MARKER_FILE).is_file():  # also on resuming an older run
                self._write_marker(config)
            for line in warnings:
                warn(line)
            yield self
        except BaseException:
            failed = True
            raise
        finally:
            self.close()
            if failed and fresh and not has_state(self.checkpoints):
                self._remove_files(stale_only=False)
            lock.release()
            if failed:
                for folder in created:  # innermost first
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()

    def _remove_files(self, stale_only: bool) -> None:
        """Removes vitcli's files, or (`stale_only`) the temporaries a killed process left."""
        _remove_entries(self.path, _own(OWN_FILES, stale_only))
        _remove_entries(self.checkpoints, _own(STATE_FILES, stale_only),
                        remove_folder=not stale_only)
        if not stale_only:
            _remove_entries(self.tensorboard, lambda name: name.startswith(TENSORBOARD_EVENTS),
                            remove_folder=True)

    def _write_marker(self, config: RunConfig) -> None:
        from vitcli import __version__

        self._write_text(MARKER_FILE, json.dumps({"vitcli": __version__,
                                                  "command": config.command}) + "\n")

    def write_settings(self, config: RunConfig, class_names: list[str]) -> None:
        """config.yaml (the resolved settings: `--config` it to rerun) and labels.txt."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        values = config.to_dict()
        if "overwrite" in values:  # a rerun with --config must not inherit the permission
            values["overwrite"] = False
        if isinstance(values.get("image_size"), tuple):  # --res HxW: YAML's [height, width]
            values["image_size"] = list(values["image_size"])
        self._write_text(CONFIG_FILE, yaml.safe_dump(values, sort_keys=False))
        self._write_text(LABELS_FILE, "".join(f"{name}\n" for name in class_names))

    # -- writing ---------------------------------------------------------------------------

    def _write_text(self, name: str, text: str) -> None:
        write_atomically(self.path / name, lambda temporary: Path(temporary).write_text(text))

    def log(self, record: dict) -> None:
        """Appends one JSON line to metrics.jsonl and writes the numbers to TensorBoard."""
        path = self.path / METRICS_FILE
        with reports_full_disk(path), path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.tensorboard))
        with self._writer.as_default(step=record["step"]):
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    tf.summary.scalar(key, value)
        self._writer.flush()

    def close(self) -> None:
        """Closes the TensorBoard writer (its events file stays open until then)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def save_model(self, model, name: str = MODEL_FILE) -> Path:
        return write_atomically(self.path / name, model.save)


def read_labels(directory: Path) -> list[str]:
    path = location(directory) / LABELS_FILE
    if not path.is_file():
        raise VitcliError(f"{directory} has no {LABELS_FILE}")
    return path.read_text().splitlines()


def _is_record(value) -> bool:
    return isinstance(value, dict) and type(value.get("step")) is int


def parse_metrics(directory: Path) -> tuple[list[dict], list[str]]:
    """The records of metrics.jsonl and warnings. An unreadable last line (a write cut
    short by a kill or a full disk) is dropped with a warning; any other line that is not
    a vitcli record is an error, before anything is changed."""
    path = location(directory) / METRICS_FILE
    if not path.is_file():
        return [], []
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    records, warnings = [], []
    for position, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if _is_record(record):
            records.append(record)
        elif record is None and position == len(numbered) - 1:
            warnings.append(f"warning: dropping the incomplete last line of {path} "
                            f"(line {number}: {line[:40]!r})")
        else:
            raise VitcliError(f"{path} line {number} is not a vitcli metrics record: "
                              f"{line[:60]!r}", hint="remove that line, then resume again")
    return records, warnings


def read_metrics(directory: Path) -> list[dict]:
    return parse_metrics(directory)[0]


def truncate_metrics(directory: Path, last_step: int) -> None:
    """Drops records logged after the checkpoint a resumed run restarts from (and an
    incomplete last line)."""
    kept = [record for record in read_metrics(directory) if record["step"] <= last_step]
    text = "".join(json.dumps(record) + "\n" for record in kept)
    write_atomically(location(directory) / METRICS_FILE,
                     lambda temporary: Path(temporary).write_text(text))
