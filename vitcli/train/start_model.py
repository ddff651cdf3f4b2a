"""The model a run starts from: a checkpoint with a new head, or a fresh variant."""

from __future__ import annotations

from pathlib import Path

import keras

from vitcli.config import ModelConfig, RunConfig, check_objective
from vitcli.errors import VitcliError
from vitcli.models.registry import decode_variant, match_variant
from vitcli.models.vit import build_vit
from vitcli.train.rundir import MODEL_FILE
from vitcli.weights.checkpoint import load_checkpoint_with_report


def resolve_model_path(spec: str, progress=None) -> Path:
    """A run directory (its model.keras), a local file, a named checkpoint or a URL."""
    from vitcli.weights.hub import resolve_weights

    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise VitcliError(f"{path} is a directory without a {MODEL_FILE}",
                              hint="pass a run directory, a .keras or an .npz file")
        return path / MODEL_FILE
    return resolve_weights(spec, progress=progress)


# What a variant's row fixes, as (ModelConfig field, the word `vitcli models` uses).
ARCHITECTURE = (("hidden_size", "width"), ("depth", "depth"), ("num_heads", "heads"),
                ("mlp_dim", "MLP"), ("patch_size", "patch"), ("resnet", "stem"))


def _architecture_value(config: ModelConfig, field: str) -> str:
    value = getattr(config, field)
    if field == "resnet":
        return "none" if value is None else "-".join(map(str, value.layers)) or "root"
    return str(value)


def check_model_flag(name: str, checkpoint: ModelConfig) -> None:
    """Refuses a --model whose row differs from the checkpoint's architecture, always (not
    only when the checkpoint is itself a registry variant)."""
    row = decode_variant(name)
    differences = [f"{word} {_architecture_value(checkpoint, field)} (not "
                   f"{_architecture_value(row, field)})" for field, word in ARCHITECTURE
                   if getattr(checkpoint, field) != getattr(row, field)]
    if differences:
        known = match_variant(checkpoint)
        raise VitcliError(f"--model {name} does not match the checkpoint"
                          f"{f' (a {known})' if known else ''}: {', '.join(differences)}",
                          hint="drop --model: the architecture is read from the file")


def _from_checkpoint(config: RunConfig, num_classes: int,
                     dtype) -> tuple[keras.Model, list[str]]:
    if config.model:
        decode_variant(config.model)  # an unknown name is an error before any loading
    dropout = 0.0 if config.dropout is None else config.dropout  # REFERENCE: fine-tune at 0
    model, report = load_checkpoint_with_report(
        resolve_model_path(config.weights), image_size=config.image_size,
        num_classes=num_classes, dropout=dropout, dtype=dtype,
    )
    if config.model:
        check_model_flag(config.model, report.config)
    return model, [f"weights: {config.weights}", *report.lines()]


def _from_scratch(config: RunConfig, num_classes: int,
                  dtype) -> tuple[keras.Model, list[str]]:
    if not config.model:
        raise VitcliError("no model given", hint="pass --model (e.g. vit-ti16) or --weights")
    row = decode_variant(config.model)
    pretraining = config.command == "pretrain"
    # Supervised pre-training has the tanh pre-logits layer of width D (REFERENCE section 6);
    # masked patch prediction never trains one, and fine-tuning would drop it untrained.
    pre_logits = pretraining and config.objective == "classification"
    overrides = {
        "num_classes": num_classes,
        "image_size": config.image_size or 224,
        "classifier": config.classifier,
        "representation_size": (config.representation_size or row.hidden_size)
        if pre_logits else config.representation_size,
        "dropout": config.dropout if config.dropout is not None
        else (row.dropout if pretraining else 0.0),
    }
    model = build_vit(decode_variant(config.model, **overrides), dtype=dtype)
    start = "random initialisation" + ("" if pretraining else " (--from-scratch)")
    return model, [f"new {config.model} ({model.count_params():,} parameters), {start}"]


def model_for_run(config: RunConfig, num_classes: int,
                  dtype=None) -> tuple[keras.Model, list[str]]:
    """The model to train (in the dtype policy `dtype`) and lines saying where it came from."""
    if config.weights:
        return _from_checkpoint(config, num_classes, dtype)
    return _from_scratch(config, num_classes, dtype)


def objective_for_run(model: keras.Model, config: RunConfig):
    """(what the optimizer trains, its micro-batch loss): the classifier itself with the
    step's default loss (None), or for `mpp` a masked-patch predictor on its layers."""
    check_objective(config)
    if config.objective == "classification":
        return model, None
    from vitcli.train.mpp import masked_patch_training

    return masked_patch_training(model, config)


def load_trained(spec: str | Path, dtype=None) -> tuple[keras.Model, list[str] | None]:
    """A model to evaluate, predict with or export, and its labels when it has them
    (a run directory's labels.txt); `spec` as for `resolve_model_path`."""
    from vitcli.train.rundir import read_labels

    path = resolve_model_path(str(spec))
    model = load_checkpoint_with_report(path, dtype=dtype)[0]
    labels = read_labels(path.parent) if path.name == MODEL_FILE and Path(spec).is_dir() else None
    if labels is not None and len(labels) != model.output_shape[-1]:
        raise VitcliError(f"{spec}: labels.txt has {len(labels)} names for a "
                          f"{model.output_shape[-1]}-class head")
    return model, labels


def feature_model(model: keras.Model) -> keras.Model:
    """The frozen representation used by few-shot probes: pre-logits if present, else the
    pooled (post-norm) token."""
    names = [layer.name for layer in model.layers]
    layer = model.get_layer("pre_logits" if "pre_logits" in names else "pooling")
    return keras.Model(model.input, layer.output, name=f"{model.name}_features")
