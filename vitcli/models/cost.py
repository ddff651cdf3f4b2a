"""Parameter and FLOP counts computed from a config, without building the model.

FLOPs count 2 per multiply-add of every convolution, dense layer and attention matmul
(norms, softmax, pooling and element-wise ops are left out, as is usual); `vitcli models`
and the benchmarks' fraction-of-peak figures use them.
"""

from __future__ import annotations

import math

from vitcli.config import ModelConfig, ResNetConfig, canonical_size, image_shape

# A feature map's `size` below is a number (square) or (height, width), as image sizes are.


def area(size) -> int:
    """Cells of a feature map: height * width."""
    return math.prod(image_shape(size))


def scaled(size, stride: int):
    """A feature map's size after a SAME-padded `stride` convolution or pooling (each side
    rounded up, as the ResNet's, which takes any image size; a hybrid's sizes are multiples
    of its stride, where this is exact division)."""
    height, width = image_shape(size)
    return canonical_size((-(-height // stride), -(-width // stride)))


def _conv_macs(size, kernel: int, in_channels: int, out_channels: int) -> int:
    return area(size) * kernel * kernel * in_channels * out_channels


def _resnet_cost(resnet: ResNetConfig, image_size) -> tuple[int, int]:
    """(parameters, multiply-adds) of the BiT stem."""
    width = 64 * resnet.width_factor
    size = scaled(image_size, 2)
    params = 7 * 7 * 3 * width + 2 * width
    macs = _conv_macs(size, 7, 3, width)
    size, channels = scaled(size, 2), width
    for stage, num_units in enumerate(resnet.layers):
        features = width * 2**stage
        for unit in range(num_units):
            stride = 2 if stage > 0 and unit == 0 else 1
            out_size = scaled(size, stride)
            convs = [(size, 1, channels, features), (out_size, 3, features, features),
                     (out_size, 1, features, 4 * features)]
            if unit == 0:
                convs.append((out_size, 1, channels, 4 * features))
            for conv_size, kernel, cin, cout in convs:
                params += kernel * kernel * cin * cout + 2 * cout
                macs += _conv_macs(conv_size, kernel, cin, cout)
            size, channels = out_size, 4 * features
    return params, macs


def parameter_count(config: ModelConfig) -> int:
    return _cost(config)[0]


def flops(config: ModelConfig) -> int:
    """Forward-pass FLOPs for one image."""
    return 2 * _cost(config)[1]


def _resnet_classifier_cost(config: ModelConfig) -> tuple[int, int]:
    """A pure ResNet: the stem with all its stages, then the head on the pooled features."""
    params, macs = _resnet_cost(config.resnet, config.image_size)
    if config.num_classes:
        features = config.resnet.out_channels
        params += features * config.num_classes + config.num_classes
        macs += features * config.num_classes
    return params, macs


def _cost(config: ModelConfig) -> tuple[int, int]:
    if config.is_resnet:
        return _resnet_classifier_cost(config)
    hidden, mlp, tokens = config.hidden_size, config.mlp_dim, config.num_tokens
    params, macs = (0, 0)
    in_channels = 3
    if config.resnet is not None:
        params, macs = _resnet_cost(config.resnet, config.image_size)
        in_channels = config.resnet.out_channels
    patch_inputs = config.patch_size**2 * in_channels
    table = tokens * hidden if config.posemb == "learned" else 0  # sincos2d is computed
    params += patch_inputs * hidden + hidden + table + hidden * config.num_prefix_tokens
    macs += math.prod(config.grid_shape) * patch_inputs * hidden
    block_params = 4 * (hidden * hidden + hidden) + 2 * hidden * mlp + mlp + hidden + 4 * hidden
    block_macs = tokens * (4 * hidden * hidden + 2 * hidden * mlp) + 2 * tokens * tokens * hidden
    params += config.depth * block_params + 2 * hidden
    macs += config.depth * block_macs
    features = hidden
    if config.representation_size:
        params += hidden * config.representation_size + config.representation_size
        macs += hidden * config.representation_size
        features = config.representation_size
    if config.num_classes:
        params += features * config.num_classes + config.num_classes
        macs += features * config.num_classes
    return params, macs
