"""The training-exactness case shared by the tests and their MirroredStrategy subprocess:
a 2-layer ViT-Ti/16 at 64 px with random non-zero weights, ten batches of eight, and the
reference recipes shortened to ten steps (3 warm-up)."""

from __future__ import annotations

import sys

import numpy as np

from tests.reference.numpy_vit import random_checkpoint

SHAPE = dict(hidden_size=192, depth=2, num_heads=3, mlp_dim=768, patch_size=16,
             image_size=64, num_classes=5)
STEPS, BATCH = 10, 8
# Fine-tuning: the reference's SGD, momentum 0.9, clip 1.0, warm-up then cosine.
FINETUNE = dict(optimizer="sgd", learning_rate=0.03, warmup_steps=3, schedule="cosine",
                grad_clip_norm=1.0)
# Pre-training: Adam, decoupled weight decay 0.1, warm-up then linear decay, clip 1.0.
PRETRAIN = dict(optimizer="adamw", learning_rate=1e-3, weight_decay=0.1, warmup_steps=3,
                schedule="linear", grad_clip_norm=1.0)
RECIPES = {"finetune": FINETUNE, "pretrain": PRETRAIN}


def initial_params(recipe: str) -> dict[str, np.ndarray]:
    """Official-layout weights; pre-training models carry the tanh pre-logits layer."""
    representation = SHAPE["hidden_size"] if recipe == "pretrain" else None
    return random_checkpoint(7, representation_size=representation, **SHAPE)


def batches(seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ten (uint8 images, integer labels) batches."""
    rng = np.random.default_rng(seed)
    size = SHAPE["image_size"]
    return [(rng.integers(0, 256, (BATCH, size, size, 3), dtype=np.uint8),
             rng.integers(0, SHAPE["num_classes"], BATCH)) for _ in range(STEPS)]


def run_vitcli(recipe: str, *, strategy=None, **settings):
    """vitcli's training step on the case: (losses, final official-layout weights)."""
    import contextlib

    import vitcli
    from vitcli.weights.checkpoint import model_arrays, model_from_arrays

    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        model, _ = model_from_arrays(initial_params(recipe))
    losses = vitcli.train_steps(model, batches(), recipe=recipe, strategy=strategy,
                                **RECIPES[recipe], **settings)
    return losses, model_arrays(model)


def main(out: str) -> None:
    """Runs every recipe x accumulation on MirroredStrategy over 2 logical CPUs."""
    import os

    os.environ["VITCLI_CPU_DEVICES"] = "2"
    from vitcli.train.strategy import make_strategy

    strategy = make_strategy("mirrored", None)
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    results = {}
    for recipe in RECIPES:
        for accum in (1, 2):
            losses, arrays = run_vitcli(recipe, strategy=strategy, accum_steps=accum)
            results[f"{recipe}/{accum}/losses"] = losses
            results.update({f"{recipe}/{accum}/{key}": value for key, value in arrays.items()})
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1])
