"""Multi-label metrics (mAP, per-class AP, micro/macro F1, the sigmoid loss) against an
independent computation written here from the definitions, sharing no code with vitcli:
AP = sum over the distinct scores t, high to low, of (R(t) - R(previous t)) * P(t), with P and
R those of predicting every image scoring at least t (scikit-learn's average_precision_score).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.support.checks import vitcli_error
from vitcli.evaluate.multilabel import average_precision, multilabel_metrics

TOLERANCE = 1e-12


def reference_sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda x: 1.0 / (1.0 + math.exp(-x)) if x >= 0
                        else math.exp(x) / (1.0 + math.exp(x)))(np.asarray(logits, float))


def reference_ap(scores, positives) -> float | None:
    """AP by brute force: one threshold per distinct score, every image re-counted each time."""
    scores, positives = list(map(float, scores)), list(map(bool, positives))
    total = sum(positives)
    if total == 0:
        return None
    ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        chosen = [positive for score, positive in zip(scores, positives, strict=True)
                  if score >= threshold]
        precision = sum(chosen) / len(chosen)
        recall = sum(chosen) / total
        ap += (recall - previous_recall) * precision
        previous_recall = recall
    return ap


def reference_f1(predicted, truth) -> tuple[list, float | None, float | None]:
    """(per-class F1 or None, micro F1, macro F1 over the defined classes), by counting."""
    per_class, pooled = [], [0, 0, 0]
    for column in range(truth.shape[1]):
        tp = fp = fn = 0
        for row in range(truth.shape[0]):
            tp += predicted[row, column] and truth[row, column]
            fp += predicted[row, column] and not truth[row, column]
            fn += truth[row, column] and not predicted[row, column]
        pooled = [pooled[0] + tp, pooled[1] + fp, pooled[2] + fn]
        per_class.append(2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None)
    tp, fp, fn = pooled
    micro = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None
    defined = [value for value in per_class if value is not None]
    return per_class, micro, (sum(defined) / len(defined) if defined else None)


def reference_loss(logits, targets) -> float:
    """-(z log p + (1 - z) log(1 - p)) summed over the classes, averaged over the images."""
    total = 0.0
    for row_logits, row_targets in zip(logits, targets, strict=True):
        for x, z in zip(row_logits, row_targets, strict=True):
            p = 1.0 / (1.0 + math.exp(-x))
            total -= z * math.log(p) + (1 - z) * math.log(1 - p)
    return total / len(logits)


# Columns: 0 an ordinary class, 1 tied scores across positives and negatives, 2 no positives,
# 3 every image positive, 4 a class with ties at the top and a positive ranked last.
LOGITS = np.array([
    [2.0, 0.5, -1.0, 0.3, 1.0],
    [-1.0, 0.5, 0.2, -2.0, 1.0],
    [0.5, 0.5, -3.0, 1.0, 1.0],
    [1.5, -0.7, 2.5, 0.0, -4.0],
    [-0.2, 0.5, -0.1, 4.0, 0.1],
    [0.9, -2.0, 0.0, -0.5, 1.0],
])
TARGETS = np.array([
    [1, 1, 0, 1, 1],
    [0, 0, 0, 1, 0],
    [1, 0, 0, 1, 1],
    [0, 1, 0, 1, 1],
    [0, 0, 0, 1, 0],
    [1, 1, 0, 1, 0],
])
NAMES = ["plain", "tied", "absent", "everywhere", "top-ties"]


def test_known_values():
    # scikit-learn's documented example: AP 0.8333...
    assert average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == \
        pytest.approx(5 / 6, abs=TOLERANCE)
    # Three tied at the top (two positive): one threshold, P = 2/3 at R = 1.
    assert average_precision(np.array([0.5, 0.5, 0.5, 0.1]), np.array([1, 0, 1, 0])) == \
        pytest.approx(2 / 3, abs=TOLERANCE)
    assert average_precision(np.array([0.3, 0.2]), np.array([0, 0])) is None
    assert average_precision(np.array([0.3, 0.3, 0.1]), np.array([1, 1, 1])) == 1.0


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.62])
def test_map_and_f1_equal_the_independent_computation(threshold):
    metrics = multilabel_metrics(LOGITS, TARGETS, NAMES, threshold=threshold)
    scores = reference_sigmoid(LOGITS)
    expected_ap = [reference_ap(scores[:, column], TARGETS[:, column])
                   for column in range(len(NAMES))]
    per_class_f1, micro, macro = reference_f1(scores >= threshold, TARGETS.astype(bool))
    for column, name in enumerate(NAMES):
        values = metrics["per_class"][name]
        if expected_ap[column] is None:
            assert values["ap"] is None
        else:
            assert values["ap"] == pytest.approx(expected_ap[column], abs=TOLERANCE)
        assert values["f1"] == (None if per_class_f1[column] is None
                                else pytest.approx(per_class_f1[column], abs=TOLERANCE))
        assert values["positives"] == int(TARGETS[:, column].sum())
    defined = [ap for ap in expected_ap if ap is not None]
    assert metrics["map"] == pytest.approx(sum(defined) / len(defined), abs=TOLERANCE)
    assert metrics["micro_f1"] == pytest.approx(micro, abs=TOLERANCE)
    assert metrics["macro_f1"] == pytest.approx(macro, abs=TOLERANCE)
    assert metrics["loss"] == pytest.approx(reference_loss(LOGITS, TARGETS), abs=1e-9)
    # The class without positives is left out of the mAP and counted; the all-positive class
    # has AP 1.
    assert metrics["classes_without_positives"] == ["absent"]
    assert metrics["classes_with_ap"] == 4
    assert metrics["per_class"]["everywhere"]["ap"] == 1.0
    assert metrics["threshold"] == threshold and metrics["num_examples"] == 6


def test_random_cases_with_many_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        logits = rng.integers(-2, 3, size=(40, 6)).astype(float)  # coarse: many ties
        targets = rng.random((40, 6)) < rng.uniform(0.05, 0.9, size=6)
        metrics = multilabel_metrics(logits, targets, [str(i) for i in range(6)])
        scores = reference_sigmoid(logits)
        expected = [reference_ap(scores[:, column], targets[:, column]) for column in range(6)]
        defined = [ap for ap in expected if ap is not None]
        assert metrics["map"] == pytest.approx(np.mean(defined), abs=TOLERANCE)
        _, micro, macro = reference_f1(scores >= 0.5, targets)
        assert metrics["micro_f1"] == pytest.approx(micro, abs=TOLERANCE)
        assert metrics["macro_f1"] == pytest.approx(macro, abs=TOLERANCE)


def test_a_class_never_positive_nor_predicted_is_left_out_of_macro_f1():
    logits = np.array([[3.0, -3.0], [-3.0, -3.0]])
    targets = np.array([[1, 0], [0, 0]])
    metrics = multilabel_metrics(logits, targets, ["a", "b"])
    assert metrics["per_class"]["b"]["f1"] is None
    assert metrics["macro_f1"] == 1.0 and metrics["micro_f1"] == 1.0
    assert metrics["map"] == 1.0 and metrics["classes_without_positives"] == ["b"]


def test_no_positives_anywhere_gives_no_map():
    metrics = multilabel_metrics(np.zeros((2, 2)), np.zeros((2, 2)), ["a", "b"])
    assert metrics["map"] is None and metrics["classes_with_ap"] == 0


def test_softmax_scores_rank_by_the_softmax():
    metrics = multilabel_metrics(LOGITS, TARGETS, NAMES, scores="softmax")
    shifted = np.exp(LOGITS - LOGITS.max(axis=1, keepdims=True))
    scores = shifted / shifted.sum(axis=1, keepdims=True)
    assert metrics["per_class"]["plain"]["ap"] == pytest.approx(
        reference_ap(scores[:, 0], TARGETS[:, 0]), abs=TOLERANCE)
    assert "loss" not in metrics


def test_bad_inputs_are_one_line():
    assert "shape" in vitcli_error(multilabel_metrics, LOGITS, TARGETS[:, :3], NAMES)
    assert "0 or 1" in vitcli_error(multilabel_metrics, LOGITS, TARGETS * 2, NAMES)
    assert "nan" in vitcli_error(multilabel_metrics, LOGITS * np.nan, TARGETS, NAMES)
