"""`vitcli evaluate` as a library call: metrics on a split, confusion files, few-shot probes.

The split evaluated by default is `test`; a plain class folder (no split folders) is
evaluated on all its images (split `all`), anything else on `val`. Every report starts by
saying which split and how many images (`split`, `examples`, `headline`). A folder holding
only some of a run's classes (one, say) is evaluated on those, matched to the run's
labels.txt by name.

Multi-label data (a manifest, tfds label sequences) is scored by `vitcli.evaluate.multilabel`:
mAP, per-class AP, and micro/macro F1 at a threshold on the model's scores (sigmoid, or
softmax for a model whose run trained it with softmax); it has no confusion matrix and no
few-shot probes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from vitcli.config import DataConfig, data_config
from vitcli.data.pipeline import eval_dataset
from vitcli.data.sources import DataSource
from vitcli.errors import VitcliError
from vitcli.evaluate.confusion import write_confusion_matrix
from vitcli.evaluate.fewshot import HELD_OUT_PER_CLASS, few_shot_accuracy
from vitcli.evaluate.inference import batch_outputs, collect_logits
from vitcli.evaluate.metrics import classification_metrics
from vitcli.evaluate.multilabel import multilabel_metrics
from vitcli.storage import location


def default_split(source: DataSource) -> str:
    """test, else all (a plain class folder), else val."""
    for name in ("test", "all", "val"):
        if name in source.splits:
            return name
    raise VitcliError(f"{source.description} has no test or val split to evaluate on")


def on_model_classes(source: DataSource, labels: list[str] | None) -> DataSource:
    """`source` with its examples labelled by the model's class index when its classes are
    some of the model's (`labels`, e.g. a run's labels.txt) in another numbering; else as
    it is (evaluate_split then requires the same number of classes)."""
    names = source.class_names
    if labels is None or names == labels or not set(names) <= set(labels):
        return source
    if not all(split.random_access for split in source.splits.values()):
        return source  # a sequential (tfds) split cannot be relabelled; its classes are fixed
    index = [labels.index(name) for name in names]
    splits = {name: dataclasses.replace(split, labels=_relabelled(split.labels, index,
                                                                  len(labels)))
              for name, split in source.splits.items()}
    return dataclasses.replace(source, class_names=list(labels), splits=splits)


def _relabelled(labels, index: list[int], num_classes: int):
    """Class indices mapped by `index`, or multi-hot rows widened to `num_classes` columns."""
    if not isinstance(labels, np.ndarray) or labels.ndim == 1:
        return [index[label] for label in labels]
    widened = np.zeros((len(labels), num_classes), labels.dtype)
    widened[:, index] = labels
    return widened


def headline(source: DataSource, where: str, split: str) -> str:
    """The first line of a report: the split, its size and the data, e.g. "evaluating on all
    450 images of ./test_images (a plain class folder)"."""
    count = source.split(split).num_examples
    place = f"{where} ({source.layout})" if source.layout else where
    if split == "all":
        return f"evaluating on all {count} images of {place}"
    return f"evaluating on the {split} split ({count} images) of {place}"


def evaluate_split(model, source: DataSource, data: DataConfig, split: str, *, batch_size: int,
                   out_dir: Path | None, progress=None, threshold: float = 0.5,
                   scores: str = "sigmoid", strategy=None) -> dict:
    """top-1/top-5/loss/per-class/confusion on one split; confusion CSV+PNG into out_dir.
    Multi-label data: mAP, per-class AP and F1 at `threshold` on the `scores` of the logits.
    `strategy`: a tf.distribute strategy whose replicas share each batch (None: one device)."""
    if model.output_shape[-1] != len(source.class_names):
        raise VitcliError(f"the model has {model.output_shape[-1]} classes, the data "
                          f"{len(source.class_names)}",
                          hint="evaluate on the data it was trained on, or use --few-shot")
    dataset = eval_dataset(source.split(split), data, image_size=tuple(model.input_shape[1:3]),
                           batch_size=batch_size)
    logits, labels = collect_logits(model, dataset, progress, strategy=strategy,
                                    batch_size=batch_size)
    if source.multi_label:
        return {**multilabel_metrics(logits, labels, source.class_names, threshold=threshold,
                                     scores=scores), "split": split}
    metrics = classification_metrics(logits, labels, source.class_names)
    metrics["split"] = split
    if out_dir is not None:
        csv_path, png_path = write_confusion_matrix(metrics["confusion"], source.class_names,
                                                    location(out_dir))
        metrics["confusion_csv"], metrics["confusion_png"] = str(csv_path), str(png_path)
    metrics["confusion"] = np.asarray(metrics["confusion"]).tolist()
    return metrics


def _features(extractor, source: DataSource, data: DataConfig, split: str, batch_size: int,
              per_class_limit: int | None = None,
              strategy=None) -> tuple[np.ndarray, np.ndarray]:
    """Features of a split, stopping once every class has `per_class_limit` examples."""
    dataset = eval_dataset(source.split(split), data, image_size=tuple(extractor.input_shape[1:3]),
                           batch_size=batch_size)
    features, labels = [], []
    counts = np.zeros(len(source.class_names), int)
    for batch_features, batch_labels in batch_outputs(extractor, dataset, strategy=strategy,
                                                      batch_size=batch_size):
        features.append(np.asarray(batch_features, np.float32))
        labels.append(batch_labels)
        np.add.at(counts, batch_labels, 1)
        if per_class_limit and counts.min() >= per_class_limit:
            break
    return np.concatenate(features), np.concatenate(labels)


def evaluate_few_shot(extractor, source: DataSource, data: DataConfig, split: str,
                      shots: tuple[int, ...], batch_size: int, strategy=None) -> dict:
    """docs/reference.md §7: closed-form linear probes on frozen features, n per class, tested
    on `split` (for `all`, which holds the shots, on the held-out `val`)."""
    limit = max(shots) + HELD_OUT_PER_CLASS  # shots + held-out examples for the regulariser
    train = _features(extractor, source, data, "train", batch_size, per_class_limit=limit,
                      strategy=strategy)
    test = _features(extractor, source, data, few_shot_split(split), batch_size,
                     strategy=strategy)
    results = few_shot_accuracy(*train, *test, shots=shots)
    return {f"{shot}shot": result for shot, result in results.items()}


def few_shot_split(split: str) -> str:
    """Where few-shot probes are tested: `all` holds the training shots, so its hold-out."""
    return "val" if split == "all" else split


def load_for_evaluation(model_spec, precision: str, strategy):
    """(model, labels) of a trained model, built under `strategy`'s scope (its variables on
    every replica) in the dtype policy `precision` resolves to on its devices."""
    from vitcli.train.precision import device_kind, dtype_policy, resolve_precision
    from vitcli.weights.trained import load_trained

    policy = dtype_policy(resolve_precision(precision, device_kind(strategy)))
    with strategy.scope():
        return load_trained(model_spec, dtype=None if policy == "float32" else policy)


def evaluate_report(model_spec, data_flags: dict, *, split: str | None, batch_size: int,
                    shots: tuple[int, ...], out_dir: Path | None,
                    precision: str = "auto", threshold: float = 0.5,
                    strategy: str = "auto", tpu: str | None = None) -> dict:
    """Loads the model and data named on the command line and evaluates it (`threshold`:
    multi-label data's decision threshold; `strategy`, `tpu`: as for training, chosen by
    `vitcli.train.strategy.make_strategy` before the model or the data are loaded)."""
    from vitcli.data.sources import open_source
    from vitcli.evaluate.features import feature_model
    from vitcli.train.strategy import make_strategy
    from vitcli.weights.trained import run_loss

    if not data_flags.get("source"):
        raise VitcliError("give --data: the images to evaluate on")
    data = data_config(data_flags)  # checked as training checks its data flags
    distribution = make_strategy(strategy, tpu)
    model, labels = load_for_evaluation(model_spec, precision, distribution)
    source = on_model_classes(open_source(data, purpose="evaluate"), labels)
    if shots and source.multi_label:
        raise VitcliError("--few-shot probes need single-label data",
                          hint=f"{source.description} is multi-label; leave out --few-shot")
    split = split or default_split(source)
    if out_dir is None:
        given = location(model_spec)
        base = given if given.is_dir() else given.parent
        out_dir = base / f"eval-{split}"
    report = {"split": split, "examples": source.split(split).num_examples,
              "headline": headline(source, data.source, split), "model": str(model_spec),
              "data": source.description, "layout": source.layout,
              "multi_label": source.multi_label,
              "replicas": distribution.num_replicas_in_sync}
    report.update(evaluate_split(model, source, data, split, batch_size=batch_size,
                                 out_dir=out_dir, threshold=threshold,
                                 scores=run_loss(model_spec) or "sigmoid",
                                 strategy=distribution))
    if shots:
        report["few_shot_split"] = few_shot_split(split)
        with distribution.scope():
            extractor = feature_model(model)
        report["few_shot"] = evaluate_few_shot(extractor, source, data, split, shots,
                                               batch_size, strategy=distribution)
    report["skipped"] = [list(item) for item in source.skipped]
    return report
