"""Shared test helpers: tiny checkpoint shapes, saved random checkpoints, error and disk checks,
the dtype-policy guard, and the layer battery (config round trip, .keras round trip, mixed
precision) that every vitcli layer must pass.

Expected values come from `tests/reference/numpy_vit.py`, which shares no code with vitcli.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import math
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.reference import numpy_vit
from vitcli.errors import VitcliError

# Tiny official-layout checkpoints (docs/reference.md §4.1) for parity and loading tests.
_SMALL = dict(depth=2, num_classes=5)
CHECKPOINT_SHAPES = {
    "token": dict(_SMALL, hidden_size=32, num_heads=4, mlp_dim=64, patch_size=8, image_size=32),
    "pre_logits": dict(_SMALL, hidden_size=48, num_heads=3, mlp_dim=96, patch_size=8,
                       image_size=32, representation_size=40),
    "gap": dict(_SMALL, hidden_size=64, num_heads=8, mlp_dim=128, patch_size=16, image_size=48,
                classifier="gap"),
    "hybrid": dict(_SMALL, hidden_size=32, num_heads=4, mlp_dim=64, patch_size=1, image_size=64,
                   resnet_layers=(1, 1)),
    "stem_only": dict(_SMALL, hidden_size=32, num_heads=2, mlp_dim=64, patch_size=8,
                      image_size=64, resnet_layers=()),
    # Three stages (stride 16) and width factor 2: every ResNet channel count doubles.
    "hybrid_wide": dict(_SMALL, hidden_size=32, num_heads=4, mlp_dim=64, patch_size=1,
                        image_size=64, resnet_layers=(1, 2, 1), resnet_width_factor=2),
    # Patch 16 at 64 px is a 4x4 grid: the source of the resolution-change tests.
    "grid4": dict(_SMALL, hidden_size=32, num_heads=4, mlp_dim=64, patch_size=16, image_size=64),
}
POSEMB_KEY = "Transformer/posembed_input/pos_embedding"
PARITY_KINDS = ("token", "pre_logits", "gap", "hybrid", "stem_only")
PARITY_TOLERANCE = 1e-5  # float32 Keras vs float64 numpy; measured 4e-7 to 3.2e-6


def official_checkpoint(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A fresh random, all-non-zero official-layout checkpoint of a `CHECKPOINT_SHAPES` kind."""
    return numpy_vit.random_checkpoint(seed, **CHECKPOINT_SHAPES[kind])


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """The exact GELU (Keras' default), which the reference does NOT use."""
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def random_images(image_size: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Float32 NHWC pixels uniform in [0, 255]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, (batch, image_size, image_size, 3)).astype(np.float32)


def logits(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images, training=False))


def weights_by_path(model: keras.Model) -> dict[str, np.ndarray]:
    return {variable.path: np.asarray(variable.numpy()) for variable in model.weights}


@pytest.fixture(scope="session")
def checkpoint_file(tmp_path_factory):
    """`checkpoint_file(kind)`: the path of the kind's seed-0 official .npz (written once)."""
    directory = tmp_path_factory.mktemp("checkpoints")
    written: dict[str, Path] = {}

    def path_of(kind: str) -> Path:
        if kind not in written:
            written[kind] = directory / f"{kind}.npz"
            np.savez(written[kind], **official_checkpoint(kind))
        return written[kind]

    return path_of


@pytest.fixture(autouse=True)
def restore_dtype_policy():
    """Every test leaves Keras' global dtype policy as it found it."""
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


@pytest.fixture
def free_keras_memory():
    """Drops Keras' global state and collects garbage after a test that builds big models."""
    yield
    keras.backend.clear_session()
    gc.collect()


def vitcli_error(function, *args, **kwargs) -> str:
    """Calls `function`, requires a one-line VitcliError and returns its message (lowercase)."""
    with pytest.raises(Exception) as caught:
        function(*args, **kwargs)
    assert type(caught.value) is VitcliError, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message.lower()


def disk_snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """(sha256, mtime_ns) of every file under `directory`, by relative path."""
    return {
        str(path.relative_to(directory)): (hashlib.sha256(path.read_bytes()).hexdigest(),
                                           path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*")) if path.is_file()
    }


def nested_layers(model) -> list[keras.layers.Layer]:
    """Every layer inside `model`, nested sub-layers included."""
    return list(model._flatten_layers(include_self=False, recursive=True))


# ---------------------------------------------------------------------------------------------
# The layer battery
# ---------------------------------------------------------------------------------------------

BASE_LAYER_KEYS = frozenset(keras.layers.Layer().get_config())  # name, dtype, trainable, ...
REQUIRED_BASE_KEYS = frozenset({"name", "dtype", "trainable"})


def init_arguments(cls) -> set[str]:
    """The named arguments of the nearest `__init__` that `cls` defines itself (not Layer's)."""
    for klass in cls.__mro__:
        if klass is keras.layers.Layer:
            return set()
        if "__init__" in vars(klass):
            parameters = inspect.signature(klass.__init__).parameters.values()
            return {parameter.name for parameter in parameters if parameter.name != "self"
                    and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}
    return set()


def randomise_weights(layer: keras.layers.Layer, seed: int = 1) -> None:
    """Non-zero weights everywhere, so zero-initialised ones (class token, gn3) also count."""
    rng = np.random.default_rng(seed)
    layer.set_weights([1.0 + 0.3 * rng.standard_normal(weight.shape).astype(np.float32)
                       if weight.path.endswith("gamma")
                       else 0.3 * rng.standard_normal(weight.shape).astype(np.float32)
                       for weight in layer.weights])


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
