"""confusion.csv parses back into the matrix; confusion.png is a valid image of the stated size."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from matplotlib import image as matplotlib_image

from tests.support.checks import vitcli_error
from vitcli.evaluate.confusion import figure_pixels, row_normalised, write_confusion_matrix


def read_csv(path) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    return header, [row[0] for row in rows], np.array([[int(cell) for cell in row[1:]]
                                                       for row in rows])


def test_csv_round_trip_with_awkward_names(tmp_path):
    names = ["plain", "with, comma", 'with "quotes"', "ünïcode"]
    matrix = np.random.default_rng(0).integers(0, 50, size=(4, 4))
    csv_path, _ = write_confusion_matrix(matrix, names, tmp_path)
    assert csv_path == tmp_path / "confusion.csv"
    header, row_names, counts = read_csv(csv_path)
    assert header == ["true\\predicted", *names]
    assert row_names == names
    np.testing.assert_array_equal(counts, matrix)


@pytest.mark.parametrize("num_classes, size", [(3, (650, 500)), (10, (800, 650))])
def test_png_is_readable_with_the_expected_size(tmp_path, num_classes, size):
    matrix = np.diag(np.arange(1, num_classes + 1)) + 1
    names = [f"class {index}" for index in range(num_classes)]
    _, png_path = write_confusion_matrix(matrix, names, tmp_path)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib_image.imread(png_path)
    assert pixels.shape == (size[1], size[0], 4)
    assert figure_pixels(num_classes) == size
    # A drawn heat map, not a blank canvas: several distinct colours.
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20


def test_many_classes_and_overwriting_leave_no_temporary_files(tmp_path):
    out_dir = tmp_path / "new" / "dir"
    names = [f"c{index}" for index in range(120)]  # beyond the limits for counts and names
    matrix = np.random.default_rng(1).integers(0, 5, size=(120, 120))
    write_confusion_matrix(matrix, names, out_dir)
    write_confusion_matrix(np.eye(2, dtype=int), ["a", "b"], out_dir)
    assert sorted(path.name for path in out_dir.iterdir()) == ["confusion.csv", "confusion.png"]
    np.testing.assert_array_equal(read_csv(out_dir / "confusion.csv")[2], np.eye(2))
    width, height = figure_pixels(2)
    assert matplotlib_image.imread(out_dir / "confusion.png").shape == (height, width, 4)


def test_row_normalised_colours():
    fractions = row_normalised(np.array([[3, 1], [0, 0]]))
    np.testing.assert_allclose(fractions, [[0.75, 0.25], [0.0, 0.0]])


@pytest.mark.parametrize("matrix, names, fragment", [
    (np.zeros((2, 3), int), ["a", "b"], "square"),
    (np.zeros((2, 2), int), ["a"], "1 class names"),
    (np.array([[1, -1], [0, 0]]), ["a", "b"], "non-negative"),
    (np.ones((2, 2)), ["a", "b"], "integer"),
])
def test_bad_matrix_is_a_one_line_error(tmp_path, matrix, names, fragment):
    assert fragment in vitcli_error(write_confusion_matrix, matrix, names, tmp_path)
    assert not list(tmp_path.iterdir())
