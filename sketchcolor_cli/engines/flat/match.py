"""Matching for the flat engine: give every region of a frame one exact colour and a confidence.

Sources, strongest first:

1. a key frame of this very frame (`Reference.frame == item.frame`): each region takes the commonest
   exact colour of the key image under it, confidence 1;
2. the previous frame (its line art and palette-exact fill), carried onto this frame (`carry_from`):
   the motion between the two drawings is followed (dense optical flow on the line masks, or one
   phase-correlation shift, or none: whichever makes the colours agree best; with per-character
   masks in both frames, a character's mask shift where that agrees better still), and each
   region takes the colour of the region it overlaps best (intersection over union); drawn
   regions never turn transparent just because they moved over the old background. Confidence =
   that IoU (full at IOU_FULL) times its margin over other colours. Regions the motion lost are
   looked for by shape, place and context (`structure.match_by_structure`). Regions still below
   ``previous_min_confidence`` are matched again by 3 and 4;
3. background: paper regions touching the image border (or covered by the ``background`` mask)
   are transparent, or take the commonest colour of ``item.background`` under them;
4. references: other key frames of the cut (in the frame's own space) and model sheets, which are
   first laid over the character (scaled and moved so that the drawings' barycentres and sizes
   agree), are carried exactly like a previous frame; each region takes the most confident answer.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import cv2
import numpy as np

from ..base import PreviousResult, Reference, WorkItem
from .segment import (
    FULL,
    Segmentation,
    index_colours,
    keys_to_colours,
    regions_from_labels,
    segment_colour_regions,
    segment_line_art,
    vote_colours,
)
from .structure import Counterpart, match_by_structure

SOURCE_NONE, SOURCE_KEY, SOURCE_PREVIOUS, SOURCE_REFERENCE, SOURCE_BACKGROUND = range(5)
SOURCE_NAMES = ("none", "key", "previous", "reference", "background")

TRANSPARENT = np.zeros(4, dtype=np.uint16)

# A region touching the image border is background unless a character mask covers this much of it.
CHARACTER_EDGE_COVER = 0.9
# Candidate shifts from the previous frame are scored on every n-th pixel in each direction.
SHIFT_SCORE_STRIDE = 3
# Tag of the analysis handed from one frame to the next (see ImageCache.remember).
PREVIOUS_ANALYSIS = "previous-analysis"
# A colour carried from the previous frame whose region overlaps this one by this intersection
# over union (or more) is fully confident.
IOU_FULL = 0.5
# Motion (phase correlation, optical flow) is measured on line masks scaled down to about this
# long side, in pixels, and blurred by this sigma so that the flow has gradients to follow.
MOTION_ANALYSIS_SIZE = 480
MOTION_BLUR_SIGMA = 1.5
# Big frames are matched on a regular sample of their pixels, every stride-th pixel each way with
# stride = long side / MATCH_SAMPLE_SIDE rounded (1 below 1536 px, 2 at 1080p and 2K, 4 at 4K):
# overlaps between regions are counted, not drawn, and the sample counts about as many pixels of
# each region as a 1K frame has in full.
MATCH_SAMPLE_SIDE = 1024
# A drawn region ignores votes for transparency while other colours have this share of its votes.
FOREGROUND_MIN_OPAQUE = 0.25


@dataclass
class MatchSettings:
    """The settings that matching needs (a plain subset of FlatSettings)."""

    line_threshold: float
    gap_close_px: int
    hint_lines: bool
    min_region_px: int
    previous_min_confidence: float
    key_reach: int = 12

    def segment(self, line_art: np.ndarray, what: str) -> Segmentation:
        """Regions of a line-art drawing with these settings (frames, previous frames, references)."""
        return segment_line_art(
            line_art,
            line_threshold=self.line_threshold,
            gap_close_px=self.gap_close_px,
            hint_lines=self.hint_lines,
            min_region_px=self.min_region_px,
            what=what,
        )


@dataclass
class Assignment:
    """One colour per region label (index 0 = line, unused) and where it came from."""

    colors: np.ndarray  # (n + 1, 4) uint16
    confidence: np.ndarray  # (n + 1,) float64 in [0, 1]
    source: np.ndarray  # (n + 1,) int8, SOURCE_* codes
    shift: tuple[int, int] | None = None  # global (dx, dy) from the previous frame, if used
    motion: str | None = None  # how the previous frame was followed: "flow", "shift" or "none"
    background: np.ndarray | None = None  # (n + 1,) bool: the background regions (`region_owners`)


# ---- shared helpers ---------------------------------------------------------------------------


def _content_key(image: np.ndarray) -> bytes:
    data = np.ascontiguousarray(image)
    digest = hashlib.blake2b(memoryview(data).cast("B"), digest_size=16)
    digest.update(repr((data.shape, data.dtype.str)).encode())
    return digest.digest()


class ImageCache:
    """Results computed from images, kept while the same images come back.

    ``get`` looks up by array identity first (free), then by content hash, so the references of a
    cut are analysed once per worker even when each work item carries its own copy. ``remember`` /
    ``recall`` hand the analysis of the frame just painted (its regions and their colours) to the
    next frame, which gets that frame's line art and fill as its previous: found by identity, or
    by equality when the runner read them back from disk. (An array changed in place keeps its
    identity: hand the engine a new array instead.)
    """

    def __init__(self, capacity: int = 8, handoff_capacity: int = 2) -> None:
        self._capacity = capacity
        self._handoff_capacity = handoff_capacity
        self._by_content: OrderedDict[tuple, object] = OrderedDict()
        self._by_identity: dict[tuple, tuple[list[weakref.ref], tuple]] = {}
        self._handoff: OrderedDict[tuple, tuple[tuple[np.ndarray, ...], object]] = OrderedDict()

    def get(self, tag: str, images: tuple[np.ndarray, ...], build: Callable[[], object]) -> object:
        identity = (tag, *(id(image) for image in images))
        known = self._by_identity.get(identity)
        if (
            known is not None
            and all(ref() is image for ref, image in zip(known[0], images))
            and known[1] in self._by_content
        ):
            self._by_content.move_to_end(known[1])
            return self._by_content[known[1]]
        content = (tag, *(_content_key(image) for image in images))
        if content in self._by_content:
            self._by_content.move_to_end(content)
            value = self._by_content[content]
        else:
            value = build()
            self._by_content[content] = value
            while len(self._by_content) > self._capacity:
                self._by_content.popitem(last=False)
        try:
            self._by_identity[identity] = ([weakref.ref(image) for image in images], content)
        except TypeError:  # an array that refuses weak references: content lookups only
            pass
        if len(self._by_identity) > 4 * self._capacity:
            self._by_identity = {
                k: v for k, v in self._by_identity.items() if all(ref() is not None for ref in v[0])
            }
        return value

    def remember(self, tag: str, images: tuple[np.ndarray, ...], value: object) -> None:
        """Keep `value` for the next frame, with the arrays it was computed from."""
        self._handoff[(tag, *(id(image) for image in images))] = (images, value)
        while len(self._handoff) > self._handoff_capacity:
            self._handoff.popitem(last=False)

    def recall(self, tag: str, images: tuple[np.ndarray, ...]) -> object | None:
        """What was remembered for these arrays: the same objects, or arrays equal to them (a
        runner that wrote the previous frame to disk and read it back)."""
        known = self._handoff.get((tag, *(id(image) for image in images)))
        if known is not None and all(a is b for a, b in zip(known[0], images)):
            return known[1]
        for key in reversed(self._handoff):
            kept, value = self._handoff[key]
            if key[0] == tag and all(
                a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(kept, images)
            ):
                return value
        return None


# ---- regions: owners and background -------------------------------------------------------------


def region_owners(
    seg: Segmentation, masks: dict[str, np.ndarray], frame: int | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(character names, owner index per region or -1, background flag per region).

    A region belongs to the character whose mask covers most of it (more than half); background
    regions are those the ``background`` mask covers mostly, and the regions that touch the image
    border unless a character mask covers nearly all of them (a close-up running off the frame).
    """
    size = seg.n_regions + 1
    names = sorted(name for name in masks if name != "background")
    owner = np.full(size, -1, dtype=np.int64)
    best = np.zeros(size, dtype=np.int64)
    for index, name in enumerate(names):
        mask = _check_mask(masks[name], seg.shape, name, frame)
        covered = np.bincount(seg.labels[mask], minlength=size)
        better = covered > best
        owner[better] = index
        best[better] = covered[better]
    owner[2 * best <= seg.area] = -1
    background = seg.touches_border & (best < CHARACTER_EDGE_COVER * seg.area)
    if "background" in masks:
        mask = _check_mask(masks["background"], seg.shape, "background", frame)
        background |= 2 * np.bincount(seg.labels[mask], minlength=size) > seg.area
    background[0] = False
    owner[background] = -1
    owner[0] = -1
    return names, owner, background


# A mask may run past the lines by up to about twice the frame's long side over this (2 px at 512,
# 10 at 1920, 20 at 3840) without its rim being taken for a leak.
LEAK_RIM_DIVISOR = 400


def mask_leaks(
    seg: Segmentation, masks: dict[str, np.ndarray], background: np.ndarray, frame: int | None = None
) -> np.ndarray | None:
    """Pixels that a character's mask covers but that lie in a `background` region (per region, from
    `region_owners`): the outline has a gap there that gap closing missed, so that part of the
    character ran into the paper around it and is painted as background, however sure the match.
    None when there are none (or no masks). A mask drawn a few pixels wide of the lines leaves only
    a thin rim, which an opening removes."""
    names = [name for name in masks if name != "background"]
    if not names or not background.any():
        return None
    covered = np.zeros(seg.shape, dtype=bool)
    for name in names:
        covered |= _check_mask(masks[name], seg.shape, name, frame)
    leaks = (covered & background[seg.labels]).view(np.uint8)
    if not leaks.any():
        return None
    width = 2 * max(1, round(max(seg.shape) / LEAK_RIM_DIVISOR)) + 1
    opened = cv2.morphologyEx(leaks, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width)))
    return opened.view(bool) if opened.any() else None


def _check_mask(mask: np.ndarray, shape: tuple[int, int], name: str, frame: int | None) -> np.ndarray:
    if mask.shape != shape:
        where = f"frame {frame}: " if frame is not None else ""
        raise ValueError(
            f"{where}mask {name!r} is {mask.shape}, the line art {shape}; masks must match the frame's size"
        )
    return mask.astype(bool, copy=False)


# ---- source 1: key frame ------------------------------------------------------------------------


def colours_from_image(
    seg: Segmentation, index: np.ndarray, palette: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(colour, winning share) per region: the commonest exact colour of an image under it."""
    winner, votes, total = vote_colours(seg.labels, index, seg.n_regions + 1, len(palette))
    colors = palette[winner]
    colors[0] = TRANSPARENT
    return colors, votes / np.maximum(total, 1)


# ---- source 2: previous frame -------------------------------------------------------------------


def _centroid(mask: np.ndarray, step: int = 4) -> np.ndarray | None:
    """(x, y) centre of a mask, from every `step`-th pixel each way (a shift candidate needs no
    more than that)."""
    sparse = np.ascontiguousarray(mask[::step, ::step]).astype(np.uint8)
    moments = cv2.moments(sparse, True)
    if moments["m00"] <= 0:
        return None
    return np.array([moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]]) * step + (step - 1) / 2


def _motion_scale(extent: int) -> int:
    """How much a frame with this long side is scaled down for the motion analysis (a cut-out of
    it by as much as the whole frame: the same detail)."""
    return max(1, extent // MOTION_ANALYSIS_SIZE)


def _motion_image(line: np.ndarray, scale: int) -> np.ndarray:
    """The line mask scaled down and blurred: flat paper has no texture to track, the lines do."""
    height, width = line.shape
    small = cv2.resize(
        line.view(np.uint8) * np.uint8(255), (width // scale, height // scale), interpolation=cv2.INTER_AREA
    )
    return cv2.GaussianBlur(small, (0, 0), MOTION_BLUR_SIGMA)


def estimate_shift(previous_small: np.ndarray, current_small: np.ndarray, scale: int) -> tuple[int, int]:
    """(dx, dy) that moves the previous drawing onto the current one (phase correlation)."""
    window = cv2.createHanningWindow(previous_small.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(previous_small.astype(np.float32), current_small.astype(np.float32), window)
    return int(round(dx * scale)), int(round(dy * scale))


def sample_stride(extent: int) -> int:
    """Every how many pixels (each way) a frame with this long side is matched."""
    return max(1, round(extent / MATCH_SAMPLE_SIDE))


def _flow_sampler(
    previous_small: np.ndarray, current_small: np.ndarray, scale: int, shape: tuple[int, int], stride: int = 1
) -> np.ndarray:
    """h x w x 2 float32 map: where each sampled pixel of this frame (every `stride`-th of an
    H x W frame each way) was in the previous one, in the previous frame's full-size pixels (dense
    optical flow, DIS, on the blurred line masks; follows limbs that a single shift cannot)."""
    height, width = -(-shape[0] // stride), -(-shape[1] // stride)
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(current_small, previous_small, None)
    where = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    where *= np.float32(scale)
    xs, ys = _pixel_grid(height, width, stride)
    where[:, :, 0] += xs
    where[:, :, 1] += ys
    return where


@lru_cache(maxsize=2)
def _pixel_grid(height: int, width: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    xs = np.broadcast_to(np.arange(width, dtype=np.float32) * np.float32(stride), (height, width))
    ys = np.broadcast_to(np.arange(height, dtype=np.float32)[:, None] * np.float32(stride), (height, width))
    return xs, ys


def _sampled_by_flow(index: np.ndarray, where: np.ndarray) -> np.ndarray:
    """index at the flow's source positions (nearest pixel), -1 outside the image."""
    shifted_up = index + 1  # remap has no int32; 0 = no vote, kept by the border value
    source = shifted_up.astype(np.uint16) if int(shifted_up.max(initial=0)) < FULL else shifted_up.astype(np.float32)
    sampled = cv2.remap(source, where, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return sampled.astype(np.int32) - 1


def _shifted(index: np.ndarray, dx: int, dy: int, stride: int = 1) -> np.ndarray:
    """out[i, j] = index[i * stride - dy, j * stride - dx], -1 where that falls outside the image
    (with stride 1: the image moved by (dx, dy))."""
    height, width = index.shape
    rows = np.arange(0, height, stride) - dy
    cols = np.arange(0, width, stride) - dx
    out = np.full((len(rows), len(cols)), -1, dtype=index.dtype)
    row_ok, col_ok = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
    if not row_ok.any() or not col_ok.any():
        return out
    # The valid rows and columns are each one run: slices, not fancy indexing.
    r0, r1 = np.flatnonzero(row_ok)[[0, -1]]
    c0, c1 = np.flatnonzero(col_ok)[[0, -1]]
    out[r0 : r1 + 1, c0 : c1 + 1] = index[rows[r0] : rows[r1] + 1 : stride, cols[c0] : cols[c1] + 1 : stride]
    return out


def vote_agreement(
    labels: np.ndarray, sampled: np.ndarray, n_labels: int, n_colours: int
) -> tuple[np.ndarray, np.ndarray]:
    """(votes for the commonest colour, all votes) per label; -1 in `sampled` does not vote."""
    width = n_colours + 1
    key = labels.ravel().astype(np.intp) * width
    key += sampled.ravel() + 1
    if n_labels * width <= 8_000_000:
        votes = np.bincount(key, minlength=n_labels * width)[: n_labels * width].reshape(n_labels, width)[:, 1:]
        return votes.max(axis=1), votes.sum(axis=1)
    # A fill with very many colours (not palette-exact): count only the pairs that occur.
    pairs, counts = np.unique(key[key % width > 0], return_counts=True)
    label = pairs // width
    best = np.zeros(n_labels, dtype=np.int64)
    np.maximum.at(best, label, counts)
    return best, np.bincount(label, weights=counts, minlength=n_labels).astype(np.int64)


def overlap_pairs(
    labels: np.ndarray, sampled: np.ndarray, n_labels: int, n_previous: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(region, previous region, pixel count) for every pair that overlaps under the motion.

    `sampled` holds the previous frame's region label seen by each pixel (0 = none).
    """
    width = n_previous + 1
    key = labels.ravel().astype(np.intp) * width
    key += sampled.ravel()
    if n_labels * width <= 8_000_000:
        counts = np.bincount(key, minlength=n_labels * width)[: n_labels * width].reshape(n_labels, width)
        counts[0] = 0
        counts[:, 0] = 0
        region, before = np.nonzero(counts)
        return region, before, counts[region, before]
    pairs, counts = np.unique(key, return_counts=True)
    region, before = pairs // width, pairs % width
    keep = (region > 0) & (before > 0)
    return region[keep], before[keep], counts[keep]


def decide_by_overlap(
    region: np.ndarray,
    before: np.ndarray,
    overlap: np.ndarray,
    area: np.ndarray,
    previous_area: np.ndarray,
    previous_colour: np.ndarray,
    foreground: np.ndarray,
    transparent: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(colour index, confidence, previous region) per region from its overlaps with the previous
    frame's regions.

    Each previous region that overlaps a region under the motion offers its colour, scored by
    intersection over union, so a thin region (a belt, a shadow strip, a cuff) takes the colour of
    the thin region it came from even when a slightly wrong motion lets more pixels of the big
    region next to it in. (Plain pixel votes get these wrong, and the error then propagates.)
    Foreground regions (drawn parts) ignore transparent candidates while opaque ones cover at
    least FOREGROUND_MIN_OPAQUE of their votes: a limb that moved over where the background was
    must not turn into background, while a hole between limbs stays a hole.
    Confidence = best IoU (full at IOU_FULL) x its margin over the best IoU of another colour.
    """
    size = len(area)
    colour = previous_colour[before]
    if transparent is not None and region.size:
        total = np.bincount(region, weights=overlap, minlength=size)
        clear = colour == transparent
        opaque = np.bincount(region[~clear], weights=overlap[~clear], minlength=size)
        ignore = foreground & (opaque >= FOREGROUND_MIN_OPAQUE * total) & (opaque > 0)
        keep = ~(clear & ignore[region])
        region, before, overlap, colour = region[keep], before[keep], overlap[keep], colour[keep]
    best_colour = np.zeros(size, dtype=np.int64)
    best_before = np.zeros(size, dtype=np.int64)
    best = np.zeros(size)
    second = np.zeros(size)
    if region.size:
        # The motion may sample one previous pixel for several pixels here (a stretch), so the
        # pixel count can exceed the previous region's area: the true intersection cannot.
        shared = np.minimum(overlap, previous_area[before])
        iou = shared / np.maximum(area[region] + previous_area[before] - shared, 1)
        # Per region, best IoU first (ties: lower colour index); its first pair of another
        # colour is the rival.
        order = np.lexsort((colour, -iou, region))
        region, colour, iou, before = region[order], colour[order], iou[order], before[order]
        first = np.r_[True, region[1:] != region[:-1]]
        best_colour[region[first]] = colour[first]
        best_before[region[first]] = before[first]
        best[region[first]] = iou[first]
        rival = colour != best_colour[region]
        np.maximum.at(second, region[rival], iou[rival])
    margin = np.where(best > 0, 1.0 - second / np.maximum(best, 1e-12), 0.0)
    confidence = np.minimum(best / IOU_FULL, 1.0) * margin
    return best_colour, confidence, best_before


def colours_from_previous(
    seg: Segmentation,
    masks: dict[str, np.ndarray],
    owners: tuple[list[str], np.ndarray],
    previous: PreviousResult,
    settings: MatchSettings,
    frame: int,
    cache: ImageCache,
    palettes: "CharacterPalettes | None" = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], str]:
    """(colour, confidence) per region carried from the previous frame, the global shift, and
    how the motion was followed ("flow", "shift" or "none").

    `owners` = (character names, owner index per region) from `region_owners`.
    """
    if previous.fill.shape != previous.line_art.shape or previous.fill.shape[:2] != seg.shape:
        raise ValueError(
            f"frame {frame}: previous frame {previous.frame} has size {previous.fill.shape[:2]} "
            f"(line art {previous.line_art.shape[:2]}), this frame {seg.shape}; a cut must keep one size"
        )
    analysis = _previous_analysis(previous, settings, cache)
    names, owner = owners
    foreground = owner >= 0 if names else ~seg.touches_border
    character_shifts = []
    for character, name in enumerate(names):
        if name in previous.masks:
            now, then = _centroid(masks[name]), _centroid(previous.masks[name])
            if now is not None and then is not None:
                character_shifts.append((owner == character, tuple(np.round(now - then).astype(int).tolist())))
    return carry_from(seg, analysis, foreground, character_shifts, settings, palettes=palettes)


def carry_from(
    seg: Segmentation,
    analysis: "ColouredDrawing",
    foreground: np.ndarray,
    character_shifts: list[tuple[np.ndarray, tuple[int, int]]],
    settings: MatchSettings,
    lines_of_interest: np.ndarray | None = None,
    extent: int | None = None,
    wanted: np.ndarray | None = None,
    palettes: "CharacterPalettes | None" = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], str]:
    """(colour, confidence) per region of `seg` from a coloured drawing in the same frame space
    (the previous frame, a key frame, an aligned model sheet), the global shift, and how the motion
    was followed ("flow", "shift" or "none").

    `foreground`: the drawn regions (they never take the drawing's transparent colour while others
    offer); `character_shifts`: (regions, shift) of characters whose masks moved by that shift;
    `lines_of_interest`: where this frame's lines count for the motion (default: everywhere);
    `extent`: the whole frame's long side when `seg` is a cut-out of it; `wanted`: the regions
    the caller needs (the others' answers are not refined); `palettes`: a character's regions
    only take that character's colours.
    """
    extent = extent or max(seg.shape)
    size, n_colours, n_previous = seg.n_regions + 1, len(analysis.palette), analysis.seg.n_regions
    # Colour index of what a pixel sees, by previous label + 1: outside the frame (0) and on a
    # previous line (1; its fill shows a neighbour's colour, not its own) it sees nothing (-1).
    colour_seen = np.concatenate([[-1, -1], analysis.colour_of[1:]]).astype(np.int32)

    scale = _motion_scale(extent)
    previous_small = _motion_image(analysis.seg.labels == 0, scale)
    lines = seg.labels == 0
    if lines_of_interest is not None:
        lines &= lines_of_interest
    current_small = _motion_image(lines, scale)
    global_shift = estimate_shift(previous_small, current_small, scale)
    # Overlaps are counted on every stride-th pixel each way (all of them below MATCH_SAMPLE_SIDE).
    stride = sample_stride(extent)
    sample = np.s_[::stride, ::stride]
    labels = np.ascontiguousarray(seg.labels[sample]) if stride > 1 else seg.labels
    where = _flow_sampler(previous_small, current_small, scale, seg.shape, stride)
    moved: dict[object, np.ndarray] = {}

    def seen_labels(how: object) -> np.ndarray:
        """The previous frame's region label seen from each sampled pixel of this frame (-1 outside)."""
        if how not in moved:
            if how == "flow":
                moved[how] = _sampled_by_flow(analysis.seg.labels, where)
            else:
                moved[how] = _shifted(analysis.seg.labels, *how, stride)  # type: ignore[misc]
        return moved[how]

    # One way of following the motion per drawing, not per region: a small region can sit wholly
    # inside a big one under a wrong motion and vote for it unanimously. The way under which the
    # colour votes agree best wins (scored on a sparse grid; earlier candidates win ties).
    step = max(1, round(SHIFT_SCORE_STRIDE / stride))
    grid = np.s_[::step, ::step]
    sparse_labels = np.ascontiguousarray(labels[grid])
    scores: dict[object, tuple[np.ndarray, np.ndarray]] = {}

    def agreement(how: object, regions: np.ndarray | None = None) -> float:
        """Share of the votes (of `regions`) that go to their region's most voted colour."""
        if how not in scores:
            sparse_colours = colour_seen[seen_labels(how)[grid] + 1]
            best, total = vote_agreement(sparse_labels, sparse_colours, size, n_colours)
            best[0] = total[0] = 0  # line pixels
            scores[how] = (best, total)
        best, total = scores[how]
        if regions is not None:
            best, total = best[regions], total[regions]
        return float(best.sum()) / max(float(total.sum()), 1.0)

    chosen = max(dict.fromkeys(["flow", global_shift, (0, 0)]), key=agreement)
    seen = seen_labels(chosen)

    for regions, shift in character_shifts:
        if not regions.any():
            continue
        if shift != chosen and agreement(shift, regions) > agreement(chosen, regions):
            pixels = regions[labels]
            if seen is moved[chosen]:
                seen = seen.copy()
            seen[pixels] = seen_labels(shift)[pixels]

    transparent = 0 if n_colours and analysis.palette[0, 3] == 0 else None  # key 0 sorts first
    region, before, overlap = overlap_pairs(labels, np.maximum(seen, 0), size, n_previous)
    if stride > 1:  # areas counted on the same sample as the overlaps
        area = np.bincount(labels.ravel(), minlength=size)[:size]
        previous_area = np.bincount(analysis.seg.labels[sample].ravel(), minlength=n_previous + 1)[: n_previous + 1]
    else:
        area, previous_area = seg.area, analysis.seg.area
    # A sheet's paper has no colour to give, but overlapping it still makes a region less sure:
    # it votes as one more colour ("unknown", index n_colours) that is never painted.
    colour_of = np.where(analysis.colour_of >= 0, analysis.colour_of, n_colours)
    colour_ok = palettes.allowed(analysis.palette) if palettes is not None and n_colours else None
    if colour_ok is not None:
        # A region never takes another character's colour, however the drawings overlap.
        keep = np.concatenate([colour_ok, np.ones((size, 1), dtype=bool)], axis=1)[region, colour_of[before]]
        region, before, overlap = region[keep], before[keep], overlap[keep]
    best_colour, best_conf, best_before = decide_by_overlap(
        region, before, overlap.astype(np.float64), area.astype(np.float64),
        previous_area.astype(np.float64), colour_of, foreground, transparent,
    )
    unknown = best_colour == n_colours
    best_colour[unknown], best_before[unknown] = 0, 0
    best_conf = np.where(unknown, 0.0, np.clip(best_conf, 0.0, 1.0))
    # Two similar parts side by side that the motion swapped are less sure: the structure pass
    # below looks at them again.
    best_conf *= _neighbour_consistency(seg, analysis.seg, best_before, best_conf, foreground)
    best_conf = _no_surer_than_source(best_conf, best_before, analysis.confidence)
    if n_colours:
        # Drawn regions the motion lost are looked for by shape, place and context instead.
        open_ = foreground & (best_conf < settings.previous_min_confidence)
        if wanted is not None:
            open_ &= wanted
        open_[0] = False
        if open_.any():
            best_colour, best_conf, best_before = match_by_structure(
                seg, Counterpart(analysis.seg, analysis.colour_of, extent), best_colour, best_conf, best_before, open_,
                colour_ok=_opaque_for(foreground, colour_ok, transparent, size, n_colours),
            )
            best_conf = _no_surer_than_source(best_conf, best_before, analysis.confidence)
    colors = analysis.palette[best_colour] if n_colours else np.zeros((size, 4), np.uint16)
    colors[0] = TRANSPARENT
    best_conf[0] = 0.0
    motion = "flow" if chosen == "flow" else ("none" if chosen == (0, 0) else "shift")
    return colors, best_conf, global_shift, motion


def _no_surer_than_source(confidence: np.ndarray, source: np.ndarray, source_confidence: np.ndarray | None) -> np.ndarray:
    """A colour carried from a region is no surer than that region's colour was: a guess from the
    model sheet stays a guess (flagged for review, and open to a surer answer) down the cut."""
    if source_confidence is None:
        return confidence
    return np.minimum(confidence, np.where(source > 0, source_confidence[source], 1.0))


# A carried region none of whose sure neighbours came from next to its own match keeps this share
# of its confidence; one whose neighbours all did keeps all of it.
CONSISTENCY_FLOOR = 0.3
IOU_SURE = 0.7  # a neighbour this confident counts as a witness


def _neighbour_consistency(
    seg: Segmentation, other: Segmentation, matched: np.ndarray, confidence: np.ndarray, foreground: np.ndarray
) -> np.ndarray:
    """(n + 1,) factor in [CONSISTENCY_FLOOR, 1] per region: how many of its sure neighbours were
    matched to neighbours of (or the same region as) its own match. Two similar parts side by side
    (a cuff and a hand) that the motion swapped each sit next to the wrong neighbours."""
    factor = np.ones(len(matched))
    neighbours, offsets = seg.adjacency
    their_neighbours, their_offsets = other.adjacency
    sure = confidence >= IOU_SURE
    for region in np.flatnonzero(foreground & (matched > 0)).tolist():
        around = neighbours[offsets[region] : offsets[region + 1]]
        around = around[sure[around] & (matched[around] > 0)]
        if around.size < 2:
            continue
        mine = matched[region]
        near = set(their_neighbours[their_offsets[mine] : their_offsets[mine + 1]].tolist()) | {int(mine)}
        agree = sum(int(matched[n]) in near for n in around.tolist()) / around.size
        factor[region] = CONSISTENCY_FLOOR + (1 - CONSISTENCY_FLOOR) * agree
    return factor


def _opaque_for(
    foreground: np.ndarray, colour_ok: np.ndarray | None, transparent: int | None, size: int, n_colours: int
) -> np.ndarray | None:
    """`colour_ok` with the transparent colour taken away from drawn regions: a part that the motion
    lost is looked for among the drawing's painted regions, not its holes."""
    if transparent is None:
        return colour_ok
    ok = np.ones((size, n_colours), dtype=bool) if colour_ok is None else colour_ok.copy()
    ok[foreground, transparent] = False
    return ok


@dataclass
class CharacterPalettes:
    """Which colours each region may take: a character's regions only its named palette colours
    (or transparent), so that two characters crossing never swap colours."""

    owner: np.ndarray  # (n + 1,) owner index per region (-1: no character's mask)
    named: dict[int, set[tuple[int, int, int]]]  # owner index -> its palette (uint16 RGB)

    @classmethod
    def of(cls, names: list[str], owner: np.ndarray, references: tuple[Reference, ...]) -> "CharacterPalettes | None":
        """From the references' palettes; None when there is nothing to restrict. A character
        without a palette (or regions of no character, when some reference lacks one) is free."""
        sheets = [r for r in references if r.frame is None and r.character]
        named: dict[int, set[tuple[int, int, int]]] = {}
        for index, name in enumerate(names):
            own = [r for r in sheets if r.character == name]
            if own and all(r.palette for r in own):
                named[index] = {tuple(c) for r in own for c in r.palette.values()}  # type: ignore[union-attr]
        if sheets and all(r.palette for r in sheets):
            named[-1] = {tuple(c) for r in sheets for c in r.palette.values()}  # type: ignore[union-attr]
        return cls(owner, named) if named else None

    def allowed(self, palette: np.ndarray) -> np.ndarray:
        """(n + 1, k) bool: may region i take colour `palette[j]`."""
        rows = np.ones((len(self.named) + 1, len(palette)), dtype=bool)  # last row: free regions
        row_of = {index: row for row, index in enumerate(self.named)}
        clear = palette[:, 3] == 0
        for index, row in row_of.items():
            rows[row] = clear | np.array(
                [p[3] == FULL and (int(p[0]), int(p[1]), int(p[2])) in self.named[index] for p in palette], dtype=bool
            )
        owner_row = np.array([row_of.get(int(o), len(self.named)) for o in self.owner])
        return rows[owner_row]


@dataclass
class ColouredDrawing:
    """A coloured drawing as carrying needs it (the previous frame, a key frame, a sheet laid over
    the frame): its regions and the colour of each."""

    seg: Segmentation  # regions of its line art
    palette: np.ndarray  # (k, 4) uint16, sorted by colour key (transparent first)
    colour_of: np.ndarray  # (p + 1,) index into palette of each region's colour
    # (p + 1,) how sure each region's colour was when it was decided (a previous frame); None: sure
    confidence: np.ndarray | None = None


# The previous frame's region confidences travel to the next frame as text (in memory and in the
# fill file's metadata alike), one byte per region label, so both ways give the same values.
REGION_CONFIDENCE = "sketchcolor:handoff:region_confidence"


def encode_region_confidence(confidence: np.ndarray) -> str:
    return np.round(np.clip(confidence, 0.0, 1.0) * 255).astype(np.uint8).tobytes().hex()


def decode_region_confidence(handoff: dict[str, str], size: int) -> np.ndarray | None:
    """The per-label confidences of a previous frame with `size` labels, or None when they were
    not handed over (or do not fit its regions: other segmentation settings)."""
    try:
        values = np.frombuffer(bytes.fromhex(handoff.get(REGION_CONFIDENCE, "")), dtype=np.uint8)
    except ValueError:
        return None
    return values.astype(np.float64) / 255.0 if values.size == size else None


def _previous_analysis(previous: PreviousResult, settings: MatchSettings, cache: ImageCache) -> ColouredDrawing:
    """From what the engine remembered of the frame it just painted, or from the arrays."""
    known = cache.recall(PREVIOUS_ANALYSIS, (previous.line_art, previous.fill))
    if not isinstance(known, ColouredDrawing):
        seg = settings.segment(previous.line_art, f"previous frame {previous.frame} line art")
        index, palette = index_colours(previous.fill)
        colour_of, _, _ = vote_colours(seg.labels, index, seg.n_regions + 1, len(palette))
        known = ColouredDrawing(seg, palette, colour_of)
    return replace(known, confidence=decode_region_confidence(previous.handoff, known.seg.n_regions + 1))


def remember_frame(
    cache: ImageCache, line_art: np.ndarray, fill: np.ndarray, seg: Segmentation, palette: np.ndarray,
    colour_of: np.ndarray,
) -> None:
    """Keep this frame's analysis for the next frame, which gets these arrays as its previous."""
    cache.remember(PREVIOUS_ANALYSIS, (line_art, fill), ColouredDrawing(seg, palette, colour_of))


# ---- source 4: references -----------------------------------------------------------------------


@dataclass
class ReferenceDrawing:
    """A reference (a model sheet, a key frame) ready to be carried onto a frame: its coloured
    regions (colour -1 for paper) and where its drawn regions sit, for laying a sheet over a
    character."""

    coloured: "ColouredDrawing"
    barycentre: np.ndarray  # (2,) of the drawn regions
    spread: float  # their size (geometric mean of the x and y standard deviations)
    source: str


def _pooled_frame(seg: Segmentation, regions: np.ndarray) -> tuple[np.ndarray, float]:
    """(barycentre, size) of the union of `regions`, from their moments."""
    area = seg.area[regions].astype(np.float64)
    total = max(float(area.sum()), 1.0)
    centroid = seg.centroid[regions]
    barycentre = (area[:, None] * centroid).sum(axis=0) / total
    variance = (area[:, None] * (seg.covariance[regions, :2] + (centroid - barycentre) ** 2)).sum(axis=0) / total
    return barycentre, float(np.sqrt(np.sqrt(max(variance[0], 1e-6) * max(variance[1], 1e-6))))


def build_reference_drawing(reference: Reference, settings: MatchSettings) -> ReferenceDrawing | None:
    """Regions of a reference with their exact colours (None if it has no drawn regions)."""
    what = f"reference {reference.source or reference.character or '(unnamed)'}"
    if reference.line is not None:
        if reference.line.shape != reference.image.shape:
            raise ValueError(
                f"{what}: line art {reference.line.shape} and image {reference.image.shape} differ in size"
            )
        seg = settings.segment(reference.line, f"{what} line art")
        index, palette = index_colours(reference.image)
        seg.colors, _ = colours_from_image(seg, index, palette)
    else:
        seg = segment_colour_regions(reference.image, min_region_px=settings.min_region_px, what=what)
    assert seg.colors is not None
    # Paper: white or clear regions at the border (told apart before snapping, which would
    # turn white into the nearest named colour).
    paper = seg.touches_border & ((seg.colors[:, 3] == 0) | (seg.colors[:, :3] == FULL).all(axis=1))
    colors, named = _snap_to_palette(seg.colors, reference.palette)
    drawn = (seg.area > 0) & ~paper & (seg.colors[:, 3] > 0) & named
    drawn[0] = False
    regions = np.flatnonzero(drawn)
    if regions.size == 0:
        return None
    keys, colour_of = np.unique(_keys(colors[regions]), return_inverse=True)
    colour_index = np.full(seg.n_regions + 1, -1, dtype=np.int64)
    colour_index[regions] = colour_of.ravel()
    barycentre, spread = _pooled_frame(seg, regions)
    return ReferenceDrawing(ColouredDrawing(seg, keys_to_colours(keys), colour_index), barycentre, spread, what)


def colours_from_drawing(
    seg: Segmentation, group: np.ndarray, drawing: ReferenceDrawing, settings: MatchSettings, *, align: bool,
    wanted: np.ndarray | None = None, palettes: "CharacterPalettes | None" = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(colour, confidence) per region of `seg` (only `group`'s are set), carried from a coloured
    drawing like from a previous frame. With `align` the drawing (a model sheet) is first scaled
    and moved onto the group's regions: same barycentre, same size. `wanted`: the group's regions
    that need an answer (default: all)."""
    size = seg.n_regions + 1
    colors = np.zeros((size, 4), dtype=np.uint16)
    confidence = np.zeros(size)
    coloured = drawing.coloured
    if coloured.seg.shape != seg.shape and not align:
        raise ValueError(f"{drawing.source} is {coloured.seg.shape}, the frame {seg.shape}; a key frame must match")
    extent = max(seg.shape)
    if align:
        barycentre, spread = _pooled_frame(seg, group)
        scale = spread / max(drawing.spread, 1e-6)
        offset = barycentre - scale * drawing.barycentre
    else:
        scale, offset = 1.0, np.zeros(2)
    # The work is done in the box around the character and the drawing laid over it: a character
    # rarely fills a 2K frame.
    x0, y0, x1, y1 = _box_around(seg, group, drawing, scale, offset)
    window = np.s_[y0:y1, x0:x1]
    if align:
        shift = offset - (x0, y0)
        transform = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])
        labels = coloured.seg.labels
        source = labels.astype(np.uint16) if coloured.seg.n_regions < FULL else labels.astype(np.float32)
        laid_labels = cv2.warpAffine(source, transform, (x1 - x0, y1 - y0), flags=cv2.INTER_NEAREST, borderValue=0)
        laid_seg = regions_from_labels(laid_labels, coloured.seg.n_regions, adjacency=coloured.seg.adjacency)
    else:
        laid_seg = regions_from_labels(
            coloured.seg.labels[window], coloured.seg.n_regions,
            grown=coloured.seg.grown[window], adjacency=coloured.seg.adjacency,
        )
    laid = ColouredDrawing(laid_seg, coloured.palette, coloured.colour_of)
    seg = regions_from_labels(seg.labels[window], seg.n_regions, grown=seg.grown[window], adjacency=seg.adjacency)
    foreground = np.zeros(size, dtype=bool)
    foreground[group] = True
    # Only this character's lines guide the motion: another character is not on its sheet.
    interest = foreground[seg.grown]
    needed = None
    if wanted is not None:
        needed = np.zeros(size, dtype=bool)
        needed[wanted] = True
    found, sure, _, _ = carry_from(
        seg, laid, foreground, [], settings, lines_of_interest=interest, extent=extent, wanted=needed,
        palettes=palettes,
    )
    colors[group] = found[group]
    confidence[group] = sure[group]
    return colors, confidence


# A reference colour this far (16-bit RGB distance) from every named palette colour is not one of
# the character's (about 12 levels in 8-bit).
SNAP_DISTANCE = 12 * 257
# Margin of the box around a character and its laid sheet: this share of the frame's long side.
BOX_MARGIN_SHARE = 0.1


def _box_around(
    seg: Segmentation, group: np.ndarray, drawing: ReferenceDrawing, scale: float, offset: np.ndarray
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the group's regions and the drawing's drawn regions once laid over the
    frame (x * scale + offset), plus a margin."""
    height, width = seg.shape
    mine = seg.bbox[group[seg.area[group] > 0]]
    drawn = drawing.coloured.seg.bbox[drawing.coloured.colour_of >= 0].astype(np.float64)
    corners = np.concatenate([drawn[:, :2], drawn[:, :2] + drawn[:, 2:]])
    laid = corners * scale + offset
    low = np.minimum(mine[:, :2].min(axis=0, initial=10**9), laid.min(axis=0, initial=10**9))
    high = np.maximum((mine[:, :2] + mine[:, 2:]).max(axis=0, initial=-1), laid.max(axis=0, initial=-1))
    margin = BOX_MARGIN_SHARE * max(height, width)
    x0, y0 = (max(int(v - margin), 0) for v in low)
    x1, y1 = min(int(high[0] + margin) + 1, width), min(int(high[1] + margin) + 1, height)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _snap_to_palette(
    colors: np.ndarray, palette: dict[str, tuple[int, int, int]] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(colours, named): each opaque colour replaced by the nearest named palette colour (exact
    palette output) when it is within SNAP_DISTANCE of one; `named` is False for the colours far
    from every named one (paper showing through a hole in the drawing, a stray colour), which
    are not the character's."""
    named_ok = np.ones(len(colors), dtype=bool)
    if not palette:
        return colors, named_ok
    named = np.array(sorted(palette.values()), dtype=np.float64)
    opaque = colors[:, 3] > 0
    if opaque.any():
        distance = np.linalg.norm(colors[opaque, None, :3].astype(np.float64) - named[None], axis=2)
        colors = colors.copy()
        colors[opaque, :3] = named[distance.argmin(axis=1)].astype(np.uint16)
        named_ok[opaque] = distance.min(axis=1) <= SNAP_DISTANCE
    return colors, named_ok


def _keys(colors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(colors, dtype=np.uint16).view(np.uint64).ravel()


# ---- all together -------------------------------------------------------------------------------


def _references_for(character: str, references: list[Reference]) -> list[Reference]:
    """A character's own sheets and the whole-frame references (key frames); all of them for
    regions no character owns."""
    own = [r for r in references if r.character == character] if character else []
    general = [r for r in references if r.character == ""]
    return own + general if own else (general or references)


def _background_colours(
    item: WorkItem, seg: Segmentation, image_index: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """(n + 1, 4): transparent, or the commonest colour of the background image under each region."""
    if item.background is None:
        return np.zeros((seg.n_regions + 1, 4), dtype=np.uint16)
    if item.background.shape[:2] != seg.shape:
        raise ValueError(
            f"frame {item.frame}: background image {item.background.shape[:2]} differs from the "
            f"line art {seg.shape}; give a background of the frame's size"
        )
    colors, _ = colours_from_image(seg, *image_index(item.background))
    return colors


def match_regions(item: WorkItem, seg: Segmentation, settings: MatchSettings, cache: ImageCache) -> Assignment:
    """One colour per region of `seg` for `item` (see the module docstring for the order)."""

    def reference_drawing(reference: Reference) -> ReferenceDrawing | None:
        images = (reference.image,) if reference.line is None else (reference.image, reference.line)
        tag = f"reference:{sorted((reference.palette or {}).items())!r}:{settings!r}"
        return cache.get(tag, images, lambda: build_reference_drawing(reference, settings))  # type: ignore[return-value]

    def image_index(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return cache.get("index", (image,), lambda: index_colours(image))  # type: ignore[return-value]

    size = seg.n_regions + 1
    for reference in item.references:
        if reference.frame == item.frame and reference.image.shape[:2] != seg.shape:
            raise ValueError(
                f"frame {item.frame}: key frame {reference.source!r} is {reference.image.shape[:2]}, "
                f"the line art is {seg.shape}; a key frame must match its line art pixel for pixel"
            )
    names, owner, background = region_owners(seg, item.masks, item.frame)
    palettes = CharacterPalettes.of(names, owner, item.references)
    key = next((r for r in item.references if r.frame == item.frame), None)
    if key is not None:
        colors, _ = colours_from_image(seg, *image_index(key.image))
        source = np.full(size, SOURCE_KEY, dtype=np.int8)
        # Where the key frame shows bare paper (white or transparent) outside the drawing, or
        # through a hole in it (white that no character's palette names), the output shows the
        # background like every other frame of the cut.
        paper = (colors[:, 3] == 0) | (colors[:, :3] == FULL).all(axis=1)
        named = {tuple(c) for r in item.references if r.palette for c in r.palette.values()}
        hole = paper if named and (FULL, FULL, FULL) not in named else np.zeros_like(paper)
        settle = (background & paper) | hole
        if settle.any():
            colors[settle] = _background_colours(item, seg, image_index)[settle]
            source[settle] = SOURCE_BACKGROUND
        source[0] = SOURCE_NONE
        confidence = np.ones(size)
        confidence[0] = 0.0
        return Assignment(colors=colors, confidence=confidence, source=source, background=background)

    colors = np.zeros((size, 4), dtype=np.uint16)
    confidence = np.zeros(size)
    source = np.full(size, SOURCE_NONE, dtype=np.int8)
    shift, motion = None, None
    if item.previous is not None:
        colors, confidence, shift, motion = colours_from_previous(
            seg, item.masks, (names, owner), item.previous, settings, item.frame, cache, palettes
        )
        source[:] = SOURCE_PREVIOUS
    open_ = confidence < settings.previous_min_confidence
    open_[0] = False

    settle = background & open_
    if settle.any():
        colors[settle] = _background_colours(item, seg, image_index)[settle]
        confidence[settle] = 1.0
        source[settle] = SOURCE_BACKGROUND
        open_ &= ~settle

    # Model sheets, and the key frames near enough to be worth carrying from directly (a far key
    # still reaches this frame along the chain of frames from it).
    others = [
        r for r in item.references
        if r.frame is None or (r.frame != item.frame and abs(r.frame - item.frame) <= settings.key_reach)
    ]
    if item.previous is not None and len(names) <= 1:
        # The previous frame was coloured from its own key (when it is one): carrying that key
        # again repeats the previous carry's evidence with a noisier, cut-out motion, and its
        # answers then outvote the previous frame's by chance. With several characters it is kept:
        # there it follows each character's own lines, which the previous carry does not.
        others = [r for r in others if r.frame != item.previous.frame]
    if open_.any() and not others and item.previous is None:
        raise ValueError(
            f"frame {item.frame}: the flat engine needs a reference (model sheet or key frame) or the "
            "previous frame's result to take colours from; none was given"
        )
    if open_.any() and others:
        for character in sorted(set(owner[open_].tolist())):
            name = names[character] if character >= 0 else ""
            group = np.flatnonzero((owner == character) & ~background)
            group = group[group > 0]
            targets = group[open_[group]]
            if targets.size == 0:
                continue
            found_colors = np.zeros((len(targets), 4), dtype=np.uint16)
            found_conf = np.full(len(targets), -1.0)
            for reference in _references_for(name, others):
                drawing = reference_drawing(reference)
                if drawing is None:
                    continue
                # A key frame of the cut is drawn in the frame's own space; a sheet is laid over
                # the character first.
                colours, sure = colours_from_drawing(
                    seg, group, drawing, settings, align=reference.frame is None, wanted=targets,
                    palettes=palettes,
                )
                better = sure[targets] > found_conf
                found_colors[better] = colours[targets][better]
                found_conf[better] = sure[targets][better]
            earlier = np.where(source[targets] == SOURCE_PREVIOUS, confidence[targets], -1.0)
            take = found_conf > earlier
            chosen = targets[take]
            colors[chosen] = found_colors[take]
            confidence[chosen] = found_conf[take]
            source[chosen] = SOURCE_REFERENCE
    colors[0] = TRANSPARENT
    confidence[0] = 0.0
    source[0] = SOURCE_NONE
    return Assignment(
        colors=colors, confidence=confidence, source=source, shift=shift, motion=motion, background=background
    )


def describe_sources(assignment: Assignment) -> dict[str, int]:
    counts = np.bincount(assignment.source[1:].astype(np.int64), minlength=len(SOURCE_NAMES))
    return {SOURCE_NAMES[code]: int(count) for code, count in enumerate(counts) if count and code}


def main_source(assignment: Assignment) -> str:
    """The source that stands for the frame in logs: key > previous > reference."""
    codes = set(assignment.source[1:].tolist())
    if SOURCE_KEY in codes:
        return "key"
    if SOURCE_PREVIOUS in codes:
        return "previous"
    if SOURCE_REFERENCE in codes:
        return "reference"
    return "background" if SOURCE_BACKGROUND in codes else "none"


__all__ = [
    "Assignment",
    "ImageCache",
    "MatchSettings",
    "ReferenceDrawing",
    "build_reference_drawing",
    "carry_from",
    "colours_from_drawing",
    "colours_from_previous",
    "estimate_shift",
    "match_regions",
    "region_owners",
]
