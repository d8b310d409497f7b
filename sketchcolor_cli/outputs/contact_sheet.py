"""A contact sheet per cut: for each frame, line art | result | review, beside the references."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from sketchcolor_cli.frames.images import ImageError, read_rgba16, write_image
from sketchcolor_cli.outputs.writers import read_layer

_CHECKER = (0.80, 0.62)  # light / dark squares behind transparent pixels
_LABEL_H = 22


def _over_checker(rgba16: np.ndarray, cell: int = 8) -> np.ndarray:
    """uint16 RGBA -> uint8 RGB over a grey checker, so transparency reads as transparency."""
    h, w = rgba16.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, _CHECKER[0], _CHECKER[1])[:, :, None]
    rgb = rgba16[:, :, :3].astype(np.float32) / 65535.0
    alpha = rgba16[:, :, 3:4].astype(np.float32) / 65535.0
    return np.round((rgb * alpha + board * (1 - alpha)) * 255).astype(np.uint8)


def _shrink(rgba16: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Straight-alpha uint16 RGBA scaled down to `size` (area average of premultiplied colour, so
    transparent pixels do not darken the edges), still straight alpha. The full-size work stays in
    uint16 OpenCV calls (a thumbnail does not need float precision there); floats only when small."""
    rgba16 = np.ascontiguousarray(rgba16)
    alpha = cv2.extractChannel(rgba16, 3)
    if cv2.minMaxLoc(alpha)[0] < 65535:
        rgba16 = cv2.multiply(rgba16, cv2.merge([alpha, alpha, alpha, np.full_like(alpha, 65535)]), scale=1.0 / 65535.0)
    small = cv2.resize(rgba16, size, interpolation=cv2.INTER_AREA).astype(np.float32).reshape(size[1], size[0], 4)
    small_alpha = small[:, :, 3:4]
    rgb = np.where(small_alpha > 0, small[:, :, :3] * 65535.0 / np.maximum(small_alpha, 1e-6), 0.0)
    return np.round(np.clip(np.concatenate([rgb, small_alpha], axis=2), 0, 65535)).astype(np.uint16)


Cell = tuple[Path | None, str]  # a file and the layer to show from it ("" for a plain image)


def _read(cell: Cell) -> np.ndarray:
    path, layer = cell
    return read_layer(path, layer) if layer else read_rgba16(path)


def _thumb(cell: Cell, width: int, height: int) -> np.ndarray:
    path = cell[0]
    canvas = np.full((height, width, 3), 40, dtype=np.uint8)
    if path is None or not path.is_file():
        cv2.putText(canvas, "missing", (8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 80, 80), 1, cv2.LINE_AA)
        return canvas
    try:
        image = _read(cell)
    except (ImageError, KeyError):
        cv2.putText(canvas, "unreadable", (8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 80, 80), 1)
        return canvas
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = _over_checker(_shrink(image, size))
    y, x = (height - size[1]) // 2, (width - size[0]) // 2
    canvas[y : y + size[1], x : x + size[0]] = small
    return canvas


def _label(text: str, width: int) -> np.ndarray:
    strip = np.full((_LABEL_H, width, 3), 25, dtype=np.uint8)
    cv2.putText(strip, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    return strip


def write_contact_sheet(
    rows: list[tuple[int, list[Cell]]],
    columns: list[str],
    references: list[Path],
    out_path: Path,
    *,
    title: str = "",
    thumb_width: int = 256,
    max_rows: int = 24,
    wait: Callable[[int], None] | None = None,
) -> Path:
    """`rows`: (frame, one cell per column). At most `max_rows` frames, evenly sampled.
    `wait(frame)` is called before a frame's cells are read (see `write_flipbook`)."""
    if len(rows) > max_rows:
        picks = np.linspace(0, len(rows) - 1, max_rows).round().astype(int)
        rows = [rows[i] for i in sorted(set(picks))]
    wait = wait or (lambda frame: None)
    aspect = 1.0
    for frame, files in rows:
        wait(frame)
        existing = [cell for cell in files if cell[0] is not None and cell[0].is_file()]
        if existing:
            try:
                image = _read(existing[0])
                aspect = image.shape[0] / image.shape[1]
                break
            except (ImageError, KeyError):
                continue
    thumb_height = max(32, round(thumb_width * aspect))
    width = thumb_width * len(columns)
    parts = [_label(title, width), np.hstack([_label(c, thumb_width) for c in columns])]
    for frame, files in rows:
        wait(frame)
        parts.append(_label(f"frame {frame}", width))
        parts.append(np.hstack([_thumb(f, thumb_width, thumb_height) for f in files]))
    if references:
        parts.append(_label("references", width))
        per_row = len(columns)
        for start in range(0, len(references), per_row):
            chunk = references[start : start + per_row]
            tiles = [_thumb((r, ""), thumb_width, thumb_height) for r in chunk]
            tiles += [np.full((thumb_height, thumb_width, 3), 40, np.uint8)] * (per_row - len(chunk))
            parts.append(np.hstack(tiles))
    sheet = np.vstack(parts)
    write_image(out_path, sheet.astype(np.uint16) * 257, bit_depth=8)
    return out_path
