"""Small image folders written for the tests, and readers of what the pipelines give back.

Two kinds of folder:
- colour folders (`write_colour_folder`): noisy solid red, green and blue PNGs, separable by
  a linear probe, for training and the commands;
- labelled-id folders (`make_folder`), whose every image carries its identity in its colours:
  red = 10 + 20 * label, green = the example's id (both constant over the image, so any crop
  or resize keeps them), blue = noise seeded by the id (so crops and flips change the pixels);
  `labels_and_ids` reads them back from a batch.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
COLOUR_CLASSES = sorted(COLOURS)  # write_colour_folder's classes, in label order


def write_colour_folder(root, per_class: int = 12, size: int = 16, seed: int = 0):
    """DIR/<colour>/<i>.png: noisy solid colours, separable by a linear probe."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            noise = rng.integers(-25, 25, size=(size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def write_colour_splits(root, train: int, test: int):
    """DIR/{train,test}/<colour>/...: `train` and `test` images per class, test drawn with
    another seed."""
    write_colour_folder(root / "train", per_class=train, seed=0)
    write_colour_folder(root / "test", per_class=test, seed=1)
    return root


def image_array(label: int, example_id: int, size: int = 16) -> np.ndarray:
    """uint8 (size, size, 3): red encodes the label, green the id, blue is noise."""
    pixels = np.empty((size, size, 3), np.uint8)
    pixels[..., 0] = 10 + 20 * label
    pixels[..., 1] = example_id
    pixels[..., 2] = np.random.default_rng(example_id).integers(0, 256, (size, size))
    return pixels


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def make_folder(root: Path, counts: dict[str, int], *, first_id: int = 0, fmt: str = "PNG",
                suffix: str = ".png") -> dict[int, int]:
    """Writes root/<class>/<id><suffix> for `counts` images per class (classes labelled in sorted
    order) and returns {id: label}."""
    labels = {}
    example_id = first_id
    for label, name in enumerate(sorted(counts)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for _ in range(counts[name]):
            pixels = image_array(label, example_id)
            (root / name / f"{example_id:03d}{suffix}").write_bytes(encode(pixels, fmt))
            labels[example_id] = label
            example_id += 1
    return labels


def labels_and_ids(images: np.ndarray) -> tuple[list[int], list[int]]:
    """(labels, ids) read back from a batch of images made by `image_array`."""
    red = np.rint(images[..., 0].mean(axis=(1, 2)))
    green = np.rint(images[..., 1].mean(axis=(1, 2)))
    return [int(value) for value in (red - 10) // 20], [int(value) for value in green]


def batches(dataset, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(images), np.asarray(labels)) for images, labels in dataset.take(count)]


def write_png(path, height: int, width: int, seed: int) -> None:
    """A smooth colour gradient plus a bright square, so overlays have something to show."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    pixels = np.stack([rows * 255 / height, columns * 255 / width,
                       np.full((height, width), 90.0)], axis=-1)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    pixels[top:top + height // 3, left:left + width // 3] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def write_gradient_folder(root):
    """DIR/<class>/<i>.png: two classes of three non-square gradient images each."""
    for label, name in enumerate(("left", "right")):
        for index in range(3):
            write_png(root / name / f"{index}.png", 40, 30, seed=10 * label + index)
    return root


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_black_png(path: Path, width: int, height: int, rows_per_block: int = 100) -> None:
    """A valid RGB PNG of black pixels, written without ever holding them: one raw-deflated
    block of `rows_per_block` rows, closed by a full flush (so it refers to nothing before
    it), is repeated inside a zlib stream built by hand."""
    assert height % rows_per_block == 0
    rows = bytes((1 + 3 * width) * rows_per_block)  # each row: filter byte 0, then pixels
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(rows) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    checksum = 1
    for _ in range(height // rows_per_block):
        checksum = zlib.adler32(rows, checksum)
    stream = (b"\x78\xda" + block * (height // rows_per_block) + end
              + struct.pack(">I", checksum))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b""))


def upload_folder(local: Path, url: str):
    """Copies the folder `local` to `url` (e.g. ram://data) file by file; returns the URL's
    path (vitcli.storage.location)."""
    from vitcli.storage import copy_file, files_below, location

    target = location(url)
    for name in files_below(local):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        copy_file(local / name, target / name)
    return target
