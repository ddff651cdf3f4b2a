"""Validation during training: top-1 and loss on the validation split."""

from __future__ import annotations

from vitcli.config import RunConfig
from vitcli.data.pipeline import eval_dataset
from vitcli.data.sources import DataSource
from vitcli.evaluate.inference import collect_logits
from vitcli.evaluate.metrics import classification_metrics


def make_validator(model, source: DataSource, config: RunConfig, image_size: int,
                   batch_size: int | None = None):
    """A callable returning {'val_top1', 'val_top5', 'val_loss'}, or None without a val split.

    For a masked-patch run (`model` a MaskedPatchTraining) these are its MPP metrics.
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
        metrics = classification_metrics(logits, labels, source.class_names)
        return {f"val_{key}": round(float(metrics[key]), 6) for key in ("top1", "top5", "loss")}

    return validate
