"""Builds the functional Keras model of a `ModelConfig` (a ViT, plain or hybrid, or a pure BiT
ResNet classifier), and reads a config back from a model."""

from __future__ import annotations

import keras
from keras import layers, ops

from vitcli.config import (
    CLASSIFIERS,
    KINDS,
    POSEMBS,
    ModelConfig,
    ResNetConfig,
    canonical_size,
    check_image_size,
    resnet_classifier,
    size_text,
)
from vitcli.errors import VitcliError
from vitcli.models.layers import (
    NUMERICALLY_SENSITIVE_DTYPE,
    ClassToken,
    EncoderBlock,
    PatchEmbedding,
    PositionEmbedding,
    SinCosPositionEmbedding,
    TokenPooling,
    layer_norm,
)
from vitcli.models.resnet import resnet_classifier_outputs, resnet_stem

INPUT_NAME = "pixels"


def _check_size_and_classes(config: ModelConfig) -> None:
    if config.num_classes < 0 or min(config.image_shape) < 1:
        raise VitcliError(f"num_classes must be >= 0 and image_size >= 1, got "
                          f"{config.num_classes} and {size_text(config.image_size)}")


def _validate_resnet(config: ModelConfig) -> None:
    """A pure ResNet has stages, and none of a transformer's parts or settings (each named
    with its flag where it has one)."""
    name = config.name
    _check_size_and_classes(config)
    if config.resnet is None or not config.resnet.layers:
        raise VitcliError(f"{name}: a pure ResNet needs at least one stage of units")
    if config.resnet.width_factor < 1:
        raise VitcliError(f"{name}: the ResNet width factor must be >= 1, "
                          f"not {config.resnet.width_factor}")
    transformer = {"hidden_size": config.hidden_size, "depth": config.depth,
                   "num_heads": config.num_heads, "mlp_dim": config.mlp_dim,
                   "patch_size": config.patch_size}
    for field, value in transformer.items():
        if value:
            raise VitcliError(f"{field} {value}: {name}, a pure ResNet, has no "
                              "transformer (it must be 0)")
    switches = (("classifier (--classifier)", config.classifier, "gap"),
                ("position embeddings (--posemb)", config.posemb, "none"),
                ("dropout (--dropout)", config.dropout, 0),
                ("attention dropout", config.attention_dropout, 0),
                ("stochastic depth (--drop-path)", config.drop_path, 0),
                ("pre-logits (representation_size)", config.representation_size, None))
    for what, value, only in switches:
        if value != only and not (only is None and not value):
            raise VitcliError(f"{what} {value}: {name}, a pure ResNet, can only have "
                              f"{only}", hint="drop the setting: it applies to ViTs")


def validate(config: ModelConfig) -> None:
    """Refuses configs that cannot be built, with a one-line reason."""
    if config.kind not in KINDS:
        raise VitcliError(f"model kind must be one of {KINDS}, not '{config.kind}'")
    if config.is_resnet:
        _validate_resnet(config)
        return
    height, width = config.image_shape
    if height != width:  # non-square: the side that is not a multiple of the stride
        if min(height, width) < 1:
            raise VitcliError(f"image sides must be >= 1, got {size_text(config.image_size)}")
        resnet = " times the ResNet stride" if config.resnet else ""
        check_image_size(config.image_size, config.stride,
                         f"{config.stride} (the patch size{resnet})")
    elif config.image_size % config.stride:
        raise VitcliError(
            f"image size {config.image_size} is not a multiple of {config.stride} "
            f"(the patch size{' times the ResNet stride' if config.resnet else ''})",
            hint=f"use e.g. {config.image_size // config.stride * config.stride or config.stride}"
            f" or {(config.image_size // config.stride + 1) * config.stride}",
        )
    if config.num_heads < 1 or config.hidden_size % config.num_heads:
        raise VitcliError(f"hidden size {config.hidden_size} is not divisible by "
                          f"{config.num_heads} heads")
    _check_size_and_classes(config)
    if config.classifier not in CLASSIFIERS:
        raise VitcliError(f"classifier must be one of {CLASSIFIERS}, not '{config.classifier}'")
    if config.posemb not in POSEMBS:
        raise VitcliError(f"position embeddings must be one of {POSEMBS}, not '{config.posemb}'")
    if config.posemb == "sincos2d" and (config.hidden_size % 4 or config.hidden_size < 8):
        raise VitcliError(f"sincos2d position embeddings need a width that is a multiple of 4 "
                          f"(at least 8), not {config.hidden_size}")


def build_vit(config: ModelConfig, dtype=None) -> keras.Model:
    """The model of `config` (a ViT; a pure ResNet for kind "resnet"), taking float pixels
    in [0, 255] (NHWC) and returning logits.

    `dtype` is a Keras dtype policy (name or object); None uses the global policy.
    """
    validate(config)
    pixels = keras.Input((*config.image_shape, 3), name=INPUT_NAME)
    # The reference normalises to [-1, 1]; doing it inside keeps every export on raw pixels.
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale", dtype=dtype)(pixels)
    if config.is_resnet:
        return keras.Model(pixels, resnet_classifier_outputs(x, config, dtype=dtype),
                           name=config.name.replace("/", "_"))
    if config.resnet is not None:
        x = resnet_stem(x, config.resnet, dtype=dtype)
    x = PatchEmbedding(config.hidden_size, config.patch_size, name="embedding", dtype=dtype)(x)
    if config.classifier == "token":
        x = ClassToken(name="cls", dtype=dtype)(x)
    if config.posemb == "learned":
        x = PositionEmbedding(name="posembed_input", dtype=dtype)(x)
    elif config.posemb == "sincos2d":  # not a weight: computed for the model's own grid
        rows, columns = config.grid_shape  # a square grid is the tokens' (as before)
        x = SinCosPositionEmbedding(config.num_prefix_tokens, name="posembed_input",
                                    grid_shape=None if rows == columns else (rows, columns),
                                    dtype=dtype)(x)
    x = layers.Dropout(config.dropout, name="dropout", dtype=dtype)(x)
    for index in range(config.depth):
        x = EncoderBlock(
            config.num_heads, config.mlp_dim, config.dropout, config.attention_dropout,
            drop_path=drop_path_rate(config.drop_path, index, config.depth),
            name=f"encoderblock_{index}", dtype=dtype,
        )(x)
    if x.dtype != NUMERICALLY_SENSITIVE_DTYPE:  # the last LayerNorm feeds the float32 head
        x = ops.cast(x, NUMERICALLY_SENSITIVE_DTYPE)
    x = layer_norm("encoder_norm")(x)
    x = TokenPooling(config.classifier, name="pooling", dtype=NUMERICALLY_SENSITIVE_DTYPE)(x)
    if config.representation_size:
        x = layers.Dense(config.representation_size, activation="tanh", name="pre_logits",
                         dtype=NUMERICALLY_SENSITIVE_DTYPE)(x)
    if config.num_classes:
        x = layers.Dense(config.num_classes, kernel_initializer="zeros", name="head",
                         dtype=NUMERICALLY_SENSITIVE_DTYPE)(x)
    return keras.Model(pixels, x, name=config.name.replace("/", "_"))


def _layer_or_none(model: keras.Model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _resnet_config(model: keras.Model) -> ResNetConfig | None:
    root = _layer_or_none(model, "conv_root")
    if root is None:
        return None
    stages = []
    while (stage := _layer_or_none(model, f"block{len(stages) + 1}")) is not None:
        stages.append(stage.num_units)
    return ResNetConfig(layers=tuple(stages), width_factor=root.filters // 64)


def drop_path_rate(rate: float, index: int, depth: int) -> float:
    """Block `index`'s stochastic depth: growing linearly over the blocks from 0 (the first)
    to `rate` (the last), as big_vision's ViT and timm's do."""
    return rate * index / max(depth - 1, 1)


def config_from_model(model: keras.Model) -> ModelConfig:
    """The `ModelConfig` of a model built by `build_model` (also after a .keras round trip)."""
    embedding = _layer_or_none(model, "embedding")
    first_block = _layer_or_none(model, "encoderblock_0")
    resnet = _resnet_config(model)
    if embedding is None and first_block is None and resnet is not None:  # a pure ResNet
        head = _layer_or_none(model, "head")
        return resnet_classifier(resnet, name=model.name,
                                 image_size=canonical_size(model.input_shape[1:3]),
                                 num_classes=head.units if head is not None else 0)
    if embedding is None or first_block is None:
        raise VitcliError(f"model '{model.name}' is not a vitcli ViT (no embedding/encoder layers)")
    depth = sum(layer.name.startswith("encoderblock_") for layer in model.layers)
    pre_logits = _layer_or_none(model, "pre_logits")
    head = _layer_or_none(model, "head")
    posemb = _layer_or_none(model, "posembed_input")
    return ModelConfig(
        name=model.name,
        hidden_size=embedding.hidden_size,
        depth=depth,
        num_heads=first_block.num_heads,
        mlp_dim=first_block.mlp_dim,
        patch_size=embedding.patch_size,
        image_size=canonical_size(model.input_shape[1:3]),  # (height, width) unless square
        num_classes=head.units if head is not None else 0,
        classifier=model.get_layer("pooling").classifier,
        posemb="none" if posemb is None else
        "sincos2d" if isinstance(posemb, SinCosPositionEmbedding) else "learned",
        representation_size=pre_logits.units if pre_logits is not None else None,
        dropout=first_block.dropout,
        attention_dropout=first_block.attention_dropout,
        # the last block's rate is the model's (a one-block model has none: its block is first)
        drop_path=model.get_layer(f"encoderblock_{depth - 1}").drop_path if depth > 1 else 0.0,
        resnet=resnet,
    )
