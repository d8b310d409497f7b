"""Paint-bucket accuracy metrics: how exactly a colorized frame matches its ground truth.

The six metrics follow the definitions of BasicPBC (Dai et al., CVPR 2024, GitHub
``ykdai/BasicPBC``, commit 223bf78), the numbers every later paint-bucket paper reports (DACoN
re-implements the same definitions in ``kzmngt/DACoN`` ``dacon/utils/metrics.py``,
``calculate_accuracy``). The code here is our own, written from the definitions below.

Where BasicPBC defines things (``paint/utils.py`` unless named otherwise):

* **Segments** (``paint/lineart.py`` ``LineArt.__init__`` l.12-26, ``erase_single_pixels`` l.36-54;
  ``paint/utils.py`` ``read_line_2_np`` l.673-691): a pixel of the line art is line when its alpha
  is above 100 (RGBA input) or its grey below 150 (RGB input); the non-line pixels are split into
  **4-connected** components; components of at most 3 px join the smallest 8-adjacent component
  (or the line when none touches them). Label 0 is the line and is never scored. Their test
  sets' label maps come from the coloured ground truth instead (``paint/colorlabel.py``
  ``ColorLabel.extract_label_map`` l.118-173): 8-connected regions of one exact colour, black
  being line, single-pixel regions dropped, pure white given alpha 0 (background).
* **A segment's colour** (``inference_line_frames.py`` ``extract_color_dict`` l.39-50 with
  ``process_gt`` l.693-705): the truth colour of a segment is the **majority** (most frequent)
  RGBA colour of its pixels. BasicPBC's own predictions give one colour per segment by
  construction; DACoN turns a colour image into segment colours the same majority way
  (``dacon/utils/image_process.py`` ``extract_color`` l.208-234). A segment is right when its
  predicted colour equals the truth colour exactly.
* **The metrics** (``eval_json_stage2`` l.337-385; ``threshold=10``), over the segments of one
  frame, with ``n_i`` the pixel count of segment ``i``:

  - ``acc``: right segments / all segments.
  - ``acc_thres``: right segments with ``n_i > 10`` / segments with ``n_i > 10``. BasicPBC's
    denominator is ``sum(index_counts > 10) - 1`` (every label over 10 px, less one for the line
    label 0, which assumes the line has more than 10 px). **Background segments are not
    excluded** in stage 2 (the consecutive-frame
    figures); DACoN counts them too. (``eval_json_stage1`` l.388-428, the semantic-label stage of
    BasicPBC-Ref, is a different measure and is not used here.)
  - ``pix_acc``: pixels of right segments / all non-line pixels (``sum(index_counts[1:])``).
  - ``pix_acc_wobg`` ("Pix-F-Acc"): the same over segments whose truth is not background.
  - ``bmiou``: background IoU by segments: segments that are background in both truth and
    prediction / segments that are background in either.
  - ``pix_bmiou``: the same weighted by pixels.

  Background there is a colour in ``[[0, 0, 0, 0], [255, 255, 255, 0]]``, i.e. transparent.
* **Averaging** (``calculate_avg`` l.554-582, ``evaluate`` l.585-671, ``eval_json_folder``
  l.474-551): every frame's six ratios are computed on their own and **averaged with equal weight
  per frame** (not pooled pixel or segment counts); in the consecutive-frame modes the first
  frame of each clip is skipped (``skip_first=True``: it is the given key frame); clips
  (characters) are then averaged with equal weight per clip. DACoN (``dacon/test.py`` l.65-71)
  averages per frame over all frames.

Where we differ, and why:

* **Line art → segments** (`segment_labels`): the line test must work on both paper-white and
  transparent line art in our uint16 convention, so a pixel is line when its ink,
  ``alpha * (1 - mean(R, G, B))`` (one minus its grey composited over white), is above
  ``line_threshold`` (0.5; BasicPBC's 100/255 alpha and 150/255 grey cut sit close to it).
  4-connectivity and the merge of components of at most 3 px follow BasicPBC. BasicPBC also
  merges red/blue/green shading-hint lines into a neighbouring region; here a hint line dark
  enough to pass the test is line and so is not scored, and a lighter one becomes a segment.
* **No line art and no label map**: segments are the 8-connected regions of one exact truth
  colour (as BasicPBC builds its test label maps), single-pixel regions not scored. Unlike
  BasicPBC, black is a colour there, not line: our truth is a fill layer without lines, where
  black is a legitimate palette colour. Give line art when the truth has lines drawn in.
* **Colour equality**: exact on RGB (16 bit); every transparent (alpha 0) colour is one and the
  same "background" colour whatever RGB sits under it, because straight-alpha RGB under alpha 0
  means nothing. (BasicPBC compares RGBA lists, so ``[0,0,0,0]`` vs ``[255,255,255,0]`` counts
  wrong for ``acc`` but right for ``bmiou``; here it is right for both.) Partial alpha is ignored
  in the comparison: a fill layer is opaque or transparent. A predicted image (not only a fill
  layer) gets its segment colours by the same majority vote as the truth, so, as in BasicPBC,
  ``pix_acc`` weighs whole segments: stray pixels inside a segment whose majority is right are
  not counted wrong. A tied vote goes to the lowest packed colour (transparent first).
* **Background**: a segment whose truth colour is transparent (``background_alpha_zero=True``,
  the default, as our fill layers use alpha 0 for background, matching BasicPBC's rule). When the
  truth has no transparent segment at all (a flattened image), or with
  ``background_alpha_zero=False``, the background colour is the truth colour of the largest
  segment touching the image border, and every segment of that truth colour is background, in
  the truth and in the prediction alike (a transparent prediction counts as background too).
  This mirrors BasicPBC turning pure white into background in its colour-derived labels; like
  that rule, a foreground region painted in the background colour is counted as background.
  With no border-touching segment there is no truth background.
* **Undefined ratios** are ``None``, not 0 or 1: a frame with no segment over 10 px has no
  ``acc_thres``; one without foreground pixels has no ``pix_acc_wobg``; one where neither truth
  nor prediction has any background has no ``bmiou``/``pix_bmiou`` (BasicPBC reports 1.0 there,
  DACoN 0.0; either biases the mean). A ``None`` is left out of that metric's mean.
* **Averaging a cut** (`score_cut`): equal weight per frame, as BasicPBC. Key frames that were
  given to the engine as references are not skipped automatically; name them in
  ``exclude_frames`` (BasicPBC's ``skip_first``). Averaging over several cuts (BasicPBC first
  averages each character's clip, then the clips) is left to the caller.

Inputs are arrays in the project's pixel convention (``H x W x 4`` uint16 sRGB, straight alpha;
see ``sketchcolor_cli.engines.base``); other layouts are converted with ``to_rgba16``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from rich.table import Table

from sketchcolor_cli.engines.base import FULL, to_rgba16

METRIC_NAMES: tuple[str, ...] = ("acc", "acc_thres", "pix_acc", "pix_acc_wobg", "bmiou", "pix_bmiou")
# Column titles as the papers print them.
METRIC_TITLES: dict[str, str] = {
    "acc": "Acc",
    "acc_thres": "Acc-Thres",
    "pix_acc": "Pix-Acc",
    "pix_acc_wobg": "Pix-F-Acc",
    "bmiou": "BmIoU",
    "pix_bmiou": "Pix-BmIoU",
}
SIZE_THRESHOLD = 10  # BasicPBC's `threshold`: acc_thres counts segments of more than this many px
LINE_THRESHOLD = 0.5  # ink above which a line-art pixel is line
MERGE_AT_MOST = 3  # BasicPBC's erase_single_pixels(3): components this small join a neighbour
MAX_TRUTH_COLOURS = 4096  # more than this and the truth is no flat fill to take segments from

BACKGROUND_KEY = -1  # the colour key of every transparent pixel
_DENSE_VOTE_LIMIT = 1 << 24  # segments x colours up to which votes go in a dense table
_IMAGE_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".exr", ".jpg", ".jpeg", ".webp", ".bmp", ".tga", ".dpx"})
_LABEL_SUFFIXES = _IMAGE_SUFFIXES | {".npy"}
_LAST_DIGITS = re.compile(r"(\d+)(?!.*\d)")

BackgroundRule = Literal["alpha", "border", "none"]


@dataclass(frozen=True)
class FrameScores:
    """The six BasicPBC metrics of one frame (fractions in [0, 1]; None where undefined)."""

    acc: float | None
    acc_thres: float | None
    pix_acc: float | None
    pix_acc_wobg: float | None
    bmiou: float | None
    pix_bmiou: float | None
    segments: int  # scored segments (line excluded)
    segments_over_threshold: int  # segments of more than SIZE_THRESHOLD px
    pixels: int  # scored (non-line) pixels
    background_segments: int = 0  # segments whose truth is background
    background_rule: BackgroundRule = "none"  # how background was found (see module docstring)
    frame: int | None = None

    def metric(self, name: str) -> float | None:
        if name not in METRIC_NAMES:
            raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}")
        return getattr(self, name)


@dataclass
class CutScores:
    """Per-frame scores of a cut and their equal-weight mean per metric."""

    frames: list[FrameScores]
    means: dict[str, float | None]  # metric -> mean over the frames that define it
    frames_counted: dict[str, int]  # metric -> how many frames went into its mean
    excluded_frames: list[int] = field(default_factory=list)  # scored but left out of the means
    missing_pred: list[int] = field(default_factory=list)  # truth frames with no prediction
    missing_truth: list[int] = field(default_factory=list)  # predicted frames with no truth
    skipped: dict[int, str] = field(default_factory=dict)  # frame -> why it was not scored


# --------------------------------------------------------------------------------------------
# Segments


def line_mask(line_art: np.ndarray, *, line_threshold: float = LINE_THRESHOLD) -> np.ndarray:
    """H x W bool: where the line art has line (ink above `line_threshold`)."""
    rgba = _as_rgba16(line_art)
    alpha = rgba[:, :, 3].astype(np.float32) / FULL
    grey = rgba[:, :, :3].astype(np.float32).mean(axis=2) / FULL
    # Ink = darkness of the pixel composited over white, so paper-white and transparent line art
    # read the same way.
    return alpha * (1.0 - grey) > line_threshold


def segment_labels(
    line_art: np.ndarray,
    *,
    line_threshold: float = LINE_THRESHOLD,
    merge_at_most: int = MERGE_AT_MOST,
) -> np.ndarray:
    """Label map of the closed regions of a line art: int32, 0 = line, segments 1..N.

    Regions are 4-connected; regions of at most `merge_at_most` pixels join the smallest
    8-adjacent region, or the line when no region touches them (BasicPBC's rule).
    """
    free = (~line_mask(line_art, line_threshold=line_threshold)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(free, connectivity=4, ltype=cv2.CV_32S)
    labels[free == 0] = 0
    if merge_at_most > 0:
        _merge_small_regions(labels, stats, merge_at_most)
    return _consecutive(labels)


def _merge_small_regions(labels: np.ndarray, stats: np.ndarray, merge_at_most: int) -> None:
    """In place: each small region takes the label of its smallest 8-adjacent neighbour, or 0."""
    areas = stats[:, cv2.CC_STAT_AREA]
    height, width = labels.shape
    kernel = np.ones((3, 3), np.uint8)
    for label in np.flatnonzero(areas[1:] <= merge_at_most) + 1:
        x, y, w, h = (int(v) for v in stats[label, :4])
        y0, y1, x0, x1 = max(y - 1, 0), min(y + h + 1, height), max(x - 1, 0), min(x + w + 1, width)
        window = labels[y0:y1, x0:x1]
        mask = window == label
        if not mask.any():  # already absorbed by an earlier small region
            continue
        ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
        neighbours = np.unique(window[ring])
        neighbours = neighbours[(neighbours != 0) & (neighbours != label)]
        # The smallest neighbour by original area, as BasicPBC picks.
        window[mask] = neighbours[np.argmin(areas[neighbours])] if neighbours.size else 0


def segments_from_colors(truth: np.ndarray) -> np.ndarray:
    """Label map from a flat truth fill: 8-connected regions of one exact colour (int32).

    Transparent pixels are one colour whatever their RGB. Single-pixel regions get 0 (not
    scored), as in BasicPBC's colour-derived test labels.
    """
    keys = _colour_keys(_as_rgba16(truth))
    colours = np.unique(keys)
    if colours.size > MAX_TRUTH_COLOURS:
        raise ValueError(
            f"the truth image has {colours.size} distinct colours, more than {MAX_TRUTH_COLOURS}: it "
            "is not a flat fill, so its colour regions cannot serve as segments; give the line art "
            "(--line) or a label map (--labels)"
        )
    labels = np.zeros(keys.shape, np.int32)
    next_label = 1
    for colour in colours:
        count, regions = cv2.connectedComponents((keys == colour).astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        inside = regions > 0
        labels[inside] = regions[inside] + (next_label - 1)
        next_label += count - 1
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] <= 1] = 0
    return _consecutive(labels)


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Renumber positive labels 1..N in order; everything else becomes 0 (int32)."""
    if labels.dtype != np.int32:
        labels = labels.astype(np.int64)  # bincount takes no uint64
    if labels.size and labels.min() < 0:
        labels = np.maximum(labels, 0)
    top = int(labels.max(initial=0))
    if top > max(1 << 24, 4 * labels.size):  # huge label values (from a file): sort instead
        _, inverse = np.unique(labels, return_inverse=True)
        out = inverse.reshape(labels.shape).astype(np.int32)
        return out if (labels == 0).any() else out + 1
    present = np.bincount(labels.ravel(), minlength=top + 1) > 0  # linear time, no sort
    present[0] = False
    lookup = (np.cumsum(present) * present).astype(np.int32)
    return lookup[labels]


def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, index of each value among them) for non-negative integers."""
    top = int(values.max(initial=0))
    if top > max(1 << 24, 4 * values.size):
        distinct, inverse = np.unique(values, return_inverse=True)
        return distinct, inverse.ravel()
    present = np.bincount(values.ravel(), minlength=top + 1) > 0
    lookup = np.cumsum(present) - 1
    return np.flatnonzero(present), lookup[values]


# --------------------------------------------------------------------------------------------
# One frame


def _as_rgba16(image: np.ndarray) -> np.ndarray:
    """`to_rgba16`, without its copy when the array already is H x W x 4 uint16."""
    if image.dtype == np.uint16 and image.ndim == 3 and image.shape[2] == 4:
        return image
    return to_rgba16(image)


def _colour_keys(rgba: np.ndarray) -> np.ndarray:
    """H x W int64: RGB packed into 48 bits, BACKGROUND_KEY where alpha is 0."""
    if sys.byteorder == "little":
        # One 64-bit word per pixel is R | G << 16 | B << 32 | A << 48: mask off the alpha.
        packed = np.ascontiguousarray(rgba).view(np.uint64)[:, :, 0]
        keys = (packed & np.uint64(0xFFFF_FFFF_FFFF)).view(np.int64)
    else:
        rgb = rgba[:, :, :3].astype(np.int64)
        keys = rgb[:, :, 0] | (rgb[:, :, 1] << 16) | (rgb[:, :, 2] << 32)
    keys[rgba[:, :, 3] == 0] = BACKGROUND_KEY
    return keys


def _majority_keys(ids: np.ndarray, keys: np.ndarray, count: int) -> np.ndarray:
    """The most frequent key of each segment 1..count (index 0 unused); ties: lowest key."""
    some = np.zeros(count + 1, np.int64)
    some[ids] = keys  # one pixel's key per segment
    mixed = keys != some[ids]
    if not mixed.any():  # flat fills: every segment is one colour, no vote needed
        return some
    mixed_segment = np.zeros(count + 1, bool)
    mixed_segment[ids[mixed]] = True
    mixed_segment[0] = False  # the line: never scored, not worth a vote
    voting = mixed_segment[ids]
    if not voting.any():
        return some
    segments, local_ids = _compact(ids[voting])
    some[segments] = _vote(local_ids, keys[voting], segments.size)
    return some


def _vote(ids: np.ndarray, keys: np.ndarray, count: int) -> np.ndarray:
    """Most frequent key per id 0..count-1 (every id present); ties go to the lowest key."""
    colours, colour_ids = np.unique(keys, return_inverse=True)
    n_colours = colours.size
    combined = ids.astype(np.int64) * n_colours + colour_ids.ravel()
    if count * n_colours <= _DENSE_VOTE_LIMIT:
        votes = np.bincount(combined, minlength=count * n_colours).reshape(count, n_colours)
        best = votes.argmax(axis=1)  # first maximum = lowest colour key
    else:  # too many colours for a dense table (a generated image): sort the pairs instead
        best = np.zeros(count, np.int64)
        pairs, votes = np.unique(combined, return_counts=True)
        segment, colour = pairs // n_colours, pairs % n_colours
        order = np.lexsort((colour, -votes, segment))
        first = order[np.r_[True, segment[order][1:] != segment[order][:-1]]]
        best[segment[first]] = colour[first]
    return colours[best]


def _check_shapes(pred: np.ndarray, truth: np.ndarray, labels: np.ndarray | None, line_art: np.ndarray | None) -> None:
    expected = truth.shape[:2]
    for name, array in (("prediction", pred), ("label map", labels), ("line art", line_art)):
        if array is not None and array.shape[:2] != expected:
            raise ValueError(
                f"the {name} is {array.shape[1]}x{array.shape[0]} but the truth is "
                f"{expected[1]}x{expected[0]}; score images of the same size"
            )


def score_frame(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    line_art: np.ndarray | None = None,
    background_alpha_zero: bool = True,
    size_threshold: int = SIZE_THRESHOLD,
    line_threshold: float = LINE_THRESHOLD,
    frame: int | None = None,
) -> FrameScores:
    """Score one predicted frame against its truth (see the module docstring for definitions).

    Segments come from `labels` (integer map, values <= 0 not scored) when given, else from
    `line_art`, else from the truth's colour regions. Background: with `background_alpha_zero`
    the segments whose truth is transparent, falling back to the border rule when the truth has
    none; without it, the border rule (the truth colour of the largest border-touching segment,
    plus anything transparent). `size_threshold` is the px count a segment must exceed to count
    in `acc_thres`.
    """
    pred16, truth16 = _as_rgba16(pred), _as_rgba16(truth)
    _check_shapes(pred16, truth16, labels, line_art)
    if labels is not None:
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"the label map must be an H x W integer array, not {labels.shape} {labels.dtype}")
        segments = _consecutive(labels)
    elif line_art is not None:
        segments = segment_labels(line_art, line_threshold=line_threshold)
    else:
        segments = segments_from_colors(truth16)

    count = int(segments.max(initial=0))
    if count == 0:  # all line: nothing to score
        return FrameScores(None, None, None, None, None, None, 0, 0, 0, frame=frame)
    # Line pixels vote as "segment 0", dropped afterwards: cheaper than masking them out.
    ids = segments.ravel()
    sizes = np.bincount(ids, minlength=count + 1)[1:]
    truth_keys = _majority_keys(ids, _colour_keys(truth16).ravel(), count)[1:]
    pred_keys = _majority_keys(ids, _colour_keys(pred16).ravel(), count)[1:]

    rule: BackgroundRule = "alpha"
    if not (background_alpha_zero and (truth_keys == BACKGROUND_KEY).any()):
        border_colour = _border_background_key(segments, sizes, truth_keys)
        rule = "none" if border_colour is None else "border"
        if border_colour is not None:
            truth_keys = np.where(truth_keys == border_colour, BACKGROUND_KEY, truth_keys)
            pred_keys = np.where(pred_keys == border_colour, BACKGROUND_KEY, pred_keys)

    right = pred_keys == truth_keys
    large = sizes > size_threshold
    truth_bg = truth_keys == BACKGROUND_KEY
    pred_bg = pred_keys == BACKGROUND_KEY
    either_bg, both_bg = truth_bg | pred_bg, truth_bg & pred_bg

    return FrameScores(
        acc=_ratio(right.sum(), count),
        acc_thres=_ratio((right & large).sum(), large.sum()),
        pix_acc=_ratio(sizes[right].sum(), sizes.sum()),
        pix_acc_wobg=_ratio(sizes[right & ~truth_bg].sum(), sizes[~truth_bg].sum()),
        bmiou=_ratio(both_bg.sum(), either_bg.sum()),
        pix_bmiou=_ratio(sizes[both_bg].sum(), sizes[either_bg].sum()),
        segments=count,
        segments_over_threshold=int(large.sum()),
        pixels=int(sizes.sum()),
        background_segments=int(truth_bg.sum()),
        background_rule=rule,
        frame=frame,
    )


def _border_background_key(segments: np.ndarray, sizes: np.ndarray, truth_keys: np.ndarray) -> int | None:
    """Truth colour key of the largest segment touching the image border, if any does."""
    border = np.concatenate([segments[0], segments[-1], segments[:, 0], segments[:, -1]])
    touching = np.unique(border[border > 0])
    if touching.size == 0:
        return None
    largest = touching[np.argmax(sizes[touching - 1])]
    return int(truth_keys[largest - 1])


def _ratio(numerator: Any, denominator: Any) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


# --------------------------------------------------------------------------------------------
# A cut


def score_cut(
    frames: Iterable[FrameScores],
    *,
    exclude_frames: Collection[int] = (),
    missing_pred: Iterable[int] = (),
    missing_truth: Iterable[int] = (),
    skipped: dict[int, str] | None = None,
) -> CutScores:
    """Average frames with equal weight per frame, each metric over the frames that define it.

    Frames in `exclude_frames` (the key frames given as references) stay in the list but not in
    the means, like BasicPBC's `skip_first`.
    """
    frame_list = list(frames)
    excluded = sorted({f.frame for f in frame_list if f.frame is not None and f.frame in exclude_frames})
    counted_frames = [f for f in frame_list if f.frame is None or f.frame not in exclude_frames]
    means: dict[str, float | None] = {}
    counted: dict[str, int] = {}
    for name in METRIC_NAMES:
        values = [value for f in counted_frames if (value := f.metric(name)) is not None]
        means[name] = float(np.mean(values)) if values else None
        counted[name] = len(values)
    return CutScores(
        frames=frame_list,
        means=means,
        frames_counted=counted,
        excluded_frames=excluded,
        missing_pred=sorted(missing_pred),
        missing_truth=sorted(missing_truth),
        skipped=dict(sorted((skipped or {}).items())),
    )


# --------------------------------------------------------------------------------------------
# Reports


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def scores_table(scores: CutScores | FrameScores, *, title: str | None = "Paint-bucket accuracy (%)") -> Table:
    """A rich Table: one row per frame and a mean row; percentages with 2 decimals."""
    cut = scores if isinstance(scores, CutScores) else score_cut([scores])
    table = Table(title=title)
    table.add_column("Frame", justify="right")
    for name in METRIC_NAMES:
        table.add_column(METRIC_TITLES[name], justify="right")
    table.add_column("Segments", justify="right")
    table.add_column(f">{SIZE_THRESHOLD} px", justify="right")
    for f in cut.frames:
        name = "-" if f.frame is None else str(f.frame)
        excluded = f.frame is not None and f.frame in cut.excluded_frames
        table.add_row(
            f"{name} (excluded)" if excluded else name,
            *(_percent(f.metric(m)) for m in METRIC_NAMES),
            str(f.segments),
            str(f.segments_over_threshold),
            style="dim" if excluded else None,
        )
    if len(cut.frames) > 1 or cut.excluded_frames:
        table.add_section()
        table.add_row("mean", *(_percent(cut.means[m]) for m in METRIC_NAMES), "", "", style="bold")
    notes = []
    if cut.missing_pred:
        notes.append(f"no prediction for frames {_frame_list(cut.missing_pred)}")
    if cut.missing_truth:
        notes.append(f"no truth for frames {_frame_list(cut.missing_truth)}")
    notes.extend(f"frame {frame} skipped: {why}" for frame, why in cut.skipped.items())
    if notes:
        table.caption = "; ".join(notes)
    return table


def _frame_list(frames: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(f) for f in frames[:limit])
    return shown + (f" and {len(frames) - limit} more" if len(frames) > limit else "")


def scores_to_dict(scores: CutScores | FrameScores) -> dict[str, Any]:
    """JSON-ready dict (fractions as floats, undefined metrics as null)."""
    if isinstance(scores, FrameScores):
        return asdict(scores)
    return {
        "definition": "BasicPBC paint/utils.py eval_json_stage2; per-frame mean (see sketchcolor_cli.evaluation.metrics)",
        "size_threshold_px": SIZE_THRESHOLD,
        "mean": dict(scores.means),
        "frames_counted": dict(scores.frames_counted),
        "frames": [asdict(f) for f in scores.frames],
        "excluded_frames": list(scores.excluded_frames),
        "missing_pred": list(scores.missing_pred),
        "missing_truth": list(scores.missing_truth),
        "skipped": {str(frame): why for frame, why in scores.skipped.items()},
    }


# --------------------------------------------------------------------------------------------
# Files


def frame_number(path: Path) -> int | None:
    """The frame number in a file name: the last run of digits before the extension."""
    match = _LAST_DIGITS.search(Path(path).stem)
    return int(match.group(1)) if match else None


def _collect(path: Path, role: str, suffixes: frozenset[str]) -> tuple[dict[int | None, Path], bool]:
    """Frame number -> file for a file or a folder; the bool says whether it was a single file."""
    path = Path(path)
    if path.is_file():
        return {frame_number(path): path}, True
    if not path.is_dir():
        raise FileNotFoundError(f"the {role} path {path} does not exist; give an image file or a folder of frames")
    found: dict[int | None, Path] = {}
    for file in sorted(path.iterdir()):
        if not file.is_file() or file.suffix.lower() not in suffixes:
            continue
        number = frame_number(file)
        if number is None:
            continue  # no frame number: not a frame of the cut (a sheet, a note)
        if number in found:
            raise ValueError(
                f"the {role} folder {path} has two files for frame {number}: {found[number].name} and "
                f"{file.name}; keep one"
            )
        found[number] = file
    if not found:
        raise FileNotFoundError(f"the {role} folder {path} has no image files with a frame number in their names")
    return found, False


def read_label_map(path: Path) -> np.ndarray:
    """An integer label map from .npy or an image (0 = line, as BasicPBC's label PNGs).

    A single-channel integer image holds the labels directly; an 8-bit colour image holds them as
    R * 65536 + G * 256 + B (BasicPBC's encoding), transparent pixels not scored.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        labels = np.load(path)
    else:
        image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"cannot read the label map {path}; give a PNG/TIFF label image or a .npy array")
        if image.ndim == 2:
            labels = image.astype(np.int64)
        elif image.dtype == np.uint8:
            blue, green, red = (image[:, :, i].astype(np.int64) for i in range(3))
            labels = (red << 16) | (green << 8) | blue
            if image.shape[2] == 4:
                labels[image[:, :, 3] == 0] = 0
        else:
            raise ValueError(f"the label map {path} is a {image.dtype} colour image; use 8-bit RGB encoding or a single channel")
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"the label map {path} must be an H x W integer array, not {labels.shape} {labels.dtype}")
    return labels


def evaluate_paths(
    pred: Path,
    truth: Path,
    *,
    labels: Path | None = None,
    line: Path | None = None,
    exclude_frames: Collection[int] = (),
    background_alpha_zero: bool = True,
    size_threshold: int = SIZE_THRESHOLD,
    line_threshold: float = LINE_THRESHOLD,
) -> CutScores:
    """Score predicted frames against truth frames on disk.

    `pred` and `truth` are single images or folders; frames pair up by the frame number in the
    file name. Two single files pair with each other whatever their names. `labels`/`line` are a
    file (used for every frame) or a folder matched the same way. Frames missing on one side, or
    whose label map / line art is missing or of another size, are reported in the result.
    """
    from sketchcolor_cli.frames.images import read_rgba16

    pred_files, pred_single = _collect(pred, "prediction", _IMAGE_SUFFIXES)
    truth_files, truth_single = _collect(truth, "truth", _IMAGE_SUFFIXES)
    if pred_single and truth_single:
        truth_number, pred_number = next(iter(truth_files)), next(iter(pred_files))
        number = truth_number if truth_number is not None else pred_number
        pred_files = {number: next(iter(pred_files.values()))}
        truth_files = {number: next(iter(truth_files.values()))}
    for files, role, path in ((pred_files, "prediction", pred), (truth_files, "truth", truth)):
        if None in files and not (pred_single and truth_single):
            raise ValueError(
                f"the {role} file {path} has no frame number in its name, so it cannot be matched to "
                "the frames of the other side; rename it or give two single files"
            )
    label_files = _collect(labels, "label map", _LABEL_SUFFIXES) if labels is not None else None
    line_files = _collect(line, "line art", _IMAGE_SUFFIXES) if line is not None else None

    frames: list[FrameScores] = []
    skipped: dict[int, str] = {}
    for number in sorted(set(pred_files) & set(truth_files)):
        label_map = line_art = None
        if label_files is not None:
            label_path = _pick(label_files, number)
            if label_path is None:
                skipped[number] = f"no label map for frame {number} in {labels}"
                continue
            label_map = read_label_map(label_path)
        elif line_files is not None:
            line_path = _pick(line_files, number)
            if line_path is None:
                skipped[number] = f"no line art for frame {number} in {line}"
                continue
            line_art = read_rgba16(line_path)
        try:
            frames.append(
                score_frame(
                    read_rgba16(pred_files[number]),
                    read_rgba16(truth_files[number]),
                    labels=label_map,
                    line_art=line_art,
                    background_alpha_zero=background_alpha_zero,
                    size_threshold=size_threshold,
                    line_threshold=line_threshold,
                    frame=number,
                )
            )
        except ValueError as error:  # a size mismatch or an unusable truth: report, go on
            skipped[number] = f"{pred_files[number].name} vs {truth_files[number].name}: {error}"
    return score_cut(
        frames,
        exclude_frames=exclude_frames,
        missing_pred=[n for n in truth_files if n not in pred_files],
        missing_truth=[n for n in pred_files if n not in truth_files],
        skipped=skipped,
    )


def _pick(files: tuple[dict[int | None, Path], bool], number: int) -> Path | None:
    mapping, single = files
    return next(iter(mapping.values())) if single else mapping.get(number)
