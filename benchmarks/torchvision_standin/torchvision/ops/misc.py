"""torchvision.ops.misc.FrozenBatchNorm2d: imported by timm for isinstance checks and its norm
registry; a ViT never builds one."""

from torchvision._refuse import placeholder_class

FrozenBatchNorm2d = placeholder_class(__name__, "FrozenBatchNorm2d")
