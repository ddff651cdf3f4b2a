"""Checkpoint layouts found in the wild (docs/reference.md §4.2), each written here from an
official random checkpoint by renaming, stacking or re-typing its arrays, must load to the same
weights and logits as the official file."""

from __future__ import annotations

import re
from collections import defaultdict

import ml_dtypes
import numpy as np
import pytest

import vitcli
from tests.reference.numpy_vit import forward
from tests.support.checkpoints import CHECKPOINT_SHAPES, POSEMB_KEY, official_checkpoint
from tests.support.models import PARITY_TOLERANCE, logits, random_images, weights_by_path

BLOCK_KEY = re.compile(r"^Transformer/encoderblock_(\d+)/(.*)$")
GROUP_NORM_KEY = re.compile(r"(^|/)gn(_root|\d|_proj)/(scale|bias)$")

# -- layout transformations (test code: the loader must undo them) ----------------------------


def with_prefix(prefix):
    def transform(arrays):
        return {prefix + key: value for key, value in arrays.items()}
    return transform


def current_flax_names(arrays):
    """Flax's current auto-names inside a block: _0, _1, _0 instead of _1, _2, _3."""
    renames = (("/MultiHeadDotProductAttention_1/", "/MultiHeadDotProductAttention_0/"),
               ("/LayerNorm_2/", "/LayerNorm_1/"), ("/MlpBlock_3/", "/MlpBlock_0/"))
    result = {}
    for key, value in arrays.items():
        for old, new in renames:
            key = key.replace(old, new)
        result[key] = value
    return result


def top_level_posemb(arrays):
    """big_vision: `pos_embedding` at the top, without the class slot (which must be zero)."""
    arrays = dict(arrays)
    posemb = arrays.pop(POSEMB_KEY)
    if "cls" in arrays:
        assert not posemb[:, 0].any(), "the official class slot must be zero to be equivalent"
        posemb = posemb[:, 1:]
    arrays["pos_embedding"] = posemb
    return arrays


def stacked_blocks(arrays):
    """big_vision's scanned encoder: `Transformer/encoderblock/...` with a leading depth axis."""
    per_suffix = defaultdict(dict)
    result = {}
    for key, value in arrays.items():
        if match := BLOCK_KEY.match(key):
            per_suffix[match.group(2)][int(match.group(1))] = value
        else:
            result[key] = value
    for suffix, blocks in per_suffix.items():
        result[f"Transformer/encoderblock/{suffix}"] = np.stack([blocks[i] for i in sorted(blocks)])
    return result


def group_norm_4d(arrays):
    return {key: value.reshape(1, 1, 1, -1) if GROUP_NORM_KEY.search(key) else value
            for key, value in arrays.items()}


def as_bfloat16(arrays):
    return {key: value.astype(ml_dtypes.bfloat16) for key, value in arrays.items()}


def zero_class_slot(arrays):
    posemb = arrays[POSEMB_KEY].copy()
    posemb[:, 0] = 0.0
    return {**arrays, POSEMB_KEY: posemb}


BIG_VISION = [current_flax_names, top_level_posemb, with_prefix("params/")]
# name: (checkpoint kind, transformations applied in order)
LAYOUTS = {
    "current_flax_names": ("token", [current_flax_names]),
    "opt_target_prefix": ("pre_logits", [with_prefix("opt/target/")]),
    "big_vision": ("token", BIG_VISION),
    "big_vision_gap": ("gap", BIG_VISION),
    "big_vision_stacked": ("token", [stacked_blocks, *BIG_VISION]),
    "stacked_official_names": ("pre_logits", [stacked_blocks]),
    "group_norm_1x1x1xC": ("hybrid", [group_norm_4d]),
    "group_norm_1x1x1xC_stem_only": ("stem_only", [group_norm_4d, with_prefix("opt/target/")]),
    "bfloat16": ("token", [as_bfloat16]),
    "bfloat16_hybrid_big_vision": ("hybrid", [as_bfloat16, group_norm_4d, *BIG_VISION]),
}


def layout_and_official(kind, transforms):
    """The arrays of a layout and the official arrays it must be equivalent to: with a zero
    class slot for big_vision's posemb, rounded to bf16 for a bf16 file."""
    official = official_checkpoint(kind)
    if top_level_posemb in transforms and "cls" in official:
        official = zero_class_slot(official)
    arrays = official
    for transform in transforms:
        arrays = transform(arrays)
    if as_bfloat16 in transforms:
        official = {key: value.astype(ml_dtypes.bfloat16).astype(np.float32)
                    for key, value in official.items()}
    return arrays, official


def differs(arrays, official) -> bool:
    return arrays.keys() != official.keys() or any(
        (value.shape, value.dtype) != (official[key].shape, official[key].dtype)
        for key, value in arrays.items())


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_loads_like_the_official_file(name, tmp_path):
    kind, transforms = LAYOUTS[name]
    arrays, official = layout_and_official(kind, transforms)
    assert differs(arrays, official)
    path, official_path = tmp_path / f"{name}.npz", tmp_path / "official.npz"
    np.savez(path, **arrays)
    np.savez(official_path, **official)
    model = vitcli.load_checkpoint(path)
    reference_model = vitcli.load_checkpoint(official_path)

    expected_weights = weights_by_path(reference_model)
    actual_weights = weights_by_path(model)
    assert actual_weights.keys() == expected_weights.keys()
    for weight_path, value in expected_weights.items():
        np.testing.assert_array_equal(actual_weights[weight_path], value, err_msg=weight_path)

    images = random_images(CHECKPOINT_SHAPES[kind]["image_size"])
    np.testing.assert_array_equal(logits(model, images), logits(reference_model, images))
    np.testing.assert_allclose(logits(model, images), forward(official, images),
                               atol=PARITY_TOLERANCE)


def test_bfloat16_file_really_stores_two_byte_arrays(tmp_path):
    path = tmp_path / "bf16.npz"
    np.savez(path, **as_bfloat16(official_checkpoint("token")))
    with np.load(path) as archive:
        assert {archive[key].dtype.itemsize for key in archive.files} == {2}


def test_big_vision_without_zero_slot_differs_from_official(tmp_path):
    # Guards the test above: dropping a non-zero class slot does change the logits.
    arrays = official_checkpoint("token")
    moved = {**arrays, "pos_embedding": arrays[POSEMB_KEY][:, 1:]}
    del moved[POSEMB_KEY]
    np.savez(tmp_path / "bv.npz", **moved)
    images = random_images(32)
    difference = logits(vitcli.load_checkpoint(tmp_path / "bv.npz"), images) - forward(arrays,
                                                                                      images)
    assert np.abs(difference).max() > 1e-3
