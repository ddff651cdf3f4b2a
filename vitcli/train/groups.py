"""What a run trains, and at which rate: layer-wise learning-rate decay (`--layer-decay`) and
freezing (`--freeze`), decided per variable from its path (docs/reference.md, "Training").

Every variable belongs to a layer: the embeddings (patch embedding, class token, position
embeddings, a hybrid's ResNet stem, masked patch prediction's [mask] embedding) are layer 0,
encoder block i is layer i + 1, and everything after the encoder (its final LayerNorm, the
pre-logits, the head) is layer L + 1. Layer l trains at rate x F^(L + 1 - l). Frozen
variables are left out of what the optimizer is built on: no gradient, no slots, no weight
decay, no EMA, so they end a run exactly as they started it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vitcli.config import TrainConfig
from vitcli.errors import VitcliError

# The top-level layers of layer 0 (`block{s}/unit{u}` is the hybrid stem's, matched apart).
EMBEDDING_LAYERS = frozenset({"embedding", "cls", "posembed_input", "conv_root", "gn_root",
                              "mpp_corruption"})
HEAD_LAYERS = frozenset({"head", "mpp_head"})  # what `--freeze backbone` leaves trained
_STEM_UNIT = re.compile(r"^block\d+/unit\d+/")
_BLOCK = re.compile(r"^encoderblock_(\d+)/")


def encoder_depth(paths) -> int:
    """L: the number of encoder blocks among the variable paths."""
    blocks = [int(match.group(1)) for path in paths if (match := _BLOCK.match(path))]
    return max(blocks) + 1 if blocks else 0


def layer_of(path: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for encoder block i, depth + 1 for what follows it."""
    if path.split("/", 1)[0] in EMBEDDING_LAYERS or _STEM_UNIT.match(path):
        return 0
    if match := _BLOCK.match(path):
        return int(match.group(1)) + 1
    return depth + 1


def rate_multiplier(path: str, depth: int, layer_decay: float) -> float:
    """F^(L + 1 - layer): encoder block i at F^(L - i), the embeddings at F^(L + 1)."""
    return layer_decay ** (depth + 1 - layer_of(path, depth))


def frozen_layers(freeze: str, depth: int) -> int | None:
    """How many layers from the bottom `freeze` keeps fixed (layer 0 = the embeddings),
    or None for `backbone` (everything but the head)."""
    if freeze == "backbone":
        return None
    if freeze == "none":
        return 0
    if freeze == "embeddings":
        return 1
    blocks = int(freeze.split(":", 1)[1])  # blocks:N, its form checked with the settings
    if blocks > depth:
        raise VitcliError(f"--freeze {freeze}: the model has only {depth} encoder blocks",
                          hint=f"use blocks:0 to blocks:{depth}, or backbone")
    return blocks + 1


def is_frozen(path: str, depth: int, layers: int | None) -> bool:
    """Whether `path` is among the `layers` bottom layers (None: anything but the head)."""
    if layers is None:
        return path.split("/", 1)[0] not in HEAD_LAYERS
    return layer_of(path, depth) < layers


@dataclass(frozen=True)
class TrainedVariables:
    """The variables the optimizer updates (the model's order), their rate multipliers by
    path (only those that are not 1), and the paths left frozen."""

    variables: list
    multipliers: dict[str, float] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)

    def describe(self, layer_decay: float, freeze: str) -> str | None:
        """A line for the run's plan, or None when every variable trains at the rate."""
        parts = []
        if freeze != "none":
            parts.append(f"frozen: {freeze} ({len(self.frozen)} variables), "
                         f"{len(self.variables)} trained")
        if layer_decay != 1:
            smallest = min(self.multipliers.values(), default=1.0)
            parts.append(f"layer-wise rate decay {layer_decay:g}: the rate x{smallest:.3g} "
                         "(lowest trained layer) to x1 (head)")
        return "; ".join(parts) or None


def trained_variables(model, train: TrainConfig) -> TrainedVariables:
    """What `model` (anything with `trainable_variables`) trains under `train`'s
    `layer_decay` and `freeze`; with neither, all its trainable variables at the rate."""
    variables = list(model.trainable_variables)
    paths = [variable.path for variable in variables]
    depth = encoder_depth(paths)
    layers = frozen_layers(train.freeze, depth)
    frozen = [path for path in paths if is_frozen(path, depth, layers)]
    trained = [variable for variable in variables if not is_frozen(variable.path, depth, layers)]
    if not trained:
        raise VitcliError(f"--freeze {train.freeze} leaves nothing to train")
    multipliers = {}
    if train.layer_decay != 1:
        multipliers = {variable.path: rate_multiplier(variable.path, depth, train.layer_decay)
                       for variable in trained}
        multipliers = {path: value for path, value in multipliers.items() if value != 1}
    return TrainedVariables(variables=trained, multipliers=multipliers, frozen=frozen)
