"""Reads a model's architecture from the keys and shapes of an official-layout checkpoint, and
checks that the architecture is no larger than the arrays that describe it."""

from __future__ import annotations

import re

import numpy as np

from vitcli.config import (
    MAX_IMAGE_SIZE,
    ModelConfig,
    ResNetConfig,
    canonical_size,
    image_shape,
    resnet_classifier,
    size_text,
)
from vitcli.errors import VitcliError
from vitcli.models.cost import parameter_count
from vitcli.weights.layout import POSEMB_KEY
from vitcli.weights.npz import GRID_RECORD, IMAGE_SIZE_RECORD, POSEMB_RECORDS
from vitcli.weights.posemb import square_grid

_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_UNIT = re.compile(r"^block(\d+)/unit(\d+)/")
# A model may need this many parameters more than its arrays hold (times 2, plus this) before
# it is refused unbuilt; exact shapes are compared when the weights are assigned.
_SIZE_SLACK = 2**20


def _require(arrays: dict[str, np.ndarray], key: str, rank: int) -> np.ndarray:
    if key not in arrays:
        raise VitcliError(f"not a ViT checkpoint: it has no '{key}' array")
    if arrays[key].ndim != rank:
        raise VitcliError(f"'{key}' has shape {arrays[key].shape}, expected {rank} dimensions")
    return arrays[key]


def _resnet_layout(arrays: dict[str, np.ndarray]) -> ResNetConfig | None:
    if "conv_root/kernel" not in arrays:
        return None
    units: dict[int, int] = {}
    for key in arrays:
        if match := _UNIT.match(key):
            stage, unit = int(match.group(1)), int(match.group(2))
            units[stage] = max(units.get(stage, 0), unit)
    if sorted(units) != list(range(1, len(units) + 1)):
        raise VitcliError(f"ResNet stages are not numbered 1..n: {sorted(units)}")
    width = arrays["conv_root/kernel"].shape[-1]
    return ResNetConfig(layers=tuple(units[stage] for stage in sorted(units)),
                        width_factor=width // 64)


def _depth(arrays: dict[str, np.ndarray]) -> int:
    blocks = {int(match.group(1)) for key in arrays if (match := _BLOCK.match(key))}
    if not blocks or blocks != set(range(len(blocks))):
        raise VitcliError(f"encoder blocks are missing or not numbered 0..n-1: {sorted(blocks)}")
    return len(blocks)


def _grid_record(arrays: dict[str, np.ndarray], key: str) -> tuple[int, int]:
    """A recorded token grid (or a pure ResNet's image size): (height, width), two whole
    numbers of at least 1."""
    record = arrays[key]
    what = "an image size" if key == IMAGE_SIZE_RECORD else "a token grid"
    if record.shape != (2,) or record.dtype.kind not in "iu" or min(record) < 1:
        raise VitcliError(f"'{key}' must be {what} (height, width) of whole numbers, "
                          f"got {record.tolist()}")
    return int(record[0]), int(record[1])


def _learned_grid(arrays: dict[str, np.ndarray], classifier: str) -> tuple[int, int]:
    """A learned table's grid: its rows (less the class row) as a square, unless a
    non-square model's GRID_RECORD says (height, width)."""
    patches = _require(arrays, POSEMB_KEY, 3).shape[1] - (classifier == "token")
    if GRID_RECORD not in arrays:
        side = square_grid(patches)
        return side, side
    height, width = _grid_record(arrays, GRID_RECORD)
    if height * width != patches:
        raise VitcliError(f"'{GRID_RECORD}' says a {height}x{width} grid, but the position "
                          f"embeddings have {patches} patch rows")
    return height, width


def _position_embeddings(arrays: dict[str, np.ndarray],
                         classifier: str) -> tuple[str, tuple[int, int]]:
    """(kind, (grid height, grid width)): a learned table's rows (less the class row) form a
    square grid unless GRID_RECORD gives a non-square one; a sincos2d or none model has no
    table but its record, (grid height, grid width)."""
    recorded = [kind for kind, key in POSEMB_RECORDS.items() if key in arrays]
    if not recorded:
        return "learned", _learned_grid(arrays, classifier)
    if len(recorded) > 1 or POSEMB_KEY in arrays:
        found = ", ".join(([POSEMB_KEY] if POSEMB_KEY in arrays else [])
                          + [POSEMB_RECORDS[kind] for kind in recorded])
        raise VitcliError(f"the checkpoint records more than one kind of position embedding "
                          f"({found})")
    if GRID_RECORD in arrays:
        raise VitcliError(f"'{GRID_RECORD}' is the grid of a learned table, but the "
                          f"checkpoint records {recorded[0]} position embeddings")
    return recorded[0], _grid_record(arrays, POSEMB_RECORDS[recorded[0]])


# A pure ResNet archive without an IMAGE_SIZE_RECORD (not written by vitcli) is read at this.
DEFAULT_RESNET_IMAGE_SIZE = 224


def _describe_resnet(arrays: dict[str, np.ndarray], name: str) -> ModelConfig:
    """A pure ResNet classifier: the hybrid stem's arrays with all its stages, the head, and
    the image size it was trained at (IMAGE_SIZE_RECORD)."""
    image_size = DEFAULT_RESNET_IMAGE_SIZE
    if IMAGE_SIZE_RECORD in arrays:
        image_size = canonical_size(_grid_record(arrays, IMAGE_SIZE_RECORD))
        if max(image_shape(image_size)) > MAX_IMAGE_SIZE:
            raise VitcliError(f"'{IMAGE_SIZE_RECORD}' says {size_text(image_size)} px, more "
                              f"than vitcli's largest image side ({MAX_IMAGE_SIZE})")
    return resnet_classifier(
        _resnet_layout(arrays), name=name, image_size=image_size,
        num_classes=_require(arrays, "head/kernel", 2).shape[-1] if "head/kernel" in arrays
        else 0)


def describe_arrays(arrays: dict[str, np.ndarray], name: str = "checkpoint") -> ModelConfig:
    """The `ModelConfig` that an official-layout archive was made from (a ResNet stem without
    a patch embedding: a pure ResNet classifier)."""
    if "embedding/kernel" not in arrays and "conv_root/kernel" in arrays:
        return _describe_resnet(arrays, name)
    embedding = _require(arrays, "embedding/kernel", 4)
    block = "Transformer/encoderblock_0"
    query = _require(arrays, f"{block}/MultiHeadDotProductAttention_1/query/kernel", 3)
    mlp = _require(arrays, f"{block}/MlpBlock_3/Dense_0/kernel", 2)
    classifier = "token" if "cls" in arrays else "gap"
    posemb, grid = _position_embeddings(arrays, classifier)
    resnet = _resnet_layout(arrays)
    patch_size = embedding.shape[0]
    stride = patch_size * (resnet.stride if resnet else 1)
    return ModelConfig(
        name=name,
        hidden_size=embedding.shape[-1],
        depth=_depth(arrays),
        num_heads=query.shape[1],
        mlp_dim=mlp.shape[1],
        patch_size=patch_size,
        image_size=canonical_size((grid[0] * stride, grid[1] * stride)),
        num_classes=arrays["head/kernel"].shape[-1] if "head/kernel" in arrays else 0,
        classifier=classifier,
        posemb=posemb,
        representation_size=(arrays["pre_logits/kernel"].shape[-1]
                             if "pre_logits/kernel" in arrays else None),
        resnet=resnet,
    )


def check_model_size(arrays: dict[str, np.ndarray], config: ModelConfig, name: str) -> None:
    """Refuses an archive whose architecture is far larger than its arrays, before the model
    is built: a few forged shapes (a 100,000-wide embedding in a small file) would otherwise
    build a model of many gigabytes before any weight is compared."""
    held = sum(int(array.size) for array in arrays.values())
    needed = parameter_count(config)
    if needed > 2 * held + _SIZE_SLACK:
        raise VitcliError(f"{name}: the architecture its arrays describe has {needed:,} "
                          f"parameters, but it holds {held:,} values",
                          hint="the file is damaged or not a ViT checkpoint")
