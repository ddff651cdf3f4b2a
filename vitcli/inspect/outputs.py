"""Each `vitcli inspect` command as a library call: compute the numbers, write the files,
return their paths. Nothing here prints."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

import keras
import numpy as np

from vitcli.config import DataConfig, check_value
from vitcli.errors import VitcliError
from vitcli.files import write_atomically
from vitcli.inspect import figures
from vitcli.inspect.attention import AttentionExtractor, attention_weights, token_layout
from vitcli.inspect.distance import per_image_distances
from vitcli.inspect.filters import DEFAULT_COMPONENTS, embedding_filters, principal_components
from vitcli.inspect.posemb import cosine_similarity_grid, grid_embeddings
from vitcli.inspect.rollout import layer_maps, rollout_maps

DEFAULT_DISTANCE_IMAGES = 32
DEFAULT_BATCH_SIZE = 8
EVAL_CROP = DataConfig.eval_crop  # images are prepared exactly as evaluation prepares them
SPLIT_PREFERENCE = ("val", "test", "train")  # held-out images first: what the model did not fit


def load_images(files: list[Path], image_size, eval_crop: str = EVAL_CROP) -> np.ndarray:
    """(N, S, S, 3) (or (N, H, W, 3) for a (height, width) `image_size`) float32 pixels in
    [0, 255], prepared as for evaluation; each file is a usable image
    (`vitcli.data.index.check_images`), or one line naming the first that is not."""
    import tensorflow as tf

    from vitcli.data import ops
    from vitcli.data.index import check_images

    transform = ops.eval_transform(check_value(DataConfig, "eval_crop", eval_crop, None),
                                   image_size)
    check_images(files)
    return np.stack([transform(ops.decode_image(tf.io.read_file(str(file)))).numpy()
                     for file in files])


def unique_names(files: list[Path]) -> list[str]:
    """File stems, numbered where two files share one, so no figure overwrites another."""
    names, seen = [], {}
    for file in files:
        count = seen[file.stem] = seen.get(file.stem, 0) + 1
        names.append(file.stem if count == 1 else f"{file.stem}-{count}")
    return names


def write_attention_figures(model: keras.Model, files: list[Path], out_dir: Path, *,
                            name: str, per_layer: bool = False, eval_crop: str = EVAL_CROP,
                            batch_size: int = DEFAULT_BATCH_SIZE) -> list[Path]:
    """`<image>_attention.png` (rollout overlay) per image, and `<image>_layers.png`
    (each layer's class-token attention) with `per_layer`."""
    if batch_size < 1:
        raise VitcliError(f"batch size must be at least 1, got {batch_size}")
    from vitcli.data.index import check_images

    check_images(files)  # every image usable before the first figure is written
    layout, extractor = token_layout(model), AttentionExtractor(model)
    row_name = "class-token attention" if layout.num_prefix_tokens else "mean attention"
    names, written = unique_names(files), []
    for start in range(0, len(files), batch_size):
        batch = files[start:start + batch_size]
        images = load_images(batch, tuple(model.input_shape[1:3]), eval_crop)
        attention = attention_weights(model, images, batch_size, extractor)
        rollouts, layers = rollout_maps(attention, layout), layer_maps(attention, layout)
        for index, stem in enumerate(names[start:start + batch_size]):
            title = f"{batch[index].name} ({name})"
            figure = figures.attention_overlay_figure(images[index], rollouts[index], title)
            written.append(figures.save_png(figure, out_dir / f"{stem}_attention.png"))
            if per_layer:
                figure = figures.layer_maps_figure(layers[index], title, row_name)
                written.append(figures.save_png(figure, out_dir / f"{stem}_layers.png"))
    return written


def write_posemb_figure(model: keras.Model, out_dir: Path, *, name: str) -> Path:
    """`posemb.png`: each grid position's cosine similarity with every other."""
    similarity = cosine_similarity_grid(grid_embeddings(model))
    return figures.save_png(figures.posemb_figure(similarity, name), out_dir / "posemb.png")


def write_filters_figure(model: keras.Model, out_dir: Path, *, name: str,
                         count: int = DEFAULT_COMPONENTS) -> Path:
    """`filters.png`: the leading principal components of the RGB patch-embedding filters."""
    components, variance = principal_components(embedding_filters(model), count)
    figure = figures.filters_figure(components, variance, name)
    return figures.save_png(figure, out_dir / "filters.png")


def sample_batches(data: DataConfig, image_size, count: int, *, split: str | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[np.ndarray]:
    """Up to `count` evaluation-prepared images of a split (by default val, else test, else
    train), in batches."""
    from vitcli.data.pipeline import eval_dataset
    from vitcli.data.sources import open_source

    source = open_source(data)
    if split is None:
        split = next((name for name in SPLIT_PREFERENCE if name in source.splits), "train")
    dataset = eval_dataset(source.split(split), data, image_size=image_size,
                           batch_size=batch_size)
    remaining = count
    for images, _ in dataset:
        if remaining <= 0:
            return
        yield images.numpy()[:remaining]
        remaining -= len(images)


def attention_distances(model: keras.Model, batches: Iterable[np.ndarray]
                        ) -> tuple[np.ndarray, int]:
    """(layers, heads) mean attention distance in pixels over all images, and their number."""
    layout, extractor = token_layout(model), AttentionExtractor(model)
    total, count = 0.0, 0
    for images in batches:
        attention = attention_weights(model, images, len(images), extractor)
        total = total + per_image_distances(attention, layout).sum(axis=1)
        count += len(images)
    if count == 0:
        raise VitcliError("no images to measure attention distances on")
    return total / count, count


def _write_distance_csv(distances: np.ndarray, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "head", "distance_px"])
        for (layer, head), value in np.ndenumerate(distances):
            writer.writerow([layer, head, f"{value:.4f}"])


def write_distance_outputs(model: keras.Model, data: dict, out_dir: Path, *, name: str,
                           count: int = DEFAULT_DISTANCE_IMAGES, split: str | None = None,
                           batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[Path, Path, int]:
    """`distance.csv` (layer, head, distance_px) and `distance.png`; data as DataConfig fields
    (None = not given)."""
    if not data.get("source"):
        raise VitcliError("give --data: the images to measure attention distances on")
    if count < 1:
        raise VitcliError(f"--images must be at least 1, got {count}")
    if batch_size < 1:
        raise VitcliError(f"batch size must be at least 1, got {batch_size}")
    config = dataclasses.replace(DataConfig(), **{key: value for key, value in data.items()
                                                  if value is not None})
    batches = sample_batches(config, tuple(model.input_shape[1:3]), count, split=split,
                             batch_size=batch_size)
    distances, num_images = attention_distances(model, batches)
    csv_path = write_atomically(out_dir / "distance.csv",
                                lambda temporary: _write_distance_csv(distances, temporary))
    figure = figures.distance_figure(distances, num_images, name)
    return csv_path, figures.save_png(figure, out_dir / "distance.png"), num_images
