"""Rasterising the synthetic characters: label map, line art, gaps, and the true colours.

A frame is painted as a LABEL map first (one id per region, painted back to front), and every
other image derives from it, so the truth is exact by construction:

- lines lie on every boundary between two labels, half on each side (``radius`` pixels per side);
  on the silhouette the outer half is relabelled to the character, so every line pixel belongs
  to a region and the fill is opaque under every line;
- a boundary between a shading region and the region it shades is a hint line (red for shadows,
  blue for highlights) instead of black;
- gaps erase small boxes of black line (never hint lines), cutting the stroke across its width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from .geometry import apply

PAPER = (255, 255, 255)
BLACK_INK = (0, 0, 0)
SHADOW_INK = (255, 0, 0)  # red hint line: boundary of a shadow region
HIGHLIGHT_INK = (0, 0, 255)  # blue hint line: boundary of a highlight region
LINE_INKS = (BLACK_INK, SHADOW_INK, HIGHLIGHT_INK)

# ink categories in the per-pixel ink map
NO_INK, BLACK, SHADOW, HIGHLIGHT = 0, 1, 2, 3
_INK_RGB = np.array([PAPER, BLACK_INK, SHADOW_INK, HIGHLIGHT_INK], dtype=np.float32)

_FIXED_POINT_BITS = 4  # cv2.fillPoly sub-pixel precision: 1/16 pixel
_SUPERSAMPLE = 4  # samples per pixel side when drawing anti-aliased lines

HintKind = Literal["shadow", "highlight"]


@dataclass(frozen=True)
class Part:
    """One filled shape of a region, in output-pixel coordinates (pixel centres on integers)."""

    label: int
    polygons: tuple[np.ndarray, ...]
    clip: int | None = None  # paint only over pixels that already hold this label


@dataclass
class Drawing:
    """Collects a character's parts back to front while its design draws itself."""

    region_labels: dict[str, int]  # region name -> label id
    clips: dict[str, str | None]  # region name -> region it must stay inside
    shading: dict[str, bool]  # region name -> True for hint-line shading regions
    hint_lines: bool
    parts: list[Part] = field(default_factory=list)

    def add(self, region: str, matrix: np.ndarray, *outlines: np.ndarray) -> None:
        """Add the outlines (in the matrix's local units) as one more piece of `region`."""
        try:
            label = self.region_labels[region]
        except KeyError:
            raise KeyError(f"the design draws region {region!r} but does not declare it") from None
        if self.shading[region] and not self.hint_lines:
            return
        clip_region = self.clips[region]
        clip = self.region_labels[clip_region] if clip_region else None
        polygons = tuple(apply(matrix, outline) for outline in outlines if len(outline) >= 3)
        if polygons:
            self.parts.append(Part(label, polygons, clip))


@dataclass(frozen=True)
class Rendered:
    """All images of one drawing (a frame or a model sheet), 8-bit."""

    labels: np.ndarray  # H x W uint16, 0 = background
    ink: np.ndarray  # H x W uint8, line coverage (255 = full line, 0 = paper)
    line: np.ndarray  # H x W x 3 uint8, the line art on white paper
    color: np.ndarray  # H x W x 3 uint8, true colours with the lines on top, background as given
    fill: np.ndarray  # H x W x 4 uint8, true colours without lines, background transparent or given
    gaps: int  # how many line breaks were cut


def paint_labels(parts: list[Part], height: int, width: int, scale: int = 1) -> np.ndarray:
    """Paint parts in order into an H*scale x W*scale uint16 label map."""
    labels = np.zeros((height * scale, width * scale), dtype=np.uint16)
    one = 1 << _FIXED_POINT_BITS
    for part in parts:
        # a pixel centre k of the sampled grid sits at (k + 0.5) / scale - 0.5 in output pixels
        polygons = [((p + 0.5) * scale - 0.5) for p in part.polygons]
        stacked = np.concatenate(polygons)
        x0 = max(int(np.floor(stacked[:, 0].min())), 0)
        y0 = max(int(np.floor(stacked[:, 1].min())), 0)
        x1 = min(int(np.ceil(stacked[:, 0].max())) + 1, labels.shape[1])
        y1 = min(int(np.ceil(stacked[:, 1].max())) + 1, labels.shape[0])
        if x0 >= x1 or y0 >= y1:
            continue
        canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        for polygon in polygons:
            # one call per polygon: a single fillPoly call with several would XOR their overlaps
            fixed = np.round((polygon - np.array([x0, y0])) * one).astype(np.int32)
            cv2.fillPoly(canvas, [fixed], 1, lineType=cv2.LINE_8, shift=_FIXED_POINT_BITS)
        mask = canvas.astype(bool)
        view = labels[y0:y1, x0:x1]
        if part.clip is not None:
            mask &= view == part.clip
        view[mask] = part.label
    return labels


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo = np.minimum(a, b).astype(np.int64)
    hi = np.maximum(a, b).astype(np.int64)
    return lo * 65536 + hi


def trace_lines(
    labels: np.ndarray, radius: int, hint_pairs: dict[tuple[int, int], HintKind]
) -> tuple[np.ndarray, np.ndarray]:
    """Ink map (NO_INK/BLACK/SHADOW/HIGHLIGHT) of the label boundaries, and the labels with the
    silhouette's outer line half given to the character. Lines are 2 * radius pixels thick."""
    height, width = labels.shape
    flat = labels.reshape(-1)
    padded = np.pad(labels, 1, mode="edge")  # no line along the frame edge
    kinds = {(min(a, b), max(a, b)): kind for (a, b), kind in hint_pairs.items()}
    shadow_keys = np.array(sorted(a * 65536 + b for (a, b), k in kinds.items() if k == "shadow"), dtype=np.int64)
    highlight_keys = np.array(sorted(a * 65536 + b for (a, b), k in kinds.items() if k == "highlight"), dtype=np.int64)
    edges = {kind: np.zeros(flat.size, dtype=bool) for kind in (BLACK, SHADOW, HIGHLIGHT)}
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width].reshape(-1)
        where = np.flatnonzero(neighbour != flat)
        if where.size == 0:
            continue
        keys = _pair_keys(flat[where], neighbour[where])
        is_shadow = np.isin(keys, shadow_keys)
        is_highlight = np.isin(keys, highlight_keys)
        edges[SHADOW][where[is_shadow]] = True
        edges[HIGHLIGHT][where[is_highlight]] = True
        edges[BLACK][where[~(is_shadow | is_highlight)]] = True
    ink = np.zeros(labels.shape, dtype=np.uint8)
    # black outranks hint lines where they meet: hint lines end on the main line
    for kind in (HIGHLIGHT, SHADOW, BLACK):
        mask = edges[kind].reshape(labels.shape)
        if radius > 1:
            mask = cv2.dilate(mask.astype(np.uint8), _disc(radius - 1)).astype(bool)
        ink[mask] = kind
    _fill_specks(ink, min_area=4 * radius * radius)
    grown = labels.copy()
    outside = (ink != NO_INK) & (labels == 0)
    if outside.any():
        nearest = cv2.dilate(labels, _disc(radius + 1))
        grown[outside] = nearest[outside]
    return ink, grown


def _fill_specks(ink: np.ndarray, min_area: int) -> None:
    """Ink over paper specks smaller than `min_area` pixels, where lines nearly meet: a pen
    leaves no such pinholes, and they are no region an artist would paint."""
    count, components, stats, _ = cv2.connectedComponentsWithStats((ink == NO_INK).astype(np.uint8), connectivity=4)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_area)
    small = small[small > 0]  # component 0 is the ink itself
    if small.size == 0:
        return
    speck = np.isin(components, small)
    # the speck takes the ink around it, black first
    rank = np.array([0, 3, 2, 1], dtype=np.uint8)[ink]  # BLACK 3, SHADOW 2, HIGHLIGHT 1
    around = cv2.dilate(rank, _disc(1))
    ink[speck] = np.array([NO_INK, HIGHLIGHT, SHADOW, BLACK], dtype=np.uint8)[around[speck]]


def cut_gaps(ink: np.ndarray, count: int, rng: np.random.Generator, radius: int, scale: int = 1) -> int:
    """Erase `count` small boxes of black line in place (2 * radius + 1..2 px wide at scale 1)."""
    if count <= 0:
        return 0
    height, width = ink.shape
    candidates = np.flatnonzero(ink == BLACK)
    if candidates.size == 0:
        return 0
    spacing = 12 * radius * scale  # keep breaks apart, so that each one opens its own leak
    chosen: list[tuple[int, int]] = []
    for index in rng.permutation(candidates.size)[: 50 * count]:
        y, x = divmod(int(candidates[index]), width)
        if all((y - cy) ** 2 + (x - cx) ** 2 >= spacing**2 for cy, cx in chosen):
            chosen.append((y, x))
            if len(chosen) == count:
                break
    for y, x in chosen:
        side = (2 * radius + int(rng.integers(1, 3))) * scale
        y0, x0 = y - side // 2, x - side // 2
        box = ink[max(y0, 0) : max(y0 + side, 0), max(x0, 0) : max(x0 + side, 0)]
        box[box == BLACK] = NO_INK
    return len(chosen)


def render(
    parts: list[Part],
    size: tuple[int, int],
    *,
    palette_lut: np.ndarray,
    hint_pairs: dict[tuple[int, int], HintKind],
    line_radius: int,
    gaps: int = 0,
    rng: np.random.Generator | None = None,
    antialias: bool = False,
    background: tuple[int, int, int] | None = None,
) -> Rendered:
    """Render painted parts to labels, line art and true colours.

    `palette_lut[label]` is the RGB of each label (row 0 unused); `size` is (width, height).
    `background` None keeps the background transparent in the fill and white in the colour image.
    """
    width, height = size
    scale = _SUPERSAMPLE if antialias else 1
    labels_fine = paint_labels(parts, height, width, scale)
    ink_fine, labels_fine = trace_lines(labels_fine, line_radius * scale, hint_pairs)
    gap_count = cut_gaps(ink_fine, gaps, rng or np.random.default_rng(0), line_radius, scale)

    if scale == 1:
        labels = labels_fine
        coverage = (ink_fine != NO_INK).astype(np.float32)
        ink_rgb = _INK_RGB[ink_fine] * coverage[..., None]
    else:
        centre = scale // 2
        labels = np.ascontiguousarray(labels_fine[centre::scale, centre::scale])
        coverage_fine = (ink_fine != NO_INK).astype(np.float32)
        coverage = cv2.resize(coverage_fine, (width, height), interpolation=cv2.INTER_AREA)
        ink_fine_rgb = _INK_RGB[ink_fine] * coverage_fine[..., None]
        ink_rgb = cv2.resize(ink_fine_rgb, (width, height), interpolation=cv2.INTER_AREA)
        # a pixel only partly covered by the silhouette line may have sampled the background
        for _ in range(2):
            outside = (coverage > 0) & (labels == 0)
            if not outside.any():
                break
            labels[outside] = cv2.dilate(labels, _disc(1))[outside]

    region = labels > 0
    fill_rgb = palette_lut[labels].astype(np.float32)
    backdrop = np.array(background if background is not None else PAPER, dtype=np.float32)
    fill_rgb[~region] = backdrop
    alpha = coverage[..., None]
    color = np.round(fill_rgb * (1.0 - alpha) + ink_rgb).clip(0, 255).astype(np.uint8)
    line = np.round(255.0 * (1.0 - alpha) + ink_rgb).clip(0, 255).astype(np.uint8)
    fill = np.zeros((height, width, 4), dtype=np.uint8)
    fill[..., :3] = fill_rgb.astype(np.uint8)
    if background is None:
        fill[..., 3] = np.where(region, 255, 0)
        fill[~region, :3] = 0
    else:
        fill[..., 3] = 255
    ink = np.round(coverage * 255.0).astype(np.uint8)
    return Rendered(labels=labels, ink=ink, line=line, color=color, fill=fill, gaps=gap_count)
