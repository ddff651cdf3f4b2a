"""Normalises the checkpoint layouts found in the wild to the official ViT layout.

Each step is a pure function dict -> dict (docs/reference.md §4.2): bfloat16 decoding,
`opt/target/` and `params/` prefixes, big_vision's stacked blocks, current Flax module
names, big_vision's top-level position embedding, (1,1,1,C) GroupNorm parameters.
"""

from __future__ import annotations

import re

import numpy as np

Arrays = dict[str, np.ndarray]

_PREFIXES = ("opt/target/", "params/")
_STACKED_BLOCK = "Transformer/encoderblock/"
# Current Flax auto-names -> the names of the official ViT files (inside each encoder block).
_FLAX_RENAMES = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}
_GROUP_NORM_PARAM = re.compile(r"(^|/)gn_?\w*/(scale|bias)$")
POSEMB_KEY = "Transformer/posembed_input/pos_embedding"


def decode_bfloat16(arrays: Arrays) -> Arrays:
    """numpy stores bfloat16 as 2-byte voids; widen them to float32 (exact)."""
    def widen(array: np.ndarray) -> np.ndarray:
        if array.dtype.kind != "V" or array.dtype.itemsize != 2:
            return array
        bits = array.view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)

    return {key: widen(value) for key, value in arrays.items()}


def strip_prefixes(arrays: Arrays) -> Arrays:
    def strip(key: str) -> str:
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                return strip(key[len(prefix):])
        return key

    return {strip(key): value for key, value in arrays.items()}


def unstack_blocks(arrays: Arrays) -> Arrays:
    """big_vision's scanned encoder keeps all blocks on a leading axis: split it."""
    result = {}
    for key, value in arrays.items():
        if key.startswith(_STACKED_BLOCK):
            suffix = key[len(_STACKED_BLOCK):]
            for index, block_value in enumerate(value):
                result[f"Transformer/encoderblock_{index}/{suffix}"] = block_value
        else:
            result[key] = value
    return result


def rename_flax_modules(arrays: Arrays) -> Arrays:
    if not any("/MlpBlock_0/" in key for key in arrays):
        return arrays

    def rename(key: str) -> str:
        return "/".join(_FLAX_RENAMES.get(part, part) for part in key.split("/"))

    return {rename(key): value for key, value in arrays.items()}


def move_top_level_posemb(arrays: Arrays) -> Arrays:
    """big_vision adds `pos_embedding` before prepending the class token, so it has no class
    slot; a zero slot gives the official layout the same outputs exactly."""
    if "pos_embedding" not in arrays or POSEMB_KEY in arrays:
        return arrays
    arrays = dict(arrays)
    posemb = arrays.pop("pos_embedding")
    if "cls" in arrays:
        posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
    arrays[POSEMB_KEY] = posemb
    return arrays


def squeeze_group_norm(arrays: Arrays) -> Arrays:
    return {
        key: value.reshape(-1) if _GROUP_NORM_PARAM.search(key) and value.ndim > 1 else value
        for key, value in arrays.items()
    }


def normalise_layout(arrays: Arrays) -> Arrays:
    """Any supported layout -> the official layout of docs/reference.md §4.1."""
    for step in (decode_bfloat16, strip_prefixes, unstack_blocks, rename_flax_modules,
                 move_top_level_posemb, squeeze_group_norm):
        arrays = step(arrays)
    return arrays
