"""torchvision.transforms: `ToTensor` (timm subclasses it at import) and `functional`."""

from torchvision._refuse import placeholder_class
from torchvision.transforms import functional

ToTensor = placeholder_class(__name__, "ToTensor")

__all__ = ["ToTensor", "functional"]
