"""The public Python API (re-exported by `vitcli`)."""

from __future__ import annotations

import keras

from vitcli.models.registry import decode_variant
from vitcli.models.vit import build_vit


def build_model(variant: str, *, num_classes: int = 1000, image_size: int = 224,
                classifier: str | None = None, representation_size: int | None = None,
                dropout: float | None = None, posemb: str | None = None,
                dtype=None) -> keras.Model:
    """A freshly initialised ViT of a registry variant (`vit-b16`, `r50-vit-b16`, `vit-ti4`, ...),
    or a pure BiT ResNet (`bit-r26`, `bit-r50`: `classifier` and `posemb` stay None).

    The model takes float pixels in [0, 255], NHWC, and returns logits. Arguments that are
    None keep the variant's row (`classifier` 'token', no pre-logits, its dropout, `posemb`
    'learned'; 'sincos2d' or 'none' are the paper's ablations, docs/reference.md §1.6).
    """
    config = decode_variant(variant, num_classes=num_classes, image_size=image_size,
                            classifier=classifier, representation_size=representation_size,
                            dropout=dropout, posemb=posemb)
    return build_vit(config, dtype=dtype)
