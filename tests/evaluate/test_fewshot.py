"""Few-shot linear evaluation: the closed form, the held-out choice of regulariser, accuracy on
separable and on random data, determinism and small classes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.checks import vitcli_error
from vitcli.evaluate.fewshot import (
    HELD_OUT_PER_CLASS,
    few_shot_accuracy,
    ridge_regression,
    split_shots,
)


def gaussian_clusters(num_classes, dim, per_class, separation, seed, test_per_class=0):
    """(train features, train labels, test features, test labels) around shared class centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * separation

    def draw(count):
        labels = np.repeat(np.arange(num_classes), count)
        rng.shuffle(labels)
        return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels

    return (*draw(per_class), *draw(test_per_class or per_class))


def lstsq_ridge(features, targets, regulariser):
    """Ridge with a free bias as plain least squares: [X 1; sqrt(l) I 0] [W; b] = [Y; 0]."""
    num_examples, dim = features.shape
    augmented = np.block([[features, np.ones((num_examples, 1))],
                          [np.sqrt(regulariser) * np.eye(dim), np.zeros((dim, 1))]])
    stacked = np.vstack([targets, np.zeros((dim, targets.shape[1]))])
    solution = np.linalg.lstsq(augmented, stacked, rcond=None)[0]
    return solution[:-1], solution[-1]


@pytest.mark.parametrize("num_examples, dim", [(40, 8), (12, 30)])  # primal and kernel form
def test_closed_form_equals_lstsq_on_the_augmented_system(num_examples, dim):
    rng = np.random.default_rng(dim)
    features = rng.normal(size=(num_examples, dim)) * 3 + 5  # off-centre: the bias matters
    targets = 2.0 * np.eye(4)[rng.integers(0, 4, num_examples)] - 1.0
    regularisers = (2.0**-6, 0.5, 40.0)
    for (weights, bias), regulariser in zip(ridge_regression(features, targets, regularisers),
                                            regularisers, strict=True):
        expected_weights, expected_bias = lstsq_ridge(features, targets, regulariser)
        np.testing.assert_allclose(weights, expected_weights, atol=1e-9, rtol=1e-7)
        np.testing.assert_allclose(bias, expected_bias, atol=1e-9, rtol=1e-7)


def test_accuracy_matches_an_independent_implementation():
    train_features, train_labels, test_features, test_labels = gaussian_clusters(
        5, 12, 20, 0.5, seed=3, test_per_class=40)
    shots, seed, regulariser = 4, 7, 2.0
    # The documented draw: one permutation per class, classes in increasing order.
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(train_labels == label))[:shots]
                             for label in range(5)])
    features = train_features[chosen].astype(np.float64)
    scale = features.std(axis=0)
    targets = 2.0 * np.eye(5)[train_labels[chosen]] - 1.0
    weights, bias = lstsq_ridge(features / scale, targets, regulariser)
    predictions = np.argmax((test_features / scale) @ weights + bias, axis=1)
    expected = float(np.mean(predictions == test_labels))
    result = few_shot_accuracy(train_features, train_labels, test_features, test_labels,
                               shots=(shots,), seeds=(seed,), regularisers=(regulariser,))
    assert result[shots]["per_seed"] == [pytest.approx(expected, abs=1e-12)]
    assert result[shots]["regulariser"] == regulariser


def test_separable_clusters_are_learnt_from_few_shots():
    data = gaussian_clusters(10, 32, 30, 1.5, seed=0, test_per_class=50)
    result = few_shot_accuracy(*data, shots=(1, 5))
    assert result[5]["accuracy"] >= 0.99
    assert result[1]["accuracy"] > 0.5  # chance is 0.1
    for entry in result.values():
        assert len(entry["per_seed"]) == 3
        assert entry["accuracy"] == pytest.approx(np.mean(entry["per_seed"]))
        assert entry["std"] == pytest.approx(np.std(entry["per_seed"]))


def test_random_labels_give_chance_accuracy():
    rng = np.random.default_rng(0)
    train_features, test_features = rng.normal(size=(300, 20)), rng.normal(size=(2000, 20))
    train_labels, test_labels = rng.integers(0, 5, 300), rng.integers(0, 5, 2000)
    result = few_shot_accuracy(train_features, train_labels, test_features, test_labels,
                               shots=(10, 25))
    for entry in result.values():
        assert abs(entry["accuracy"] - 0.2) < 0.05


def test_regulariser_is_chosen_on_held_out_train_data():
    # 10 classes x 5 shots = 50 examples in 49 dimensions: the interpolation threshold, where
    # an almost unregularised fit is wild and a strongly regularised one is not.
    data = gaussian_clusters(10, 49, 30, 0.4, seed=0, test_per_class=100)
    result = few_shot_accuracy(*data, shots=(5,))[5]
    barely = few_shot_accuracy(*data, shots=(5,), regularisers=(2.0**-10,))[5]
    assert result["regulariser"] >= 64
    assert result["accuracy"] > barely["accuracy"] + 0.25
    # The test labels play no part in the choice: scrambling them leaves every choice alone.
    train_features, train_labels, test_features, test_labels = data
    scrambled = np.random.default_rng(1).permutation(test_labels)
    for seed in range(3):
        original = few_shot_accuracy(*data, shots=(5,), seeds=(seed,))[5]["regulariser"]
        blind = few_shot_accuracy(train_features, train_labels, test_features, scrambled,
                                  shots=(5,), seeds=(seed,))[5]["regulariser"]
        assert blind == original


def test_held_out_examples_are_disjoint_from_the_shots():
    members = [np.arange(0, 30), np.arange(30, 34), np.arange(34, 35)]
    shot_indices, held_out = split_shots(members, 5, np.random.default_rng(0))
    assert not set(shot_indices) & set(held_out)
    for class_members, shots, held in zip(members, (5, 4, 1), (HELD_OUT_PER_CLASS, 0, 0),
                                          strict=True):
        assert np.isin(shot_indices, class_members).sum() == shots
        assert np.isin(held_out, class_members).sum() == held


def test_deterministic_and_seed_dependent():
    data = gaussian_clusters(6, 16, 20, 0.3, seed=2, test_per_class=30)
    first = few_shot_accuracy(*data, shots=(1, 5))
    assert few_shot_accuracy(*data, shots=(1, 5)) == first
    assert len(set(first[1]["per_seed"])) > 1  # different seeds draw different shots


def test_more_shots_than_examples_uses_all_of_them():
    data = gaussian_clusters(3, 8, 4, 3.0, seed=4, test_per_class=20)
    result = few_shot_accuracy(*data, shots=(25,), seeds=(0, 1))[25]
    # Every example is a shot, so every seed fits the same model; nothing is left to choose
    # the regulariser on, so the middle of the grid is used.
    assert result["per_seed"][0] == result["per_seed"][1]
    assert result["regulariser"] == 1.0
    assert result["accuracy"] > 0.9


def test_an_unbalanced_train_set_works():
    train_features, train_labels, test_features, test_labels = gaussian_clusters(
        4, 8, 30, 3.0, seed=5)
    keep = (train_labels != 3) | (np.cumsum(train_labels == 3) <= 2)  # class 3: two examples
    # Class 3 has no held-out examples and every regulariser ties on the others; a "largest
    # regulariser wins" rule then let the bias (mean target, lower for class 3) hide it: 0.70.
    result = few_shot_accuracy(train_features[keep], train_labels[keep], test_features,
                               test_labels, shots=(10,))
    assert result[10]["accuracy"] > 0.9


@pytest.mark.parametrize("arguments, fragment", [
    (dict(shots=(0,)), "positive integers"),
    (dict(shots=(1.5,)), "positive integers"),
    (dict(seeds=()), "seed"),
    (dict(regularisers=(1.0, -1.0)), "positive numbers"),
    (dict(test_features=np.zeros((4, 3))), "test features have 3"),
    (dict(train_labels=np.zeros(6, int)), "two classes"),
    (dict(train_labels=np.array([0, 1, 0, 1, 0, -1])), "non-negative"),
    (dict(train_features=np.full((6, 2), np.nan)), "finite"),
    (dict(test_labels=np.zeros(3, int)), "1-d array of 4"),
])
def test_bad_input_is_a_one_line_error(arguments, fragment):
    values = dict(train_features=np.ones((6, 2)), train_labels=np.array([0, 1, 0, 1, 0, 1]),
                  test_features=np.ones((4, 2)), test_labels=np.array([0, 1, 0, 1]))
    values.update(arguments)
    data = [values.pop(key) for key in ("train_features", "train_labels", "test_features",
                                         "test_labels")]
    assert fragment in vitcli_error(few_shot_accuracy, *data, **values)
