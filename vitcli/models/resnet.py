"""The BiT ResNet of the hybrid models' stem and of the pure ResNet classifiers
(docs/reference.md §3).

v1 bottlenecks with weight-standardised convolutions and GroupNorm; the hybrid is the
same ViT with this stem in front of its patch embedding (composition, not a subclass); a
pure ResNet (`bit-r26`, `bit-r50`) is the same stem, all four stages, global average
pooling and the head.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from vitcli.config import ModelConfig, ResNetConfig
from vitcli.models.layers import NUMERICALLY_SENSITIVE_DTYPE, serializable

GROUP_NORM_GROUPS = 32
GROUP_NORM_EPSILON = 1e-6
WEIGHT_STANDARDIZATION_EPSILON = 1e-5


def group_norm(name: str, zero_scale: bool = False) -> layers.GroupNormalization:
    return layers.GroupNormalization(
        groups=GROUP_NORM_GROUPS, epsilon=GROUP_NORM_EPSILON, name=name,
        gamma_initializer="zeros" if zero_scale else "ones", dtype=NUMERICALLY_SENSITIVE_DTYPE,
    )


@serializable
class StdConv(layers.Layer):
    """Conv2D (SAME, no bias) whose kernel is standardised at every call.

    w = (w - mean(w)) / (std(w) + 1e-5), biased std over (H, W, in), computed in float32.
    """

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides

    def build(self, input_shape):
        shape = (self.kernel_size, self.kernel_size, input_shape[-1], self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="lecun_normal")

    def call(self, inputs):
        kernel = ops.cast(self.kernel, "float32")
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        std = ops.std(kernel, axis=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) / (std + WEIGHT_STANDARDIZATION_EPSILON)
        kernel = ops.cast(kernel, inputs.dtype)
        return ops.conv(inputs, kernel, strides=self.strides, padding="same")

    def compute_output_shape(self, input_shape):
        def shrink(size):
            return None if size is None else -(-size // self.strides)

        return (input_shape[0], shrink(input_shape[1]), shrink(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides}


@serializable
class BottleneckUnit(layers.Layer):
    """conv1 1x1 -> GN -> ReLU -> conv2 3x3 (stride) -> GN -> ReLU -> conv3 1x1 -> GN (zero scale),
    plus a projected shortcut when the shape changes; output ReLU(shortcut + y)."""

    def __init__(self, features: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.features = features
        self.strides = strides
        policy = self.dtype_policy
        self.conv1 = StdConv(features, 1, name="conv1", dtype=policy)
        self.gn1 = group_norm("gn1")
        self.conv2 = StdConv(features, 3, strides, name="conv2", dtype=policy)
        self.gn2 = group_norm("gn2")
        self.conv3 = StdConv(features * 4, 1, name="conv3", dtype=policy)
        self.gn3 = group_norm("gn3", zero_scale=True)

    def build(self, input_shape):
        self.has_projection = input_shape[-1] != self.features * 4 or self.strides != 1
        if self.has_projection:
            self.conv_proj = StdConv(self.features * 4, 1, self.strides, name="conv_proj",
                                     dtype=self.dtype_policy)
            self.gn_proj = group_norm("gn_proj")
            self.conv_proj.build(input_shape)
            self.gn_proj.build(self.conv_proj.compute_output_shape(input_shape))
        shape = input_shape
        for conv, norm in ((self.conv1, self.gn1), (self.conv2, self.gn2), (self.conv3, self.gn3)):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)

    def call(self, inputs):
        dtype = inputs.dtype
        shortcut = inputs
        if self.has_projection:
            shortcut = ops.cast(self.gn_proj(self.conv_proj(inputs)), dtype)
        hidden = ops.relu(ops.cast(self.gn1(self.conv1(inputs)), dtype))
        hidden = ops.relu(ops.cast(self.gn2(self.conv2(hidden)), dtype))
        hidden = ops.cast(self.gn3(self.conv3(hidden)), dtype)
        return ops.relu(shortcut + hidden)

    def compute_output_shape(self, input_shape):
        return self.conv3.compute_output_shape(self.conv2.compute_output_shape(input_shape))

    def get_config(self):
        return {**super().get_config(), "features": self.features, "strides": self.strides}


@serializable
class ResNetStage(layers.Layer):
    """`num_units` bottlenecks; only the first one strides."""

    def __init__(self, num_units: int, features: int, first_stride: int, **kwargs):
        super().__init__(**kwargs)
        self.num_units = num_units
        self.features = features
        self.first_stride = first_stride
        self.units = [
            BottleneckUnit(features, first_stride if index == 0 else 1,
                           name=f"unit{index + 1}", dtype=self.dtype_policy)
            for index in range(num_units)
        ]

    def build(self, input_shape):
        for unit in self.units:
            unit.build(input_shape)
            input_shape = unit.compute_output_shape(input_shape)

    def call(self, inputs):
        for unit in self.units:
            inputs = unit(inputs)
        return inputs

    def compute_output_shape(self, input_shape):
        for unit in self.units:
            input_shape = unit.compute_output_shape(input_shape)
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_units": self.num_units, "features": self.features,
                "first_stride": self.first_stride}


def resnet_stem(pixels: keras.KerasTensor, config: ResNetConfig, dtype=None) -> keras.KerasTensor:
    """Root (StdConv 7x7/2 -> GN -> ReLU -> max-pool 3x3/2) and the stages, applied to `pixels`."""
    width = 64 * config.width_factor
    x = StdConv(width, 7, 2, name="conv_root", dtype=dtype)(pixels)
    x = group_norm("gn_root")(x)
    x = layers.Activation("relu", name="relu_root", dtype=dtype)(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool_root", dtype=dtype)(x)
    for index, num_units in enumerate(config.layers):
        x = ResNetStage(
            num_units, width * 2**index, first_stride=1 if index == 0 else 2,
            name=f"block{index + 1}", dtype=dtype,
        )(x)
    return x


def resnet_classifier_outputs(x: keras.KerasTensor, config: ModelConfig,
                              dtype=None) -> keras.KerasTensor:
    """A pure ResNet classifier (kind "resnet") on normalised pixels `x`: the stem with all
    its stages -> global average pooling (`pooling`: the pre-logits features, as in BiT) ->
    the zero-initialised head. No final norm: a v1 unit ends in one."""
    x = resnet_stem(x, config.resnet, dtype=dtype)
    if x.dtype != NUMERICALLY_SENSITIVE_DTYPE:  # the pooled features feed the float32 head
        x = ops.cast(x, NUMERICALLY_SENSITIVE_DTYPE)
    x = layers.GlobalAveragePooling2D(name="pooling", dtype=NUMERICALLY_SENSITIVE_DTYPE)(x)
    if config.num_classes:
        x = layers.Dense(config.num_classes, kernel_initializer="zeros", name="head",
                         dtype=NUMERICALLY_SENSITIVE_DTYPE)(x)
    return x
