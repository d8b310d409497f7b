"""Tests of the paint-bucket metrics on tiny frames whose scores are worked out by hand."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from sketchcolor_cli.evaluation import metrics
from sketchcolor_cli.evaluation.metrics import (
    CutScores,
    FrameScores,
    evaluate_paths,
    frame_number,
    read_label_map,
    score_cut,
    score_frame,
    scores_table,
    scores_to_dict,
    segment_labels,
    segments_from_colors,
)

FULL = 65535


def colour(r: int, g: int, b: int, a: int = 255) -> tuple[int, int, int, int]:
    """An 8-bit colour in the uint16 convention."""
    return (r * 257, g * 257, b * 257, a * 257)


CLEAR = colour(255, 255, 255, 0)  # the truth fill's background
RED, GREEN, BLUE, YELLOW, WHITE, BLACK = (
    colour(255, 0, 0), colour(0, 255, 0), colour(0, 0, 255), colour(255, 255, 0), colour(255, 255, 255), colour(0, 0, 0)
)


def layout() -> np.ndarray:
    """10 x 10 label map: a 1-px line on row 3 and column 6 splits it into four segments.

    1 = top-left 3x6 = 18 px, 2 = top-right 3x3 = 9 px (not over 10), 3 = bottom-left 6x6 = 36 px,
    4 = bottom-right 6x3 = 18 px; 81 scored pixels, 19 line pixels.
    """
    labels = np.zeros((10, 10), np.int32)
    labels[0:3, 0:6] = 1
    labels[0:3, 7:10] = 2
    labels[4:10, 0:6] = 3
    labels[4:10, 7:10] = 4
    return labels


TRUTH_COLOURS = {1: CLEAR, 2: RED, 3: GREEN, 4: BLUE}  # segment 1 is background


def paint(labels: np.ndarray, colours: dict[int, tuple[int, ...]], line=BLACK) -> np.ndarray:
    image = np.empty(labels.shape + (4,), np.uint16)
    image[:] = line
    for label, value in colours.items():
        image[labels == label] = value
    return image


def truth_and_labels() -> tuple[np.ndarray, np.ndarray]:
    labels = layout()
    return paint(labels, TRUTH_COLOURS), labels


def line_art_of(labels: np.ndarray, *, paper_white: bool) -> np.ndarray:
    image = np.zeros(labels.shape + (4,), np.uint16)
    if paper_white:
        image[:] = WHITE
    image[labels == 0] = BLACK
    return image


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label maps split the pixels the same way (label numbers aside)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = {(int(x), int(y)) for x, y in zip(a[a > 0], b[b > 0])}
    return len(pairs) == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


# ---------------------------------------------------------------------------- one frame


def test_all_right_scores_one_everywhere():
    truth, labels = truth_and_labels()
    scores = score_frame(truth.copy(), truth, labels=labels)
    for name in metrics.METRIC_NAMES:
        assert scores.metric(name) == pytest.approx(1.0), name
    assert (scores.segments, scores.segments_over_threshold, scores.pixels) == (4, 3, 81)
    assert scores.background_segments == 1 and scores.background_rule == "alpha"


def test_one_large_foreground_segment_wrong():
    truth, labels = truth_and_labels()
    pred = paint(labels, {**TRUTH_COLOURS, 3: YELLOW})  # the 36-px segment
    scores = score_frame(pred, truth, labels=labels)
    assert scores.acc == pytest.approx(3 / 4)
    assert scores.pix_acc == pytest.approx((81 - 36) / 81)  # its share of the non-line pixels
    assert scores.acc_thres == pytest.approx(2 / 3)  # segments 1, 3, 4 are over 10 px
    assert scores.pix_acc_wobg == pytest.approx((9 + 18) / (9 + 36 + 18))
    assert scores.bmiou == pytest.approx(1.0) and scores.pix_bmiou == pytest.approx(1.0)


def test_segment_of_ten_px_or_less_is_left_out_of_acc_thres():
    truth, labels = truth_and_labels()
    pred = paint(labels, {**TRUTH_COLOURS, 2: YELLOW})  # the 9-px segment
    scores = score_frame(pred, truth, labels=labels)
    assert scores.acc == pytest.approx(3 / 4)
    assert scores.acc_thres == pytest.approx(1.0)
    assert scores.pix_acc == pytest.approx(72 / 81)
    # At 9 px, a threshold of 8 takes it in.
    assert score_frame(pred, truth, labels=labels, size_threshold=8).acc_thres == pytest.approx(3 / 4)


def test_background_painted_over_changes_bmiou_not_foreground_accuracy():
    truth, labels = truth_and_labels()
    pred = paint(labels, {**TRUTH_COLOURS, 1: RED})  # background segment given a colour
    scores = score_frame(pred, truth, labels=labels)
    assert scores.pix_acc_wobg == pytest.approx(1.0)
    assert scores.bmiou == pytest.approx(0.0) and scores.pix_bmiou == pytest.approx(0.0)
    assert scores.acc == pytest.approx(3 / 4)
    assert scores.pix_acc == pytest.approx(63 / 81)


def test_foreground_left_transparent_counts_in_the_background_union():
    truth, labels = truth_and_labels()
    pred = paint(labels, {**TRUTH_COLOURS, 3: CLEAR})
    scores = score_frame(pred, truth, labels=labels)
    assert scores.bmiou == pytest.approx(1 / 2)  # both: {1}; either: {1, 3}
    assert scores.pix_bmiou == pytest.approx(18 / (18 + 36))
    assert scores.pix_acc_wobg == pytest.approx(27 / 63)


def test_transparent_is_background_whatever_rgb_lies_under_it():
    truth, labels = truth_and_labels()
    pred = paint(labels, {**TRUTH_COLOURS, 1: (0, 0, 0, 0)})
    assert score_frame(pred, truth, labels=labels).acc == pytest.approx(1.0)


def test_comparison_is_exact_at_16_bit():
    truth, labels = truth_and_labels()
    off_by_one = (GREEN[0] + 1, GREEN[1], GREEN[2], GREEN[3])
    pred = paint(labels, {**TRUTH_COLOURS, 3: off_by_one})
    assert score_frame(pred, truth, labels=labels).acc == pytest.approx(3 / 4)


def test_segment_colour_is_its_majority_colour():
    truth, labels = truth_and_labels()
    pred = truth.copy()
    rows, cols = np.nonzero(labels == 3)  # 36 px
    pred[rows[:17], cols[:17]] = YELLOW  # 19 of 36 still right: the segment is right
    assert score_frame(pred, truth, labels=labels).acc == pytest.approx(1.0)
    pred[rows[:19], cols[:19]] = YELLOW  # 17 of 36 right: wrong
    assert score_frame(pred, truth, labels=labels).acc == pytest.approx(3 / 4)


def test_line_pixels_are_not_scored():
    truth, labels = truth_and_labels()
    pred = truth.copy()
    pred[labels == 0] = YELLOW
    pred[0:3, 6] = RED  # the line's own colours are mixed too: still not scored
    scores = score_frame(pred, truth, labels=labels)
    assert scores.acc == pytest.approx(1.0) and scores.pix_acc == pytest.approx(1.0)


def test_explicit_labels_need_not_be_consecutive():
    truth, labels = truth_and_labels()
    sparse = labels * 1000  # 0 stays line
    pred = paint(labels, {**TRUTH_COLOURS, 4: YELLOW})
    assert score_frame(pred, truth, labels=sparse).acc == score_frame(pred, truth, labels=labels).acc == 0.75
    huge = labels.astype(np.int64) * 10**12 - (labels == 0)  # values past any lookup table; -1 = line
    assert score_frame(pred, truth, labels=huge).acc == 0.75


def test_size_mismatch_names_both_sizes():
    truth, labels = truth_and_labels()
    with pytest.raises(ValueError, match="10x9.*10x10"):
        score_frame(truth[:9], truth, labels=labels)


def test_undefined_ratios_are_none():
    labels = np.zeros((4, 4), np.int32)
    labels[0:2, :] = 1  # 8 px
    labels[3, :] = 2  # 4 px: no segment over 10 px
    truth = paint(labels, {1: RED, 2: BLUE})
    scores = score_frame(truth, truth, labels=labels)
    assert scores.acc == 1.0 and scores.acc_thres is None
    # No background in truth nor prediction, and the border rule finds RED (largest) as background.
    assert scores.background_rule == "border"

    empty = score_frame(truth, truth, labels=np.zeros((4, 4), np.int32))
    assert empty.segments == 0 and all(empty.metric(n) is None for n in metrics.METRIC_NAMES)


def test_opaque_truth_uses_the_largest_border_segment_as_background():
    labels = layout()
    truth = paint(labels, {1: RED, 2: BLUE, 3: WHITE, 4: GREEN})  # flattened: no alpha
    assert score_frame(truth, truth, labels=labels).background_rule == "border"
    # A transparent prediction over the white paper is background, so right.
    clear = score_frame(paint(labels, {1: RED, 2: BLUE, 3: CLEAR, 4: GREEN}), truth, labels=labels)
    assert clear.acc == pytest.approx(1.0) and clear.bmiou == pytest.approx(1.0)
    # Red segment 1 painted white becomes predicted background: bmiou = |{3}| / |{1, 3}|.
    wrong = score_frame(paint(labels, {1: WHITE, 2: BLUE, 3: WHITE, 4: GREEN}), truth, labels=labels)
    assert wrong.bmiou == pytest.approx(1 / 2)
    assert wrong.pix_bmiou == pytest.approx(36 / (36 + 18))
    assert wrong.pix_acc_wobg == pytest.approx((9 + 18) / (18 + 9 + 18))


def test_alpha_rule_can_be_turned_off():
    labels = layout()
    truth = paint(labels, {1: CLEAR, 2: RED, 3: GREEN, 4: BLUE})
    # With the border rule the largest border segment (GREEN, 36 px) is background too, besides
    # anything transparent.
    scores = score_frame(truth, truth, labels=labels, background_alpha_zero=False)
    assert scores.background_rule == "border"
    assert scores.background_segments == 2
    assert scores.pix_acc_wobg == pytest.approx(1.0)
    pred = paint(labels, {1: CLEAR, 2: RED, 3: YELLOW, 4: BLUE})
    wrong = score_frame(pred, truth, labels=labels, background_alpha_zero=False)
    assert wrong.bmiou == pytest.approx(1 / 2)  # both: {1}; either: {1, 3}
    assert wrong.pix_bmiou == pytest.approx(18 / (18 + 36))
    assert wrong.pix_acc_wobg == pytest.approx(1.0)  # only background went wrong


# ---------------------------------------------------------------------------- segments


@pytest.mark.parametrize("paper_white", [False, True])
def test_segments_from_line_art_match_the_drawn_regions(paper_white: bool):
    labels = layout()
    found = segment_labels(line_art_of(labels, paper_white=paper_white))
    assert found.dtype == np.int32
    assert same_partition(found, labels)
    assert sorted(np.bincount(found.ravel())[1:]) == [9, 18, 18, 36]


def test_score_frame_takes_segments_from_line_art():
    truth, labels = truth_and_labels()
    pred = paint(labels, {**TRUTH_COLOURS, 3: YELLOW})
    scores = score_frame(pred, truth, line_art=line_art_of(labels, paper_white=True))
    assert scores.acc == pytest.approx(3 / 4) and scores.pix_acc == pytest.approx(45 / 81)


def test_segments_are_4_connected():
    line = np.zeros((5, 5, 4), np.uint16)
    for i in range(5):
        line[i, i] = BLACK  # a diagonal: the two sides touch only at corners
    found = segment_labels(line)
    assert found.max() == 2
    assert found[0, 1] != found[1, 0]
    assert sorted(np.bincount(found.ravel())[1:]) == [10, 10]


def test_grey_and_faint_pixels_follow_the_line_threshold():
    line = np.zeros((3, 7, 4), np.uint16)
    line[:, 3] = colour(0, 0, 0, 200)  # ink 200/255 = 0.78: line
    assert segment_labels(line).max() == 2
    line[:, 3] = colour(200, 200, 200)  # opaque light grey, ink 0.22: not line
    assert segment_labels(line).max() == 1
    assert segment_labels(line, line_threshold=0.1).max() == 2


def test_specks_of_three_px_or_less_join_the_smallest_neighbour():
    # '#' line, '.' free. The lone pixel P at (2, 3) touches three regions only at its corners:
    # top-left (6 px), top-right (8 px) and the bottom one (15 px); it joins the top-left.
    grid = [
        "...#....",
        "...#....",
        "###.####",
        "...#....",
        "........",
    ]
    line = np.zeros((5, 8, 4), np.uint16)
    for r, row in enumerate(grid):
        for c, ch in enumerate(row):
            if ch == "#":
                line[r, c] = BLACK
    found = segment_labels(line)
    assert found.max() == 3
    assert found[2, 3] == found[0, 0]
    assert sorted(np.bincount(found.ravel())[1:]) == [7, 8, 15]
    # Without the merge it stays a segment of its own.
    assert segment_labels(line, merge_at_most=0).max() == 4


def test_enclosed_speck_becomes_line():
    line = np.zeros((7, 7, 4), np.uint16)
    line[2:5, 2:5] = BLACK
    line[3, 3] = (0, 0, 0, 0)  # one free pixel inside a ring of line
    found = segment_labels(line)
    assert found[3, 3] == 0 and found.max() == 1


def test_segments_from_truth_colours_when_nothing_else_is_given():
    truth = np.empty((6, 6, 4), np.uint16)
    truth[:3, :3], truth[:3, 3:], truth[3:, :3], truth[3:, 3:] = CLEAR, RED, GREEN, BLUE
    found = segments_from_colors(truth)
    assert found.max() == 4 and (found > 0).all()
    pred = truth.copy()
    pred[3:, 3:] = YELLOW
    scores = score_frame(pred, truth)
    assert scores.acc == pytest.approx(3 / 4) and scores.pix_acc == pytest.approx(27 / 36)
    assert scores.background_rule == "alpha"


def test_truth_colour_segments_drop_single_pixels_and_split_disjoint_regions():
    truth = np.empty((5, 5, 4), np.uint16)
    truth[:] = RED
    truth[2, :] = GREEN  # splits red into two regions
    truth[0, 0] = BLUE  # a single pixel: not scored
    found = segments_from_colors(truth)
    assert found[0, 0] == 0
    assert found.max() == 3  # red top, green, red bottom


def test_too_many_truth_colours_asks_for_line_art():
    noise = np.random.default_rng(0).integers(0, FULL, (80, 80, 4), dtype=np.uint16)
    noise[:, :, 3] = FULL
    with pytest.raises(ValueError, match="line art"):
        segments_from_colors(noise)


def test_sorted_votes_agree_with_the_dense_table(monkeypatch):
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 40, 5000)
    keys = rng.integers(-1, 6, 5000)  # few colours: many ties
    dense = metrics._majority_keys(ids, keys, 39)
    monkeypatch.setattr(metrics, "_DENSE_VOTE_LIMIT", 0)
    assert np.array_equal(metrics._majority_keys(ids, keys, 39)[1:], dense[1:])


# ---------------------------------------------------------------------------- a cut


def _frame(acc: float, frame: int, bmiou: float | None = 1.0) -> FrameScores:
    return FrameScores(acc, acc, acc, acc, bmiou, bmiou, 4, 3, 81, frame=frame)


def test_cut_averages_per_frame_not_pooled():
    truth, labels = truth_and_labels()
    frame_a = score_frame(truth, truth, labels=labels, frame=1)  # 4 of 4 segments right
    small_labels = np.zeros((4, 4), np.int32)
    small_labels[:, :2], small_labels[:, 3] = 1, 2
    small_truth = paint(small_labels, {1: CLEAR, 2: RED})
    frame_b = score_frame(paint(small_labels, {1: CLEAR, 2: BLUE}), small_truth, labels=small_labels, frame=2)
    assert frame_b.acc == pytest.approx(1 / 2)
    cut = score_cut([frame_a, frame_b])
    assert isinstance(cut, CutScores)
    assert cut.means["acc"] == pytest.approx((1.0 + 0.5) / 2)  # BasicPBC: mean of frame ratios
    assert cut.means["acc"] != pytest.approx((4 + 1) / (4 + 2))  # not pooled segment counts
    assert cut.frames_counted["acc"] == 2
    assert [f.frame for f in cut.frames] == [1, 2]


def test_cut_leaves_undefined_and_excluded_frames_out_of_means():
    cut = score_cut([_frame(1.0, 0), _frame(0.5, 1, bmiou=None), _frame(0.0, 2)], exclude_frames={0})
    assert cut.means["acc"] == pytest.approx(0.25)
    assert cut.means["bmiou"] == pytest.approx(1.0) and cut.frames_counted["bmiou"] == 1
    assert cut.excluded_frames == [0] and len(cut.frames) == 3
    assert score_cut([]).means["acc"] is None


def test_reports_table_and_json():
    cut = score_cut([_frame(0.75, 1), _frame(0.5, 2, bmiou=None)], missing_pred=[3], skipped={4: "no line art"})
    console = Console(record=True, width=200)
    console.print(scores_table(cut))
    text = console.export_text()
    assert "75.00" in text and "62.50" in text  # frame 1 and the mean, in percent
    assert "no prediction for frames 3" in text and "frame 4 skipped: no line art" in text
    data = json.loads(json.dumps(scores_to_dict(cut)))
    assert data["mean"]["acc"] == pytest.approx(0.625)
    assert data["mean"]["bmiou"] == pytest.approx(1.0)
    assert data["frames"][1]["bmiou"] is None and data["missing_pred"] == [3]
    assert data["skipped"] == {"4": "no line art"}
    assert scores_to_dict(_frame(0.5, 7))["acc"] == 0.5


# ---------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("name", "number"),
    [("shot_010.0012.png", 12), ("0007.fill.png", 7), ("cut12_frame3.tif", 3), ("sheet.png", None)],
)
def test_frame_number_is_the_last_run_of_digits(name: str, number: int | None):
    assert frame_number(Path(name)) == number


def _write_png(path: Path, image16: np.ndarray) -> None:
    rgba8 = (image16 // 257).astype(np.uint8)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgba8, cv2.COLOR_RGBA2BGRA))


def _read_png(path: Path) -> np.ndarray:
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgra.ndim == 3 and bgra.shape[2] == 3:
        bgra = cv2.cvtColor(bgra, cv2.COLOR_BGR2BGRA)
    return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA).astype(np.uint16) * 257


def _write_cut(tmp_path: Path) -> tuple[Path, Path, Path]:
    truth, labels = truth_and_labels()
    pred_dir, truth_dir, line_dir = tmp_path / "pred", tmp_path / "truth", tmp_path / "line"
    for folder in (pred_dir, truth_dir, line_dir):
        folder.mkdir()
    wrong = paint(labels, {**TRUTH_COLOURS, 3: YELLOW})
    for n in (1, 2, 3):
        _write_png(pred_dir / f"c01.{n:04d}.png", truth if n == 1 else wrong)
    for n in (1, 2, 4):
        _write_png(truth_dir / f"c01_fill.{n:04d}.png", truth)
        _write_png(line_dir / f"line_{n:04d}.png", line_art_of(labels, paper_white=True))
    (truth_dir / "notes.txt").write_text("not a frame")
    return pred_dir, truth_dir, line_dir


def _check_cut(cut: CutScores) -> None:
    assert [f.frame for f in cut.frames] == [1, 2]
    assert cut.missing_truth == [3] and cut.missing_pred == [4]
    assert cut.frames[0].acc == pytest.approx(1.0)
    assert cut.frames[1].acc == pytest.approx(3 / 4)
    assert cut.frames[1].pix_acc == pytest.approx(45 / 81)
    assert cut.means["acc"] == pytest.approx(0.875)


def test_evaluate_paths_matches_frames_by_number(tmp_path: Path, monkeypatch):
    # A stand-in reader, so that matching is tested whatever state the image module is in.
    fake = types.ModuleType("sketchcolor_cli.frames.images")
    fake.read_rgba16 = _read_png
    monkeypatch.setitem(sys.modules, "sketchcolor_cli.frames.images", fake)
    pred_dir, truth_dir, line_dir = _write_cut(tmp_path)
    _check_cut(evaluate_paths(pred_dir, truth_dir, line=line_dir))

    excluded = evaluate_paths(pred_dir, truth_dir, line=line_dir, exclude_frames={1})
    assert excluded.means["acc"] == pytest.approx(0.75) and excluded.excluded_frames == [1]

    # Line art missing for a frame: reported, not a crash.
    (line_dir / "line_0002.png").unlink()
    partial = evaluate_paths(pred_dir, truth_dir, line=line_dir)
    assert [f.frame for f in partial.frames] == [1] and "no line art for frame 2" in partial.skipped[2]

    # Two single files pair whatever their names.
    single = evaluate_paths(pred_dir / "c01.0002.png", truth_dir / "c01_fill.0001.png", line=line_dir / "line_0001.png")
    assert single.frames[0].acc == pytest.approx(3 / 4) and single.frames[0].frame == 1
    # Without line art the truth's colour regions are the segments, and its black line is one of
    # them (black is a palette colour there): 5 segments, the line right, segment 3 wrong.
    by_colour = evaluate_paths(pred_dir / "c01.0002.png", truth_dir / "c01_fill.0001.png")
    assert by_colour.frames[0].segments == 5 and by_colour.frames[0].acc == pytest.approx(4 / 5)

    with pytest.raises(FileNotFoundError, match="prediction path"):
        evaluate_paths(tmp_path / "nowhere", truth_dir)


def test_evaluate_paths_with_label_pngs_in_basicpbc_encoding(tmp_path: Path, monkeypatch):
    fake = types.ModuleType("sketchcolor_cli.frames.images")
    fake.read_rgba16 = _read_png
    monkeypatch.setitem(sys.modules, "sketchcolor_cli.frames.images", fake)
    truth, labels = truth_and_labels()
    big = labels * 300  # 300 = G 1, B 44 in R*65536 + G*256 + B
    encoded = np.stack([(big >> 16) & 255, (big >> 8) & 255, big & 255], axis=2).astype(np.uint8)
    label_path = tmp_path / "seg_0005.png"
    assert cv2.imwrite(str(label_path), cv2.cvtColor(encoded, cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_label_map(label_path), big)
    pred_path, truth_path = tmp_path / "pred_0005.png", tmp_path / "truth_0005.png"
    _write_png(pred_path, paint(labels, {**TRUTH_COLOURS, 4: YELLOW}))
    _write_png(truth_path, truth)
    cut = evaluate_paths(pred_path, truth_path, labels=label_path)
    assert cut.frames[0].frame == 5 and cut.frames[0].acc == pytest.approx(3 / 4)


def test_evaluate_paths_with_the_project_image_reader(tmp_path: Path):
    # Uses the real sketchcolor_cli.frames.images.read_rgba16 on 8-bit PNGs.
    pred_dir, truth_dir, line_dir = _write_cut(tmp_path)
    _check_cut(evaluate_paths(pred_dir, truth_dir, line=line_dir))
