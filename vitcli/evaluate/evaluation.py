"""`vitcli evaluate` as a library call: metrics on a split, confusion files, few-shot probes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitcli.config import DataConfig
from vitcli.data.pipeline import eval_dataset
from vitcli.data.sources import DataSource
from vitcli.errors import VitcliError
from vitcli.evaluate.confusion import write_confusion_matrix
from vitcli.evaluate.fewshot import HELD_OUT_PER_CLASS, few_shot_accuracy
from vitcli.evaluate.inference import collect_logits
from vitcli.evaluate.metrics import classification_metrics


def default_split(source: DataSource) -> str:
    for name in ("test", "val"):
        if name in source.splits:
            return name
    raise VitcliError(f"{source.description} has no test or val split to evaluate on")


def evaluate_split(model, source: DataSource, data: DataConfig, split: str, *, batch_size: int,
                   out_dir: Path | None, progress=None) -> dict:
    """top-1/top-5/loss/per-class/confusion on one split; confusion CSV+PNG into out_dir."""
    if model.output_shape[-1] != len(source.class_names):
        raise VitcliError(f"the model has {model.output_shape[-1]} classes, the data "
                          f"{len(source.class_names)}",
                          hint="evaluate on the data it was trained on, or use --few-shot")
    dataset = eval_dataset(source.split(split), data, image_size=model.input_shape[1],
                           batch_size=batch_size)
    logits, labels = collect_logits(model, dataset, progress)
    metrics = classification_metrics(logits, labels, source.class_names)
    metrics["split"] = split
    if out_dir is not None:
        csv_path, png_path = write_confusion_matrix(metrics["confusion"], source.class_names,
                                                    Path(out_dir))
        metrics["confusion_csv"], metrics["confusion_png"] = str(csv_path), str(png_path)
    metrics["confusion"] = np.asarray(metrics["confusion"]).tolist()
    return metrics


def _features(extractor, source: DataSource, data: DataConfig, split: str, batch_size: int,
              per_class_limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features of a split, stopping once every class has `per_class_limit` examples."""
    dataset = eval_dataset(source.split(split), data, image_size=extractor.input_shape[1],
                           batch_size=batch_size)
    features, labels = [], []
    counts = np.zeros(len(source.class_names), int)
    for images, batch_labels in dataset:
        features.append(np.asarray(extractor(images, training=False), np.float32))
        labels.append(batch_labels.numpy())
        np.add.at(counts, batch_labels.numpy(), 1)
        if per_class_limit and counts.min() >= per_class_limit:
            break
    return np.concatenate(features), np.concatenate(labels)


def evaluate_few_shot(extractor, source: DataSource, data: DataConfig, split: str,
                      shots: tuple[int, ...], batch_size: int) -> dict:
    """REFERENCE section 7: closed-form linear probes on frozen features, n per class."""
    limit = max(shots) + HELD_OUT_PER_CLASS  # shots + held-out examples for the regulariser
    train = _features(extractor, source, data, "train", batch_size, per_class_limit=limit)
    test = _features(extractor, source, data, split, batch_size)
    results = few_shot_accuracy(*train, *test, shots=shots)
    return {f"{shot}shot": result for shot, result in results.items()}


def evaluate_report(model_spec, data_flags: dict, *, split: str | None, batch_size: int,
                    shots: tuple[int, ...], out_dir: Path | None,
                    precision: str = "auto") -> dict:
    """Loads the model and data named on the command line and evaluates it."""
    import dataclasses

    from vitcli.data.sources import open_source
    from vitcli.train.models import feature_model, load_trained

    if not data_flags.get("source"):
        raise VitcliError("give --data: the images to evaluate on")
    data = dataclasses.replace(DataConfig(), **{key: value for key, value in data_flags.items()
                                                if value is not None})
    import tensorflow as tf

    from vitcli.train.precision import device_kind, dtype_policy, resolve_precision

    device = device_kind(tf.distribute.get_strategy())
    policy = dtype_policy(resolve_precision(precision, device))
    model, _ = load_trained(model_spec, dtype=None if policy == "float32" else policy)
    source = open_source(data)
    split = split or default_split(source)
    if out_dir is None:
        base = Path(model_spec) if Path(model_spec).is_dir() else Path(model_spec).parent
        out_dir = base / f"eval-{split}"
    report = {"model": str(model_spec), "data": source.description}
    report.update(evaluate_split(model, source, data, split, batch_size=batch_size,
                                 out_dir=out_dir))
    if shots:
        report["few_shot"] = evaluate_few_shot(feature_model(model), source, data, split,
                                               shots, batch_size)
    report["skipped"] = [list(item) for item in source.skipped]
    return report
