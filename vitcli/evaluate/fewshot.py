"""Few-shot linear evaluation (docs/reference.md §7): closed-form ridge regression on frozen
features to {-1, +1}^K targets, test examples classified by the largest output.

Decisions:
- Features are divided by the shots' own per-dimension standard deviation, so one
  regulariser grid suits features of any scale (big_vision's few-shot evaluator whitens too).
- The bias is a column of ones that is not regularised. It is solved exactly by centring
  the shots: with a free bias, ridge regression on centred data gives the same weights and
  the bias follows from the means.
- One eigendecomposition per fit serves every regulariser; it is of X^T X or of X X^T,
  whichever is smaller (a 1000-class 25-shot fit is 768 x 768, a 10-class 1-shot one 10 x 10).
- The regulariser is chosen on held-out train examples disjoint from the shots (up to
  `HELD_OUT_PER_CLASS` per class, drawn after the shots). Equal held-out accuracies, common
  with few held-out examples, are decided by the held-out squared error of the regression
  (its own loss); "the largest regulariser wins" would let the class-frequency bias swamp a
  class with fewer shots. With no train example left over, the middle of the grid (1.0 for
  the default grid) is used.
- Samples come from `np.random.default_rng(seed)`, one permutation per class, so the
  n-shot sample of a seed contains its smaller-shot samples and results are reproducible.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from vitcli.errors import VitcliError
from vitcli.evaluate.metrics import validated_labels

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_REGULARISERS = tuple(2.0**exponent for exponent in range(-10, 11, 2))
HELD_OUT_PER_CLASS = 10
_PREDICTION_CHUNK = 8192  # rows per matmul, so (N, K) outputs of a large test set never coexist


def ridge_regression(features: np.ndarray, targets: np.ndarray,
                     regularisers) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weights, bias) minimising ||X W + 1 b - Y||^2 + lambda ||W||^2 for each lambda."""
    mean_features = features.mean(axis=0)
    centred = features - mean_features
    if centred.shape[0] >= centred.shape[1]:
        eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
        basis, coefficients = vectors, vectors.T @ (centred.T @ targets)
    else:
        # Kernel form W = Xc^T (Xc Xc^T + lambda I)^-1 Y; uncentred Y is fine as Xc^T 1 = 0.
        eigenvalues, vectors = np.linalg.eigh(centred @ centred.T)
        basis, coefficients = centred.T @ vectors, vectors.T @ targets
    eigenvalues = np.maximum(eigenvalues, 0.0)  # rounding can push a zero eigenvalue below 0
    solutions = []
    for regulariser in regularisers:
        weights = basis @ (coefficients / (eigenvalues + regulariser)[:, None])
        solutions.append((weights, targets.mean(axis=0) - mean_features @ weights))
    return solutions


def _output_chunks(features: np.ndarray, weights: np.ndarray, bias: np.ndarray):
    """`features @ weights + bias` a block of rows at a time."""
    for start in range(0, len(features), _PREDICTION_CHUNK):
        yield start, features[start:start + _PREDICTION_CHUNK] @ weights + bias


def predict(features: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The index of the largest output of `features @ weights + bias` for every example."""
    return np.concatenate([np.argmax(outputs, axis=1)
                           for _, outputs in _output_chunks(features, weights, bias)])


def signed_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K) targets: +1 in the column of the example's class, -1 elsewhere."""
    targets = -np.ones((len(labels), num_classes))
    targets[np.arange(len(labels)), labels] = 1.0
    return targets


def held_out_score(features: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                   bias: np.ndarray) -> tuple[int, float]:
    """(number correct, minus the squared error to the {-1, +1} targets): larger is better."""
    correct, squared_error = 0, 0.0
    for start, outputs in _output_chunks(features, weights, bias):
        block_labels = labels[start:start + len(outputs)]
        correct += int(np.sum(np.argmax(outputs, axis=1) == block_labels))
        targets = signed_targets(block_labels, outputs.shape[1])
        squared_error += float(np.sum((outputs - targets) ** 2))
    return correct, -squared_error


def split_shots(members_by_class: list[np.ndarray], shots: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(shot indices, held-out indices): `shots` per class (all a smaller class has), then up to
    `HELD_OUT_PER_CLASS` more per class from the rest."""
    permuted = [rng.permutation(members) for members in members_by_class]
    shot_indices = np.concatenate([members[:shots] for members in permuted])
    held_out = np.concatenate([members[shots:shots + HELD_OUT_PER_CLASS] for members in permuted])
    return shot_indices, held_out


def choose_regulariser(solutions, regularisers: tuple[float, ...], features: np.ndarray,
                       labels: np.ndarray) -> int:
    """Index of the regulariser whose solution scores best on the held-out examples."""
    if len(labels) == 0:
        return int(np.argsort(regularisers)[len(regularisers) // 2])
    scores = [held_out_score(features, labels, *solution) for solution in solutions]
    return max(range(len(scores)), key=scores.__getitem__)


def _feature_scale(features: np.ndarray) -> np.ndarray:
    scale = features.std(axis=0)
    # A constant dimension's std is rounding noise; dividing by it would turn that noise into
    # a unit-variance feature, dividing by 1 keeps the dimension harmless.
    return np.where(scale > 1e-9 * np.abs(features).max(axis=0), scale, 1.0)


def _one_seed(train, test, members_by_class, shots: int, seed: int,
              regularisers: tuple[float, ...], num_classes: int) -> tuple[float, float]:
    """(test accuracy, chosen regulariser) for one draw of `shots` examples per class."""
    (train_features, train_labels), (test_features, test_labels) = train, test
    shot_indices, held_out = split_shots(members_by_class, shots, np.random.default_rng(seed))
    shot_features = train_features[shot_indices].astype(np.float64)
    scale = _feature_scale(shot_features)
    targets = signed_targets(train_labels[shot_indices], num_classes)
    # Weights are rescaled back, so held-out and test features are used as they are.
    solutions = [(weights / scale[:, None], bias) for weights, bias
                 in ridge_regression(shot_features / scale, targets, regularisers)]
    chosen = choose_regulariser(solutions, regularisers, train_features[held_out],
                                train_labels[held_out])
    accuracy = float(np.mean(predict(test_features, *solutions[chosen]) == test_labels))
    return accuracy, regularisers[chosen]


def _validated_features(features, what: str) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or 0 in features.shape:
        raise VitcliError(f"{what} must be a non-empty (examples, dimensions) array, "
                          f"got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.number) or not np.isfinite(features).all():
        raise VitcliError(f"{what} must be finite numbers", hint="the model diverged")
    return features


def _validated_settings(shots, seeds, regularisers) -> tuple[tuple, tuple, tuple]:
    shots, seeds, regularisers = tuple(shots), tuple(seeds), tuple(float(r) for r in regularisers)
    if not shots or any(int(n) != n or n < 1 for n in shots):
        raise VitcliError(f"shots must be positive integers, got {shots}", hint="e.g. 1,5,10,25")
    if not seeds:
        raise VitcliError("few-shot evaluation needs at least one seed")
    if not regularisers or not all(np.isfinite(r) and r > 0 for r in regularisers):
        raise VitcliError(f"regularisers must be positive numbers, got {regularisers}")
    return tuple(int(n) for n in shots), seeds, regularisers


def _validated_data(train_features, train_labels, test_features, test_labels):
    train_features = _validated_features(train_features, "train features")
    test_features = _validated_features(test_features, "test features")
    if train_features.shape[1] != test_features.shape[1]:
        raise VitcliError(f"train features have {train_features.shape[1]} dimensions, "
                          f"test features have {test_features.shape[1]}")
    train_labels = validated_labels(train_labels, len(train_features), None, "train labels")
    test_labels = validated_labels(test_labels, len(test_features), None, "test labels")
    if len(np.unique(train_labels)) < 2:
        raise VitcliError("few-shot evaluation needs train examples of at least two classes")
    return (train_features, train_labels), (test_features, test_labels)


def few_shot_accuracy(train_features, train_labels, test_features, test_labels, *,
                      shots=DEFAULT_SHOTS, seeds=DEFAULT_SEEDS,
                      regularisers=DEFAULT_REGULARISERS) -> dict:
    """{n: {"accuracy", "std", "per_seed", "regulariser"}}: n-shot linear test accuracy, mean
    and (population) standard deviation over seeds, and the most often chosen regulariser."""
    shots, seeds, regularisers = _validated_settings(shots, seeds, regularisers)
    train, test = _validated_data(train_features, train_labels, test_features, test_labels)
    num_classes = int(max(train[1].max(), test[1].max())) + 1
    order = np.argsort(train[1], kind="stable")
    boundaries = np.flatnonzero(np.diff(train[1][order])) + 1
    members_by_class = np.split(order, boundaries)  # train indices of each present class
    results = {}
    for n in shots:
        runs = [_one_seed(train, test, members_by_class, n, seed, regularisers, num_classes)
                for seed in seeds]
        accuracies = [accuracy for accuracy, _ in runs]
        results[n] = {
            "accuracy": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)),
            "per_seed": accuracies,
            # Counter keeps first-seen order, so a tie goes to the earliest seed's choice.
            "regulariser": Counter(chosen for _, chosen in runs).most_common(1)[0][0],
        }
    return results
