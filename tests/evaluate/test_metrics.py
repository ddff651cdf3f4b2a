"""classification_metrics against hand-computed cases and a naive per-example loop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.support.checks import vitcli_error
from vitcli.evaluate.metrics import classification_metrics


def naive_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """One example at a time with Python floats: the reference the vectorised code must match."""
    top1 = top5 = 0
    losses = []
    matrix = np.zeros((num_classes, num_classes), dtype=int)
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        order = list(np.argsort(-np.asarray(row), kind="stable"))
        top1 += order[0] == label
        top5 += label in order[:min(5, num_classes)]
        largest = max(row)
        log_sum = largest + math.log(math.fsum(math.exp(value - largest) for value in row))
        losses.append(log_sum - row[label])
        matrix[label, order[0]] += 1
    count = len(labels)
    return {"top1": top1 / count, "top5": top5 / count, "loss": math.fsum(losses) / count,
            "confusion": matrix}


def test_hand_computed_case():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
    metrics = classification_metrics(logits, np.array([0, 2, 1]), ["a", "b", "c"])
    # Row 3 is a three-way tie: the prediction is the lowest index, 0, so it is wrong.
    assert metrics["top1"] == pytest.approx(1 / 3)
    assert metrics["top5"] == 1.0  # top-3 with K = 3
    expected_loss = (math.log(math.e**2 + math.e + 1) - 2
                     + math.log(1 + math.e**3 + math.e) - 1
                     + math.log(3)) / 3
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-12)
    assert metrics["num_examples"] == 3
    np.testing.assert_array_equal(metrics["confusion"], [[1, 0, 0], [1, 0, 0], [0, 1, 0]])
    assert metrics["per_class"] == {"a": {"accuracy": 1.0, "count": 1},
                                    "b": {"accuracy": 0.0, "count": 1},
                                    "c": {"accuracy": 0.0, "count": 1}}


def test_top5_ties_follow_stable_argsort():
    logits = np.zeros((2, 6))
    metrics = classification_metrics(logits, np.array([4, 5]), list("abcdef"))
    # All tied: the order is 0..5, so class 4 is fifth (a hit) and class 5 sixth (a miss).
    assert metrics["top5"] == 0.5
    assert metrics["top1"] == 0.0
    assert metrics["loss"] == pytest.approx(math.log(6))


@pytest.mark.parametrize("num_classes", [1, 2, 4, 5, 7, 12])
def test_matches_naive_loop(num_classes):
    rng = np.random.default_rng(num_classes)
    # Small integers make ties common, so the tie rule is exercised on every path.
    logits = rng.integers(-3, 4, size=(300, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=300)
    names = [f"class {index}" for index in range(num_classes)]
    metrics = classification_metrics(logits, labels, names)
    expected = naive_metrics(logits, labels, num_classes)
    assert metrics["top1"] == pytest.approx(expected["top1"], abs=1e-12)
    assert metrics["top5"] == pytest.approx(expected["top5"], abs=1e-12)
    assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-12)
    np.testing.assert_array_equal(metrics["confusion"], expected["confusion"])
    assert metrics["confusion"].dtype.kind == "i"
    for index, name in enumerate(names):
        members = labels == index
        assert metrics["per_class"][name]["count"] == int(members.sum())
        correct = sum(int(np.argmax(logits[row]) == index) for row in np.flatnonzero(members))
        assert metrics["per_class"][name]["accuracy"] == pytest.approx(correct / members.sum())


def test_fewer_than_five_classes_make_top5_a_top_k():
    logits = np.array([[0.0, 1.0], [5.0, -5.0], [0.0, 2.0]])
    metrics = classification_metrics(logits, np.array([0, 0, 1]), ["x", "y"])
    assert metrics["top1"] == pytest.approx(2 / 3)
    assert metrics["top5"] == 1.0


def test_loss_is_stable_for_huge_and_half_precision_logits():
    logits = np.array([[1000.0, 0.0], [0.0, -1000.0]])
    metrics = classification_metrics(logits, np.array([1, 0]), ["a", "b"])
    assert metrics["loss"] == pytest.approx(500.0)
    # float16 overflows at 65504: exp(60000) must not be taken in float16.
    half = np.array([[60000.0, 0.0]], dtype=np.float16)
    assert classification_metrics(half, np.array([1]), ["a", "b"])["loss"] == pytest.approx(60000)


def test_classes_without_examples_and_json():
    logits = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    metrics = classification_metrics(logits, np.array([0, 0]), ["cat", "dog", "emu"])
    assert metrics["per_class"]["dog"] == {"accuracy": None, "count": 0}
    assert metrics["per_class"]["cat"] == {"accuracy": 0.5, "count": 2}
    # Everything but the matrix goes straight into `--json` output.
    summary = {key: value for key, value in metrics.items() if key != "confusion"}
    assert json.loads(json.dumps(summary)) == summary


@pytest.mark.parametrize("logits, labels, names, fragment", [
    (np.zeros((2, 3)), np.array([0, 1]), ["a", "b"], "2 class names for 3"),
    (np.zeros((2, 3)), np.array([0, 3]), ["a", "b", "c"], "[0, 3)"),
    (np.zeros((2, 3)), np.array([0, -1]), ["a", "b", "c"], "non-negative"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), ["a", "b", "c"], "integer"),
    (np.zeros((2, 3)), np.array([0, 1, 2]), ["a", "b", "c"], "1-d array of 2"),
    (np.zeros(3), np.array([0]), ["a", "b", "c"], "(examples, classes)"),
    (np.zeros((0, 3)), np.zeros(0, int), ["a", "b", "c"], "non-empty"),
    (np.array([[np.nan, 0.0]]), np.array([0]), ["a", "b"], "nan"),
    (np.zeros((1, 2)), np.array([0]), ["a", "a"], "unique"),
])
def test_bad_input_is_a_one_line_error(logits, labels, names, fragment):
    assert fragment in vitcli_error(classification_metrics, logits, labels, names)
