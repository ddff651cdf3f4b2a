"""Multi-label metrics from logits and multi-hot targets: mean average precision (mAP),
per-class AP, and precision, recall and F1 at a score threshold (micro and macro).

Plain numpy on the whole evaluation set, like `vitcli.evaluate.metrics`.

- Scores are sigmoid(logits) (softmax with `scores="softmax"`); a class is predicted for an
  image when its score is at least the threshold.
- AP is the non-interpolated average precision of one class over the images ranked by its
  score: the sum over the distinct scores t (high to low) of (R(t) - R(t')) * P(t), where P(t)
  and R(t) are the precision and recall of predicting every image scoring at least t and t'
  is the next higher distinct score (R = 0 above the highest). Tied scores form one threshold,
  so ties neither help nor hurt: the definition of scikit-learn's average_precision_score.
- A class without positive images has no AP (recall is undefined): it is left out of the mAP,
  shown as None, and counted in `classes_without_positives`. A class whose every image is
  positive has AP 1.
- Per-class F1 = 2 TP / (2 TP + FP + FN). Macro F1 averages it over the classes where that
  denominator is not zero (a class with no positives and no predictions has nothing to get
  right or wrong); micro F1 pools TP, FP and FN over all classes. None when undefined.
"""

from __future__ import annotations

import numpy as np

from vitcli.errors import VitcliError

DEFAULT_SCORES = "sigmoid"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float64, without overflow for large |x|."""
    logits = np.asarray(logits, np.float64)
    positive = logits >= 0
    exp = np.exp(-np.abs(logits))
    return np.where(positive, 1.0 / (1.0 + exp), exp / (1.0 + exp))


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """The training loss of a multi-label model: sigmoid cross-entropy summed over the
    classes, averaged over the images (float64, stable for large logits)."""
    logits, targets = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
    per_class = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    return float(per_class.sum(axis=1).mean())


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """The AP of one class (see the module's docstring); None without positives."""
    targets = np.asarray(targets, bool)
    positives = int(targets.sum())
    if positives == 0:
        return None
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ranked_scores, ranked_targets = np.asarray(scores)[order], targets[order]
    # The last position of each run of equal scores: one threshold per distinct score.
    ends = np.r_[np.flatnonzero(np.diff(ranked_scores)), len(ranked_scores) - 1]
    true_positives = np.cumsum(ranked_targets)[ends]
    precision = true_positives / (ends + 1)
    recall = true_positives / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _f1(true_positives, false_positives, false_negatives) -> float | None:
    denominator = 2 * true_positives + false_positives + false_negatives
    return float(2 * true_positives / denominator) if denominator else None


def _ratio(numerator, denominator) -> float | None:
    return float(numerator / denominator) if denominator else None


def validated_targets(targets, shape: tuple[int, int]) -> np.ndarray:
    """`targets` as a (examples, classes) boolean multi-hot array of `shape`."""
    targets = np.asarray(targets)
    if targets.shape != shape:
        raise VitcliError(f"multi-hot labels must have shape {shape}, got {targets.shape}",
                          hint="the data's classes must match the model's head")
    if targets.size and not np.isin(targets, (0, 1)).all():
        raise VitcliError("multi-hot labels must be 0 or 1")
    return targets.astype(bool)


def multilabel_metrics(logits: np.ndarray, targets: np.ndarray, class_names: list[str], *,
                       threshold: float = 0.5, scores: str = DEFAULT_SCORES) -> dict:
    """mAP, per-class AP/precision/recall/F1/positives, micro and macro F1 at `threshold`,
    and the mean sigmoid cross-entropy (`loss`, for sigmoid scores)."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or not logits.size or logits.shape[1] != len(class_names):
        raise VitcliError(f"logits must be a non-empty (examples, {len(class_names)}) array, "
                          f"got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise VitcliError("logits contain NaN or infinity", hint="the model diverged")
    targets = validated_targets(targets, logits.shape)
    values = sigmoid(logits) if scores == "sigmoid" else softmax(logits)
    predicted = values >= threshold
    true_positives = (predicted & targets).sum(axis=0)
    false_positives = (predicted & ~targets).sum(axis=0)
    false_negatives = (~predicted & targets).sum(axis=0)
    per_class = {}
    for index, name in enumerate(class_names):
        counts = true_positives[index], false_positives[index], false_negatives[index]
        per_class[name] = {
            "ap": average_precision(values[:, index], targets[:, index]),
            "positives": int(targets[:, index].sum()),
            "predicted": int(predicted[:, index].sum()),
            "precision": _ratio(counts[0], counts[0] + counts[1]),
            "recall": _ratio(counts[0], counts[0] + counts[2]),
            "f1": _f1(*counts),
        }
    precisions = [values["ap"] for values in per_class.values() if values["ap"] is not None]
    f1s = [values["f1"] for values in per_class.values() if values["f1"] is not None]
    metrics = {
        "map": float(np.mean(precisions)) if precisions else None,
        "classes_with_ap": len(precisions),
        "classes_without_positives": [name for name, values in per_class.items()
                                      if values["ap"] is None],
        "micro_f1": _f1(true_positives.sum(), false_positives.sum(), false_negatives.sum()),
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "threshold": float(threshold), "scores": scores,
        "num_examples": int(logits.shape[0]), "per_class": per_class,
    }
    if scores == "sigmoid":
        metrics["loss"] = sigmoid_cross_entropy(logits, targets)
    return metrics
