"""Tests of the flat (paint-bucket) engine on small line-art scenes drawn with cv2."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sketchcolor_cli.engines.base import FULL, PreviousResult, Reference, WorkItem, engine_class, to_rgba16
from sketchcolor_cli.engines.flat import FlatEngine, FlatSettings
from sketchcolor_cli.engines.flat.match import decide_by_overlap, vote_agreement
from sketchcolor_cli.engines.flat.segment import index_colours, segment_line_art, vote_colours

SIZE = 128
INK = (0, 0, 0)
SKIN = (236, 196, 170)
EYE = (40, 120, 60)
SHIRT = (200, 40, 50)
PANTS = (40, 60, 150)
LEFT = (230, 180, 150)
RIGHT = (60, 90, 200)
SHADE = (150, 70, 160)


def blank(size: int = SIZE) -> np.ndarray:
    return np.full((size, size, 3), 255, np.uint8)


def rgba(image: np.ndarray) -> np.ndarray:
    """A test image (drawn with cv2, but in RGB order) in the engine's uint16 RGBA."""
    return to_rgba16(image)


def colour16(rgb: tuple[int, int, int]) -> tuple[int, int, int, int]:
    return (rgb[0] * 257, rgb[1] * 257, rgb[2] * 257, FULL)


def figure(scale: float = 1.0, dx: int = 0, dy: int = 0, paint: bool = False, size: int = SIZE) -> np.ndarray:
    """A little character: head with an eye, body split into shirt and pants. Lines 2 px."""
    image = blank(size)
    cx, cy = size // 2 + dx, size // 2 + dy

    def p(x: float, y: float) -> tuple[int, int]:
        return int(round(cx + x * scale)), int(round(cy + y * scale))

    head_r, eye_r = int(round(18 * scale)), max(3, int(round(5 * scale)))
    if paint:
        cv2.circle(image, p(0, -30), head_r, SKIN, -1)
        cv2.circle(image, p(6, -32), eye_r, EYE, -1)
        cv2.rectangle(image, p(-22, -10), p(22, 15), SHIRT, -1)
        cv2.rectangle(image, p(-22, 15), p(22, 42), PANTS, -1)
    cv2.circle(image, p(0, -30), head_r, INK, 2)
    cv2.circle(image, p(6, -32), eye_r, INK, 2)
    cv2.rectangle(image, p(-22, -10), p(22, 42), INK, 2)
    cv2.line(image, p(-22, 15), p(22, 15), INK, 2)
    return image


FIGURE_PARTS = {"skin": (0, -40), "eye": (6, -32), "shirt": (-12, 2), "pants": (-12, 30)}
FIGURE_COLOURS = {"skin": SKIN, "eye": EYE, "shirt": SHIRT, "pants": PANTS}


def part_pixel(part: str, scale: float = 1.0, dx: int = 0, dy: int = 0, size: int = SIZE) -> tuple[int, int]:
    """(row, column) of a pixel well inside `part` of `figure(scale, dx, dy)`."""
    x, y = FIGURE_PARTS[part]
    return int(round(size // 2 + dy + y * scale)), int(round(size // 2 + dx + x * scale))


def split_circle(paint: bool = False, hint: bool = False) -> np.ndarray:
    image = blank()
    if paint:
        cv2.circle(image, (64, 64), 40, LEFT, -1)
        cv2.rectangle(image, (64, 20), (110, 110), RIGHT, -1)
        cv2.circle(image, (64, 64), 40, INK, 2)  # repaint what the rectangle covered outside
        mask = np.zeros((SIZE, SIZE), np.uint8)
        cv2.circle(mask, (64, 64), 41, 1, -1)
        image[mask == 0] = 255
        if hint:
            image[70:106, 64:110][(image[70:106, 64:110] == RIGHT).all(axis=2)] = SHADE
    cv2.circle(image, (64, 64), 40, INK, 2)
    cv2.line(image, (64, 24), (64, 104), INK, 2)
    if hint:
        cv2.line(image, (64, 70), (106, 70), (255, 0, 0), 2)
    return image


def settings(**changes: object) -> FlatSettings:
    return FlatSettings(**changes)


def run(item: WorkItem, **changes: object):
    return FlatEngine.load(settings(**changes)).colorize([item])[0]


def key_item(line: np.ndarray, painted: np.ndarray, frame: int = 1) -> WorkItem:
    key = Reference(character="", image=rgba(painted), frame=frame, source="key")
    return WorkItem(frame=frame, line_art=rgba(line), references=(key,), seed=0)


def sheet(scale: float = 1.0, with_line: bool = True) -> Reference:
    return Reference(
        character="",
        image=rgba(figure(scale, paint=True)),
        line=rgba(figure(scale)) if with_line else None,
        source="sheet",
    )


def colour_set(layer: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in c) for c in np.unique(layer.reshape(-1, 4), axis=0)}


# ---- the engine's place in the interface --------------------------------------------------------


def test_engine_is_registered_and_settings_are_documented() -> None:
    assert engine_class("flat") is FlatEngine
    assert FlatEngine.frame_dependency == "previous"
    schema = FlatSettings.model_json_schema()
    for name in ("line_threshold", "gap_close_px", "hint_lines", "min_region_px", "review_threshold"):
        assert schema["properties"][name]["description"]
    with pytest.raises(ValueError):
        FlatSettings(unknown_key=1)


# ---- segmentation --------------------------------------------------------------------------------


def segment(line: np.ndarray, **changes: object):
    s = settings(**changes)
    return segment_line_art(
        rgba(line),
        line_threshold=s.line_threshold,
        gap_close_px=s.gap_close_px,
        hint_lines=s.hint_lines,
        min_region_px=s.min_region_px,
    )


def test_split_circle_has_two_halves_and_the_outside() -> None:
    seg = segment(split_circle())
    assert seg.n_regions == 3
    left, right, outside = seg.labels[64, 40], seg.labels[64, 88], seg.labels[5, 5]
    assert len({int(left), int(right), int(outside)}) == 3 and 0 not in (left, right, outside)
    assert seg.touches_border[outside] and not seg.touches_border[left] and not seg.touches_border[right]
    # Every paper pixel belongs to a region; every region pixel is paper.
    paper = split_circle()[:, :, 0] > 127
    assert np.array_equal(seg.labels > 0, paper)
    # The halves are mirror images: equal areas, centroids either side of x = 64.
    assert abs(int(seg.area[left]) - int(seg.area[right])) <= 0.02 * seg.area[left]
    assert seg.centroid[left][0] < 64 < seg.centroid[right][0]
    x, y, w, h = seg.bbox[left]
    assert 24 <= x <= 26 and w < 40 and h > 70


def gapped_square(gap: int) -> np.ndarray:
    image = blank()
    cv2.rectangle(image, (30, 30), (98, 98), INK, 1)
    image[60 : 60 + gap, 98] = 255  # a gap of `gap` px in the right side
    return image


@pytest.mark.parametrize("thickness", [1, 2])
def test_three_pixel_gap_is_closed_without_losing_pixels(thickness: int) -> None:
    line = blank()
    cv2.circle(line, (64, 64), 40, INK, thickness)
    line[62:65, 100:110] = 255  # a 3 px gap on the right
    leaky = segment(line, gap_close_px=0)
    assert leaky.labels[64, 64] == leaky.labels[5, 5]  # without closing the inside leaks out
    seg = segment(line, gap_close_px=4)
    assert seg.labels[64, 64] != seg.labels[5, 5]
    assert seg.n_regions == 2
    # The paper of the gap is handed back to the regions, not turned into line.
    assert np.array_equal(seg.labels > 0, line[:, :, 0] > 127)


def test_gap_does_not_leak_colour() -> None:
    line = gapped_square(3)
    painted = line.copy()
    cv2.rectangle(painted, (31, 31), (97, 97), SHIRT, -1)
    out = run(key_item(line, painted))
    inside, outside = out.fill[64, 64], out.fill[5, 5]
    assert tuple(inside) == colour16(SHIRT)
    assert outside[3] == 0  # the background stays transparent: it did not flood the square
    # With gap closing off, the square and the outside are one region and the larger side wins.
    leaked = run(key_item(line, painted), gap_close_px=0)
    assert leaked.fill[64, 64, 3] == 0


def test_thin_enclosed_strip_survives_gap_closing() -> None:
    line = blank()
    cv2.rectangle(line, (30, 30), (98, 98), INK, 1)
    cv2.rectangle(line, (40, 60), (88, 63), INK, 1)  # a closed strip 2 px high: narrower than the gap
    seg = segment(line, gap_close_px=4)
    strip = seg.labels[61, 64]
    assert strip > 0 and strip not in (seg.labels[50, 64], seg.labels[5, 5])
    assert seg.area[strip] == 2 * 47


def test_specks_merge_into_a_neighbour() -> None:
    line = split_circle()
    line[39:42, 39:42] = 0  # a 3 x 3 ink blot with a 1 px hole: the hole is a speck region
    line[40, 40] = 255
    seg = segment(line, min_region_px=3)
    assert seg.labels[40, 40] == 0 and seg.n_regions == 3
    out = run(key_item(line, split_circle(paint=True)))
    assert tuple(out.fill[40, 40]) == colour16(LEFT)


# ---- painting ------------------------------------------------------------------------------------


def test_fill_is_palette_exact_and_lines_are_original() -> None:
    line = split_circle()
    out = run(key_item(line, split_circle(paint=True)))
    assert colour_set(out.fill) == {colour16(LEFT), colour16(RIGHT), (0, 0, 0, 0)}
    assert tuple(out.fill[64, 40]) == colour16(LEFT) and tuple(out.fill[64, 88]) == colour16(RIGHT)
    # The fill has no line: line pixels hold a neighbouring region's colour.
    ink = line[:, :, 0] < 128
    assert set(map(tuple, out.fill[ink].tolist())) <= {colour16(LEFT), colour16(RIGHT), (0, 0, 0, 0)}
    full = out.line == FULL
    assert full.sum() == ink.sum()
    assert np.array_equal(out.color[full], rgba(line)[full])
    assert np.array_equal(out.color[~full], out.fill[~full])  # aliased art: no partial pixels
    assert out.stats["source"] == "key" and out.stats["regions"] == 3
    json.dumps(out.stats)


def test_background_is_transparent_or_from_the_background_image() -> None:
    item = WorkItem(frame=1, line_art=rgba(figure()), references=(sheet(),), seed=0)
    out = run(item)
    assert out.fill[0, 0, 3] == 0 and out.fill[5, 120, 3] == 0
    assert out.color[0, 0, 3] == 0
    backdrop = np.zeros((SIZE, SIZE, 3), np.uint8)
    backdrop[:] = (120, 200, 240)
    backdrop[:4, :4] = (0, 0, 0)  # a few odd pixels do not win the vote
    with_bg = WorkItem(
        frame=1, line_art=rgba(figure()), references=(sheet(),), seed=0, background=rgba(backdrop)
    )
    out = run(with_bg)
    assert tuple(out.fill[0, 0]) == colour16((120, 200, 240))
    assert tuple(out.fill[5, 120]) == colour16((120, 200, 240))


def test_anti_aliased_lines_blend_over_the_fill() -> None:
    line = blank()
    cv2.circle(line, (64, 64), 40, INK, 2, lineType=cv2.LINE_AA)
    painted = line.copy()
    cv2.circle(painted, (64, 64), 39, SHIRT, -1)
    out = run(key_item(line, painted))
    partial = (out.line > 0) & (out.line < FULL) & (out.fill[:, :, 3] == FULL)
    assert partial.sum() > 50
    fill = out.fill[partial, :3].astype(np.int64)
    color = out.color[partial, :3].astype(np.int64)
    # Ink darkens the fill towards black in proportion to coverage, never brightens or tints it.
    assert (color <= fill + 1).all()
    coverage = out.line[partial].astype(np.float64) / FULL
    expected = fill * (1 - coverage[:, None])
    assert np.abs(color - expected).max() <= 0.02 * FULL
    full = out.line == FULL
    assert np.array_equal(out.color[full], rgba(line)[full])


def test_hint_line_splits_a_region_and_takes_its_colour() -> None:
    line = split_circle(hint=True)
    painted = split_circle(paint=True, hint=True)
    seg = segment(line)
    assert seg.n_regions == 4  # the red stroke splits the right half
    assert seg.hint[70, 80] and not seg.ink[70, 80]
    out = run(key_item(line, painted))
    assert tuple(out.fill[64, 88]) == colour16(RIGHT) and tuple(out.fill[80, 88]) == colour16(SHADE)
    red = (line[:, :, 0] == 255) & (line[:, :, 1] == 0)
    red[:, :70] = red[:, 100:] = False  # away from the ends, where other regions are nearer
    assert red.sum() > 40
    for layer in (out.fill, out.color):
        assert set(map(tuple, layer[red].tolist())) <= {colour16(RIGHT), colour16(SHADE)}
    assert (out.line[red] == 0).all()
    # With hint lines off the red stroke is ink: it stays visible in the colour layer.
    plain = run(key_item(line, painted), hint_lines=False)
    assert np.array_equal(plain.color[red], rgba(line)[red])


def test_transparent_paper_with_alpha_lines() -> None:
    drawn = split_circle()
    alpha = (255 - drawn[:, :, 0]).astype(np.uint8)
    line = np.zeros((SIZE, SIZE, 4), np.uint8)
    line[:, :, 3] = alpha  # black ink, coverage in alpha, paper fully transparent
    key = Reference(character="", image=rgba(split_circle(paint=True)), frame=3)
    out = run(WorkItem(frame=3, line_art=rgba(line), references=(key,), seed=0))
    assert tuple(out.fill[64, 40]) == colour16(LEFT) and tuple(out.fill[64, 88]) == colour16(RIGHT)
    assert out.fill[5, 5, 3] == 0
    full = out.line == FULL
    assert full.sum() == (alpha == 255).sum()
    assert np.array_equal(out.color[full], rgba(line)[full])
    assert colour_set(out.fill) == {colour16(LEFT), colour16(RIGHT), (0, 0, 0, 0)}


def test_sixteen_bit_line_art_and_colours_stay_exact() -> None:
    drawn = split_circle()
    line = np.where(drawn > 127, np.uint16(61234), np.uint16(1234)).astype(np.uint16)
    line = to_rgba16(line)
    left, right = (50001, 40003, 30007, FULL), (1009, 20011, 60013, FULL)
    key = np.zeros((SIZE, SIZE, 4), np.uint16)
    key[:, :64] = left
    key[:, 64:] = right
    out = run(WorkItem(frame=1, line_art=line, references=(Reference("", key, frame=1),), seed=0))
    assert tuple(out.fill[64, 40]) == left and tuple(out.fill[64, 88]) == right
    assert colour_set(out.fill) <= {left, right}
    full = out.line == FULL
    assert not full.any()  # lines at 1234/65535 are not fully dark: they blend over the fill
    assert (out.line[drawn[:, :, 0] < 128] > 0.95 * FULL).all()


# ---- matching ------------------------------------------------------------------------------------


def assert_parts(fill: np.ndarray, scale: float = 1.0, dx: int = 0, dy: int = 0) -> None:
    for part, colour in FIGURE_COLOURS.items():
        y, x = part_pixel(part, scale, dx, dy)
        assert tuple(fill[y, x]) == colour16(colour), part


@pytest.mark.parametrize("with_line", [True, False])
def test_reference_sheet_matches_a_moved_and_scaled_drawing(with_line: bool) -> None:
    item = WorkItem(frame=4, line_art=rgba(figure(0.8, dx=9, dy=6)), references=(sheet(1.0, with_line),), seed=0)
    out = run(item)
    assert_parts(out.fill, 0.8, 9, 6)
    assert out.fill[0, 0, 3] == 0
    assert out.stats["source"] == "reference"
    palette = {colour16(c) for c in FIGURE_COLOURS.values()} | {(0, 0, 0, 0)}
    assert colour_set(out.fill) <= palette


def test_reference_palette_snaps_near_colours() -> None:
    painted = figure(paint=True)
    painted[(painted == SHIRT).all(axis=2)] = (201, 41, 50)  # off by one from the named colour
    named = {name: tuple(v * 257 for v in rgb) for name, rgb in FIGURE_COLOURS.items()}
    ref = Reference("", rgba(painted), line=rgba(figure()), palette=named)
    out = run(WorkItem(frame=1, line_art=rgba(figure(0.9)), references=(ref,), seed=0))
    assert_parts(out.fill, 0.9)


def test_previous_frame_carries_colours_through_motion() -> None:
    engine = FlatEngine.load(FlatSettings())
    first = WorkItem(frame=1, line_art=rgba(figure()), references=(sheet(),), seed=0)
    one = engine.colorize([first])[0]
    assert_parts(one.fill)
    previous = PreviousResult(frame=1, line_art=first.line_art, fill=one.fill)
    second = WorkItem(frame=2, line_art=rgba(figure(dx=7, dy=-5)), references=(), seed=0, previous=previous)
    two = engine.colorize([second])[0]
    assert_parts(two.fill, dx=7, dy=-5)
    assert two.stats["source"] == "previous"
    assert two.stats["shift_px"] == [7, -5]
    assert two.fill[0, 0, 3] == 0 and two.stats["unsure_regions"] == 0


def test_per_character_masks_pick_their_own_references() -> None:
    line = np.concatenate([figure(), figure(0.9, dx=4)], axis=1)  # ann left, bob right
    height, width = line.shape[:2]
    silhouette = np.concatenate([figure(paint=True), figure(0.9, dx=4, paint=True)], axis=1).min(axis=2) < 250
    silhouette = cv2.dilate(silhouette.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    masks = {"ann": silhouette.copy(), "bob": silhouette.copy()}
    masks["ann"][:, SIZE:] = False
    masks["bob"][:, :SIZE] = False
    recolour = {SKIN: (250, 220, 200), EYE: (20, 20, 200), SHIRT: (250, 200, 20), PANTS: (90, 90, 90)}
    bob_painted = figure(paint=True)
    for old, new in recolour.items():
        bob_painted[(bob_painted == old).all(axis=2)] = new
    refs = (
        Reference("ann", rgba(figure(paint=True)), line=rgba(figure())),
        Reference("bob", rgba(bob_painted), line=rgba(figure())),
    )
    out = run(WorkItem(frame=1, line_art=rgba(line), references=refs, seed=0, masks=masks))
    assert_parts(out.fill[:, :SIZE])
    for part, colour in FIGURE_COLOURS.items():
        y, x = part_pixel(part, 0.9, dx=4)
        assert tuple(out.fill[y, SIZE + x]) == colour16(recolour[colour]), part
    ann_colours = {colour16(c) for c in FIGURE_COLOURS.values()} | {(0, 0, 0, 0)}
    bob_colours = {colour16(c) for c in recolour.values()} | {(0, 0, 0, 0)}
    assert colour_set(out.fill[:, :SIZE]) <= ann_colours
    assert colour_set(out.fill[:, SIZE:]) <= bob_colours


def two_characters(ann_dx: int, bob_dx: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Line art of ann (left half) and bob (right half, 0.9 scale), their silhouette masks, paint."""
    line = np.concatenate([figure(dx=ann_dx), figure(0.9, dx=bob_dx)], axis=1)
    painted = np.concatenate([figure(dx=ann_dx, paint=True), figure(0.9, dx=bob_dx, paint=True)], axis=1)
    silhouette = cv2.dilate((painted.min(axis=2) < 250).view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    masks = {"ann": silhouette.copy(), "bob": silhouette.copy()}
    masks["ann"][:, SIZE:] = False
    masks["bob"][:, :SIZE] = False
    return line, masks, painted


def test_per_character_shifts_carry_two_characters_moving_apart() -> None:
    line, masks, painted = two_characters(0, 0)
    engine = FlatEngine.load(FlatSettings())
    first = engine.colorize([key_item(line, painted)])[0]
    previous = PreviousResult(frame=1, line_art=rgba(line), fill=first.fill, masks=masks)
    # Ann jumps 30 px left, bob 30 px right: too far apart for one shift or for the optical flow.
    line2, masks2, _ = two_characters(-30, 30)

    def parts_right(out) -> bool:
        ann = all(tuple(out.fill[part_pixel(p, dx=-30)]) == colour16(c) for p, c in FIGURE_COLOURS.items())
        bob = all(
            tuple(out.fill[part_pixel(p, 0.9, dx=30)[0], SIZE + part_pixel(p, 0.9, dx=30)[1]]) == colour16(c)
            for p, c in FIGURE_COLOURS.items()
        )
        return ann and bob

    item = WorkItem(frame=2, line_art=rgba(line2), references=(), seed=0, masks=masks2, previous=previous)
    out = engine.colorize([item])[0]
    assert parts_right(out) and out.stats["unsure_regions"] == 0
    # Without the masks the engine cannot follow both: it gets parts wrong, or says it is unsure.
    unmasked = WorkItem(frame=2, line_art=rgba(line2), references=(), seed=0, previous=previous)
    blind = engine.colorize([unmasked])[0]
    assert not parts_right(blind) or blind.stats["unsure_regions"] > 0


def test_unsure_region_is_marked_for_review() -> None:
    three = blank()
    cv2.circle(three, (64, 64), 40, INK, 2)
    cv2.line(three, (52, 24), (52, 104), INK, 2)
    cv2.line(three, (76, 24), (76, 104), INK, 2)
    painted = three.copy()
    for x, colour in ((40, LEFT), (64, SHADE), (88, RIGHT)):
        cv2.floodFill(painted, None, (x, 64), colour)
    engine = FlatEngine.load(FlatSettings())
    first = engine.colorize([key_item(three, painted)])[0]
    assert first.stats["unsure_regions"] == 0
    # The next drawing lost its inner lines: the whole disc votes among three colours.
    whole = blank()
    cv2.circle(whole, (64, 64), 40, INK, 2)
    previous = PreviousResult(frame=1, line_art=rgba(three), fill=first.fill)
    item = WorkItem(frame=2, line_art=rgba(whole), references=(), seed=0, previous=previous)
    out = engine.colorize([item])[0]
    assert out.stats["unsure_regions"] == 1 and out.stats["mean_confidence"] < 0.9
    disc = (out.fill[:, :, 3] == FULL) & (whole[:, :, 0] > 127)
    marked = (out.review[:, :, 0] == FULL) & (out.review[:, :, 1] == 0) & (out.review[:, :, 2] == FULL)
    assert marked[disc].mean() > 0.3  # hatched
    assert not marked[~disc & (whole[:, :, 0] > 127)].any()  # the sure background is not
    confident = first.review[64, 40].astype(np.int64)
    vivid = first.fill[64, 40].astype(np.int64)
    assert np.ptp(confident[:3]) < np.ptp(vivid[:3])  # confident regions are shown desaturated


def test_same_inputs_give_the_same_bytes() -> None:
    first = WorkItem(frame=1, line_art=rgba(figure(0.85, dx=3)), references=(sheet(),), seed=1)
    engine = FlatEngine.load(FlatSettings())
    one = engine.colorize([first])[0]
    previous = PreviousResult(frame=1, line_art=first.line_art, fill=one.fill)
    second = WorkItem(frame=2, line_art=rgba(figure(0.85, dx=6)), references=(sheet(),), seed=2, previous=previous)
    # The engine that painted frame 1 reuses its analysis of it; a fresh engine, and copies of
    # the arrays, make it start from scratch. All must agree to the byte.
    warm = engine.colorize([second])[0]
    cold = FlatEngine.load(FlatSettings()).colorize([second])[0]
    copied = PreviousResult(frame=1, line_art=first.line_art.copy(), fill=one.fill.copy())
    from_copies = FlatEngine.load(FlatSettings()).colorize(
        [WorkItem(frame=2, line_art=second.line_art.copy(), references=(sheet(),), seed=3, previous=copied)]
    )[0]
    # The first engine again, with copies as a runner that reads frame 1 back from disk has.
    read_back = engine.colorize(
        [WorkItem(frame=2, line_art=second.line_art.copy(), references=(sheet(),), seed=4, previous=copied)]
    )[0]
    again = FlatEngine.load(FlatSettings()).colorize([first])[0]
    for name in ("color", "fill", "line", "review"):
        assert getattr(again, name).tobytes() == getattr(one, name).tobytes(), name
        for other in (cold, from_copies, read_back):
            assert getattr(other, name).tobytes() == getattr(warm, name).tobytes(), name
    for layers in (one, warm, cold, from_copies, again):
        assert set(layers.stats.pop("seconds")) == {"segment", "match", "paint"}  # timings differ, of course
    assert cold.stats == warm.stats == from_copies.stats and again.stats == one.stats


def test_missing_sources_and_mismatched_sizes_are_explained() -> None:
    with pytest.raises(ValueError, match="frame 7.*reference"):
        run(WorkItem(frame=7, line_art=rgba(figure()), references=(), seed=0))
    key = Reference("", rgba(np.zeros((64, 64, 3), np.uint8)), frame=7, source="k.png")
    with pytest.raises(ValueError, match="k.png"):
        run(WorkItem(frame=7, line_art=rgba(figure()), references=(key,), seed=0))


def test_index_colours_is_exact_for_many_colours() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, FULL + 1, (50, 70, 4), dtype=np.uint16)
    image[:, :, 3] = np.where(rng.random((50, 70)) < 0.2, 0, image[:, :, 3])
    index, palette = index_colours(image)
    expected = np.where(image[:, :, 3:] == 0, 0, image)
    assert np.array_equal(palette[index], expected)
    assert len(palette) == len(np.unique(expected.reshape(-1, 4), axis=0))


def test_nearest_region_is_the_same_without_the_raster_order_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    from sketchcolor_cli.engines.flat import paint

    labels = segment(figure(0.9, dx=5)).labels
    fast = paint.nearest_region(labels)
    monkeypatch.setattr(paint, "_ids_in_raster_order", lambda: False)
    slow = paint.nearest_region(labels)
    assert np.array_equal(fast, slow)
    assert (fast > 0).all() and np.array_equal(fast[labels > 0], labels[labels > 0])


def test_region_moments_and_boxes_match_the_pixels() -> None:
    seg = segment(figure(0.9, dx=5))
    for label in range(1, seg.n_regions + 1):
        ys, xs = np.nonzero(seg.labels == label)
        assert np.allclose(seg.centroid[label], [xs.mean(), ys.mean()])
        assert np.allclose(seg.covariance[label, :2], [xs.var() + 1 / 12, ys.var() + 1 / 12])
        assert np.isclose(seg.covariance[label, 2], ((xs - xs.mean()) * (ys - ys.mean())).mean())
        assert seg.bbox[label].tolist() == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
        assert seg.area[label] == xs.size


def test_overlap_decision_prefers_the_matching_region_and_keeps_limbs_opaque() -> None:
    # Previous regions: 1 = big (colour 1), 2 = thin (colour 2), 3 = a hole (transparent, colour 0).
    previous_area = np.array([0, 5000, 60, 120], dtype=float)
    previous_colour = np.array([0, 1, 2, 0])
    # Region 1 (thin, 100 px) sees 50 px of the big region and 35 of the thin one;
    # region 2 (a limb, 100 px) sees 60 px of the hole and 40 of the big region;
    # region 3 (100 px) sees the same, but it is not a drawn part: it is the hole, moved.
    region = np.array([1, 1, 2, 2, 3, 3])
    before = np.array([1, 2, 3, 1, 3, 1])
    overlap = np.array([50, 35, 60, 40, 60, 40], dtype=float)
    area = np.array([0, 100, 100, 100], dtype=float)
    foreground = np.array([False, True, True, False])
    colour, confidence, came_from = decide_by_overlap(
        region, before, overlap, area, previous_area, previous_colour, foreground, transparent=0
    )
    assert came_from[1:].tolist() == [2, 1, 3]
    assert colour[1:].tolist() == [2, 1, 0]
    assert confidence[2] < 0.1 < confidence[1]  # the limb over the old hole is flagged


def test_propagation_follows_a_walking_character() -> None:
    from sketchcolor_cli.evaluation.metrics import score_frame
    from sketchcolor_cli.synthetic.cut import SyntheticCut

    cut = SyntheticCut(frames=6, size=(256, 256), seed=0, characters=1)
    engine = FlatEngine.load(FlatSettings(gap_close_px=2))
    previous, scores = None, []
    for frame in range(1, 5):
        truth = cut.render_frame(frame)
        keys = (Reference("", rgba(truth.color), frame=1),) if frame == 1 else ()
        item = WorkItem(frame=frame, line_art=rgba(truth.line), references=keys, seed=0, previous=previous)
        out = engine.colorize([item])[0]
        previous = PreviousResult(frame=frame, line_art=item.line_art, fill=out.fill)
        scores.append(score_frame(out.fill, truth.fill, line_art=truth.line))
    assert scores[0].acc == 1.0
    # Arms and legs swing between frames: one global shift gets far less than this right.
    assert np.mean([s.acc for s in scores[1:]]) >= 0.8
    assert min(s.pix_acc for s in scores[1:]) >= 0.99


@pytest.mark.parametrize("n_colours", [5, 3_000_000])  # a palette, and a fill with very many colours
def test_votes_count_exactly_with_few_or_many_colours(n_colours: int) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, (40, 50)).astype(np.int32)
    colours = rng.integers(-1, 4, (40, 50)).astype(np.int32) * (n_colours // 5)  # -1: no vote
    colours[colours < 0] = -1
    winner, best, total = vote_colours(labels, colours, 6, n_colours)
    agree_best, agree_total = vote_agreement(labels, colours, 6, n_colours)
    for label in range(6):
        seen = colours[(labels == label) & (colours >= 0)]
        values, counts = np.unique(seen, return_counts=True)
        assert total[label] == agree_total[label] == seen.size
        assert best[label] == agree_best[label] == counts.max()
        assert winner[label] == values[counts == counts.max()].min()  # ties: the lower index


# ---- regions the motion loses, keys on both sides, accuracy floor -----------------------------------


def _scene(hand_at: tuple[int, int], with_square: bool = False, paint: bool = False) -> np.ndarray:
    """A body (big rectangle) with a small round 'hand' (and, optionally, a 'badge' square)."""
    image = blank()
    if paint:
        cv2.rectangle(image, (20, 30), (70, 110), SHIRT, -1)
        cv2.circle(image, hand_at, 9, SKIN, -1)
        if with_square:
            cv2.rectangle(image, (34, 50), (50, 66), EYE, -1)
    cv2.rectangle(image, (20, 30), (70, 110), INK, 2)
    cv2.circle(image, hand_at, 9, INK, 2)
    if with_square:
        cv2.rectangle(image, (34, 50), (50, 66), INK, 2)
    return image


def test_a_fast_small_part_is_found_by_shape_and_place() -> None:
    # The hand jumps 30 px between drawings: the line-mask motion follows the still body, the
    # hand's old place is empty paper, so only its shape and place near the body can find it.
    engine = FlatEngine.load(FlatSettings())
    first = engine.colorize([key_item(_scene((95, 40)), _scene((95, 40), paint=True))])[0]
    previous = PreviousResult(frame=1, line_art=rgba(_scene((95, 40))), fill=first.fill)
    second = WorkItem(frame=2, line_art=rgba(_scene((95, 72))), references=(), seed=0, previous=previous)
    out = engine.colorize([second])[0]
    assert tuple(out.fill[72, 95]) == colour16(SKIN)
    assert tuple(out.fill[70, 45]) == colour16(SHIRT)


def test_a_part_only_the_next_key_shows_takes_its_colour_from_that_key() -> None:
    # Key 1 has no badge; frame 2 and key 3 have it: the badge's colour can only come from key 3.
    engine = FlatEngine.load(FlatSettings())
    key1 = _scene((95, 40), paint=True)
    first = engine.colorize([key_item(_scene((95, 40)), key1)])[0]
    previous = PreviousResult(frame=1, line_art=rgba(_scene((95, 40))), fill=first.fill)
    keys = (
        Reference(character="", image=rgba(key1), line=rgba(_scene((95, 40))), frame=1, source="key 1"),
        Reference(character="", image=rgba(_scene((95, 44), True, paint=True)),
                  line=rgba(_scene((95, 44), True)), frame=3, source="key 3"),
    )
    item = WorkItem(frame=2, line_art=rgba(_scene((95, 42), True)), references=keys, seed=0, previous=previous)
    out = engine.colorize([item])[0]
    assert tuple(out.fill[58, 42]) == colour16(EYE)
    assert tuple(out.fill[42, 95]) == colour16(SKIN) and tuple(out.fill[90, 45]) == colour16(SHIRT)


def test_consecutive_frames_of_a_synthetic_cut_stay_accurate() -> None:
    """A floor under the benchmark's consecutive protocol (frame t from the truth of frame t-1),
    on a small cut: catches a change that breaks carrying, without timing anything."""
    from sketchcolor_cli.evaluation.metrics import score_frame
    from sketchcolor_cli.synthetic.cut import SyntheticCut, scoring_segments

    cut = SyntheticCut(frames=5, size=(256, 256), seed=4, characters=1, hint_lines=True, gaps=1)
    frames = [cut.render_frame(t) for t in range(1, 6)]
    sheet_drawing = cut.render_sheet("hero")
    reference = Reference("hero", to_rgba16(sheet_drawing.color), line=to_rgba16(sheet_drawing.line))
    engine = FlatEngine.load(FlatSettings())
    scores = []
    for before, now in zip(frames, frames[1:]):
        previous = PreviousResult(frame=1, line_art=to_rgba16(before.line), fill=to_rgba16(before.fill),
                                  masks={"hero": before.masks["hero"]})
        item = WorkItem(frame=2, line_art=to_rgba16(now.line), references=(reference,), seed=0,
                        masks={"hero": now.masks["hero"]}, previous=previous)
        out = engine.colorize([item])[0]
        scores.append(score_frame(out.fill, to_rgba16(now.fill), labels=scoring_segments(now)).acc_thres)
    assert np.mean(scores) >= 0.9, scores


def test_a_swung_limb_matches_its_shape_turned_parallel() -> None:
    from sketchcolor_cli.engines.flat.segment import regions_from_labels
    from sketchcolor_cli.engines.flat.structure import _aligned_iou, _Shapes, _turned_iou

    def limb(degrees: float) -> np.ndarray:
        labels = np.zeros((160, 160), np.int32)
        box = cv2.boxPoints(((80.0, 80.0), (90.0, 18.0), degrees)).astype(np.int32)
        cv2.fillPoly(labels, [box], 1)
        return labels

    upright, swung = _Shapes(regions_from_labels(limb(0), 1)), _Shapes(regions_from_labels(limb(50), 1))
    assert _aligned_iou(swung, 1, upright, 1) < 0.4
    assert _turned_iou(swung, 1, upright, 1) > 0.85
    # a round region has no axis to turn
    disc = np.zeros((160, 160), np.int32)
    cv2.circle(disc, (80, 80), 30, 1, -1)
    assert _turned_iou(_Shapes(regions_from_labels(disc, 1)), 1, upright, 1) == 0.0


def test_a_characters_regions_only_take_its_own_palette() -> None:
    from sketchcolor_cli.engines.flat.match import CharacterPalettes

    ann = {"skin": colour16(SKIN)[:3], "shirt": colour16(SHIRT)[:3]}
    bob = {"skin": colour16(LEFT)[:3], "shirt": colour16(RIGHT)[:3]}
    sheets = (
        Reference("ann", rgba(blank()), palette=ann, source="ann"),
        Reference("bob", rgba(blank()), palette=bob, source="bob"),
        Reference("", rgba(blank()), frame=3, source="key 3"),  # key frames name no character
    )
    owner = np.array([-1, 0, 1, -1])  # region 1 is ann's, 2 bob's, 3 nobody's
    palettes = CharacterPalettes.of(["ann", "bob"], owner, sheets)
    palette = np.array([[0, 0, 0, 0], [*colour16(SKIN)[:3], FULL], [*colour16(RIGHT)[:3], FULL], [1, 2, 3, FULL]],
                       dtype=np.uint16)  # fmt: skip
    allowed = palettes.allowed(palette)
    assert allowed[1].tolist() == [True, True, False, False]  # ann: clear or her skin
    assert allowed[2].tolist() == [True, False, True, False]  # bob: clear or his shirt
    assert allowed[3].tolist() == [True, True, True, False]  # nobody's: any named colour
    assert CharacterPalettes.of(["ann"], owner, (Reference("ann", rgba(blank())),)) is None  # no palettes


def test_swapped_look_alikes_lose_confidence_by_their_neighbours() -> None:
    from sketchcolor_cli.engines.flat.match import _neighbour_consistency
    from sketchcolor_cli.engines.flat.segment import regions_from_labels

    # Four parts in a row (sleeve 1, cuff 2, hand 3, glove 4), a line column between each pair.
    labels = np.zeros((20, 83), np.int32)
    for index in range(4):
        labels[:, index * 21 : index * 21 + 20] = index + 1
    seg = regions_from_labels(labels, 4)
    sure = np.array([0.0, 1.0, 1.0, 1.0, 1.0])
    foreground = np.array([False, True, True, True, True])
    right = _neighbour_consistency(seg, seg, np.array([0, 1, 2, 3, 4]), sure, foreground)
    swapped = _neighbour_consistency(seg, seg, np.array([0, 1, 3, 2, 4]), sure, foreground)  # cuff <-> hand
    assert right[1:].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert swapped[2] < 1.0 and swapped[3] < 1.0  # each sits next to the other's neighbours


def test_a_prepared_frame_comes_out_as_an_unprepared_one() -> None:
    """Workers segment the line art ahead (`prepare`, in the reader thread): same layers."""
    item = WorkItem(frame=2, line_art=rgba(figure(dx=3)), references=(sheet(),), seed=0)
    plain = run(item)
    engine = FlatEngine.load(settings())
    prepared = engine.prepare(item)
    assert prepared.prepared is not None and item.prepared is None
    ahead = engine.colorize([prepared])[0]
    for name in ("color", "fill", "line", "review"):
        assert np.array_equal(getattr(plain, name), getattr(ahead, name)), name


def test_a_stretched_overlap_counts_no_more_than_the_previous_region() -> None:
    # The motion samples a small previous region (82 px, a cuff) for 182 px of a bigger region
    # here (245 px, the hand that moved onto the cuff's old place): the pixel count overstates
    # the intersection, which is at most 82 px, so the carry is not fully sure.
    region, before = np.array([1, 1]), np.array([1, 2])
    overlap = np.array([182.0, 18.0])
    area = np.array([0.0, 245.0])
    previous_area = np.array([0.0, 82.0, 145.0])
    previous_colour = np.array([0, 1, 2])
    foreground = np.array([False, True])
    colour, confidence, came_from = decide_by_overlap(
        region, before, overlap, area, previous_area, previous_colour, foreground, transparent=None
    )
    assert colour[1] == 1 and came_from[1] == 1
    assert confidence[1] < 0.7  # IoU 82 / 245, not 182 / 145


def test_the_key_the_previous_frame_was_coloured_from_is_not_carried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Frame 1 is a key, frame 2 carries from frame 1's result: carrying key 1 again would repeat
    # the same evidence with a noisier (cut-out) motion; a far key and the sheets still count.
    from sketchcolor_cli.engines.flat import match

    carried: list[str] = []
    original = match.colours_from_drawing

    def spy(seg, group, drawing, *args, **kwargs):
        carried.append(drawing.source)
        return original(seg, group, drawing, *args, **kwargs)

    monkeypatch.setattr(match, "colours_from_drawing", spy)
    engine = FlatEngine.load(FlatSettings())
    first = engine.colorize([key_item(figure(), figure(paint=True))])[0]
    previous = PreviousResult(frame=1, line_art=rgba(figure()), fill=first.fill)
    # Frame 2 lost a line, so that a region is unsure and the references are asked.
    drawing = figure(dx=3)
    cv2.line(drawing, (40, 79), (90, 79), (255, 255, 255), 4)
    keys = (
        Reference("", rgba(figure(paint=True)), line=rgba(figure()), frame=1, source="key 1"),
        Reference("", rgba(figure(dx=6, paint=True)), line=rgba(figure(dx=6)), frame=3, source="key 3"),
        sheet(),
    )
    engine.colorize([WorkItem(frame=2, line_art=rgba(drawing), references=keys, seed=0, previous=previous)])
    assert carried and not any(source.endswith("key 1") for source in carried)
    assert any(source.endswith("key 3") for source in carried) and any(source.endswith("sheet") for source in carried)


def test_layers_painted_later_paint_once_on_first_read_from_any_thread():
    import threading

    from sketchcolor_cli.engines.base import LayersPaintedLater

    calls = []
    color, line, review = (np.full((2, 3, 4), 7, np.uint16), np.ones((2, 3), np.uint16), np.zeros((2, 3, 4), np.uint16))

    def paint_rest():
        calls.append(threading.get_ident())
        return color, line, review

    layers = LayersPaintedLater(np.zeros((2, 3, 4), np.uint16), paint_rest, {"regions": 1})
    assert calls == [] and layers.stats == {"regions": 1} and layers.shade is None
    seen = []
    readers = [threading.Thread(target=lambda: seen.append(layers.review)) for _ in range(4)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert len(calls) == 1 and all(s is review for s in seen)
    assert layers.color is color and layers.line is line
    with pytest.raises(AttributeError):
        layers.no_such_layer  # noqa: B018


def test_flat_engine_leaves_the_colour_and_review_layers_to_the_first_reader(tmp_path):
    """The worker's writer thread reads them; the engine thread only makes the fill."""
    from sketchcolor_cli.engines.flat import FlatEngine, FlatSettings

    line_art = np.full((40, 60, 4), 65535, np.uint16)
    line_art[20, :, :3] = 0  # one line: two regions
    key = line_art.copy()
    key[:20, :, :3] = [65535, 0, 0]
    key[21:, :, :3] = [0, 0, 65535]
    engine = FlatEngine(FlatSettings())
    item = WorkItem(frame=1, line_art=line_art, references=(Reference(character="", image=key, line=line_art, frame=1),), seed=0)
    (layers,) = engine.colorize([item])
    assert "color" not in vars(layers) and "review" not in vars(layers)
    assert np.array_equal(layers.color[20], line_art[20])  # the line kept, painted on first read
    assert (layers.color[5, 5, :3] == [65535, 0, 0]).all() and "review" in vars(layers)


def test_a_carried_colour_is_no_surer_than_the_region_it_came_from():
    """A guess (the model sheet's, say) carried to the next frame stays a guess: flagged for review
    and open to a surer answer, not promoted to certainty by a clean carry."""
    from sketchcolor_cli.engines.flat.match import REGION_CONFIDENCE, encode_region_confidence

    line_art = np.full((60, 60, 4), 65535, np.uint16)
    line_art[10:51, 10:51, :3] = 0
    line_art[11:50, 11:50, :3] = 65535  # a drawn box (not paper: it does not touch the border) ...
    line_art[30, 10:51, :3] = 0  # ... split in two
    fill = np.zeros((60, 60, 4), np.uint16)  # the paper around it is clear
    fill[10:30, 10:51] = [65535, 0, 0, 65535]
    fill[30:51, 10:51] = [0, 0, 65535, 65535]
    engine = FlatEngine(FlatSettings())

    def carried(handoff):
        previous = PreviousResult(frame=1, line_art=line_art, fill=fill, handoff=handoff)
        item = WorkItem(frame=2, line_art=line_art.copy(), references=(), seed=0, previous=previous)
        seg = engine.segment(item)
        top, bottom = seg.labels[20, 30], seg.labels[40, 30]
        assignment = engine.match(item, seg)
        return assignment.confidence[top], assignment.confidence[bottom], assignment.colors[top]

    sure_top, sure_bottom, colour = carried({})
    assert sure_top > 0.9 and sure_bottom > 0.9 and (colour == [65535, 0, 0, 65535]).all()
    seg = engine.segment(WorkItem(frame=1, line_art=line_art, references=(), seed=0))
    confidence = np.ones(seg.n_regions + 1)
    confidence[seg.labels[20, 30]] = 0.2
    guess_top, still_bottom, colour = carried({REGION_CONFIDENCE: encode_region_confidence(confidence)})
    assert guess_top <= 0.21 and still_bottom > 0.9 and (colour == [65535, 0, 0, 65535]).all()
    assert carried({REGION_CONFIDENCE: "00ff"})[0] > 0.9  # not this drawing's regions: ignored


def test_region_confidences_reach_the_next_frame_through_the_fill_file(small_cut, tmp_path):
    """The hand-off is in the fill file's metadata, so a frame carried from the file (a resumed
    run, another worker) sees the same confidences as one carried in memory."""
    from typer.testing import CliRunner

    from sketchcolor_cli.cli import app
    from sketchcolor_cli.engines.flat.match import REGION_CONFIDENCE
    from sketchcolor_cli.outputs.writers import read_fill_handoff

    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["run", str(small_cut), "--out", str(out), "-q"]).exit_code == 0
    handoff = read_fill_handoff(out / "fill" / "walk.0001.png")
    values = np.frombuffer(bytes.fromhex(handoff[REGION_CONFIDENCE]), np.uint8)
    # frame 1 comes from the model sheet alone: some regions sure, some not
    assert values.size > 10 and values.min() < 128 and values.max() == 255


def test_a_part_that_leaked_into_the_paper_through_a_gap_is_hatched_for_review() -> None:
    """The mask says character, the regions say background (a gap the gap closing missed): those
    pixels are hatched in the review layer however sure the match was; a mask drawn a little wide
    of the lines leaves no hatched rim."""
    from sketchcolor_cli.engines.flat.match import mask_leaks
    from sketchcolor_cli.engines.flat.paint import REVIEW_MARK, paint_fill, paint_rest
    from sketchcolor_cli.engines.flat.segment import regions_from_labels

    labels = np.ones((100, 100), np.int32)
    labels[20:60, 20:60] = 2  # the body, closed
    labels[19, 19:61] = labels[60, 19:61] = labels[19:61, 19] = labels[19:61, 60] = 0  # its outline
    seg = regions_from_labels(labels, 2)
    background = np.array([False, True, False])  # the paper around the body (region 1)
    body = np.zeros((100, 100), bool)
    body[19:61, 19:61] = True
    assert mask_leaks(seg, {"hero": body}, background) is None
    wide = cv2.dilate(body.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
    assert mask_leaks(seg, {"hero": wide}, background) is None
    leg = body.copy()
    leg[30:50, 61:95] = True  # a leg drawn into the paper: its outline had a gap
    leaks = mask_leaks(seg, {"hero": leg}, background)
    assert leaks is not None and leaks[35:45, 65:90].all() and not leaks[:, :60].any()
    colors = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [257 * 40, 257 * 60, 257 * 200, 65535]], np.uint16)
    confidence = np.array([0.0, 1.0, 1.0])
    line_art = np.full((100, 100, 4), 65535, np.uint16)
    line_art[labels == 0, :3] = 0
    fill = paint_fill(seg, colors)
    _, _, review = paint_rest(seg, colors, confidence, line_art, 0.5, fill, leaks)
    _, _, calm = paint_rest(seg, colors, confidence, line_art, 0.5, fill)
    marked = (review == REVIEW_MARK).all(axis=2)
    assert marked[30:50, 61:95].any() and not marked[:, :60].any()
    assert not (calm == REVIEW_MARK).all(axis=2).any()
