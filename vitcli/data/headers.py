"""Image sizes read from file headers, so that an image too large to decode safely is refused
before any decoder allocates it: a 435 KB PNG can declare 12000 x 12000 pixels (432 MB once
decoded, more inside the decoder).

`declared_size(handle)` reads only the header of a JPEG, PNG, BMP or WebP file (a GIF's or an
animated WebP's frame table too: TensorFlow's decoders read every frame even when only the
first is kept). The limit is `VITCLI_MAX_IMAGE_PIXELS`, by default Pillow's
decompression-bomb limit of 89,478,485 pixels (about 9459 x 9459, 256 MiB as 32-bit pixels).
A header that is not understood gives no size; the decoder then judges the file.
"""

from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO

from vitcli.errors import VitcliError

MAX_PIXELS_VARIABLE = "VITCLI_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS: 1024**3 // 4 // 3
TOO_LARGE = "too large to decode"
# JPEG start-of-frame markers (they hold the size); C4, C8 and CC are other segments.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})  # no length field

Size = tuple[int, str]  # (pixels the decoder allocates, "W x H" as the message shows it)


class _Truncated(Exception):
    """The header ends before the size: the decoder will say what is wrong."""


def max_image_pixels() -> int:
    """The largest image (in pixels) that is decoded: `VITCLI_MAX_IMAGE_PIXELS` or the default."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise VitcliError(f"{MAX_PIXELS_VARIABLE}={text!r} is not a positive whole number of "
                          "pixels", hint=f"unset it for the default, {DEFAULT_MAX_PIXELS:,}")
    return value


def size_error(handle: BinaryIO, limit: int) -> str | None:
    """Why the image in `handle` is too large to decode, or None (small enough, or no size
    known from its header)."""
    size = declared_size(handle)
    if size is None or size[0] <= limit:
        return None
    pixels, shape = size
    return (f"{TOO_LARGE} ({shape} = {pixels:,} pixels, over the limit of {limit:,}; "
            f"{MAX_PIXELS_VARIABLE} raises it)")


def bytes_size_error(data: bytes, limit: int) -> str | None:
    """`size_error` of an image held in memory."""
    return size_error(io.BytesIO(data), limit)


def image_format(head: bytes) -> str | None:
    """The format that the first 16 bytes of a file announce, by the signatures TensorFlow's
    decode_image sniffs (and its decoders require); None: not an image it decodes."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return next((name for name, signature in _SIGNATURES if head.startswith(signature)), None)


def declared_size(handle: BinaryIO) -> Size | None:
    """(pixels, "W x H") that the image's header declares, or None when the format or the
    header is not understood."""
    reader = _READERS.get(image_format(handle.read(16)))
    if reader is None:
        return None
    handle.seek(0)
    try:
        return reader(handle)
    except (_Truncated, struct.error, IndexError):
        return None


def _read(handle: BinaryIO, count: int) -> bytes:
    data = handle.read(count)
    if len(data) < count:
        raise _Truncated
    return data


def _plain(width: int, height: int) -> Size:
    return width * height, f"{width} x {height}"


def _png(handle: BinaryIO) -> Size | None:
    data = _read(handle, 24)  # signature, IHDR length and type, width, height
    if data[12:16] != b"IHDR":
        return None
    return _plain(*struct.unpack(">II", data[16:24]))


def _bmp(handle: BinaryIO) -> Size:
    data = _read(handle, 26)
    if struct.unpack_from("<I", data, 14)[0] == 12:  # the old OS/2 header: 16-bit sizes
        width, height = struct.unpack_from("<hh", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    return _plain(abs(width), abs(height))  # a negative height means rows stored top-down


def _jpeg(handle: BinaryIO) -> Size | None:
    """The size in the first start-of-frame segment, found by skipping whole segments (an
    EXIF thumbnail inside APP1 is never mistaken for the image)."""
    handle.seek(2)
    while True:
        if _read(handle, 1) != b"\xff":
            return None  # not at a marker: leave it to the decoder
        marker = _read(handle, 1)[0]
        while marker == 0xFF:  # fill bytes before a marker
            marker = _read(handle, 1)[0]
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        length = struct.unpack(">H", _read(handle, 2))[0]
        if length < 2:
            return None
        if marker in _JPEG_FRAME_MARKERS:
            _, height, width = struct.unpack(">BHH", _read(handle, 5))
            return _plain(width, height)
        handle.seek(length - 2, io.SEEK_CUR)


def _gif(handle: BinaryIO) -> Size:
    """The logical screen, or every frame's area together when that is larger (giflib keeps
    all frames in memory while TensorFlow decodes the first)."""
    data = handle.read()  # the frame table is spread over the file
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    position, frames, frame_pixels = 13 + _gif_colour_table(flags), 0, 0
    while position < len(data) and data[position] != 0x3B:  # 0x3B: the trailer
        if data[position] == 0x2C:  # an image descriptor, then its pixel data
            frame_width, frame_height, flags = struct.unpack_from("<HHB", data, position + 5)
            frames += 1
            frame_pixels += frame_width * frame_height
            position += 10 + _gif_colour_table(flags) + 1  # + the LZW minimum code size
        elif data[position] == 0x21:  # an extension: its label, then data sub-blocks
            position += 2
        else:
            break
        position = _skip_gif_sub_blocks(data, position)
    if frames > 1 and frame_pixels > width * height:
        return frame_pixels, f"{width} x {height}, {frames} frames"
    return _plain(width, height)


def _gif_colour_table(flags: int) -> int:
    """Bytes of the colour table that a GIF flags byte announces."""
    return 3 * (2 << (flags & 0x07)) if flags & 0x80 else 0


def _skip_gif_sub_blocks(data: bytes, position: int) -> int:
    while position < len(data) and data[position]:
        position += data[position] + 1
    return position + 1


def _webp(handle: BinaryIO) -> Size | None:
    data = _read(handle, 30)  # RIFF header, the first chunk's header and its start
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame's start code
        width, height = struct.unpack_from("<HH", data, 26)
        return _plain(width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":  # lossless: 14-bit (size - 1) fields after a signature byte
        bits = int.from_bytes(data[21:25], "little")
        return _plain((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk != b"VP8X":
        return None
    width = int.from_bytes(data[24:27], "little") + 1
    height = int.from_bytes(data[27:30], "little") + 1
    frames = _webp_frames(handle) if data[20] & 0x02 else 1  # 0x02: the animation flag
    if frames > 1:
        return width * height * frames, f"{width} x {height}, {frames} frames"
    return _plain(width, height)


def _webp_frames(handle: BinaryIO) -> int:
    """The number of ANMF (animation frame) chunks, found by skipping chunk after chunk."""
    handle.seek(12)
    frames = 0
    while len(header := handle.read(8)) == 8:
        name, size = header[:4], struct.unpack("<I", header[4:])[0]
        frames += name == b"ANMF"
        handle.seek(size + (size & 1), io.SEEK_CUR)  # chunks are padded to an even size
    return frames


_SIGNATURES = (("png", b"\x89PNG\r\n\x1a\n"), ("jpeg", b"\xff\xd8\xff"), ("gif", b"GIF87a"),
               ("gif", b"GIF89a"), ("bmp", b"BM"))
_READERS = {"png": _png, "jpeg": _jpeg, "gif": _gif, "bmp": _bmp, "webp": _webp}
