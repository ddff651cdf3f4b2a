"""The confusion matrix as files: `confusion.csv` (exact counts) and `confusion.png` (a heat map).

Colours are row-normalised (the fraction of each true class predicted as each class), so
rare classes are as readable as common ones; the cells still show the raw counts.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from vitcli.errors import VitcliError
from vitcli.files import write_atomically
from vitcli.storage import location

CSV_CORNER = "true\\predicted"
DPI = 100
MAX_CLASSES_WITH_COUNTS = 30
# Beyond this many classes tick labels would overlap into a black band; axes show indices.
MAX_CLASSES_WITH_NAMES = 100


def figure_inches(num_classes: int) -> tuple[float, float]:
    """(width, height) of the figure in inches: the matrix side grows with K, from 5 to 18."""
    side = float(np.clip(2.5 + 0.4 * num_classes, 5.0, 18.0))
    return side + 1.5, side  # the extra width holds the colour bar


def figure_pixels(num_classes: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG for `num_classes` classes."""
    width, height = figure_inches(num_classes)
    return round(width * DPI), round(height * DPI)


def _validated_matrix(matrix, class_names: list[str]) -> np.ndarray:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise VitcliError(f"a confusion matrix must be square and non-empty, got {matrix.shape}")
    if len(class_names) != matrix.shape[0]:
        raise VitcliError(f"{len(class_names)} class names for a {matrix.shape[0]}-class "
                          "confusion matrix")
    if not np.issubdtype(matrix.dtype, np.integer) or (matrix < 0).any():
        raise VitcliError("a confusion matrix must hold non-negative integer counts")
    return matrix.astype(np.int64)


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total; rows of classes with no examples stay zero."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)


def _write_csv(matrix: np.ndarray, class_names: list[str], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([CSV_CORNER, *class_names])
        for name, row in zip(class_names, matrix, strict=True):
            writer.writerow([name, *(int(count) for count in row)])


def _annotate_counts(axes, matrix: np.ndarray, fractions: np.ndarray) -> None:
    font_size = float(np.clip(14 - 0.35 * len(matrix), 6, 12))
    for (true, predicted), count in np.ndenumerate(matrix):
        # White text on dark cells, black on light, so every count stays legible.
        colour = "white" if fractions[true, predicted] > 0.5 else "black"
        axes.text(predicted, true, str(count), ha="center", va="center", color=colour,
                  fontsize=font_size)


def _draw(matrix: np.ndarray, class_names: list[str]):
    """The heat-map figure, built on a bare Figure so no pyplot state or GUI is involved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figure_inches(len(matrix)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    fractions = row_normalised(matrix)
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, label="fraction of the true class")
    axes.set_title(f"Confusion matrix ({int(matrix.sum())} examples)")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(matrix) <= MAX_CLASSES_WITH_NAMES:
        ticks = np.arange(len(matrix))
        axes.set_xticks(ticks, class_names, rotation=45, ha="right", rotation_mode="anchor")
        axes.set_yticks(ticks, class_names)
    if len(matrix) <= MAX_CLASSES_WITH_COUNTS:
        _annotate_counts(axes, matrix, fractions)
    return figure


def write_confusion_matrix(matrix: np.ndarray, class_names: list[str],
                           out_dir: Path) -> tuple[Path, Path]:
    """Writes `confusion.csv` and `confusion.png` into `out_dir` atomically; returns both paths."""
    class_names = [str(name) for name in class_names]
    matrix = _validated_matrix(matrix, class_names)
    out_dir = location(out_dir)
    csv_path = write_atomically(out_dir / "confusion.csv",
                                lambda temporary: _write_csv(matrix, class_names, temporary))
    figure = _draw(matrix, class_names)
    png_path = write_atomically(out_dir / "confusion.png",
                                lambda temporary: figure.savefig(temporary, format="png"))
    return csv_path, png_path
