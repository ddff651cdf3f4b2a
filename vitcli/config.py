"""Frozen dataclasses for every setting: the only place where defaults live."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

CLASSIFIERS = ("token", "gap")


@dataclass(frozen=True)
class ResNetConfig:
    """The BiT ResNet stem of a hybrid: units per stage (empty = root block only)."""

    layers: tuple[int, ...] = ()
    width_factor: int = 1

    @property
    def stride(self) -> int:
        """Total down-sampling: root conv and max-pool (4), then 2 per stage after the first."""
        return 4 * 2 ** max(len(self.layers) - 1, 0)

    @property
    def out_channels(self) -> int:
        width = 64 * self.width_factor
        return width * 2 ** (len(self.layers) - 1) * 4 if self.layers else width


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a ViT's architecture (REFERENCE sections 1-3)."""

    hidden_size: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    image_size: int = 224
    num_classes: int = 1000
    classifier: str = "token"
    representation_size: int | None = None
    dropout: float = 0.0
    attention_dropout: float = 0.0
    resnet: ResNetConfig | None = None
    name: str = "vit"

    @property
    def stride(self) -> int:
        """Pixels per token side: patch size times the ResNet stem's down-sampling."""
        return self.patch_size * (self.resnet.stride if self.resnet else 1)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.stride

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.classifier == "token" else 0

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2 + self.num_prefix_tokens

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        values = dict(values)
        if values.get("resnet") is not None:
            resnet = dict(values["resnet"])
            resnet["layers"] = tuple(resnet.get("layers", ()))
            values["resnet"] = ResNetConfig(**resnet)
        return cls(**values)
