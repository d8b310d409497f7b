"""Frames in and out of the diffusion engine (numpy and OpenCV only; no torch here).

In: the line art becomes the model's sketch at a canvas of multiples of 64 whose long side is the
model resolution, aspect preserved by padding with paper (the sketch is inverted: paper 0 -> -1,
ink -> +1, as upstream feeds it). Out: the generated colour is cropped, resized back to the line
art's own size, and turned into the same layers the flat engine delivers: ``fill`` = the colour
with line pixels replaced by the nearest non-line colour, ``color`` = the fill with the original
ink on top (fully opaque line pixels are the input's pixels, bit for bit), ``line`` = ink alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np

from ..base import FULL
from ..flat.paint import color_layer, nearest_region
from ..flat.segment import classify_line_art

LINE_THRESHOLD = 0.5  # ink coverage above which a pixel counts as line when the fill is made
REVIEW_LINE = np.array([8000, 8000, 8000, FULL], dtype=np.uint16)
REVIEW_MASKLESS = np.array([FULL, 0, FULL, FULL], dtype=np.uint16)


@dataclass(frozen=True)
class Canvas:
    """Where a frame sits on the model's canvas."""

    height: int  # canvas size (multiples of 64)
    width: int
    top: int  # the frame's scaled placement
    left: int
    inner_h: int
    inner_w: int

    @classmethod
    def fit(cls, shape: tuple[int, int], long_side: int) -> "Canvas":
        h, w = shape
        scale = long_side / max(h, w)
        inner_h, inner_w = max(1, round(h * scale)), max(1, round(w * scale))
        height = max(64, -(-inner_h // 64) * 64)
        width = max(64, -(-inner_w // 64) * 64)
        return cls(height, width, (height - inner_h) // 2, (width - inner_w) // 2, inner_h, inner_w)

    @classmethod
    def within(cls, shape: tuple[int, int], height: int, width: int) -> "Canvas":
        """A canvas of exactly height x width with the frame scaled to fit inside it, centred (the
        xl models' placement: upstream resizes the sketch to fit and pads it with paper)."""
        h, w = shape
        scale = min(height / h, width / w)
        inner_h, inner_w = max(1, min(height, int(h * scale))), max(1, min(width, int(w * scale)))
        return cls(height, width, (height - inner_h) // 2, (width - inner_w) // 2, inner_h, inner_w)

    def place(self, image: np.ndarray, fill: float, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """H x W (x C) float32 -> canvas-sized, the rest set to `fill`."""
        resized = cv2.resize(image, (self.inner_w, self.inner_h), interpolation=interpolation)
        if resized.ndim == 2 and image.ndim == 3:
            resized = resized[:, :, None]
        out = np.full((self.height, self.width) + image.shape[2:], fill, dtype=np.float32)
        out[self.top : self.top + self.inner_h, self.left : self.left + self.inner_w] = resized
        return out

    def take(self, canvas_image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The frame's part of a canvas image, resized to `shape` (bicubic)."""
        inner = canvas_image[self.top : self.top + self.inner_h, self.left : self.left + self.inner_w]
        return cv2.resize(np.ascontiguousarray(inner), (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def autofit_size(shape: tuple[int, int], area: int = 1024 * 1024, step: int = 32, low: int = 768,
                 high: int = 1536) -> tuple[int, int]:
    """The xl UI's "autofit": (height, width) of about `area` pixels at the frame's aspect, each
    rounded to the nearest multiple of `step` and clamped to [low, high], as published."""
    h, w = shape
    aspect = w / h
    new_h = int((area / aspect) ** 0.5)
    new_w = int(new_h * aspect)
    height = max(low, min(high, ((new_h + step // 2) // step) * step))
    width = max(low, min(high, ((new_w + step // 2) // step) * step))
    return height, width


def to_unit_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 4 uint16 straight alpha -> H x W x 3 float32 in [0, 1], composited over white."""
    rgba = image.astype(np.float32) / FULL
    alpha = rgba[:, :, 3:4]
    return rgba[:, :, :3] * alpha + (1.0 - alpha)


def line_strength(line_art: np.ndarray) -> tuple[np.ndarray, bool]:
    """Ink coverage in [0, 1] (hint strokes count as lines for the model: they are drawn lines),
    and whether the paper is transparent."""
    classes = classify_line_art(line_art, LINE_THRESHOLD, hint_lines=False, what="line art")
    return classes.line_alpha, classes.transparent_paper


def sketch_input(line_art: np.ndarray, canvas: Canvas) -> np.ndarray:
    """3 x H x W float32 sketch in [-1, 1], inverted per channel as upstream does (white paper -1,
    black ink +1; transparent paper counts as white), padded with paper."""
    placed = canvas.place(to_unit_rgb(line_art), 1.0)
    return np.transpose(1.0 - 2.0 * placed, (2, 0, 1)).astype(np.float32)


def mask_input(masks: dict[str, np.ndarray], shape: tuple[int, int], canvas: Canvas) -> tuple[np.ndarray, list[str]]:
    """The union of the characters' masks at canvas size (1 x H x W float32), and their names.
    With no character mask the whole frame is foreground."""
    names = sorted(name for name in masks if name != "background")
    if names:
        union = np.zeros(shape, dtype=np.float32)
        for name in names:
            union = np.maximum(union, masks[name].astype(np.float32))
    else:
        union = np.ones(shape, dtype=np.float32)
    return canvas.place(union, 0.0, interpolation=cv2.INTER_LINEAR)[None], names


def reference_input(image: np.ndarray) -> np.ndarray:
    """3 x H x W float32 in [-1, 1], transparent parts shown as white paper."""
    return np.transpose(to_unit_rgb(image) * 2.0 - 1.0, (2, 0, 1)).astype(np.float32)


def reference_mask(image: np.ndarray, dilate_px: int = 11) -> np.ndarray:
    """The reference's foreground in [0, 1] (1 x H x W): its alpha where it has transparency,
    else everything not close to white paper; max-pool dilated as upstream dilates its masks."""
    alpha = image[:, :, 3]
    if alpha.min() < FULL // 2:
        mask = (alpha >= FULL // 2).astype(np.uint8)
    else:
        rgb = to_unit_rgb(image)
        mask = (rgb.min(axis=2) < 0.94).astype(np.uint8)
    if dilate_px > 1:
        mask = cv2.dilate(mask, np.ones((dilate_px, dilate_px), np.uint8))
    return mask.astype(np.float32)[None]


def layers_from_colour(colour: np.ndarray, line_art: np.ndarray, mask_names: list[str]) -> tuple[np.ndarray, ...]:
    """(color, fill, line, review) from the generated colour at full size (H x W x 3 in [0, 1])."""
    strength, transparent = line_strength(line_art)
    lines = strength > LINE_THRESHOLD
    rgb16 = np.round(np.clip(colour, 0.0, 1.0) * FULL).astype(np.uint16)
    fill = np.empty(colour.shape[:2] + (4,), dtype=np.uint16)
    fill[:, :, :3] = rgb16
    fill[:, :, 3] = FULL
    if lines.any() and not lines.all():
        # Line pixels take the colour of the nearest non-line pixel, as in the flat engine's fill.
        labels = np.where(lines, 0, np.arange(1, lines.size + 1, dtype=np.int32).reshape(lines.shape))
        nearest = nearest_region(labels)
        fill = fill.reshape(-1, 4)[nearest.ravel() - 1].reshape(fill.shape)
    line = np.round(strength * np.float32(FULL)).astype(np.uint16)
    color = color_layer(fill, line_art, line, SimpleNamespace(line_alpha=strength, transparent_paper=transparent))
    review = review_layer(fill, line, maskless=not mask_names)
    return color, fill, line, review


def review_layer(fill: np.ndarray, line: np.ndarray, maskless: bool) -> np.ndarray:
    """The fill dimmed and desaturated with dark lines on top; a magenta frame border when no
    character mask was given (the whole frame was treated as foreground)."""
    rgb = fill[:, :, :3].astype(np.float32) / FULL
    grey = rgb @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    calm = (0.3 * rgb + 0.7 * grey[:, :, None]) * 0.75 + 0.2
    review = np.empty_like(fill)
    review[:, :, :3] = np.round(calm * FULL).astype(np.uint16)
    review[:, :, 3] = FULL
    review[line > FULL // 2] = REVIEW_LINE
    if maskless:
        band = max(2, min(fill.shape[:2]) // 100)
        for edge in (np.s_[:band, :], np.s_[-band:, :], np.s_[:, :band], np.s_[:, -band:]):
            review[edge] = REVIEW_MASKLESS
    return review
