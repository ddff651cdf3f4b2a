"""The variant table: decoding names, and the exact parameter counts of docs/reference.md §2.

Building the large variants allocates up to ~2.5 GB (H/14); those tests are marked heavy and
free Keras' state after each build. The whole file takes ~25 s on 2 cores.
"""

from __future__ import annotations

import pytest

import vitcli
from tests.reference import numpy_resnet
from tests.support.checks import vitcli_error
from tests.support.models import random_images
from vitcli.models.registry import VARIANTS, decode_variant

# docs/reference.md §2: parameters with a 1000-class head at 224 px.
REFERENCE_COUNTS = {
    "vit-ti16": 5_717_416,
    "vit-s16": 22_050_664,
    "vit-b8": 86_576_872,
    "vit-b16": 86_567_656,
    "vit-b32": 88_224_232,
    "vit-l16": 304_326_632,
    "vit-l32": 306_535_400,
    "vit-h14": 632_045_800,
    "r50-vit-b16": 98_659_112,
    "r50-vit-l32": 328_994_856,
    "r26-vit-s32": 36_431_912,
    "r26-vit-b32": 101_383_976,
    "r-vit-ti16": 6_337_704,
}
# (hidden, mlp, heads, depth, patch) of the plain rows of docs/reference.md §2 (S/32 included).
PLAIN_ARCHITECTURES = {
    "vit-ti16": (192, 768, 3, 12, 16),
    "vit-s16": (384, 1536, 6, 12, 16),
    "vit-s32": (384, 1536, 6, 12, 32),
    "vit-b8": (768, 3072, 12, 12, 8),
    "vit-b16": (768, 3072, 12, 12, 16),
    "vit-b32": (768, 3072, 12, 12, 32),
    "vit-l16": (1024, 4096, 16, 24, 16),
    "vit-l32": (1024, 4096, 16, 24, 32),
    "vit-h14": (1280, 5120, 16, 32, 14),
}
LIGHT_VARIANTS = {"vit-ti16", "vit-s16", "vit-s32", "vit-b8", "vit-b16", "vit-b32", "r-vit-ti16",
                  "bit-r26", "bit-r50"}
# The pure ResNets: units per stage, counted by tests/reference/numpy_resnet.py.
RESNET_ARCHITECTURES = {"bit-r26": (2, 2, 2, 2), "bit-r50": (3, 4, 6, 3)}


def plain_vit_parameters(hidden, mlp, depth, patch, image_size=224, num_classes=1000) -> int:
    """Parameters of a plain token-classifier ViT from its architecture (docs/reference.md §2)."""
    patch_conv = patch * patch * 3 * hidden + hidden
    cls = hidden
    posemb = ((image_size // patch) ** 2 + 1) * hidden
    layer_norm = 2 * hidden
    attention = 4 * (hidden * hidden + hidden)  # q, k, v, out: D x D kernels, D biases
    mlp_block = hidden * mlp + mlp + mlp * hidden + hidden
    block = 2 * layer_norm + attention + mlp_block
    head = hidden * num_classes + num_classes
    return patch_conv + cls + posemb + depth * block + layer_norm + head


def expected_count(name: str) -> int:
    if name in REFERENCE_COUNTS:
        return REFERENCE_COUNTS[name]
    if name in RESNET_ARCHITECTURES:
        return numpy_resnet.parameter_count(RESNET_ARCHITECTURES[name])
    hidden, mlp, _, depth, patch = PLAIN_ARCHITECTURES[name]
    return plain_vit_parameters(hidden, mlp, depth, patch)


def variant_params(names):
    return [pytest.param(name, marks=() if name in LIGHT_VARIANTS else pytest.mark.heavy)
            for name in names]


def test_every_variant_has_an_expected_count():
    assert set(VARIANTS) <= set(REFERENCE_COUNTS) | set(PLAIN_ARCHITECTURES) | \
        set(RESNET_ARCHITECTURES)


@pytest.mark.parametrize("name", [n for n in PLAIN_ARCHITECTURES if n in REFERENCE_COUNTS])
def test_formula_reproduces_reference_counts(name):
    hidden, mlp, _, depth, patch = PLAIN_ARCHITECTURES[name]
    assert plain_vit_parameters(hidden, mlp, depth, patch) == REFERENCE_COUNTS[name]


def test_formula_gives_s32_count():
    # Not among the reference's counts (docs/reference.md §2): S/32 has a 7x7 grid;
    # 22,878,952 by the formula.
    assert plain_vit_parameters(384, 1536, 12, 32) == 22_878_952


@pytest.mark.parametrize("name", variant_params(VARIANTS))
def test_built_variant_has_exact_parameter_count(name, free_keras_memory):
    model = vitcli.build_model(name, num_classes=1000, image_size=224)
    count = model.count_params()
    del model
    assert count == expected_count(name)


@pytest.mark.parametrize("name", list(PLAIN_ARCHITECTURES))
def test_plain_variant_rows_match_the_architecture(name):
    hidden, mlp, heads, depth, patch = PLAIN_ARCHITECTURES[name]
    config = decode_variant(name)
    assert (config.hidden_size, config.mlp_dim, config.num_heads, config.depth,
            config.patch_size, config.resnet) == (hidden, mlp, heads, depth, patch, None)


@pytest.mark.parametrize(("name", "layers", "patch"), [
    ("r50-vit-b16", (3, 4, 9), 1), ("r50-vit-l32", (3, 4, 6, 3), 1),
    ("r26-vit-s32", (2, 2, 2, 2), 1), ("r26-vit-b32", (2, 2, 2, 2), 1), ("r-vit-ti16", (), 8),
])
def test_hybrid_rows_have_the_reference_stem(name, layers, patch):
    config = decode_variant(name)
    assert config.resnet.layers == layers and config.patch_size == patch


@pytest.mark.parametrize(("name", "dropout"), [
    ("vit-b16", 0.0), ("vit-l16", 0.1), ("vit-l32", 0.0), ("vit-h14", 0.1), ("r50-vit-b16", 0.1),
])
def test_reference_dropout_defaults(name, dropout):
    config = decode_variant(name)
    assert config.dropout == dropout and config.attention_dropout == 0.0


def test_decode_variant_takes_any_patch_size():
    config = decode_variant("vit-ti4")
    assert config.patch_size == 4 and config.hidden_size == 192 and config.resnet is None
    assert decode_variant("ViT-B14").patch_size == 14


def test_decode_variant_overrides_a_row_but_not_with_none():
    config = decode_variant("vit-b16", num_classes=10, image_size=384, dropout=None)
    assert (config.num_classes, config.image_size, config.dropout) == (10, 384, 0.0)


@pytest.mark.parametrize("name", ["vit-x16", "vit-b", "vit-b0", "resnet50", "", "vit-b16-extra"])
def test_unknown_variant_raises_vitcli_error(name):
    message = vitcli_error(decode_variant, name)
    assert "variant" in message


def test_build_model_refuses_unknown_variant():
    vitcli_error(vitcli.build_model, "vit-z99")


def test_decoded_tiny_patch_model_builds_and_runs():
    model = vitcli.build_model("vit-ti4", num_classes=3, image_size=16)
    assert model.get_layer("posembed_input").pos_embedding.shape == (1, 17, 192)
    assert model(random_images(16, batch=1)).shape == (1, 3)
