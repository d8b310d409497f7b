"""PNG encoding for the frames the tool writes.

A colour fill or a line layer is mostly flat fields, which deflate to a few tens of kilobytes
at any level; what costs is the time. Writing the file here, straight from the array with no row
filter, takes a small part of the CPU time a general image library spends on the same frame, and
the writer thread runs beside the engine on a machine with few cores. The fast levels (1-3, the
default) deflate with ISA-L (`isal`, where its wheels exist): about ten times zlib's speed on
these frames and smaller files, the same zlib stream. Both release the GIL. Reading stays with
OpenImageIO and OpenCV (`images.read_image`).

What is written: IHDR (8 or 16 bit; grey, RGB or RGBA, straight alpha as PNG defines it), sRGB
(the values are sRGB-encoded), text chunks (tEXt when the text is Latin-1, iTXt in UTF-8
otherwise), IDAT, IEND. Text keys are 1-79 Latin-1 characters; "Description" is where
OpenImageIO reads an image description from.
"""

from __future__ import annotations

import struct
import zlib
from typing import Mapping

import numpy as np

try:
    from isal import isal_zlib as _isal_zlib
except ImportError:  # a platform without ISA-L wheels: zlib at the level asked
    _isal_zlib = None

__all__ = ["encode_png", "DEFAULT_LEVEL"]

# zlib's level 3: as fast as its level 1 on flat frames, and a third smaller (fewer literal runs).
DEFAULT_LEVEL = 3
_ISAL_LEVEL = 1  # ISA-L's level 1 is both faster and smaller than zlib's 1-3 here; its 3 is slow
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2, 4: 6}  # grey, RGB, RGBA
_IDAT_CHUNK = 1 << 20  # split the compressed data into chunks of this size


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _text_chunk(key: str, value: str) -> bytes:
    try:
        name = key.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"PNG text key {key!r} must be Latin-1") from None
    if not 1 <= len(name) <= 79 or b"\0" in name:
        raise ValueError(f"PNG text key {key!r} must be 1 to 79 characters without NUL")
    try:
        return _chunk(b"tEXt", name + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:  # iTXt: uncompressed, no language tag, UTF-8 text
        return _chunk(b"iTXt", name + b"\0\0\0\0\0" + value.encode("utf-8"))


def _deflate(data: np.ndarray, level: int) -> bytes:
    """A zlib stream of `data`: the fast levels through ISA-L where it is installed."""
    if _isal_zlib is not None and 1 <= level <= 3:
        return _isal_zlib.compress(data, _ISAL_LEVEL)
    return zlib.compress(data, level)


def encode_png(pixels: np.ndarray, text: Mapping[str, str] | None = None, *, level: int = DEFAULT_LEVEL) -> bytes:
    """The PNG file of H x W x C (C = 1, 3, 4) uint8 or uint16 pixels, with `text` chunks."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    if channels not in _COLOUR_TYPE or pixels.dtype not in (np.uint8, np.uint16) or not height or not width:
        raise ValueError(f"cannot encode PNG from {pixels.dtype} pixels of shape {pixels.shape}")
    if not 0 <= level <= 9:
        raise ValueError(f"PNG compression level must be 0 to 9, got {level}")
    depth = 8 * pixels.dtype.itemsize
    row_bytes = width * channels * pixels.dtype.itemsize
    # Each row: filter type 0 (none), then the samples (16-bit ones big-endian).
    rows = np.empty((height, row_bytes + 1), dtype=np.uint8)
    rows[:, 0] = 0
    samples = pixels.astype(">u2", copy=False) if depth == 16 else pixels
    rows[:, 1:] = np.ascontiguousarray(samples).reshape(height, -1).view(np.uint8)
    compressed = _deflate(rows, level)
    parts = [
        _SIGNATURE,
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, _COLOUR_TYPE[channels], 0, 0, 0)),
        _chunk(b"sRGB", b"\0"),  # perceptual rendering intent
    ]
    parts += [_text_chunk(key, value) for key, value in (text or {}).items()]
    parts += [_chunk(b"IDAT", compressed[i : i + _IDAT_CHUNK]) for i in range(0, len(compressed), _IDAT_CHUNK)]
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)
