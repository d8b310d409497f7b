"""Painting for the flat engine: region colours -> the fill, line, colour and review layers.

* ``fill``: every region its one colour; line pixels (ink and hint) and merged specks take the
  colour of the nearest region, so the layer has no line and holds only palette colours.
* ``line``: the ink coverage as uint16 alpha (hint strokes are not line: they take region colours).
* ``color``: the fill with the ink on top. Where the ink is fully opaque the pixel is the original
  line-art pixel, bit for bit; anti-aliased ink is composited over the fill with its own colour
  (on white paper, the colour that over white gives the drawn pixel); hint strokes show the fill.
* ``review``: the fill dimmed and desaturated where the engine is confident, hatched magenta over
  the region's own colour where it is not, with the (more than half opaque) lines drawn on top in
  dark grey; always opaque.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .segment import FULL, Segmentation, _box, keys_to_colours

REVIEW_MARK = np.array([FULL, 0, FULL, FULL], dtype=np.uint16)  # magenta hatching
REVIEW_LINE = np.array([8000, 8000, 8000, FULL], dtype=np.uint16)  # lines drawn over the review
REVIEW_EMPTY = np.float32(0.85)  # grey shown where the fill is transparent
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


@lru_cache(maxsize=1)
def _ids_in_raster_order() -> bool:
    """Whether this OpenCV numbers DIST_LABEL_PIXEL seeds 1, 2, ... in raster order (then the id
    to label map is one compaction instead of a scatter; the result is the same either way)."""
    probe = np.ones((7, 9), np.uint8)
    probe[[0, 2, 2, 5, 6], [7, 1, 8, 4, 0]] = 0
    _, ids = cv2.distanceTransformWithLabels(probe, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    return bool(np.array_equal(ids[probe == 0], np.arange(1, 6)))


def nearest_region(labels: np.ndarray) -> np.ndarray:
    """Labels with every 0 pixel (line, speck) given the label of the nearest region pixel."""
    unlabelled = labels == 0
    if not unlabelled.any() or unlabelled.all():
        return labels.copy()
    out = labels.copy()
    # Only the box around the unlabelled pixels, one pixel wider, is worked on: its rim is all
    # region pixels, nearer to anything inside than any region pixel beyond it (same result).
    y0, y1, x0, x1 = _box(unlabelled, margin=1)
    box = np.s_[y0:y1, x0:x1]
    labels, unlabelled = labels[box], unlabelled[box]
    _, nearest_id = cv2.distanceTransformWithLabels(
        np.ascontiguousarray(unlabelled).view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    # Each region pixel carries its own id; map the ids back to labels through those pixels.
    seeds = ~unlabelled
    if _ids_in_raster_order():
        id_to_label = np.concatenate([np.zeros(1, np.int32), labels[seeds]])
    else:
        id_to_label = np.zeros(int(nearest_id.max()) + 1, dtype=np.int32)
        id_to_label[nearest_id[seeds]] = labels[seeds]
    out[box][unlabelled] = id_to_label[nearest_id[unlabelled]]
    return out


def fill_palette(colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fill's palette as `segment.index_colours` would find it (sorted by colour key,
    transparent first) and the palette index of each region label's colour."""
    keys = np.where(colors[:, 3] == 0, np.uint64(0), np.ascontiguousarray(colors).view(np.uint64).ravel())
    # Only colours that some pixel shows: label 0 appears only when there is no region at all.
    used = keys[1:] if len(keys) > 1 else keys
    palette_keys = np.unique(used)
    per_label = np.searchsorted(palette_keys, keys).clip(0, len(palette_keys) - 1).astype(np.int32)
    return keys_to_colours(palette_keys), per_label


def line_layer(seg: Segmentation) -> np.ndarray:
    """Ink coverage as H x W uint16 (0 on hint strokes)."""
    return np.round(seg.line_alpha * np.float32(FULL)).astype(np.uint16)


def color_layer(fill: np.ndarray, line_art: np.ndarray, line: np.ndarray, seg: Segmentation) -> np.ndarray:
    """The fill with the original ink composited on top (see the module docstring)."""
    color = fill.copy()
    full = line == FULL
    # Whole RGBA pixels as single 8-byte words: one masked copy instead of four.
    np.copyto(_words(color), _words(np.ascontiguousarray(line_art)), where=full)
    partial = (line > 0) & ~full
    if partial.any():
        alpha = seg.line_alpha[partial][:, None].astype(np.float64)
        drawn = line_art[partial, :3].astype(np.float64) / FULL
        if seg.transparent_paper:
            ink = drawn
        else:
            # Drawn pixel = paper white * (1 - alpha) + ink * alpha; recover the ink.
            ink = np.clip((drawn - (1.0 - alpha)) / np.maximum(alpha, 1e-6), 0.0, 1.0)
        under = fill[partial].astype(np.float64) / FULL
        under_alpha = under[:, 3:4]
        out_alpha = alpha + under_alpha * (1.0 - alpha)
        out_rgb = (ink * alpha + under[:, :3] * under_alpha * (1.0 - alpha)) / np.maximum(out_alpha, 1e-9)
        blended = np.concatenate([out_rgb, out_alpha], axis=1)
        color[partial] = np.round(np.clip(blended, 0.0, 1.0) * FULL).astype(np.uint16)
    return color


def _words(image: np.ndarray) -> np.ndarray:
    """An H x W x 4 uint16 image as H x W uint64 (one word per pixel), sharing memory."""
    return image.view(np.uint64)[..., 0]


def lookup(table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """table[labels] for an (n, 4) uint16 colour table: one 8-byte gather per pixel, not four."""
    packed = np.ascontiguousarray(table, dtype=np.uint16).view(np.uint64).ravel()
    return packed[labels].view(np.uint16).reshape(labels.shape + (4,))


@lru_cache(maxsize=2)
def _stripes(shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    band = max(3, int(round(min(height, width) / 180)))
    diagonal = np.arange(height)[:, None] + np.arange(width)[None, :]
    stripes = (diagonal // band) % 2 == 0
    stripes.flags.writeable = False
    return stripes


def review_layer(
    everywhere: np.ndarray,
    colors: np.ndarray,
    unsure: np.ndarray,
    line: np.ndarray,
    unsure_pixels: np.ndarray | None = None,
) -> np.ndarray:
    """Dim, desaturated confident regions; magenta-hatched unsure ones (and `unsure_pixels`);
    lines on top; opaque."""
    unit = colors.astype(np.float32) / FULL
    rgb, alpha = unit[:, :3], unit[:, 3:4]
    grey = (rgb @ _LUMA)[:, None]
    calm = (0.3 * rgb + 0.7 * grey) * 0.75 + 0.2
    loud = rgb
    shown = np.where(unsure[:, None], loud, calm)
    shown = shown * alpha + REVIEW_EMPTY * (1.0 - alpha)  # transparent fill shows as light grey
    table = np.concatenate([np.round(shown * FULL), np.full((len(colors), 1), FULL)], axis=1).astype(np.uint16)
    review = lookup(table, everywhere)
    if unsure.any() or unsure_pixels is not None:
        hatch = unsure[everywhere]
        if unsure_pixels is not None:
            hatch |= unsure_pixels
        hatch &= _stripes(everywhere.shape)
        np.copyto(_words(review), _words(REVIEW_MARK[None, None, :]), where=hatch)
    # Lines on top, hard-edged: the review layer is for finding regions, not for show.
    np.copyto(_words(review), _words(REVIEW_LINE[None, None, :]), where=line > FULL // 2)
    return review


def paint_fill(seg: Segmentation, colors: np.ndarray) -> np.ndarray:
    """The fill layer: every pixel (lines too) the colour of its region, or of the nearest one."""
    return lookup(colors, seg.grown)


def paint_rest(
    seg: Segmentation,
    colors: np.ndarray,
    confidence: np.ndarray,
    line_art: np.ndarray,
    review_threshold: float,
    fill: np.ndarray,
    unsure_pixels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(color, line, review) layers for one frame, from its fill; `unsure_pixels` are hatched in
    the review layer whatever their region."""
    line = line_layer(seg)
    color = color_layer(fill, line_art, line, seg)
    unsure = confidence < review_threshold
    unsure[0] = False
    review = review_layer(seg.grown, colors, unsure, line, unsure_pixels)
    return color, line, review

