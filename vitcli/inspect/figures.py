"""The inspection figures, drawn with matplotlib on bare Figures (Agg, no pyplot state).

Every figure has a title and labelled axes, and a colour bar wherever colours carry values;
`save_png` writes it atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vitcli.files import write_atomically
from vitcli.inspect.filters import as_rgb

DPI = 100
OVERLAY_ALPHA = 0.6  # enough to read the map, little enough to recognise the image
MAP_COLOURS = "inferno"
SIMILARITY_COLOURS = "viridis"
MAX_COLUMNS = 7  # the paper's filters figure: rows of 7


def new_figure(width: float, height: float):
    """A Figure with its own Agg canvas: no GUI backend and no global pyplot figure list."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, path: str | Path) -> Path:
    """Writes `figure` as a PNG at `path` without ever leaving a half-written file."""
    return write_atomically(path, lambda temporary: figure.savefig(temporary, format="png"))


def _grid_ticks(axes, grid_size: int, grid_rows: int | None = None) -> None:
    """Whole patch indices as ticks (at most ~8 per axis), not matplotlib's half steps;
    `grid_size` columns and `grid_rows` rows (None: as many as columns)."""
    def ticks(count: int) -> np.ndarray:
        return np.arange(0, count, max(1, math.ceil(count / 8)))

    axes.set_xticks(ticks(grid_size))
    axes.set_yticks(ticks(grid_size if grid_rows is None else grid_rows))


def _label_pixels(axes) -> None:
    axes.set_xlabel("x (pixels)")
    axes.set_ylabel("y (pixels)")


def attention_overlay_figure(image: np.ndarray, rollout_map: np.ndarray, name: str):
    """The input image beside it with the rollout map upsampled (bilinear) over it."""
    from matplotlib.cm import ScalarMappable

    size = image.shape[0]
    extent = (0, image.shape[1], size, 0)  # each map cell covers exactly its patch
    figure = new_figure(9.5, 4.6)
    original, overlay = figure.subplots(1, 2)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    original.imshow(pixels, extent=extent)
    original.set_title(f"input ({size}x{image.shape[1]})")
    overlay.imshow(pixels, extent=extent)
    shown = overlay.imshow(rollout_map, cmap=MAP_COLOURS, alpha=OVERLAY_ALPHA, extent=extent,
                           interpolation="bilinear", vmin=0.0)
    overlay.set_title("attention rollout")
    for axes in (original, overlay):
        _label_pixels(axes)
    # The bar shows the colour scale itself, not its blend with one image.
    scale = ScalarMappable(norm=shown.norm, cmap=shown.cmap)
    figure.colorbar(scale, ax=overlay, label="rollout weight of the patch")
    figure.suptitle(f"Attention rollout: {name}")
    return figure


def _grid_shape(count: int, max_columns: int = MAX_COLUMNS) -> tuple[int, int]:
    columns = min(count, max_columns)
    return math.ceil(count / columns), columns


def layer_maps_figure(maps: np.ndarray, name: str, row_name: str):
    """One small map per layer with one shared colour scale, so layers compare directly."""
    rows, columns = _grid_shape(len(maps), 6)
    figure = new_figure(1.9 * columns + 1.6, 1.9 * rows + 0.9)
    grid = np.atleast_2d(figure.subplots(rows, columns, squeeze=False))
    top = float(maps.max()) or 1.0
    for index, axes in enumerate(grid.ravel()):
        if index >= len(maps):
            axes.set_axis_off()
            continue
        shown = axes.imshow(maps[index], cmap=MAP_COLOURS, vmin=0.0, vmax=top)
        axes.set_title(f"layer {index}", fontsize=9)
        _grid_ticks(axes, maps.shape[-1], maps.shape[-2])
        axes.tick_params(labelsize=7)
        axes.label_outer()
    figure.colorbar(shown, ax=grid.ravel().tolist(), label=row_name)
    figure.supxlabel("patch column")
    figure.supylabel("patch row")
    figure.suptitle(f"{row_name.capitalize()} of each layer, mean over heads: {name}")
    return figure


def similarity_mosaic(similarity: np.ndarray) -> np.ndarray:
    """(g, g, g, g) -> one (g(g+1)-1)^2 image of g x g tiles, tile (i, j) being position
    (i, j)'s similarities, with NaN gaps between tiles. A non-square (h, w, h, w) grid gives
    h x w tiles of h x w: an (h(h+1)-1, w(w+1)-1) image."""
    rows, columns = similarity.shape[:2]
    down, across = rows + 1, columns + 1
    mosaic = np.full((rows * down - 1, columns * across - 1), np.nan)
    for row in range(rows):
        for column in range(columns):
            mosaic[row * down:row * down + rows,
                   column * across:column * across + columns] = similarity[row, column]
    return mosaic


def posemb_figure(similarity: np.ndarray, name: str):
    """Paper Fig. 7 centre: a grid of small similarity maps drawn as one image (fast for 14x14
    and larger grids) with one colour bar."""
    import matplotlib

    figure = new_figure(7.0, 6.0)
    axes = figure.subplots()
    colours = matplotlib.colormaps[SIMILARITY_COLOURS].with_extremes(bad="white")
    shown = axes.imshow(similarity_mosaic(similarity), cmap=colours, vmin=-1.0, vmax=1.0,
                        interpolation="nearest")
    for grid, set_ticks in ((similarity.shape[1], axes.set_xticks),
                            (similarity.shape[0], axes.set_yticks)):
        centres = np.arange(grid) * (grid + 1) + (grid - 1) / 2
        labels = [str(index + 1) for index in range(grid)]
        every = max(1, grid // 14)  # at most ~14 tick labels per axis
        set_ticks(centres[::every], labels[::every])
    axes.set_xlabel("input patch column")
    axes.set_ylabel("input patch row")
    figure.colorbar(shown, ax=axes, label="cosine similarity")
    axes.set_title(f"Position embedding similarity: {name}")
    return figure


def filters_figure(components: np.ndarray, variance: np.ndarray, name: str):
    """Paper Fig. 7 left: the components as RGB patches, in rows of seven; grey is zero."""
    rows, columns = _grid_shape(len(components))
    size = components.shape[1]
    figure = new_figure(1.35 * columns + 0.6, 1.45 * rows + 0.9)
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(grid.ravel()):
        if index >= len(components):
            axes.set_axis_off()
            continue
        axes.imshow(as_rgb(components[index]), interpolation="nearest")
        axes.set_title(f"PC{index + 1} ({variance[index]:.1%})", fontsize=8)
        axes.set_xticks([0, size - 1])
        axes.set_yticks([0, size - 1])
        axes.tick_params(labelsize=7)
        axes.label_outer()
    figure.supxlabel("x within the patch (pixels)")
    figure.supylabel("y within the patch (pixels)")
    figure.suptitle(f"RGB embedding filters, first {len(components)} principal components: "
                    f"{name}\n(each scaled to its largest weight; mid-grey is 0)", fontsize=10)
    return figure


def distance_figure(distances: np.ndarray, num_images: int, name: str):
    """Paper Fig. 7 right: one point per head at its layer's depth, coloured by head."""
    import matplotlib
    from matplotlib.colors import BoundaryNorm

    layers, heads = distances.shape
    figure = new_figure(6.4, 4.6)
    axes = figure.subplots()
    depth = np.repeat(np.arange(layers), heads)
    head = np.tile(np.arange(heads), layers)
    # One colour per head: heads are categories, the bar shows them as bands, not a gradient.
    colours = matplotlib.colormaps["viridis"].resampled(heads)
    bands = BoundaryNorm(np.arange(heads + 1) - 0.5, heads)
    shown = axes.scatter(depth, distances.ravel(), c=head, cmap=colours, norm=bands, s=28,
                         edgecolors="black", linewidths=0.3)
    axes.set_xticks(np.arange(layers))
    axes.set_ylim(bottom=0.0)
    axes.set_xlabel("network depth (layer)")
    axes.set_ylabel("mean attention distance (pixels)")
    axes.grid(alpha=0.3)
    bar = figure.colorbar(shown, ax=axes, label="head")
    bar.set_ticks(np.arange(heads) if heads <= 16 else np.linspace(0, heads - 1, 5).round())
    axes.set_title(f"Mean attention distance over {num_images} images: {name}")
    return figure
