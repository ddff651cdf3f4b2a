"""Every figure has a title, labelled axes and a colour bar where colours carry values."""

from __future__ import annotations

import numpy as np
import pytest

from vitcli.inspect import figures

RNG = np.random.default_rng(0)


def colour_bars(figure) -> list:
    return [axes for axes in figure.axes if axes.get_label() == "<colorbar>"]


def titles(figure) -> str:
    parts = [figure._suptitle.get_text() if figure._suptitle else ""]
    return " ".join(parts + [axes.get_title() for axes in figure.axes])


def axis_labels(figure) -> tuple[str, str]:
    """The x/y labels of the figure's data axes, or of the figure when it is a grid of them."""
    if figure._supxlabel is not None:
        return figure._supxlabel.get_text(), figure._supylabel.get_text()
    data = [axes for axes in figure.axes if axes.get_label() != "<colorbar>"][-1]
    return data.get_xlabel(), data.get_ylabel()


FIGURES = {
    "attention": lambda: figures.attention_overlay_figure(
        RNG.uniform(0, 255, (32, 32, 3)), RNG.random((4, 4)), "x.png"),
    "layers": lambda: figures.layer_maps_figure(RNG.random((6, 4, 4)), "x.png",
                                                "class-token attention"),
    "posemb": lambda: figures.posemb_figure(RNG.uniform(-1, 1, (4, 4, 4, 4)), "tiny"),
    "distance": lambda: figures.distance_figure(RNG.random((6, 3)) * 20, 5, "tiny"),
}


@pytest.mark.parametrize("name", FIGURES)
def test_titled_labelled_with_a_colour_bar(name):
    figure = FIGURES[name]()
    assert titles(figure).strip()
    assert all(axis_labels(figure))
    bars = colour_bars(figure)
    assert len(bars) == 1 and bars[0].get_ylabel()


def test_filters_figure_is_titled_and_labelled_without_a_colour_bar():
    # RGB patches: the colours are the weights themselves, there is no scalar to map.
    components = RNG.normal(size=(10, 4, 4, 3))
    figure = figures.filters_figure(components, np.linspace(0.3, 0.01, 10), "tiny")
    assert "principal components" in titles(figure) and all(axis_labels(figure))
    assert not colour_bars(figure)


def test_similarity_mosaic_places_tiles_with_gaps():
    similarity = np.arange(2 * 2 * 2 * 2, dtype=float).reshape(2, 2, 2, 2)
    mosaic = figures.similarity_mosaic(similarity)
    assert mosaic.shape == (5, 5)
    np.testing.assert_array_equal(mosaic[3:, 3:], similarity[1, 1])
    np.testing.assert_array_equal(mosaic[:2, 3:], similarity[0, 1])
    assert np.isnan(mosaic[2]).all() and np.isnan(mosaic[:, 2]).all()


def test_save_png_is_atomic(tmp_path):
    path = figures.save_png(FIGURES["distance"](), tmp_path / "sub" / "distance.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [file.name for file in path.parent.iterdir()] == ["distance.png"]
