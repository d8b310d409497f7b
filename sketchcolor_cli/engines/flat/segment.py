"""Segmentation for the flat engine: line art -> closed regions, and exact-colour helpers.

A line-art frame (H x W x 4 uint16) is split into pixel classes:

* ink line: dark or strongly coloured (on transparent paper: opaque), and not a hint colour;
* hint line: saturated red / green / blue strokes that separate shadow and highlight regions
  and take the colour of an adjacent region in the final frame (when ``hint_lines`` is on);
* paper: everything else.

Ink and hint pixels both separate regions. Small gaps in the lines are closed so that regions
don't leak: the line mask is thickened by half the largest gap (a disc dilation) and the regions
are labelled on what is left (that gives the topology: each gap is now shut); then the paper that
only the thickening covered is handed back, growing each region through 4-neighbours so it never
crosses a line (that keeps the geometry: no pixel changes class, a gap is split between its two
sides). A line-enclosed region that the thickening swallowed entirely (a thin strip, a small
highlight) is kept as its own region. Regions of ``min_region_px`` pixels or fewer become label 0
and take a neighbour's colour when painted. Regions are 4-connected, so an 8-connected (diagonal)
line seals them.

The module also indexes exact colours (`index_colours`) and votes the most common exact colour
per region (`vote_colours`), which matching uses for references, key frames and previous fills.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

FULL = 65535

# Hint colours: the strongest channel exceeds the weakest by this much (0..1) ...
HINT_MIN_CHROMA = 0.4
# ... and the middle channel stays near the weakest (so orange, magenta, cyan, yellow are not hints).
HINT_MAX_MIDDLE_SHARE = 0.35
# Anti-aliased fringe of a hint stroke: weaker colour next to a hint pixel; it carries no ink.
HINT_FRINGE_MIN_CHROMA = 0.08
# Paper counts as transparent when at least this share of pixels is less than half opaque.
TRANSPARENT_PAPER_SHARE = 0.01
# In a reference image without line art, near-black unsaturated pixels are taken as drawn lines.
REFERENCE_INK_MAX_VALUE = 0.15
REFERENCE_INK_MAX_CHROMA = 0.1


@dataclass
class LineClasses:
    """Per-pixel classification of a line-art image."""

    line_alpha: np.ndarray  # H x W float32 in [0, 1]: ink coverage (0 on hint lines and paper)
    ink: np.ndarray  # H x W bool: ink line pixels (line_alpha above the threshold)
    hint: np.ndarray  # H x W bool: hint line pixels (region-splitting colour strokes)
    transparent_paper: bool  # True when the line alpha came from the alpha channel


@dataclass
class Segmentation:
    """Regions of one drawing. Label 0 = line (ink or hint) or a speck merged into a neighbour."""

    labels: np.ndarray  # H x W int32, 0 = line / merged speck, 1..n = regions
    n_regions: int
    area: np.ndarray  # (n + 1,) int64 pixel count per label (index 0 = line pixels)
    touches_border: np.ndarray  # (n + 1,) bool: the region reaches the image border
    line_alpha: np.ndarray  # H x W float32 ink coverage in [0, 1]
    ink: np.ndarray  # H x W bool
    hint: np.ndarray  # H x W bool
    transparent_paper: bool
    colors: np.ndarray | None = None  # (n + 1, 4) uint16 exact colour per region, if known
    runs: "Runs | None" = None  # runs of equal labels along rows (for moments), if known

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape  # type: ignore[return-value]

    def analyse(self) -> "Segmentation":
        """Compute now the per-region properties that matching and painting read (they are
        cached), so that a reader thread can do this frame-local work ahead of the match."""
        for name in ("grown", "adjacency", "bbox", "centroid", "covariance", "orientation"):
            getattr(self, name)
        return self

    @cached_property
    def _sums(self) -> np.ndarray:
        """(6, n + 1) float64 per-label sums of 1, x, y, x*x, y*y, x*y (moments up to order 2).

        Summed over the runs of equal labels along each row in closed form: a full-HD frame has a
        few hundred thousand runs instead of two million pixels.
        """
        runs = self.runs if self.runs is not None else Runs.of(self.labels)
        count = runs.length.astype(np.float64)
        row, first = np.divmod(runs.start, self.labels.shape[1])
        y = row.astype(np.float64)
        x0 = first.astype(np.float64)
        x1 = x0 + count - 1  # last column of the run

        def squares_to(k: np.ndarray) -> np.ndarray:  # 0^2 + 1^2 + ... + k^2
            return k * (k + 1) * (2 * k + 1) / 6

        sum_x = count * (x0 + x1) / 2
        size = self.n_regions + 1
        label = runs.label
        return np.stack(
            [
                self.area.astype(np.float64),
                np.bincount(label, weights=sum_x, minlength=size),
                np.bincount(label, weights=y * count, minlength=size),
                np.bincount(label, weights=squares_to(x1) - squares_to(x0 - 1), minlength=size),
                np.bincount(label, weights=y * y * count, minlength=size),
                np.bincount(label, weights=y * sum_x, minlength=size),
            ]
        )

    @cached_property
    def centroid(self) -> np.ndarray:
        """(n + 1, 2) float64 (x, y) centre of each region."""
        sums = self._sums
        count = np.maximum(sums[0], 1.0)
        return np.stack([sums[1] / count, sums[2] / count], axis=1)

    @cached_property
    def covariance(self) -> np.ndarray:
        """(n + 1, 3) float64 central second moments per pixel: var x, var y, cov xy."""
        sums = self._sums
        count = np.maximum(sums[0], 1.0)
        cx, cy = sums[1] / count, sums[2] / count
        var_x = np.maximum(sums[3] / count - cx * cx, 0.0)
        var_y = np.maximum(sums[4] / count - cy * cy, 0.0)
        cov_xy = sums[5] / count - cx * cy
        # A single pixel has zero spread; a pixel is a 1 x 1 square, whose variance is 1/12.
        return np.stack([var_x + 1 / 12, var_y + 1 / 12, cov_xy], axis=1)

    @cached_property
    def orientation(self) -> tuple[np.ndarray, np.ndarray]:
        """(angle, elongation) per region: its major axis in radians, and 0 = round .. 1 = a line,
        from the second moments."""
        var_x, var_y, cov_xy = self.covariance.T
        half_trace, radius = (var_x + var_y) / 2, np.hypot((var_x - var_y) / 2, cov_xy)
        minor = np.maximum(half_trace - radius, 0.0)
        angle = 0.5 * np.arctan2(2 * cov_xy, var_x - var_y)
        return angle, 1.0 - np.sqrt(minor / np.maximum(half_trace + radius, 1e-12))

    @cached_property
    def grown(self) -> np.ndarray:
        """Labels with every line pixel given its nearest region's label (how the fill is painted)."""
        from .paint import nearest_region  # paint builds on this module

        return nearest_region(self.labels)

    @cached_property
    def adjacency(self) -> tuple[np.ndarray, np.ndarray]:
        """(neighbours, offsets): CSR lists of the regions that touch each region across a line
        (region ``r``'s neighbours are ``neighbours[offsets[r]:offsets[r + 1]]``)."""
        grown = self.grown
        size = self.n_regions + 1
        keys = []
        for a, b in ((grown[:, :-1], grown[:, 1:]), (grown[:-1, :], grown[1:, :])):
            differ = a != b
            low, high = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
            keys.append(np.unique(low.astype(np.int64) * size + high))
        pairs = np.unique(np.concatenate(keys))
        low, high = np.divmod(pairs, size)
        source = np.concatenate([low, high])
        target = np.concatenate([high, low])
        order = np.lexsort((target, source))
        offsets = np.searchsorted(source[order], np.arange(size + 1))
        return target[order], offsets

    @cached_property
    def bbox(self) -> np.ndarray:
        """(n + 1, 4) int64 x, y, width, height per region (zeros for empty labels)."""
        height, width = self.labels.shape
        runs = self.runs if self.runs is not None else Runs.of(self.labels)
        row, first = np.divmod(runs.start, width)
        last = first + runs.length - 1
        size = self.n_regions + 1
        x0 = np.full(size, width, np.int64)
        y0 = np.full(size, height, np.int64)
        x1 = np.full(size, -1, np.int64)
        y1 = np.full(size, -1, np.int64)
        np.minimum.at(x0, runs.label, first)
        np.minimum.at(y0, runs.label, row)
        np.maximum.at(x1, runs.label, last)
        np.maximum.at(y1, runs.label, row)
        present = x1 >= 0
        return np.stack(
            [
                np.where(present, x0, 0),
                np.where(present, y0, 0),
                np.where(present, x1 - x0 + 1, 0),
                np.where(present, y1 - y0 + 1, 0),
            ],
            axis=1,
        )


def _planes(image: np.ndarray, what: str) -> tuple[np.ndarray, ...]:
    """(r, g, b, a, high, low): contiguous uint16 planes, and the per-pixel max / min of r, g, b."""
    if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint16:
        raise ValueError(
            f"{what}: expected an H x W x 4 uint16 array (see engines/base.py to_rgba16), "
            f"got shape {image.shape} dtype {image.dtype}"
        )
    # cv2 works plane by plane on contiguous memory; numpy reductions over a 4-wide last axis are
    # an order of magnitude slower on full-HD frames.
    r, g, b, a = cv2.split(np.ascontiguousarray(image))
    high = cv2.max(cv2.max(r, g), b)
    low = cv2.min(cv2.min(r, g), b)
    return r, g, b, a, high, low


def _hint_hue(planes: tuple[np.ndarray, ...], min_chroma: float, among: np.ndarray | None = None) -> np.ndarray:
    """Pixels (of `among`, if given) whose colour is a clear red, green or blue of `min_chroma` or more."""
    r, g, b, _, high, low = planes
    candidates = cv2.subtract(high, low) >= np.uint16(round(min_chroma * FULL))
    if among is not None:
        candidates &= among
    where = np.flatnonzero(candidates)  # coloured pixels are few: test only those
    rr, gg, bb = (plane.ravel()[where].astype(np.int64) for plane in (r, g, b))
    top, bottom = high.ravel()[where].astype(np.int64), low.ravel()[where].astype(np.int64)
    middle = rr + gg + bb - top - bottom
    hue_ok = (middle - bottom) <= HINT_MAX_MIDDLE_SHARE * (top - bottom)
    out = np.zeros(r.size, dtype=bool)
    out[where[hue_ok]] = True
    return out.reshape(r.shape)


def classify_line_art(
    line_art: np.ndarray, line_threshold: float, hint_lines: bool, what: str = "line art"
) -> LineClasses:
    """Split line-art pixels into ink, hint and paper, and measure the ink coverage."""
    planes = _planes(line_art, what)
    alpha, low = planes[3], planes[5]
    transparent = np.count_nonzero(alpha < FULL // 2 + 1) >= TRANSPARENT_PAPER_SHARE * alpha.size
    if transparent:
        strength = alpha.astype(np.float32) * np.float32(1.0 / FULL)
    else:
        # The least alpha that explains the pixel as ink over white paper ("colour to alpha"):
        # 1 - luminance for black and grey ink, and full for a saturated coloured stroke, so
        # coloured lines count as lines and their original colour can be restored exactly.
        strength = cv2.subtract(np.full_like(low, FULL), low).astype(np.float32) * np.float32(1.0 / FULL)
    if hint_lines:
        hint = _hint_hue(planes, HINT_MIN_CHROMA)
        if transparent:
            hint &= alpha > np.uint16(round(line_threshold * FULL))
        if hint.any():
            near_hint = cv2.dilate(hint.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
            fringe = _hint_hue(planes, HINT_FRINGE_MIN_CHROMA, among=near_hint)
            # Hint strokes are not ink: they vanish in the finished frame, so they carry no alpha.
            strength[fringe | hint] = 0.0
    else:
        hint = np.zeros(alpha.shape, dtype=bool)
    ink = strength > np.float32(line_threshold)
    return LineClasses(line_alpha=strength, ink=ink, hint=hint, transparent_paper=bool(transparent))


def _gap_kernel(gap_close_px: int) -> np.ndarray:
    # A disc of diameter gap + 1 bridges openings of up to `gap` pixels between two line ends.
    size = gap_close_px + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the mask's set pixels, widened by `margin` and clipped to the image."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    height, width = mask.shape
    return max(y - margin, 0), min(y + h + margin, height), max(x - margin, 0), min(x + w + margin, width)


def _grow_into(labels: np.ndarray, todo: np.ndarray, steps: int) -> np.ndarray:
    """Spread labels into the `todo` pixels, one 4-neighbour step at a time (never across lines).

    Returns the pixels of `todo` that are still unlabelled after `steps` steps.
    """
    y0, y1, x0, x1 = _box(todo, margin=1)
    view = labels[y0:y1, x0:x1]
    # cv2.dilate has no int32; uint16 is the fastest exact type when the labels fit.
    grown_labels = view.astype(np.uint16 if int(view.max()) < FULL else np.float32)
    open_ = todo[y0:y1, x0:x1].copy()
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    for _ in range(steps):
        # Open pixels hold 0, so copying the dilation onto all of them (0 where no neighbour has a
        # label yet) is the same as copying only where it found one.
        np.copyto(grown_labels, cv2.dilate(grown_labels, cross), where=open_)
        open_ &= grown_labels == 0
    view[...] = grown_labels.astype(np.int32)
    left = np.zeros_like(todo)
    left[y0:y1, x0:x1] = open_
    return left


def _relabel_from_neighbours(labels: np.ndarray, todo: np.ndarray) -> None:
    """Give each 4-connected blob of `todo` pixels the commonest label among its 4-neighbours.

    A 4-neighbour never lies across a line, so the blob gets a region from its own side.
    """
    height, width = labels.shape
    n_blobs, blobs = cv2.connectedComponents(todo.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    where = np.flatnonzero(todo)
    flat_labels, flat_todo = labels.ravel(), todo.ravel()
    column = where % width
    blob_ids, neighbour_labels = [], []
    for offset, inside in (
        (1, column < width - 1), (-1, column > 0), (width, where < (height - 1) * width), (-width, where >= width),
    ):
        pixel = where[inside]
        neighbour = pixel + offset
        good = (flat_labels[neighbour] > 0) & ~flat_todo[neighbour]
        blob_ids.append(blobs.ravel()[pixel[good]])
        neighbour_labels.append(flat_labels[neighbour[good]])
    blob_id = np.concatenate(blob_ids).astype(np.int64)
    neighbour = np.concatenate(neighbour_labels).astype(np.int64)
    choice = np.zeros(n_blobs, dtype=np.int32)
    if blob_id.size:
        stride = int(neighbour.max()) + 1
        pairs, counts = np.unique(blob_id * stride + neighbour, return_counts=True)
        pair_blob, pair_label = pairs // stride, pairs % stride
        order = np.lexsort((pair_label, -counts, pair_blob))
        first = order[np.r_[True, pair_blob[order][1:] != pair_blob[order][:-1]]]
        choice[pair_blob[first]] = pair_label[first]
    flat_labels[where] = choice[blobs.ravel()[where]]


def label_regions(
    separator: np.ndarray, gap_close_px: int, min_region_px: int
) -> tuple[np.ndarray, np.ndarray, Runs]:
    """Regions (int32 labels, 0 = separator or speck) of the pixels outside `separator`, their
    areas and their runs."""
    free = ~separator
    if gap_close_px <= 0 or not separator.any():
        _, labels = cv2.connectedComponents(free.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
        return _drop_specks(labels, min_region_px)
    # Thicken the lines by half the largest gap: gaps up to `gap_close_px` close, and the
    # components of what is left are the sealed regions (the topology).
    sealed = cv2.dilate(
        separator.view(np.uint8), _gap_kernel(gap_close_px), borderType=cv2.BORDER_REPLICATE
    ).view(bool)
    n_seed, labels = cv2.connectedComponents((~sealed).view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    reopened = free & sealed  # paper that only the thickening covered: hand it back (the geometry)
    if reopened.any():
        # Line-bounded components that the thickening swallowed whole (thin strips, small
        # highlights) stay regions of their own rather than vanishing into a neighbour.
        n_open, open_labels, open_stats, _ = cv2.connectedComponentsWithStats(
            free.view(np.uint8), connectivity=4, ltype=cv2.CV_32S
        )
        where = np.flatnonzero(reopened)
        home = open_labels.ravel()[where]
        # A component is lost when every one of its pixels was reopened.
        lost = np.bincount(home, minlength=n_open) == open_stats[:, cv2.CC_STAT_AREA]
        lost[0] = False
        todo = reopened
        if lost.any():
            lost_label = np.zeros(n_open, dtype=np.int32)
            lost_label[lost] = n_seed + np.arange(int(lost.sum()), dtype=np.int32)
            own = lost[home]
            labels.ravel()[where[own]] = lost_label[home[own]]
            todo = reopened.copy()
            todo.ravel()[where[own]] = False
        if todo.any():
            # The thickening reached gap_close_px / 2 from the lines; 4-neighbour steps need a
            # little more along diagonals. Stragglers (long narrow channels) are settled below.
            left = _grow_into(labels, todo, steps=gap_close_px // 2 + 2)
            if left.any():  # long narrow channels: one label per leftover blob, from its side
                _relabel_from_neighbours(labels, left)
    # Separator pixels were sealed, so they are still 0.
    return _drop_specks(labels, min_region_px)


@dataclass
class Runs:
    """Runs of equal labels along the rows of a label image (row-major, never across rows)."""

    start: np.ndarray  # (r,) flat index of each run's first pixel
    length: np.ndarray  # (r,) pixels in the run
    label: np.ndarray  # (r,) the run's label

    @classmethod
    def of(cls, labels: np.ndarray) -> "Runs":
        height, width = labels.shape
        change = np.empty(labels.shape, dtype=bool)
        change[:, 0] = True
        np.not_equal(labels[:, 1:], labels[:, :-1], out=change[:, 1:])
        start = np.flatnonzero(change)
        return cls(start, np.diff(np.append(start, height * width)), labels.ravel()[start])


def _drop_specks(labels: np.ndarray, min_region_px: int) -> tuple[np.ndarray, np.ndarray, Runs]:
    """Set regions of `min_region_px` pixels or fewer to 0 and renumber the rest 1..n.

    Returns the new labels, their pixel counts (index 0 = line and specks) and their runs.
    """
    runs = Runs.of(labels)
    area = np.bincount(runs.label, weights=runs.length).astype(np.int64)
    keep = area > min_region_px
    keep[0] = False
    new_area = np.concatenate([[area[~keep].sum()], area[keep]]).astype(np.int64)
    if keep[1:].all():  # nothing to drop: the labels are already 1..n
        return labels, new_area, runs
    renumber = np.zeros(area.size, dtype=np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    # Neighbouring runs may now share label 0; the sums over runs stay right.
    return renumber[labels], new_area, Runs(runs.start, runs.length, renumber[runs.label])


def _border_labels(labels: np.ndarray, size: int) -> np.ndarray:
    touches = np.zeros(size, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        touches[edge] = True
    touches[0] = False
    return touches


def _build(labels: np.ndarray, area: np.ndarray, runs: Runs, classes: LineClasses) -> Segmentation:
    n_regions = len(area) - 1
    return Segmentation(
        runs=runs,
        labels=labels,
        n_regions=n_regions,
        area=area,
        touches_border=_border_labels(labels, n_regions + 1),
        line_alpha=classes.line_alpha,
        ink=classes.ink,
        hint=classes.hint,
        transparent_paper=classes.transparent_paper,
    )


def regions_from_labels(
    labels: np.ndarray,
    n_regions: int,
    *,
    grown: np.ndarray | None = None,
    adjacency: tuple[np.ndarray, np.ndarray] | None = None,
) -> Segmentation:
    """A Segmentation of a label image made elsewhere (e.g. a drawing warped onto a frame): label
    numbers are kept, so some may be empty; there are no line classes.

    A cut-out of a drawing already analysed passes that drawing's `grown` labels (cut out the
    same way) and its `adjacency` (a superset of the cut-out's: regions outside are simply not
    met), instead of having them computed again for every frame."""
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    runs = Runs.of(labels)
    area = np.bincount(runs.label, weights=runs.length, minlength=n_regions + 1).astype(np.int64)
    ink = labels == 0
    classes = LineClasses(
        line_alpha=ink.astype(np.float32), ink=ink, hint=np.zeros_like(ink), transparent_paper=False
    )
    seg = _build(labels, area[: n_regions + 1], runs, classes)
    if grown is not None:
        if grown.shape != labels.shape:
            raise ValueError(f"grown labels {grown.shape} differ from the labels {labels.shape}")
        seg.__dict__["grown"] = grown  # fills the cached property
    if adjacency is not None:
        seg.__dict__["adjacency"] = adjacency
    return seg


def segment_line_art(
    line_art: np.ndarray,
    *,
    line_threshold: float,
    gap_close_px: int,
    hint_lines: bool,
    min_region_px: int,
    what: str = "line art",
) -> Segmentation:
    """Split a line-art frame into regions (see the module docstring)."""
    classes = classify_line_art(line_art, line_threshold, hint_lines, what)
    labels, area, runs = label_regions(classes.ink | classes.hint, gap_close_px, min_region_px)
    return _build(labels, area, runs, classes)


def segment_colour_regions(image: np.ndarray, *, min_region_px: int, what: str = "reference") -> Segmentation:
    """Regions of equal exact colour in a finished image that came without line art.

    Near-black unsaturated pixels count as drawn lines; pixels where the colour changes
    (anti-aliasing, edges) separate regions; each region's colour is its exact colour.
    """
    _, _, _, alpha, high, low = _planes(image, what)
    ink = (high <= np.uint16(round(REFERENCE_INK_MAX_VALUE * FULL))) & (
        cv2.subtract(high, low) <= np.uint16(round(REFERENCE_INK_MAX_CHROMA * FULL))
    )
    ink &= alpha > FULL // 2
    keys = colour_keys(image)
    edge = np.zeros(keys.shape, dtype=bool)
    edge[:, :-1] |= keys[:, :-1] != keys[:, 1:]
    edge[:-1, :] |= keys[:-1, :] != keys[1:, :]
    labels, area, runs = label_regions(ink | edge, gap_close_px=0, min_region_px=min_region_px)
    line_alpha = np.where(ink, np.float32(1.0), np.float32(0.0))
    classes = LineClasses(line_alpha=line_alpha, ink=ink, hint=np.zeros_like(ink), transparent_paper=False)
    seg = _build(labels, area, runs, classes)
    index, palette = index_colours(image)
    winner, _, _ = vote_colours(seg.labels, index, seg.n_regions + 1, len(palette))
    seg.colors = palette[winner]
    seg.colors[0] = 0
    return seg


# ---- exact colours -------------------------------------------------------------------------

_HASH_MULTIPLIERS = (
    0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
    0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53,
)


def colour_keys(image: np.ndarray) -> np.ndarray:
    """H x W uint64: one key per exact RGBA colour; every fully transparent pixel shares key 0."""
    keys = np.ascontiguousarray(image).view(np.uint64)[:, :, 0]
    return np.where(image[:, :, 3] == 0, np.uint64(0), keys)


def keys_to_colours(keys: np.ndarray) -> np.ndarray:
    """(k,) uint64 keys back to (k, 4) uint16 RGBA."""
    return np.ascontiguousarray(keys, dtype=np.uint64).view(np.uint16).reshape(-1, 4)


def _lookup(keys: np.ndarray, palette_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each key in the sorted `palette_keys` and whether it was found there.

    A multiplicative hash table makes this a gather instead of a binary search per pixel.
    """
    count = len(palette_keys)
    bits = max(8, int(np.ceil(np.log2(count + 1))) + 3)
    if bits <= 24:
        shift = np.uint64(64 - bits)
        for multiplier in _HASH_MULTIPLIERS:
            slots = (palette_keys * np.uint64(multiplier)) >> shift
            if len(np.unique(slots)) == count:
                table = np.zeros(1 << bits, dtype=np.int32)
                table[slots.astype(np.int64)] = np.arange(count, dtype=np.int32)
                index = table[((keys * np.uint64(multiplier)) >> shift).astype(np.intp)]
                return index, palette_keys[index] == keys
    index = np.minimum(np.searchsorted(palette_keys, keys), count - 1).astype(np.int32)
    return index, palette_keys[index] == keys


def index_colours(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H x W int32 index, (k, 4) uint16 palette) of the exact colours of an RGBA image.

    The palette is sorted by key, so the result does not depend on pixel order.
    """
    keys = colour_keys(image).ravel()
    # Most images here are flat: a sparse sample finds nearly every colour, the rest is a fix-up.
    palette_keys = np.unique(keys[:: max(1, keys.size // 65536)])
    while True:
        index, found = _lookup(keys, palette_keys)
        if found.all():
            break
        palette_keys = np.union1d(palette_keys, np.unique(keys[~found]))
    return index.reshape(image.shape[:2]), keys_to_colours(palette_keys)


def vote_colours(
    labels: np.ndarray,
    colour_index: np.ndarray,
    n_labels: int,
    n_colours: int,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Most common colour index per label: (winner, winner votes, total votes), each (n_labels,).

    Pixels with a negative colour index, or outside `valid`, do not vote. Ties go to the lower
    colour index (deterministic); labels without votes get index 0.
    """
    # Bin 0 of each label collects the pixels that do not vote: no compaction pass needed.
    slot = colour_index.ravel() + 1
    np.maximum(slot, 0, out=slot)
    if valid is not None:
        slot *= valid.ravel()
    width = n_colours + 1
    flat_labels = labels.ravel().astype(np.intp)
    if n_labels * width <= 16_000_000:
        key = flat_labels * width
        key += slot
        votes = np.bincount(key, minlength=n_labels * width)
        votes = votes[: n_labels * width].reshape(n_labels, width)[:, 1:]
        winner = votes.argmax(axis=1)
        return winner, votes[np.arange(n_labels), winner], votes.sum(axis=1)
    # Many labels times many colours (anti-aliased references): count only the pairs that occur.
    voting = slot > 0
    pairs, counts = np.unique(flat_labels[voting] * width + slot[voting], return_counts=True)
    pair_label, pair_colour = pairs // width, pairs % width - 1
    order = np.lexsort((pair_colour, -counts, pair_label))  # per label: most votes, then lowest index
    first = order[np.r_[True, pair_label[order][1:] != pair_label[order][:-1]]]
    winner = np.zeros(n_labels, dtype=np.int64)
    best = np.zeros(n_labels, dtype=np.int64)
    winner[pair_label[first]] = pair_colour[first]
    best[pair_label[first]] = counts[first]
    total = np.bincount(pair_label, weights=counts, minlength=n_labels)[:n_labels].astype(np.int64)
    return winner, best, total
