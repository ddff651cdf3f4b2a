"""Validation during training: top-1 and loss on the validation split, or for multi-label
data the mAP, micro F1 (at 0.5) and sigmoid loss."""

from __future__ import annotations

import numpy as np

from vitcli.config import RunConfig
from vitcli.data.pipeline import eval_dataset
from vitcli.data.sources import DataSource
from vitcli.evaluate.inference import collect_logits
from vitcli.evaluate.metrics import classification_metrics
from vitcli.evaluate.multilabel import multilabel_metrics, sigmoid_cross_entropy


def make_validator(model, source: DataSource, config: RunConfig, image_size: int,
                   batch_size: int | None = None):
    """A callable returning {'val_top1', 'val_top5', 'val_loss'}, or None without a val split.

    For a masked-patch run (`model` a MaskedPatchTraining) these are its MPP metrics; for
    multi-label data {'val_map', 'val_micro_f1', 'val_loss'}. A sigmoid-loss run's val_loss is
    its training loss, the sigmoid cross-entropy.
    """
    if config.objective == "mpp":
        from vitcli.train.mpp import make_mpp_validator

        return make_mpp_validator(model, source, config, image_size)
    if "val" not in source.splits:
        return None
    dataset = eval_dataset(source.split("val"), config.data, image_size=image_size,
                           batch_size=batch_size or min(config.train.batch_size, 256))

    def validate() -> dict:
        logits, labels = collect_logits(model, dataset)
        if source.multi_label:
            return _multilabel_record(logits, labels, source.class_names)
        metrics = classification_metrics(logits, labels, source.class_names)
        if config.train.loss == "sigmoid":
            targets = np.eye(len(source.class_names))[labels]
            metrics["loss"] = sigmoid_cross_entropy(logits, targets)
        return {f"val_{key}": round(float(metrics[key]), 6) for key in ("top1", "top5", "loss")}

    return validate


def _multilabel_record(logits, labels, class_names: list[str]) -> dict:
    """val_map (None while no val class has a positive), val_micro_f1 and val_loss."""
    metrics = multilabel_metrics(logits, labels, class_names)

    def rounded(value):
        return None if value is None else round(float(value), 6)

    return {"val_map": rounded(metrics["map"]), "val_micro_f1": rounded(metrics["micro_f1"]),
            "val_loss": rounded(metrics["loss"])}
