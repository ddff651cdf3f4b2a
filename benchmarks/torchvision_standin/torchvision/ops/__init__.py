"""torchvision.ops: only `misc.FrozenBatchNorm2d` is imported by timm."""

from torchvision.ops import misc

__all__ = ["misc"]
