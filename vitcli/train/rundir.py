"""The run directory of DESIGN.md: config.yaml, labels.txt, metrics.jsonl, TensorBoard
logs, checkpoints/ (resume), model.keras (final) and best.keras (best validation)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from vitcli.config import RunConfig
from vitcli.errors import VitcliError
from vitcli.weights.npz import write_atomically

CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.txt"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.keras"
BEST_FILE = "best.keras"


class RunDirectory:
    """Paths and writers of one run; every file is written atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.tensorboard = self.path / "tensorboard"
        self._writer = None

    def prepare(self, config: RunConfig, class_names: list[str]) -> None:
        """Creates the directory; refuses to overwrite a run unless resuming it."""
        started = (self.path / CONFIG_FILE).exists()
        if started and not config.resume:
            raise VitcliError(f"run directory {self.path} already holds a run",
                              hint="add --resume to continue it, or choose another --out")
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self._write_text(CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
        self._write_text(LABELS_FILE, "".join(f"{name}\n" for name in class_names))

    def _write_text(self, name: str, text: str) -> None:
        write_atomically(self.path / name, lambda temporary: Path(temporary).write_text(text))

    def log(self, record: dict) -> None:
        """Appends one JSON line to metrics.jsonl and writes the numbers to TensorBoard."""
        with open(self.path / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.tensorboard))
        with self._writer.as_default(step=record["step"]):
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    tf.summary.scalar(key, value)
        self._writer.flush()

    def save_model(self, model, name: str = MODEL_FILE) -> Path:
        return write_atomically(self.path / name, model.save)


def read_labels(directory: Path) -> list[str]:
    path = Path(directory) / LABELS_FILE
    if not path.is_file():
        raise VitcliError(f"{directory} has no {LABELS_FILE}")
    return path.read_text().splitlines()


def read_metrics(directory: Path) -> list[dict]:
    path = Path(directory) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def truncate_metrics(directory: Path, last_step: int) -> None:
    """Drops records logged after the checkpoint a resumed run restarts from."""
    kept = [record for record in read_metrics(directory) if record["step"] <= last_step]
    text = "".join(json.dumps(record) + "\n" for record in kept)
    write_atomically(Path(directory) / METRICS_FILE,
                     lambda temporary: Path(temporary).write_text(text))
