"""Tiny official-layout checkpoints (docs/reference.md §4.1) for parity and loading tests.

Their values come from `tests/reference/numpy_vit.py`, which shares no code with vitcli.
"""

from __future__ import annotations

import numpy as np

from tests.reference import numpy_vit

_SMALL = dict(depth=2, num_classes=5)
CHECKPOINT_SHAPES = {
    "token": dict(_SMALL, hidden_size=32, num_heads=4, mlp_dim=64, patch_size=8, image_size=32),
    "pre_logits": dict(_SMALL, hidden_size=48, num_heads=3, mlp_dim=96, patch_size=8,
                       image_size=32, representation_size=40),
    "gap": dict(_SMALL, hidden_size=64, num_heads=8, mlp_dim=128, patch_size=16, image_size=48,
                classifier="gap"),
    "hybrid": dict(_SMALL, hidden_size=32, num_heads=4, mlp_dim=64, patch_size=1, image_size=64,
                   resnet_layers=(1, 1)),
    "stem_only": dict(_SMALL, hidden_size=32, num_heads=2, mlp_dim=64, patch_size=8,
                      image_size=64, resnet_layers=()),
    # Three stages (stride 16) and width factor 2: every ResNet channel count doubles.
    "hybrid_wide": dict(_SMALL, hidden_size=32, num_heads=4, mlp_dim=64, patch_size=1,
                        image_size=64, resnet_layers=(1, 2, 1), resnet_width_factor=2),
    # Patch 16 at 64 px is a 4x4 grid: the source of the resolution-change tests.
    "grid4": dict(_SMALL, hidden_size=32, num_heads=4, mlp_dim=64, patch_size=16, image_size=64),
}
POSEMB_KEY = "Transformer/posembed_input/pos_embedding"
PARITY_KINDS = ("token", "pre_logits", "gap", "hybrid", "stem_only")

# The training tests' ViT (no head size: each test picks its classes): a 2x2 grid at 16 px.
TINY_VIT = dict(hidden_size=32, depth=2, num_heads=4, mlp_dim=64, patch_size=8, image_size=16)


def official_checkpoint(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A fresh random, all-non-zero official-layout checkpoint of a `CHECKPOINT_SHAPES` kind."""
    return numpy_vit.random_checkpoint(seed, **CHECKPOINT_SHAPES[kind])
