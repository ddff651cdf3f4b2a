"""Classification metrics from logits: top-1, top-5, loss, per-class accuracy, confusion matrix.

Plain numpy on the whole evaluation set, so the numbers do not depend on batching or on
the model's dtype. Top-k ties go to the lower class index, exactly as
`np.argsort(-logits, kind="stable")` orders them.
"""

from __future__ import annotations

import numpy as np

from vitcli.errors import VitcliError


def validated_labels(labels, num_examples: int, num_classes: int | None,
                     what: str) -> np.ndarray:
    """`labels` as a 1-D int64 array of `num_examples` class indices in [0, num_classes)
    (or just non-negative when `num_classes` is None)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != num_examples:
        raise VitcliError(f"{what} must be a 1-D array of {num_examples} labels, "
                          f"got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise VitcliError(f"{what} must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise VitcliError(f"{what} must be non-negative class indices, got {labels.min()}")
    if labels.size and num_classes is not None and labels.max() >= num_classes:
        raise VitcliError(f"{what} must lie in [0, {num_classes}), got {labels.max()}",
                          hint="the labels file must match the model's head")
    return labels


def _validated_logits(logits, class_names: list[str]) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise VitcliError(f"logits must be a non-empty (examples, classes) array, "
                          f"got shape {logits.shape}")
    if len(class_names) != logits.shape[1]:
        raise VitcliError(f"{len(class_names)} class names for {logits.shape[1]} logits per "
                          "example", hint="the labels file must match the model's head")
    if len(set(class_names)) != len(class_names):
        raise VitcliError("class names must be unique")
    # float64 first: float16 logits would otherwise overflow in the loss.
    logits = logits.astype(np.float64)
    if not np.isfinite(logits).all():
        raise VitcliError("logits contain NaN or infinity", hint="the model diverged")
    return logits


def label_ranks(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The position of each true label in `np.argsort(-logits, kind="stable")`, in O(N*K).

    A label is outranked by every larger logit and by equal logits at a lower index.
    """
    true_logits = logits[np.arange(len(labels)), labels][:, None]
    lower_index = np.arange(logits.shape[1])[None, :] < labels[:, None]
    return ((logits > true_logits) | ((logits == true_logits) & lower_index)).sum(axis=1)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy in float64, via log-sum-exp so large logits cannot overflow."""
    logits = logits.astype(np.float64)
    largest = logits.max(axis=1, keepdims=True)
    log_normaliser = largest[:, 0] + np.log(np.exp(logits - largest).sum(axis=1))
    return float(np.mean(log_normaliser - logits[np.arange(len(labels)), labels]))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: rows are true classes, columns predicted classes."""
    cells = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return cells.reshape(num_classes, num_classes).astype(np.int64)


def per_class_accuracy(matrix: np.ndarray, class_names: list[str]) -> dict:
    """{name: {"accuracy", "count"}} from a confusion matrix; accuracy is None with no examples."""
    counts = matrix.sum(axis=1)
    return {
        name: {"accuracy": float(matrix[index, index] / counts[index]) if counts[index] else None,
               "count": int(counts[index])}
        for index, name in enumerate(class_names)
    }


def classification_metrics(logits: np.ndarray, labels: np.ndarray,
                           class_names: list[str]) -> dict:
    """Top-1, top-5 (top-min(5, K)), mean loss, per-class accuracy and the confusion matrix."""
    logits = _validated_logits(logits, list(class_names))
    num_examples, num_classes = logits.shape
    labels = validated_labels(labels, num_examples, num_classes, "labels")
    ranks = label_ranks(logits, labels)
    # argmax returns the first maximum: the same tie rule as the ranks.
    matrix = confusion_matrix(labels, logits.argmax(axis=1), num_classes)
    return {
        "top1": float(np.mean(ranks < 1)),
        "top5": float(np.mean(ranks < min(5, num_classes))),
        "loss": softmax_cross_entropy(logits, labels),
        "num_examples": int(num_examples),
        "per_class": per_class_accuracy(matrix, list(class_names)),
        "confusion": matrix,
    }
