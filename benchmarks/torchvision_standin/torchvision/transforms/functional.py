"""torchvision.transforms.functional: `InterpolationMode` (timm builds lookup tables from its
members at import) and refusing placeholders for the functions timm's transforms call."""

import enum

from torchvision._refuse import function


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


crop = function(__name__, "crop")
get_dimensions = function(__name__, "get_dimensions")
get_image_size = function(__name__, "get_image_size")
pad = function(__name__, "pad")
pil_to_tensor = function(__name__, "pil_to_tensor")
resize = function(__name__, "resize")
resized_crop = function(__name__, "resized_crop")
to_tensor = function(__name__, "to_tensor")
