"""Reading and writing `.npz` archives, and the one key-map table used in both directions.

`key_map(config)` lists (checkpoint key, Keras weight path) for every array of a model;
loading reads it left to right, `save_npz` right to left, so a round trip is exact.

Reading costs memory bounded by the file: before anything is inflated or allocated, every
member's shape and dtype are read from the zip directory and its .npy header alone, and the
archive is refused when a member's header disagrees with the size the directory records for
it, or when the arrays together would take more than `allowed_bytes(file size)` (a
decompression bomb: deflated zeros shrink about a thousand-fold, real weights hardly at all).
"""

from __future__ import annotations

import contextlib
import math
import tokenize
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitcli.config import ModelConfig
from vitcli.errors import VitcliError
from vitcli.files import write_atomically
from vitcli.storage import local_copy, location

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
    """(checkpoint key, Keras weight path) for every array of the model of `config`: a pure
    ResNet's are the hybrid stem's names, all its stages', and the head's."""
    rows = _resnet(config) if config.resnet is not None else []
    if config.is_resnet:
        return rows + (_same("head/kernel", "head/bias") if config.num_classes else [])
    rows += _same("embedding/kernel", "embedding/bias")
    if config.classifier == "token":
        rows.append(("cls", "cls/cls"))
    if config.posemb == "learned":  # sincos2d and none have no table: see POSEMB_RECORDS
        rows.append(("Transformer/posembed_input/pos_embedding", "posembed_input/pos_embedding"))
    for index in range(config.depth):
        rows += _encoder_block(index)
    rows += _norm("Transformer/encoder_norm", "encoder_norm")
    if config.representation_size:
        rows += _same("pre_logits/kernel", "pre_logits/bias")
    if config.num_classes:
        rows += _same("head/kernel", "head/bias")
    return rows


# A model whose position embeddings are not a learned table has no table to save; in its
# place one small int32 array records which kind it is and the token grid (height, width),
# from which the image size follows (docs/reference.md §4.1).
POSEMB_RECORDS = {"sincos2d": "Transformer/posembed_input/sincos2d",
                  "none": "Transformer/posembed_input/none"}


# A learned table's rows say how many tokens there are, not their grid: a non-square model's
# (height != width) is recorded here as (grid height, grid width); a table without this record
# is a square grid, as in every published checkpoint.
GRID_RECORD = "Transformer/posembed_input/grid"


# A pure ResNet takes any image size and has no table or grid to tell which one it was
# trained at: it records (height, width) in pixels under this key instead.
IMAGE_SIZE_RECORD = "image_size"


def posemb_record(config: ModelConfig) -> dict[str, np.ndarray]:
    """The record array of a sincos2d or none model, or of a non-square learned table's grid;
    nothing for a square learned table; a pure ResNet's image size."""
    if config.is_resnet:
        return {IMAGE_SIZE_RECORD: np.array(config.image_shape, np.int32)}
    grid = np.array(config.grid_shape, np.int32)
    if config.posemb not in POSEMB_RECORDS:
        return {GRID_RECORD: grid} if grid[0] != grid[1] and config.posemb == "learned" else {}
    return {POSEMB_RECORDS[config.posemb]: grid}


def without_records(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weight arrays of an archive: everything but the position-embedding records."""
    records = {*POSEMB_RECORDS.values(), GRID_RECORD, IMAGE_SIZE_RECORD}
    return {key: value for key, value in arrays.items() if key not in records}


# How many bytes of arrays an archive may declare (see `allowed_bytes`).
ALWAYS_ALLOWED = 256 * 2**20
MAX_RATIO, RATIO_CEILING = 50, 8 * 2**30
LARGE_FILE_RATIO = 2
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


@dataclass(frozen=True)
class Member:
    """One array of an archive as its .npy header declares it; nothing of its data read."""

    name: str  # the zip member, "<key>.npy"
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype


def allowed_bytes(file_size: int) -> int:
    """The most bytes of arrays an archive of `file_size` bytes may declare: 256 MiB always,
    50 times the file up to 8 GiB, twice the file beyond. Real checkpoints hold float arrays
    that deflate poorly (a ratio of ~1.1; 1 when stored, as np.savez does; a zero head makes it
    ~2); a deflate bomb has a ratio of ~1000."""
    return max(ALWAYS_ALLOWED, min(MAX_RATIO * file_size, RATIO_CEILING),
               LARGE_FILE_RATIO * file_size)


def _size_text(count: int) -> str:
    """`count` bytes as people read them: 512 B, 1.9 MiB, 4.0 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _open_zip(path) -> Iterator[zipfile.ZipFile]:
    """The archive at `path` (downloaded first when it is a URL)."""
    if not path.is_file():
        raise VitcliError(f"checkpoint '{path}' does not exist or is not a file")
    with local_copy(path) as local:
        if not zipfile.is_zipfile(local):
            with open(local, "rb") as handle:
                is_npy = handle.read(6) == b"\x93NUMPY"
            detail = "a single .npy array" if is_npy else "not a zip archive"
            raise VitcliError(f"'{path}' is not an .npz archive ({detail})")
        with zipfile.ZipFile(local) as archive:
            yield archive


def _check_total(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuses an archive whose directory declares more bytes than `allowed_bytes` of its size
    (before a single member is opened)."""
    declared, size = sum(info.file_size for info in infos), path.stat().st_size
    if declared > allowed_bytes(size):
        raise VitcliError(
            f"'{path}' declares {_size_text(declared)} of arrays in a {_size_text(size)} file, "
            f"more than vitcli inflates from it ({_size_text(allowed_bytes(size))}): a damaged "
            "archive or a decompression bomb",
            hint="real checkpoints are about as large as their arrays")


def _member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    """The member's key, shape and dtype from its .npy header, which must account for exactly
    the bytes the zip directory records for it."""
    if not info.filename.endswith(".npy"):
        raise VitcliError(f"'{path}' is not a numpy .npz archive (it holds {info.filename})")
    key = info.filename[:-len(".npy")]
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        if version not in _HEADER_READERS:
            raise VitcliError(f"'{path}': array '{key}' uses .npy format {version[0]}.{version[1]}"
                              ", which vitcli does not read", hint="re-save it with numpy")
        shape, _, dtype = _HEADER_READERS[version](handle)
        header_size = handle.tell()
    if dtype.hasobject:
        raise VitcliError(f"'{path}' holds pickled objects, which vitcli never loads",
                          hint="re-save it with plain numpy arrays")
    declared = math.prod(shape) * dtype.itemsize
    if header_size + declared != info.file_size:
        raise VitcliError(f"'{path}': array '{key}' declares shape {shape} {dtype} "
                          f"({_size_text(declared)}), but the archive stores "
                          f"{_size_text(max(info.file_size - header_size, 0))} for it",
                          hint="the file is damaged; download or save it again")
    return Member(info.filename, key, tuple(shape), dtype)


def _check_expected(path: Path, members: list[Member],
                    expected: Mapping[str, tuple[int, ...] | None]) -> None:
    """Refuses members that are missing, extra or shaped unlike `expected` (key -> shape, or
    None for any shape)."""
    shapes = {member.key: member.shape for member in members}
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        first = missing[0] if missing else extra[0]
        raise VitcliError(f"'{path}' does not match: {len(missing)} array(s) missing, "
                          f"{len(extra)} unexpected (e.g. '{first}')")
    for key, shape in expected.items():
        if shape is not None and tuple(shape) != shapes[key]:
            raise VitcliError(f"'{path}': array '{key}' has shape {shapes[key]}, expected "
                              f"{tuple(shape)}")


def _checked_members(path: Path, archive: zipfile.ZipFile) -> list[Member]:
    """Every member as declared, checked against `allowed_bytes` without inflating any data."""
    infos = archive.infolist()
    if not infos:
        raise VitcliError(f"'{path}' is not a numpy .npz archive (it is empty)")
    _check_total(path, infos)
    return [_member(path, archive, info) for info in infos]


@contextlib.contextmanager
def _reading_errors(path: Path):
    """Turns what zipfile, zlib and numpy raise on a damaged archive into one VitcliError."""
    try:
        yield
    # numpy's header parser can also raise SyntaxError/TokenError on a garbled member.
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError, SyntaxError,
            tokenize.TokenError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise VitcliError(f"'{path}' is not a readable .npz archive ({message})") from error


def read_npz(path: str | Path, expected: Mapping[str, tuple[int, ...] | None] | None = None
             ) -> dict[str, np.ndarray]:
    """All arrays of an .npz, refusing pickles and archives that would inflate beyond
    `allowed_bytes`; with `expected` (key -> shape or None for any, when the model is known
    beforehand, e.g. a training checkpoint's) also any other keys or shapes, all before any
    data is read. Every failure is one VitcliError line."""
    path = location(path)
    with _reading_errors(path), _open_zip(path) as archive:
        members = _checked_members(path, archive)
        if expected is not None:
            _check_expected(path, members, expected)
        arrays = {}
        for member in members:
            with archive.open(member.name) as handle:
                arrays[member.key] = np.lib.format.read_array(handle, allow_pickle=False)
    return arrays


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    return write_atomically(path, write)
