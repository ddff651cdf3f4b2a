"""Model variants as table rows (big_vision's `decode_variant`), not factory functions.

`vit-{size}{patch}` decodes size and patch separately, so `vit-ti4` or `vit-b14` work;
named rows add what a name alone cannot say (hybrid stems, the reference's dropout).
A row without a size is a pure BiT ResNet classifier (no transformer): `bit-r26`,
`bit-r50`, and by name any `bit-r{26,50,101,152}x{1..4}` (x: the width factor).
"""

from __future__ import annotations

import re

from vitcli.config import ModelConfig, ResNetConfig, resnet_classifier
from vitcli.errors import VitcliError

# size: (hidden_size, depth, num_heads, mlp_dim)  -- paper Table 1 plus Ti/S of DeiT/AugReg,
# and "mu", a micro size of our own for CPUs, demos and tests (not a published model).
SIZES = {
    "mu": (96, 6, 3, 384),
    "ti": (192, 12, 3, 768),
    "s": (384, 12, 6, 1536),
    "b": (768, 12, 12, 3072),
    "l": (1024, 24, 16, 4096),
    "h": (1280, 32, 16, 5120),
}

# name: (size, patch size, ResNet units per stage or None, pre-training dropout); size and
# patch None: a pure ResNet of those stages (the paper's BiT baseline family)
VARIANTS = {
    "vit-ti16": ("ti", 16, None, 0.0),
    "vit-s16": ("s", 16, None, 0.0),
    "vit-s32": ("s", 32, None, 0.0),
    "vit-b8": ("b", 8, None, 0.0),
    "vit-b16": ("b", 16, None, 0.0),
    "vit-b32": ("b", 32, None, 0.0),
    "vit-l16": ("l", 16, None, 0.1),
    "vit-l32": ("l", 32, None, 0.0),
    "vit-h14": ("h", 14, None, 0.1),
    "r50-vit-b16": ("b", 1, (3, 4, 9), 0.1),
    "r50-vit-l32": ("l", 1, (3, 4, 6, 3), 0.0),
    "r26-vit-s32": ("s", 1, (2, 2, 2, 2), 0.0),
    "r26-vit-b32": ("b", 1, (2, 2, 2, 2), 0.0),
    "r-vit-ti16": ("ti", 8, (), 0.0),
    "bit-r26": (None, None, (2, 2, 2, 2), 0.0),
    "bit-r50": (None, None, (3, 4, 6, 3), 0.0),
}

# BiT ResNet depths: units per stage (Kolesnikov et al. 2020; R26 is the ViT paper's hybrid's)
BIT_LAYERS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
MAX_WIDTH_FACTOR = 4  # BiT's widest (R152x4)

_PLAIN_NAME = re.compile(r"^vit-(mu|ti|s|b|l|h)(\d+)$")
_BIT_NAME = re.compile(r"^bit-r(\d+)(?:x(\d+))?$")


def variant_names() -> list[str]:
    return list(VARIANTS)


def _bit_resnet(name: str) -> ResNetConfig | None:
    """The ResNet of a `bit-r{depth}x{width}` name, or None when it is not one."""
    match = _BIT_NAME.match(name)
    if not match:
        return None
    depth, width = int(match.group(1)), int(match.group(2) or 1)
    if depth not in BIT_LAYERS or not 1 <= width <= MAX_WIDTH_FACTOR:
        return None
    return ResNetConfig(layers=BIT_LAYERS[depth], width_factor=width)


def _decode_row(name: str) -> tuple[str | None, int | None, ResNetConfig | None, float]:
    """(size, patch, ResNet, dropout) of a name; size None: a pure ResNet."""
    if name in VARIANTS:
        size, patch, resnet_layers, dropout = VARIANTS[name]
        resnet = None if resnet_layers is None else ResNetConfig(layers=resnet_layers)
        return size, patch, resnet, dropout
    match = _PLAIN_NAME.match(name)
    if match and int(match.group(2)) > 0:
        return match.group(1), int(match.group(2)), None, 0.0
    if (resnet := _bit_resnet(name)) is not None:
        return None, None, resnet, 0.0
    raise VitcliError(
        f"unknown model variant '{name}'",
        hint="`vitcli models` lists them; any vit-{ti,s,b,l,h}<patch> or "
        "bit-r{26,50,101,152}x{1-4} also works",
    )


def decode_variant(name: str, **overrides) -> ModelConfig:
    """The config of a variant name; keyword arguments (not None) override the row."""
    name = name.lower()
    size, patch, resnet, dropout = _decode_row(name)
    if size is None:
        config = resnet_classifier(resnet, name=name)
    else:
        hidden, depth, heads, mlp = SIZES[size]
        config = ModelConfig(name=name, hidden_size=hidden, depth=depth, num_heads=heads,
                             mlp_dim=mlp, patch_size=patch, dropout=dropout, resnet=resnet)
    return config.replace(**{key: value for key, value in overrides.items() if value is not None})


def match_variant(config: ModelConfig) -> str | None:
    """The registry name whose architecture `config` has (ignoring resolution and head)."""
    for name in VARIANTS:
        row = decode_variant(name)
        same = (row.kind, row.hidden_size, row.depth, row.num_heads, row.mlp_dim,
                row.patch_size, row.resnet) == (config.kind, config.hidden_size, config.depth,
                                                config.num_heads, config.mlp_dim,
                                                config.patch_size, config.resnet)
        if same:
            return name
    return None
