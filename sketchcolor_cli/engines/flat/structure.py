"""Structural matching: colour the regions that the motion could not follow.

Dense motion follows a drawing's big parts but loses small, fast ones (a hand in a swing, an eye
in a blink, a cuff that passes in front of the body). For those regions this module looks for
the region they were in another drawing (the previous frame, or a key frame further away) by
what an in-betweener would look at:

- shape: the two regions overlaid at their centres (intersection over union, so the size counts),
  also with their major axes turned parallel (a limb that swung);
- place: where the region should have come from, predicted from how its confidently matched
  neighbours moved (local motion), so a region is not matched to a look-alike across the body;
- context: the colours around it (a hand touches a cuff and the background, a cuff a sleeve and
  a hand), compared with the colours around the candidate.

The score is the product of the three; a region's colour is that of its best candidate, with a
confidence from its margin over the best candidate of another colour. Regions are decided in
rounds, so that a region decided in one round is context for its neighbours in the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .segment import Segmentation

# A region matched with at least this confidence anchors the local motion and the context.
ANCHOR_CONFIDENCE = 0.7
# Candidates: regions whose area is within this factor, the nearest this many to the predicted place.
AREA_FACTOR = 3.0
CANDIDATES = 12
# Spread of the place term: this many times the region's size (square root of its area), plus
# this share of the drawing's size; the local motion is averaged over anchors within about as far.
PLACE_SIZE_FACTOR = 5.0
PLACE_IMAGE_SHARE = 0.03
# The context term never vetoes a candidate alone: 1 - CONTEXT_WEIGHT when no colour around agrees.
CONTEXT_WEIGHT = 0.3
# Weight of a touching anchor in the local motion, relative to the nearest other anchor.
TOUCHING_WEIGHT = 4.0
# Shapes are also compared turned parallel when both are at least this elongated and their axes
# differ by at least this many degrees.
TURN_MIN_ELONGATION = 0.3
TURN_MIN_DEGREES = 5.0
# A score this high (shape x place x context) is a full match.
SCORE_FULL = 0.7
ROUNDS = 3


@dataclass
class Counterpart:
    """A drawing whose regions have known colours (palette indices)."""

    seg: Segmentation
    colour_of: np.ndarray  # (p + 1,) palette index per region, -1 unknown
    extent: int  # the whole frame's long side in pixels (the drawings may be cut-outs of it)


class _Shapes:
    """A drawing's regions as the shape comparison needs them: each region's mask in its bounding
    box (cut out once per structure pass: a region meets up to CANDIDATES others, a candidate many
    regions), and its box, centroid, area and axis as Python numbers (the comparison runs a few
    thousand times a frame, where numpy scalars cost more than the pixels)."""

    def __init__(self, seg: Segmentation):
        self.seg = seg
        self.bbox = seg.bbox.tolist()
        self.centroid = seg.centroid.tolist()
        self.area = seg.area.tolist()
        angle, elongation = seg.orientation
        self.angle, self.elongation = angle.tolist(), elongation.tolist()
        self.masks: dict[int, np.ndarray] = {}

    def mask(self, region: int) -> np.ndarray:
        mask = self.masks.get(region)
        if mask is None:
            x, y, w, h = self.bbox[region]
            mask = self.masks[region] = (self.seg.labels[y : y + h, x : x + w] == region).view(np.uint8)
        return mask


def _aligned_iou(mine: _Shapes, region: int, theirs: _Shapes, candidate: int) -> float:
    """Intersection over union of two regions overlaid at their centroids."""
    x0, y0, w0, h0 = mine.bbox[region]
    x1, y1, w1, h1 = theirs.bbox[candidate]
    # Where the candidate's box lands in this region's box coordinates once the centres coincide.
    dx = int(round((x1 - theirs.centroid[candidate][0]) - (x0 - mine.centroid[region][0])))
    dy = int(round((y1 - theirs.centroid[candidate][1]) - (y0 - mine.centroid[region][1])))
    left, top = max(0, dx), max(0, dy)
    right, bottom = min(w0, dx + w1), min(h0, dy + h1)
    if right <= left or bottom <= top:
        return 0.0
    overlap = float(np.count_nonzero(
        mine.mask(region)[top:bottom, left:right] & theirs.mask(candidate)[top - dy : bottom - dy, left - dx : right - dx]
    ))  # fmt: skip
    return overlap / max(float(mine.area[region] + theirs.area[candidate]) - overlap, 1.0)


_HALF_TURN = np.pi / 2
_MIN_TURN = float(np.radians(TURN_MIN_DEGREES))


def _turned_iou(mine: _Shapes, region: int, theirs: _Shapes, candidate: int) -> float:
    """Intersection over union of two regions overlaid at their centroids with their major axes
    turned parallel (a limb that swung between the drawings); 0 when either is round or they are
    already parallel (the plain overlay covers that)."""
    turn = (mine.angle[region] - theirs.angle[candidate] + _HALF_TURN) % np.pi - _HALF_TURN
    if min(mine.elongation[region], theirs.elongation[candidate]) < TURN_MIN_ELONGATION or abs(turn) < _MIN_TURN:
        return 0.0
    x0, y0, w0, h0 = mine.bbox[region]
    x1, y1 = theirs.bbox[candidate][:2]
    cx0, cy0 = mine.centroid[region]
    cx1, cy1 = theirs.centroid[candidate]
    centre_theirs = (cx1 - x1, cy1 - y1)
    shift = (cx0 - x0 - centre_theirs[0], cy0 - y0 - centre_theirs[1])
    this, that = mine.mask(region), theirs.mask(candidate)
    union_base = float(mine.area[region] + theirs.area[candidate])
    best = 0.0
    for degrees in (-np.degrees(turn), -np.degrees(turn) + 180.0):  # axes have no direction
        matrix = cv2.getRotationMatrix2D(centre_theirs, degrees, 1.0)
        matrix[:, 2] += shift
        turned = cv2.warpAffine(that, matrix, (w0, h0), flags=cv2.INTER_NEAREST)
        overlap = float(np.count_nonzero(this & turned))
        best = max(best, overlap / max(union_base - overlap, 1.0))
    return best


def _neighbours(seg: Segmentation, region: int) -> np.ndarray:
    neighbours, offsets = seg.adjacency
    return neighbours[offsets[region] : offsets[region + 1]]


def local_motion(
    seg: Segmentation, counterpart: Counterpart, matched: np.ndarray, anchors: np.ndarray, regions: np.ndarray
) -> np.ndarray:
    """(len(regions), 2) expected displacement (this drawing minus the counterpart) per region,
    from the anchors' displacements weighted by their distance (zero when there are no anchors)."""
    out = np.zeros((len(regions), 2))
    if not anchors.size:
        return out
    displacement = seg.centroid[anchors] - counterpart.seg.centroid[matched[anchors]]
    weight_area = np.sqrt(seg.area[anchors].astype(np.float64))
    scale = _place_scale(seg, regions, counterpart.extent)
    distance_sq = ((seg.centroid[regions, None, :] - seg.centroid[None, anchors, :]) ** 2).sum(axis=2)
    weights = np.exp(-distance_sq / (2 * (2 * scale[:, None]) ** 2)) * weight_area[None, :]
    # Touching anchors move with the region (the sleeve with its cuff): they count most.
    anchor_row = np.full(seg.n_regions + 1, -1)
    anchor_row[anchors] = np.arange(len(anchors))
    for row, region in enumerate(regions.tolist()):
        touching = anchor_row[_neighbours(seg, region)]
        touching = touching[touching >= 0]
        if touching.size:
            weights[row, touching] += TOUCHING_WEIGHT * weight_area[touching] * weights[row].max(initial=1.0)
    total = weights.sum(axis=1)
    near = total > 1e-9
    out[near] = (weights[near] @ displacement) / total[near, None]
    # Far from every anchor: the anchors' overall median motion.
    out[~near] = np.median(displacement, axis=0)
    return out


def _place_scale(seg: Segmentation, regions: np.ndarray, extent: int) -> np.ndarray:
    return PLACE_SIZE_FACTOR * np.sqrt(seg.area[regions].astype(np.float64)) + PLACE_IMAGE_SHARE * extent


def match_by_structure(
    seg: Segmentation,
    counterpart: Counterpart,
    colour_of: np.ndarray,
    confidence: np.ndarray,
    matched: np.ndarray,
    open_: np.ndarray,
    colour_ok: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(colour, confidence, matched counterpart region) per region of `seg`, improved for the
    `open_` regions.

    `colour_of` / `confidence` are the current answer (palette indices, -1 none), `matched` the
    counterpart region each region was matched to (0 none). Open regions take the structural
    answer where it is more confident than their current one. `colour_ok` ((n + 1) x colours):
    the colours each region may take.
    """
    colour_of = colour_of.copy()
    confidence = confidence.copy()
    matched = matched.copy()
    other = counterpart.seg
    other_area = other.area.astype(np.float64)
    usable = np.flatnonzero(other_area > 0)
    usable = usable[(usable > 0) & (counterpart.colour_of[usable] >= 0)]
    if usable.size == 0:
        return colour_of, confidence, matched
    other_centroid = other.centroid[usable]
    shapes: dict[tuple[int, int], float] = {}  # a pair's shape score is the same in every round
    mine, theirs = _Shapes(seg), _Shapes(other)
    todo = np.flatnonzero(open_)
    todo = todo[todo > 0]
    for _ in range(ROUNDS):
        if todo.size == 0:
            break
        anchors = np.flatnonzero((confidence >= ANCHOR_CONFIDENCE) & (matched > 0))
        anchors = anchors[anchors > 0]
        anchor = np.zeros(seg.n_regions + 1, dtype=bool)
        anchor[anchors] = True
        expected = local_motion(seg, counterpart, matched, anchors, todo)
        scale = _place_scale(seg, todo, counterpart.extent)
        rows: list[tuple[float, int, int, int]] = []  # (score, region, candidate, colour)
        for row, region in enumerate(todo.tolist()):
            area = float(seg.area[region])
            ratio = other_area[usable] / max(area, 1.0)
            fits = (ratio <= AREA_FACTOR) & (ratio >= 1 / AREA_FACTOR)
            if not fits.any():
                continue
            place = seg.centroid[region] - expected[row]
            distance = np.hypot(*(other_centroid[fits] - place).T)
            nearest = np.argsort(distance, kind="stable")[:CANDIDATES]
            candidates = usable[fits][nearest]
            place_score = np.exp(-(distance[nearest] ** 2) / (2 * scale[row] ** 2))
            # Context: the counterparts of this region's anchored neighbours.
            around = _neighbours(seg, region)
            around = set(matched[around[anchor[around]]].tolist())
            for candidate, placed in zip(candidates.tolist(), place_score.tolist()):
                colour = int(counterpart.colour_of[candidate])
                if placed < 1e-3 or (colour_ok is not None and not colour_ok[region, colour]):
                    continue
                shape = shapes.get((region, candidate))
                if shape is None:
                    shape = max(_aligned_iou(mine, region, theirs, candidate), _turned_iou(mine, region, theirs, candidate))
                    shapes[(region, candidate)] = shape
                if around:
                    context = len(around.intersection(_neighbours(other, candidate).tolist())) / len(around)
                else:
                    context = 1.0
                score = shape * placed * (1 - CONTEXT_WEIGHT + CONTEXT_WEIGHT * context)
                if score > 0:
                    rows.append((score, region, candidate, colour))
        decided = _decide(rows, confidence, taken={int(m) for m in matched[anchors]})
        for region, (candidate, colour, sure) in decided.items():
            colour_of[region] = colour
            confidence[region] = sure
            matched[region] = candidate
        if not decided:
            break
        todo = np.setdiff1d(todo, np.array(sorted(decided)))
    return colour_of, confidence, matched


def _decide(
    rows: list[tuple[float, int, int, int]], confidence: np.ndarray, taken: set[int]
) -> dict[int, tuple[int, int, float]]:
    """region -> (candidate, colour, confidence) for the regions whose answer beats their current one.

    Best scores first, each counterpart region given to one region only (a region the anchors
    already matched counts as given); a region whose candidates were all given to others takes its
    best one anyway (a part split in two by an occluder), at half the confidence.
    """
    best_other: dict[tuple[int, int], float] = {}  # (region, colour) -> best score of that colour
    for score, region, _, colour in rows:
        key = (region, colour)
        best_other[key] = max(best_other.get(key, 0.0), score)
    by_region: dict[int, list[tuple[float, int]]] = {}
    for (region, colour), score in best_other.items():
        by_region.setdefault(region, []).append((score, colour))

    def sureness(region: int, colour: int, score: float) -> float:
        rival = max((s for s, c in by_region[region] if c != colour), default=0.0)
        return min(score / SCORE_FULL, 1.0) * max(0.0, 1.0 - rival / score)

    used = set(taken)
    chosen: dict[int, tuple[int, int, float]] = {}
    first_choice: dict[int, tuple[float, int, int]] = {}
    for score, region, candidate, colour in sorted(rows, key=lambda r: (-r[0], r[1], r[2])):
        first_choice.setdefault(region, (score, candidate, colour))
        if region in chosen or candidate in used:
            continue
        chosen[region] = (candidate, colour, sureness(region, colour, score))
        used.add(candidate)
    for region, (score, candidate, colour) in first_choice.items():
        if region not in chosen:
            chosen[region] = (candidate, colour, 0.5 * sureness(region, colour, score))
    return {region: answer for region, answer in chosen.items() if answer[2] > confidence[region]}


__all__ = ["Counterpart", "local_motion", "match_by_structure"]
