"""The model a run starts from: a checkpoint with a new head, or a fresh variant, and what
the optimizer trains on it."""

from __future__ import annotations

import keras

from vitcli.config import ModelConfig, RunConfig, check_objective, check_resnet_run
from vitcli.errors import VitcliError
from vitcli.models.registry import decode_variant, match_variant
from vitcli.models.vit import build_vit
from vitcli.weights.checkpoint import load_checkpoint_with_report
from vitcli.weights.trained import resolve_model_path

# What a variant's row fixes, as (ModelConfig field, the word `vitcli models` uses).
ARCHITECTURE = (("kind", "kind"), ("hidden_size", "width"), ("depth", "depth"),
                ("num_heads", "heads"), ("mlp_dim", "MLP"), ("patch_size", "patch"),
                ("resnet", "stem"))


def _architecture_value(config: ModelConfig, field: str) -> str:
    value = getattr(config, field)
    if field == "resnet":
        if value is None:
            return "none"
        width = f"x{value.width_factor}" if value.width_factor != 1 else ""
        return ("-".join(map(str, value.layers)) or "root") + width
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


def check_switches(config: RunConfig, checkpoint: ModelConfig) -> None:
    """Refuses a --classifier or --posemb that differs from the checkpoint's (which a run
    from a checkpoint keeps; docs/reference.md §1.6)."""
    for name in ("classifier", "posemb"):
        given, recorded = getattr(config, name), getattr(checkpoint, name)
        if given is not None and given != recorded:
            raise VitcliError(f"--{name} {given} does not match the checkpoint's {recorded}",
                              hint=f"drop --{name}: it is read from the file")


def _from_checkpoint(config: RunConfig, num_classes: int,
                     dtype) -> tuple[keras.Model, list[str]]:
    if config.model:
        decode_variant(config.model)  # an unknown name is an error before any loading
    dropout = 0.0 if config.dropout is None else config.dropout  # docs/reference.md §6.1
    model, report = load_checkpoint_with_report(
        resolve_model_path(config.weights), image_size=config.image_size,
        num_classes=num_classes, dropout=dropout, drop_path=config.drop_path, dtype=dtype,
    )
    if config.model:
        check_model_flag(config.model, report.config)
    check_switches(config, report.config)
    # --layer-decay, --freeze blocks:N, mpp: refused for a pure ResNet, named as it is known
    known = match_variant(report.config) or str(config.weights)
    check_resnet_run(config, report.config.replace(name=known))
    return model, [f"weights: {config.weights}", *report.lines()]


def _from_scratch(config: RunConfig, num_classes: int,
                  dtype) -> tuple[keras.Model, list[str]]:
    if not config.model:
        raise VitcliError("no model given", hint="pass --model (e.g. vit-ti16) or --weights")
    row = decode_variant(config.model)
    check_resnet_run(config, row)
    pretraining = config.command == "pretrain"
    # Supervised pre-training has the tanh pre-logits layer of width D (docs/reference.md §6.3);
    # masked patch prediction never trains one, and fine-tuning would drop it untrained. A
    # pure ResNet has none: its pooled features are its representation (as in BiT).
    pre_logits = pretraining and config.objective == "classification" and not row.is_resnet
    overrides = {
        "num_classes": num_classes,
        "image_size": config.image_size or 224,
        "classifier": config.classifier,
        "posemb": config.posemb,
        "representation_size": (config.representation_size or row.hidden_size)
        if pre_logits else config.representation_size,
        "dropout": config.dropout if config.dropout is not None
        else (row.dropout if pretraining else 0.0),
        "drop_path": config.drop_path,
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
    step's default loss (None: softmax) or the sigmoid loss (`train.loss`), or for `mpp` a
    masked-patch predictor on its layers."""
    check_objective(config)
    if config.objective == "classification":
        if config.train.loss != "sigmoid":
            return model, None
        from vitcli.train.step import classification_loss

        return model, classification_loss(model, config.train.label_smoothing, "sigmoid")
    from vitcli.train.mpp import masked_patch_training

    return masked_patch_training(model, config)
