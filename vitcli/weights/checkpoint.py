"""Load any supported checkpoint into a Keras model, and save a model in the official layout.

The pipeline is a chain of small steps: read archive -> normalise the layout -> read the
architecture -> adapt (resize position embeddings, replace the head) -> build -> assign by
name -> report what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from vitcli.config import ModelConfig, canonical_size, size_text
from vitcli.errors import VitcliError
from vitcli.models.vit import build_vit, config_from_model, validate
from vitcli.storage import local_copy, location
from vitcli.weights.assign import assign_arrays, check_keys, read_arrays
from vitcli.weights.describe import check_model_size, describe_arrays
from vitcli.weights.layout import POSEMB_KEY, normalise_layout
from vitcli.weights.npz import key_map, posemb_record, read_npz, without_records, write_npz
from vitcli.weights.posemb import resize_posemb

HEAD_KEYS = ("head/kernel", "head/bias")
PRE_LOGITS_KEYS = ("pre_logits/kernel", "pre_logits/bias")


@dataclass
class LoadReport:
    """What loading changed on the way from the file to the model."""

    source: str
    config: ModelConfig
    resized: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [*self.resized, *self.replaced, *self.dropped]


def _resize_posemb(arrays, source: ModelConfig, target: ModelConfig, report: LoadReport):
    """Each axis of the table's grid interpolated to the target's (height and width apart,
    so a square checkpoint becomes a non-square model's table; docs/reference.md §5)."""
    if source.grid_shape == target.grid_shape or source.posemb == "none":
        return arrays
    old, new = ("x".join(map(str, config.grid_shape)) for config in (source, target))
    pixels = f"({size_text(source.image_size)} px -> {size_text(target.image_size)} px)"
    if source.posemb == "sincos2d":  # nothing stored: the model builds its grid's table
        report.resized.append(f"sincos2d position embeddings computed for {new} {pixels}")
        return arrays
    resized = resize_posemb(arrays[POSEMB_KEY], target.grid_shape,
                            num_prefix_tokens=target.num_prefix_tokens,
                            old_grid=source.grid_shape)
    report.resized.append(f"position embeddings {old} -> {new} {pixels}")
    return {**arrays, POSEMB_KEY: resized}


def _replace_head(arrays, source: ModelConfig, target: ModelConfig, report: LoadReport):
    arrays = {key: value for key, value in arrays.items()
              if key not in HEAD_KEYS + PRE_LOGITS_KEYS}
    report.replaced.append(f"head: {source.num_classes} -> {target.num_classes} classes "
                           "(new, zero-initialised)")
    if source.representation_size:
        report.dropped.append(f"pre-logits ({source.representation_size} wide) dropped")
    return arrays


def _target_config(source: ModelConfig, image_size, num_classes, dropout,
                   drop_path=None) -> ModelConfig:
    changes = {} if dropout is None else {"dropout": dropout}
    if drop_path is not None:
        changes["drop_path"] = drop_path
    if image_size is not None:
        changes["image_size"] = canonical_size(image_size)
    if num_classes is not None:
        changes.update(num_classes=num_classes, representation_size=None)
    return source.replace(**changes)


def model_from_arrays(arrays: dict[str, np.ndarray], *, name: str = "vit", image_size=None,
                      num_classes=None, dropout=None, drop_path=None,
                      dtype=None) -> tuple[keras.Model, LoadReport]:
    """Builds the model an archive describes (optionally changed) and loads it."""
    arrays = normalise_layout(arrays)
    source = describe_arrays(arrays, name=name)
    arrays = without_records(arrays)  # what they say is in `source` now
    # Names and size are checked before the model is built: it must cost what the file holds.
    check_keys(arrays, key_map(source))
    check_model_size(arrays, source, name)
    target = _target_config(source, image_size, num_classes, dropout, drop_path)
    validate(target)  # before the resize: a size the patch does not divide has no grid
    report = LoadReport(source=name, config=target)
    arrays = _resize_posemb(arrays, source, target, report)
    keep = frozenset()
    if num_classes is not None:
        arrays = _replace_head(arrays, source, target, report)
        keep = frozenset(HEAD_KEYS)
    model = build_vit(target, dtype=dtype)
    assign_arrays(model, arrays, key_map(target), keep_initialised=keep)
    return model, report


def _load_keras(path) -> keras.Model:
    try:
        with local_copy(path) as local:
            return keras.saving.load_model(local)
    except Exception as error:  # Keras raises many types for a bad file; all mean the same.
        raise VitcliError(f"'{path}' is not a loadable .keras model ({error})") from error


def model_arrays(model: keras.Model) -> dict[str, np.ndarray]:
    """A vitcli model's weights in the official checkpoint layout (a sincos2d or none model's
    with the record of its position embeddings)."""
    config = config_from_model(model)
    return {**read_arrays(model, key_map(config)), **posemb_record(config)}


def load_checkpoint_with_report(path, *, image_size=None, num_classes=None, dropout=None,
                                drop_path=None, dtype=None) -> tuple[keras.Model, LoadReport]:
    """`load_checkpoint`, also returning what was resized, replaced or dropped."""
    path = location(path)
    if path.suffix == ".keras":
        model = _load_keras(path)
        config = config_from_model(model)
        unchanged = ((image_size is None or canonical_size(image_size) == config.image_size)
                     and num_classes is None  # a given class count always means a new head
                     and dropout in (None, config.dropout)
                     and drop_path in (None, config.drop_path) and dtype is None)
        if unchanged:
            return model, LoadReport(source=str(path), config=config)
        arrays = model_arrays(model)
    else:
        arrays = read_npz(path)
    return model_from_arrays(arrays, name=path.stem, image_size=image_size,
                             num_classes=num_classes, dropout=dropout, drop_path=drop_path,
                             dtype=dtype)


def load_checkpoint(path, *, image_size: int | tuple[int, int] | None = None,
                    num_classes: int | None = None, dtype=None) -> keras.Model:
    """The model of an `.npz` (any supported layout) or `.keras` file, built from the file alone.

    `image_size` (a number, or (height, width) for a non-square model) resizes the position
    embeddings (align-corners bilinear, each axis on its own); `num_classes`
    replaces the head with a zero-initialised one and drops the pre-logits.
    """
    return load_checkpoint_with_report(path, image_size=image_size, num_classes=num_classes,
                                       dtype=dtype)[0]


def save_npz(model: keras.Model, path) -> Path:
    """Writes the model's weights in the official ViT layout (atomically)."""
    return write_npz(path, model_arrays(model))
