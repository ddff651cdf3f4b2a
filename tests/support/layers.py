"""The layer battery every vitcli layer must pass: config round trip, .keras save/load inside
a model, and mixed precision."""

from __future__ import annotations

import inspect
from pathlib import Path

import keras
import numpy as np

from tests.support.models import nested_layers, randomise_weights

BASE_LAYER_KEYS = frozenset(keras.layers.Layer().get_config())  # name, dtype, trainable, ...
REQUIRED_BASE_KEYS = frozenset({"name", "dtype", "trainable"})


def init_arguments(cls) -> set[str]:
    """The named arguments of the nearest `__init__` in `cls`'s ancestry below Layer that
    names any (one taking only **kwargs passes them all up)."""
    for klass in cls.__mro__:
        if klass is keras.layers.Layer:
            return set()
        if "__init__" in vars(klass):
            parameters = inspect.signature(klass.__init__).parameters.values()
            named = {parameter.name for parameter in parameters if parameter.name != "self"
                     and parameter.kind not in (parameter.VAR_POSITIONAL,
                                                parameter.VAR_KEYWORD)}
            if named:
                return named
    return set()


def _relative_paths(layer) -> list[str]:
    return [variable.path.split("/", 1)[1] for variable in layer.weights]


def _check_config_keys(layer) -> None:
    config = layer.get_config()
    arguments = init_arguments(type(layer))
    assert set(config) - BASE_LAYER_KEYS == arguments, "get_config() keys != __init__ arguments"
    assert arguments <= set(config)
    assert set(config) >= REQUIRED_BASE_KEYS


def _check_from_config(layer, inputs, expected) -> None:
    clone = type(layer).from_config(layer.get_config())
    clone(inputs)
    assert clone.get_config() == layer.get_config()
    assert _relative_paths(clone) == _relative_paths(layer)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(inputs)), expected)


def _check_keras_file(layer, inputs, expected, directory: Path) -> None:
    tensor = keras.Input(inputs.shape[1:])
    model = keras.Model(tensor, layer(tensor))
    path = directory / f"{layer.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    reloaded_layer = reloaded.get_layer(layer.name)
    assert type(reloaded_layer) is type(layer)
    assert reloaded_layer.get_config() == layer.get_config()
    np.testing.assert_array_equal(np.asarray(reloaded(inputs)), expected)


def _check_mixed_precision(layer, inputs, expected) -> None:
    config = {key: value for key, value in layer.get_config().items() if key != "dtype"}
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = type(layer).from_config(config)
        mixed(inputs)
        mixed.set_weights(layer.get_weights())
        outputs = np.asarray(keras.ops.cast(mixed(inputs), "float32"))
    finally:
        keras.config.set_dtype_policy(previous)
    assert mixed.compute_dtype == "bfloat16" and mixed.variable_dtype == "float32"
    assert all(variable.dtype == "float32" for variable in mixed.weights)
    for sublayer in nested_layers(mixed):
        if isinstance(sublayer, (keras.layers.LayerNormalization,
                                 keras.layers.GroupNormalization)):
            assert sublayer.compute_dtype == "float32", sublayer.path
    assert np.isfinite(outputs).all()
    # bfloat16 keeps ~3 significant digits; this only catches gross errors (wrong weights).
    scale = np.abs(expected).max() + 1.0
    assert np.abs(outputs - expected).max() < 0.1 * scale


def check_layer(layer: keras.layers.Layer, input_shape: tuple[int, ...], directory: Path,
                seed: int = 0) -> None:
    """The battery: get_config() keys are exactly the __init__ arguments plus Layer's own;
    from_config(get_config()) rebuilds the same layer (config, weight names, outputs); the layer
    survives a .keras save/load inside a model; under 'mixed_bfloat16' it keeps float32
    variables and float32 norms and its outputs are finite and close to float32's."""
    inputs = np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    layer(inputs)
    randomise_weights(layer, seed + 1)
    expected = np.asarray(layer(inputs))
    assert np.isfinite(expected).all()
    _check_config_keys(layer)
    _check_from_config(layer, inputs, expected)
    _check_keras_file(layer, inputs, expected, directory)
    _check_mixed_precision(layer, inputs, expected)
