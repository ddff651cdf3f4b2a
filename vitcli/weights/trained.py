"""A trained model to evaluate, predict with, export or inspect: where it is (a run directory,
a .keras or .npz file, a named checkpoint or a URL), the model itself, its class names, and how
its logits are read (softmax, or sigmoid for a multi-label model: the loss its run recorded)."""

from __future__ import annotations

from pathlib import Path

import keras

from vitcli.config import LOSSES
from vitcli.errors import VitcliError
from vitcli.storage import location
from vitcli.train.rundir import BEST_FILE, CONFIG_FILE, LABELS_FILE, MODEL_FILE, read_labels
from vitcli.weights.checkpoint import load_checkpoint_with_report


def resolve_model_path(spec: str, progress=None) -> Path:
    """A run directory (its model.keras), a local file, a named checkpoint or a URL."""
    from vitcli.weights.hub import resolve_weights

    path = location(spec)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise VitcliError(f"{path} is a directory without a {MODEL_FILE}",
                              hint="pass a run directory, a .keras or an .npz file")
        return path / MODEL_FILE
    return resolve_weights(spec, progress=progress)


def check_labels(labels: list[str], num_classes: int, origin: str) -> list[str]:
    """`labels` when they name every class of a `num_classes`-class model, else one line
    saying so; `origin` says where they come from ('--labels names.txt')."""
    if len(labels) != num_classes:
        raise VitcliError(f"{origin} has {len(labels)} names for a {num_classes}-class model",
                          hint="give one name per line, in class-index order")
    return labels


def load_trained(spec: str | Path, dtype=None) -> tuple[keras.Model, list[str] | None]:
    """A model to evaluate, predict with or export, and its labels when it has them
    (a run directory's labels.txt); `spec` as for `resolve_model_path`."""
    path = resolve_model_path(str(spec))
    model = load_checkpoint_with_report(path, dtype=dtype)[0]
    if not (path.name == MODEL_FILE and location(spec).is_dir()):
        return model, None
    labels = read_labels(path.parent)
    return model, check_labels(labels, model.output_shape[-1], str(path.parent / LABELS_FILE))


def run_loss(spec: str | Path) -> str | None:
    """The training loss recorded by the run that `spec` is (a run directory) or lies in (its
    model.keras or best.keras): config.yaml's train.loss, "softmax" for runs from before that
    setting; None for a model outside a run directory."""
    import yaml

    path = location(str(spec))
    folder = path if path.is_dir() else path.parent if path.name in (MODEL_FILE, BEST_FILE) \
        else None
    if folder is None or not (folder / CONFIG_FILE).is_file():
        return None
    try:
        config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    train = config.get("train") if isinstance(config, dict) else None
    loss = train.get("loss") if isinstance(train, dict) else None
    return loss if loss in LOSSES else "softmax"


def model_scores(spec: str | Path, given: str | None = None) -> str:
    """How to read the logits of the model at `spec`: `given` (--scores), else the loss its
    run trained with, else softmax."""
    return given or run_loss(spec) or "softmax"
