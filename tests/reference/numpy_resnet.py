"""Independent plain-numpy reference of the pure BiT ResNet classifier (`bit-r26`, `bit-r50`).

Written from docs/reference.md §3 (the hybrid's stem: root conv 7x7/2, GroupNorm, max-pool,
v1 bottleneck stages) plus the classifier the BiT family puts after all four stages: global
average pooling and a dense head. It shares no code with `vitcli`; the stem's forward pass
and random arrays are those of `numpy_vit.py` (the hybrid's reference), so the pure ResNet
is checked against the same independent code as the hybrids' stems.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tests.reference.numpy_vit import _Draw, _random_stem, dense, normalise_pixels, resnet_stem

# BiT's depths: bottleneck units per stage.
BIT_LAYERS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
# torchvision's ResNet-50 (v1.5: the stride on the 3x3 conv, same parameters; its
# BatchNorms train 2 values per channel like GroupNorm): 25,557,032 parameters with its
# 1000-class head, an anchor from outside this project for the formula below.
TORCHVISION_RESNET50_PARAMETERS = 25_557_032


def _stages(layers: tuple[int, ...], width_factor: int):
    """(stage index, unit index, input channels, bottleneck width, output channels, stride)
    of every unit, in order."""
    width = 64 * width_factor
    channels = width
    for stage, num_units in enumerate(layers):
        middle = width * 2**stage
        for unit in range(num_units):
            stride = 2 if stage > 0 and unit == 0 else 1
            yield stage, unit, channels, middle, 4 * middle, stride
            channels = 4 * middle


def parameter_count(layers: tuple[int, ...], width_factor: int = 1,
                    num_classes: int = 1000) -> int:
    """Weights of the pure ResNet: conv kernels k*k*cin*cout (no bias), GroupNorm scale and
    bias per channel, a projection conv + GroupNorm on each stage's first unit, the head."""
    width = 64 * width_factor
    count = 7 * 7 * 3 * width + 2 * width  # conv_root, gn_root
    channels = width
    for _, unit, cin, middle, out, _ in _stages(layers, width_factor):
        count += 1 * 1 * cin * middle + 2 * middle  # conv1, gn1
        count += 3 * 3 * middle * middle + 2 * middle  # conv2, gn2
        count += 1 * 1 * middle * out + 2 * out  # conv3, gn3
        if unit == 0:
            count += 1 * 1 * cin * out + 2 * out  # conv_proj, gn_proj
        channels = out
    if num_classes:
        count += channels * num_classes + num_classes
    return count


def _same(side: int, stride: int) -> int:
    """A SAME-padded convolution's output side: the input side / stride, rounded up."""
    return -(-side // stride)


def multiply_adds(layers: tuple[int, ...], image_size: int, width_factor: int = 1,
                  num_classes: int = 1000) -> int:
    """Multiply-adds of one forward pass: every conv (output cells x k*k*cin*cout) and the
    head; norms, ReLUs and pooling left out."""
    width = 64 * width_factor
    side = _same(image_size, 2)
    total = side * side * 7 * 7 * 3 * width  # conv_root
    side = _same(side, 2)  # the max-pool
    for _, unit, cin, middle, out, stride in _stages(layers, width_factor):
        out_side = _same(side, stride)
        total += side * side * cin * middle  # conv1, before the stride
        total += out_side * out_side * 9 * middle * middle  # conv2, strided
        total += out_side * out_side * middle * out  # conv3
        if unit == 0:
            total += out_side * out_side * cin * out  # conv_proj, strided
        side = out_side
    channels = 4 * width * 2 ** (len(layers) - 1)
    return total + channels * num_classes


def forward(params: Mapping[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Logits of raw NHWC [0, 255] images: stem with all its stages, global average pooling
    over the last feature map, head. In float64."""
    p = {key: np.asarray(value, np.float64) for key, value in params.items()}
    x = resnet_stem(p, normalise_pixels(images))
    features = x.mean(axis=(1, 2))
    return dense(features, p["head/kernel"], p["head/bias"])


def random_checkpoint(seed: int, *, layers: tuple[int, ...], num_classes: int,
                      width_factor: int = 1) -> dict[str, np.ndarray]:
    """Random, all-non-zero float32 arrays of a pure ResNet under the hybrid stem's names
    (docs/reference.md §4) plus `head/{kernel,bias}`."""
    draw = _Draw(seed)
    params, channels = _random_stem(draw, 3, tuple(layers), width_factor)
    params["head/kernel"] = draw.kernel((channels, num_classes), channels)
    params["head/bias"] = draw.bias((num_classes,))
    return params
