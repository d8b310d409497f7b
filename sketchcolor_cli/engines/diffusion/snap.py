"""Palette snap (``palette: snap``): a diffusion model's colour turned into exact palette colours.

A diffusion model shades; ink-and-paint needs every fill pixel to be a named palette colour. The
line art is split into the flat engine's regions; in each region every pixel (those next to the
lines left out: the model's colour bleeds across them) votes for its nearest palette colour in a
perceptual space (OKLab or CIELAB), the region takes the colour with the most votes. A character's
regions (the character whose mask covers most of the region) vote only among that character's
palette, so two characters never swap colours; regions of no character among every palette.
Background regions (paper at the border, the background mask) are transparent, or the background
image's colour, as in the flat engine.

Layers: ``fill`` palette-exact (lines take the nearest region's colour), ``color`` the fill with the
original ink on top (fully opaque line pixels bit for bit), ``line`` the ink alpha, ``shade`` the
model's colour without lines, ``review`` the flat engine's review layer with the regions hatched
where the vote is weak: split between palette colours (winner's share < ``review_share``) or far
from the palette (median distance to the winner > ``review_distance``).

No torch here: any pipeline's colour (H x W x 3 float in [0, 1]) can be snapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base import FULL, Reference, WorkItem
from ..flat.match import MatchSettings, build_reference_drawing, colours_from_image, region_owners
from ..flat.paint import color_layer, line_layer, lookup, review_layer
from ..flat.segment import Segmentation, index_colours
from .delivery import SnapSettings

# ---- colour spaces --------------------------------------------------------------------------------

_SRGB_TO_LMS = np.array(
    [[0.4122214708, 0.5363325363, 0.0514459929],
     [0.2119034982, 0.6806995451, 0.1073969566],
     [0.0883024619, 0.2817188376, 0.6299787005]], dtype=np.float64,
)  # fmt: skip
_LMS_TO_OKLAB = np.array(
    [[0.2104542553, 0.7936177850, -0.0040720468],
     [1.9779984951, -2.4285922050, 0.4505937099],
     [0.0259040371, 0.7827717662, -0.8086757660]], dtype=np.float64,
)  # fmt: skip
_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375],
     [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]], dtype=np.float64,
)  # fmt: skip
_D65 = np.array([0.95047, 1.0, 1.08883])
VOTE_CHUNK = 1 << 18  # pixels whose palette distances are held at once (memory at 4K)
EDGE_RAMP_PX = 2.0  # beyond edge_px, a pixel's vote grows to full weight over this many pixels


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float32)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def to_perceptual(rgb: np.ndarray, space: str = "oklab") -> np.ndarray:
    """sRGB in [0, 1] (... x 3) -> OKLab, or CIELAB (D65) divided by 100 so that both spaces have
    lightness in 0-1 and one distance threshold means about the same in either."""
    linear = srgb_to_linear(np.clip(rgb, 0.0, 1.0))
    if space == "oklab":
        lms = linear @ _SRGB_TO_LMS.T.astype(np.float32)
        return (np.cbrt(lms) @ _LMS_TO_OKLAB.T.astype(np.float32)).astype(np.float32)
    if space == "cielab":
        xyz = (linear @ _SRGB_TO_XYZ.T.astype(np.float32)) / _D65.astype(np.float32)
        delta = 6.0 / 29.0
        f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4.0 / 29.0)
        lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)
        return (lab / 100.0).astype(np.float32)
    raise ValueError(f"unknown colour space {space!r}; choose oklab or cielab")


# ---- palettes -------------------------------------------------------------------------------------


def _opaque_rgb(colours: np.ndarray) -> set[tuple[int, int, int]]:
    return {(int(c[0]), int(c[1]), int(c[2])) for c in colours if c[3] == FULL}


def reference_palette(reference: Reference, settings: MatchSettings) -> set[tuple[int, int, int]]:
    """A model sheet's palette (uint16 RGB): its named colours, else the exact colours of its drawn
    regions (paper left out)."""
    if reference.palette:
        return {tuple(int(v) for v in c) for c in reference.palette.values()}  # type: ignore[misc]
    drawing = build_reference_drawing(reference, settings)
    return set() if drawing is None else _opaque_rgb(drawing.coloured.palette)


@dataclass
class Palettes:
    """The palette colours (k x 4 uint16, opaque) and which of them each owner may take."""

    colours: np.ndarray  # (k, 4) uint16
    allowed_by_owner: dict[int, np.ndarray]  # owner index (-1: no character) -> (k,) bool


def frame_palettes(item: WorkItem, names: list[str], settings: MatchSettings) -> Palettes:
    """Per character its sheets' palette; regions of no character may take any of them."""
    sheets = [r for r in item.references if r.frame is None]
    own: dict[int, set[tuple[int, int, int]]] = {}
    every: set[tuple[int, int, int]] = set()
    for reference in sheets:
        colours = reference_palette(reference, settings)
        every |= colours
        if reference.character in names:
            own.setdefault(names.index(reference.character), set()).update(colours)
    if not every:
        raise ValueError(
            f"frame {item.frame}: palette: snap needs palette colours; give the characters a palette "
            "(characters[].palette) or coloured model sheets"
        )
    ordered = sorted(every)
    colours = np.array([[r, g, b, FULL] for r, g, b in ordered], dtype=np.uint16)
    allowed = {-1: np.ones(len(ordered), dtype=bool)}
    for owner, mine in own.items():
        if mine:
            allowed[owner] = np.array([c in mine for c in ordered], dtype=bool)
    return Palettes(colours, allowed)


# ---- the vote -------------------------------------------------------------------------------------


@dataclass
class SnapVote:
    """Per region label (index 0 = line, unused)."""

    colors: np.ndarray  # (n + 1, 4) uint16 chosen colour (transparent for background)
    share: np.ndarray  # (n + 1,) winner's share of the region's votes
    distance: np.ndarray  # (n + 1,) median distance of the voters to the winner (perceptual)
    unsure: np.ndarray  # (n + 1,) bool: marked in the review layer
    background: np.ndarray  # (n + 1,) bool


def _vote_weights(seg: Segmentation, edge_px: int) -> np.ndarray:
    """H x W float32 weight of each pixel's vote: 0 on lines and within `edge_px` of them, rising
    to 1 over the next EDGE_RAMP_PX (the model's colour is least sure next to its drawn lines);
    a region too thin to have such pixels votes with all its pixels alike."""
    import cv2

    inside = (seg.labels > 0).view(np.uint8)
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    weight = np.clip((distance - edge_px) / EDGE_RAMP_PX, 0.0, 1.0).astype(np.float32)
    size = seg.n_regions + 1
    thin = (np.bincount(seg.labels.ravel(), weights=weight.ravel(), minlength=size) == 0) & (seg.area > 0)
    thin[0] = False
    if thin.any():
        weight[thin[seg.labels]] = 1.0
    return weight


def vote_regions(
    seg: Segmentation,
    colour: np.ndarray,
    palettes: Palettes,
    owner: np.ndarray,
    background: np.ndarray,
    settings: SnapSettings,
) -> SnapVote:
    """Each region's palette colour by the votes of its pixels (see the module docstring)."""
    size = seg.n_regions + 1
    k = len(palettes.colours)
    weight = _vote_weights(seg, settings.edge_px).ravel()
    voting = np.flatnonzero(weight > 0)
    labels = seg.labels.ravel()[voting]
    weight = weight[voting].astype(np.float64)
    pixels = to_perceptual(colour.reshape(-1, 3)[voting], settings.space)
    targets = to_perceptual(palettes.colours[:, :3].astype(np.float32) / FULL, settings.space)
    # Colours a region's owner may not take are out of its pixels' reach.
    allowed_rows = np.stack([palettes.allowed_by_owner.get(int(o), palettes.allowed_by_owner[-1]) for o in owner])
    choice = np.empty(len(labels), dtype=np.int64)
    for start in range(0, len(labels), VOTE_CHUNK):  # pixels x palette distances, a chunk at a time
        part = slice(start, start + VOTE_CHUNK)
        distance = ((pixels[part, None, :] - targets[None, :, :]) ** 2).sum(axis=2)
        distance[~allowed_rows[labels[part]]] = np.inf
        choice[part] = distance.argmin(axis=1)
    votes = np.bincount(labels * k + choice, weights=weight, minlength=size * k).reshape(size, k)
    total = votes.sum(axis=1)
    winner = votes.argmax(axis=1)
    share = votes[np.arange(size), winner] / np.maximum(total, 1e-9)
    # Median distance of a region's voters to the colour it took: far means the model painted
    # something the palette does not hold there.
    to_winner = np.sqrt(((pixels - targets[winner[labels]]) ** 2).sum(axis=1))
    median = np.zeros(size)
    order = np.lexsort((to_winner, labels))
    sorted_labels, sorted_distance = labels[order], to_winner[order]
    starts = np.searchsorted(sorted_labels, np.arange(size))
    ends = np.searchsorted(sorted_labels, np.arange(size), side="right")
    present = ends > starts
    middle = (starts + ends - 1) // 2
    median[present] = sorted_distance[middle[present]]
    colors = palettes.colours[winner].copy()
    unsure = (share < settings.review_share) | (median > settings.review_distance)
    colors[background] = 0
    unsure[background] = False
    for array in (colors, share, median):
        array[0] = 0
    unsure[0] = False
    return SnapVote(colors=colors, share=share, distance=median, unsure=unsure, background=background)


@dataclass
class SnapLayers:
    color: np.ndarray
    fill: np.ndarray
    line: np.ndarray
    review: np.ndarray
    stats: dict[str, Any]


def snap_layers(item: WorkItem, colour: np.ndarray, settings: SnapSettings, line_threshold: float = 0.5) -> SnapLayers:
    """The layers of ``palette: snap`` from the model's colour at the line art's size (H x W x 3 in
    [0, 1]); the shade layer is the caller's (the model's colour without lines)."""
    if colour.shape[:2] != item.line_art.shape[:2]:
        raise ValueError(f"frame {item.frame}: colour {colour.shape[:2]} differs from the line art {item.line_art.shape[:2]}")
    match_settings = MatchSettings(
        line_threshold=line_threshold, gap_close_px=settings.gap_close_px, hint_lines=settings.hint_lines,
        min_region_px=settings.min_region_px, previous_min_confidence=0.0,
    )
    seg = match_settings.segment(item.line_art, f"frame {item.frame} line art")
    names, owner, background = region_owners(seg, item.masks, item.frame)
    palettes = frame_palettes(item, names, match_settings)
    vote = vote_regions(seg, colour, palettes, owner, background, settings)
    colors = vote.colors
    if item.background is not None and background.any():
        if item.background.shape[:2] != seg.shape:
            raise ValueError(
                f"frame {item.frame}: background image {item.background.shape[:2]} differs from the line art "
                f"{seg.shape}; give a background of the frame's size"
            )
        under, _ = colours_from_image(seg, *index_colours(item.background))
        colors[background] = under[background]
    everywhere = seg.grown
    fill = lookup(colors, everywhere)
    line = line_layer(seg)
    color = color_layer(fill, item.line_art, line, seg)
    review = review_layer(everywhere, colors, vote.unsure, line)
    drawn = np.flatnonzero(~vote.background & (seg.area > 0))
    drawn = drawn[drawn > 0]
    stats = {
        "palette": "snap",
        "regions": int(seg.n_regions),
        "unsure_regions": int(vote.unsure.sum()),
        "mean_vote_share": round(float(vote.share[drawn].mean()), 4) if drawn.size else 1.0,
        "palette_colours": int(len(palettes.colours)),
    }
    return SnapLayers(color=color, fill=fill, line=line, review=review, stats=stats)


__all__ = ["Palettes", "SnapLayers", "SnapVote", "frame_palettes", "snap_layers", "to_perceptual", "vote_regions"]
