"""Reading and writing `.npz` archives, and the one key-map table used in both directions.

`key_map(config)` lists (checkpoint key, Keras weight path) for every array of a model;
loading reads it left to right, `save_npz` right to left, so a round trip is exact.
"""

from __future__ import annotations

import os
import tempfile
import tokenize
import zipfile
from pathlib import Path

import numpy as np

from vitcli.config import ModelConfig
from vitcli.errors import VitcliError

KeyMap = list[tuple[str, str]]

_ATTENTION = "MultiHeadDotProductAttention_1"


def _same(*paths: str) -> KeyMap:
    return [(path, path) for path in paths]


def _norm(checkpoint_prefix: str, keras_prefix: str) -> KeyMap:
    """LayerNorm/GroupNorm: the reference's scale/bias are Keras' gamma/beta."""
    return [(f"{checkpoint_prefix}/scale", f"{keras_prefix}/gamma"),
            (f"{checkpoint_prefix}/bias", f"{keras_prefix}/beta")]


def _encoder_block(index: int) -> KeyMap:
    keras_prefix = f"encoderblock_{index}"
    prefix = f"Transformer/{keras_prefix}"
    rows = _norm(f"{prefix}/LayerNorm_0", f"{keras_prefix}/LayerNorm_0")
    for projection in ("query", "key", "value", "out"):
        for weight in ("kernel", "bias"):
            suffix = f"{_ATTENTION}/{projection}/{weight}"
            rows.append((f"{prefix}/{suffix}", f"{keras_prefix}/{suffix}"))
    rows += _norm(f"{prefix}/LayerNorm_2", f"{keras_prefix}/LayerNorm_2")
    for dense in ("Dense_0", "Dense_1"):
        for weight in ("kernel", "bias"):
            suffix = f"MlpBlock_3/{dense}/{weight}"
            rows.append((f"{prefix}/{suffix}", f"{keras_prefix}/{suffix}"))
    return rows


def _resnet(config: ModelConfig) -> KeyMap:
    rows = _same("conv_root/kernel") + _norm("gn_root", "gn_root")
    for stage, num_units in enumerate(config.resnet.layers, start=1):
        for unit in range(1, num_units + 1):
            prefix = f"block{stage}/unit{unit}"
            # The first unit of every stage changes the shape (channels x4 or stride 2).
            names = ("1", "2", "3", "_proj") if unit == 1 else ("1", "2", "3")
            for name in names:
                rows += _same(f"{prefix}/conv{name}/kernel")
                rows += _norm(f"{prefix}/gn{name}", f"{prefix}/gn{name}")
    return rows


def key_map(config: ModelConfig) -> KeyMap:
    """(checkpoint key, Keras weight path) for every array of the model of `config`."""
    rows = _resnet(config) if config.resnet is not None else []
    rows += _same("embedding/kernel", "embedding/bias")
    if config.classifier == "token":
        rows.append(("cls", "cls/cls"))
    rows.append(("Transformer/posembed_input/pos_embedding", "posembed_input/pos_embedding"))
    for index in range(config.depth):
        rows += _encoder_block(index)
    rows += _norm("Transformer/encoder_norm", "encoder_norm")
    if config.representation_size:
        rows += _same("pre_logits/kernel", "pre_logits/bias")
    if config.num_classes:
        rows += _same("head/kernel", "head/bias")
    return rows


def _load_archive(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            is_npy = handle.read(6) == b"\x93NUMPY"
        detail = "a single .npy array" if is_npy else "not a zip archive"
        raise VitcliError(f"'{path}' is not an .npz archive ({detail})")
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz, refusing pickles; every failure is one VitcliError line."""
    path = Path(path)
    if not path.is_file():
        raise VitcliError(f"checkpoint '{path}' does not exist or is not a file")
    try:
        arrays = _load_archive(path)
    except ValueError as error:
        if "pickle" in str(error):
            raise VitcliError(f"'{path}' holds pickled objects, which vitcli never loads",
                              hint="re-save it with plain numpy arrays") from error
        raise VitcliError(f"'{path}' is not a readable .npz archive: {error}") from error
    # numpy's header parser can also raise SyntaxError/TokenError on a garbled member.
    except (OSError, zipfile.BadZipFile, EOFError, SyntaxError, tokenize.TokenError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise VitcliError(f"'{path}' is not a readable .npz archive ({message})") from error
    # A zip holding other files (not .npy) loads as raw bytes.
    foreign = [key for key, value in arrays.items() if not isinstance(value, np.ndarray)]
    if foreign or not arrays:
        raise VitcliError(f"'{path}' is not a numpy .npz archive "
                          f"({'it holds ' + foreign[0] if foreign else 'it is empty'})")
    return arrays


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: str | Path, write) -> Path:
    """Calls `write(temporary_path)` and renames the result into place, so an interrupted
    write never leaves a half-written `path` behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix,
                                         dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        # mkstemp creates 0600; give the result the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    return write_atomically(path, write)
