"""Frame specs: Cuebot semantics, fileseq behaviours we rely on or work around, chunks and shards."""

from __future__ import annotations

import fileseq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sketchcolor_cli.frames.spec import (
    FrameSpecError,
    chunk_frames,
    format_frame_spec,
    parse_frame_spec,
    parse_shard,
    shard_frames,
)

# ---------------------------------------------------------------------------------------------
# Cuebot's own expectations (OpenCue cuebot FrameRangeTests.java and the FrameRange docstring).


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("4927", [4927]),
        ("-4982", [-4982]),
        ("1-7", [1, 2, 3, 4, 5, 6, 7]),
        ("-20--13", [-20, -19, -18, -17, -16, -15, -14, -13]),
        ("-5-3", [-5, -4, -3, -2, -1, 0, 1, 2, 3]),
        ("6-2", [6, 5, 4, 3, 2]),
        ("-2--6", [-2, -3, -4, -5, -6]),
        ("1-8x2", [1, 3, 5, 7]),
        ("8-1x-2", [8, 6, 4, 2]),
        ("1-8y2", [2, 4, 6, 8]),
        ("8-1y-2", [7, 5, 3, 1]),
        ("1-10y3", [2, 3, 5, 6, 8, 9]),
        ("1-10:5", [1, 6, 3, 5, 7, 9, 2, 4, 8, 10]),
        ("10-1:-5", [10, 5, 8, 6, 4, 2, 9, 7, 3, 1]),
        ("10-1x-1", [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]),
    ],
)
def test_cuebot_reference_examples(spec: str, expected: list[int]) -> None:
    assert parse_frame_spec(spec) == expected


@pytest.mark.parametrize("spec", ["a", "a-b", "1-5xc", "1-5:c", "1-10-20", "1x10-20", "1:10-20", "1-8x-2"])
def test_cuebot_rejected_specs_are_rejected(spec: str) -> None:
    with pytest.raises(FrameSpecError):
        parse_frame_spec(spec)


def test_brief_example_and_comma_lists() -> None:
    expected = list(range(1, 25)) + [30] + list(range(40, 61, 2))
    assert parse_frame_spec("1-24,30,40-60x2") == expected
    assert parse_frame_spec("1-50,75-100") == list(range(1, 51)) + list(range(75, 101))


def test_int_and_single_negative_frame() -> None:
    assert parse_frame_spec(12) == [12]
    assert parse_frame_spec(-5) == [-5]
    assert parse_frame_spec("-5") == [-5]


def test_reverse_range_without_step_counts_down() -> None:
    # Decision pinned: "10-1" is 10..1 (Cuebot and fileseq agree), same as "10-1x-1".
    assert parse_frame_spec("10-1") == parse_frame_spec("10-1x-1") == list(range(10, 0, -1))


def test_whitespace_around_commas_is_stripped() -> None:
    assert parse_frame_spec(" 1-3 ,\t5 ,\n7-8 ") == [1, 2, 3, 5, 7, 8]


def test_duplicates_removed_first_occurrence_wins() -> None:
    assert parse_frame_spec("5,1-3,2,5,10-8,9") == [5, 1, 2, 3, 10, 9, 8]


def test_equal_ends_give_the_single_frame_whatever_the_step() -> None:
    assert parse_frame_spec("5-5x3") == [5]
    assert parse_frame_spec("5-5x-3") == [5]


# ---------------------------------------------------------------------------------------------
# Errors: each names the item and the spec and says what to write.


def test_step_zero_message_quotes_item_and_spec() -> None:
    with pytest.raises(FrameSpecError) as caught:
        parse_frame_spec("1-5,1-10x0")
    message = str(caught.value)
    assert message.startswith("'1-10x0' in '1-5,1-10x0'")
    assert "step 0" in message and "1-10x2" in message


@pytest.mark.parametrize(
    ("spec", "item", "hint"),
    [
        ("1-3, 4 -6", "4 -6", "4-6"),  # whitespace inside an item
        ("1-3,,9", "", "empty item"),
        ("1-5,", "", "empty item"),
        ("10-1x2", "10-1x2", "10-1x-2"),  # descending range needs a negative step
        ("1-10x-2", "1-10x-2", "10-1x-2"),  # negative step needs a descending range
        ("1-10:0", "1-10:0", "step 0"),
        ("1-10y1", "1-10y1", "no frames"),  # every frame excluded
        ("1-10x0.5", "1-10x0.5", "A-BxN"),  # subframes are not frames
        ("1-24,abc", "abc", "A-BxN"),
        ("1-20000000", "1-20000000", "more than"),
    ],
)
def test_bad_items_are_named(spec: str, item: str, hint: str) -> None:
    with pytest.raises(FrameSpecError) as caught:
        parse_frame_spec(spec)
    message = str(caught.value)
    where = repr(item) if item == spec else f"{item!r} in {spec!r}"
    assert message.startswith(where + ":")
    assert hint in message


@pytest.mark.parametrize("spec", ["", "   ", True, 1.5, None, [1, 2]])
def test_empty_or_non_spec_values_are_refused(spec: object) -> None:
    with pytest.raises(FrameSpecError):
        parse_frame_spec(spec)  # type: ignore[arg-type]


def test_frame_spec_error_is_a_value_error() -> None:
    # pydantic turns ValueErrors raised in validators into field errors (manifest `range:`).
    assert issubclass(FrameSpecError, ValueError)


# ---------------------------------------------------------------------------------------------
# fileseq behaviours, pinned: what we use, and what we deliberately do differently.


def test_fileseq_interleave_order_differs_from_cuebot() -> None:
    # This is why the interleave is ours: same frames, different order.
    fileseq_order = [int(frame) for frame in fileseq.FrameSet("1-10:5")]
    assert fileseq_order == [1, 6, 5, 9, 4, 7, 10, 3, 2, 8]
    assert sorted(fileseq_order) == sorted(parse_frame_spec("1-10:5"))
    assert fileseq_order != parse_frame_spec("1-10:5")


def test_fileseq_reverse_range_and_steps() -> None:
    assert list(fileseq.FrameSet("10-1")) == list(range(10, 0, -1))
    # fileseq accepts a positive step on a descending range; we refuse it (Cuebot does too).
    assert list(fileseq.FrameSet("10-1x2")) == [10, 8, 6, 4, 2]
    with pytest.raises(fileseq.ParseException):
        fileseq.FrameSet("1-10x0")
    # fileseq tolerates a space inside an item; we refuse it ourselves.
    assert list(fileseq.FrameSet("1 -3")) == [1, 2, 3]


def test_fileseq_compact_form() -> None:
    assert fileseq.framesToFrameRange([1, 2, 3, 5, 7, 9, 10], sort=True, compress=True) == "1-3,5-9x2,10"


# ---------------------------------------------------------------------------------------------
# format_frame_spec


def test_format_examples() -> None:
    assert format_frame_spec([1, 2, 3, 5, 7, 9, 10]) == "1-3,5-9x2,10"
    assert format_frame_spec([10, 3, 1, 2, 3]) == "1-3,10"
    assert format_frame_spec(range(1, 101)) == "1-100"
    assert format_frame_spec([]) == ""


def test_format_refuses_non_integers() -> None:
    with pytest.raises(FrameSpecError):
        format_frame_spec([1, 2.5])


frame_sets = st.sets(st.integers(min_value=-300, max_value=3000), min_size=1, max_size=80)


@settings(max_examples=200, deadline=None)
@given(frame_sets)
def test_format_then_parse_gives_the_sorted_set(frames: set[int]) -> None:
    text = format_frame_spec(frames)
    assert parse_frame_spec(text) == sorted(frames)
    assert len(text) <= len(",".join(map(str, sorted(frames))))  # never longer than the plain list


# ---------------------------------------------------------------------------------------------
# Random specs against a plain-Python reference expansion.


@st.composite
def spec_items(draw: st.DrawFn) -> tuple[str, list[int]]:
    """(item text, reference frames) for one random N, A-B, A-BxN or A-ByN item."""
    kind = draw(st.sampled_from(["single", "range", "x", "y"]))
    start = draw(st.integers(-60, 60))
    if kind == "single":
        return str(start), [start]
    end = draw(st.integers(-60, 60).filter(lambda value: value != start))
    direction = 1 if end > start else -1
    full = list(range(start, end + direction, direction))
    if kind == "range":
        return f"{start}-{end}", full
    step = direction * draw(st.integers(1, 12))
    stepped = list(range(start, end + direction, step))
    if kind == "x":
        return f"{start}-{end}x{step}", stepped
    return f"{start}-{end}y{step}", [frame for frame in full if frame not in stepped]


@settings(max_examples=300, deadline=None)
@given(st.lists(spec_items(), min_size=1, max_size=6), st.sampled_from([",", ", ", " ,  "]))
def test_random_specs_match_reference_expansion(items: list[tuple[str, list[int]]], separator: str) -> None:
    spec = separator.join(text for text, _ in items)
    if any(not frames for _, frames in items):  # e.g. "3-9y1" selects nothing: an error
        with pytest.raises(FrameSpecError):
            parse_frame_spec(spec)
        return
    expected: list[int] = []
    for _, frames in items:
        for frame in frames:
            if frame not in expected:
                expected.append(frame)
    assert parse_frame_spec(spec) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(1, 20))
def test_interleave_is_a_permutation_starting_with_the_coarse_pass(start: int, end: int, size: int) -> None:
    if start == end:
        return
    direction = 1 if end > start else -1
    step = direction * size
    frames = parse_frame_spec(f"{start}-{end}:{step}")
    full = list(range(start, end + direction, direction))
    coarse = list(range(start, end + direction, step))
    assert sorted(frames) == sorted(full)
    assert len(frames) == len(set(frames))
    assert frames[: len(coarse)] == coarse


# ---------------------------------------------------------------------------------------------
# chunks and shards


def test_chunk_examples() -> None:
    assert chunk_frames([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert chunk_frames([], 3) == []
    with pytest.raises(FrameSpecError):
        chunk_frames([1, 2], 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-1000, 1000), unique=True, max_size=200), st.integers(1, 50))
def test_chunks_concatenate_back(frames: list[int], size: int) -> None:
    chunks = chunk_frames(frames, size)
    assert [frame for chunk in chunks for frame in chunk] == frames
    assert all(1 <= len(chunk) <= size for chunk in chunks)
    assert all(len(chunk) == size for chunk in chunks[:-1])


def test_shard_examples() -> None:
    frames = list(range(1, 11))
    assert [shard_frames(frames, k, 3) for k in (1, 2, 3)] == [[1, 2, 3, 4], [5, 6, 7], [8, 9, 10]]
    assert shard_frames([1, 2], 3, 3) == []


@pytest.mark.parametrize(("index", "count"), [(0, 3), (4, 3), (1, 0), (-1, 2), (True, 2)])
def test_bad_shards_are_refused(index: int, count: int) -> None:
    with pytest.raises(FrameSpecError):
        shard_frames([1, 2, 3], index, count)


def test_parse_shard() -> None:
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(" 1 / 1 ") == (1, 1)
    for text in ["0/4", "5/4", "2-4", "a/b", "2/0"]:
        with pytest.raises(FrameSpecError):
            parse_shard(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-1000, 1000), unique=True, max_size=200), st.integers(1, 40))
def test_shards_partition_into_contiguous_balanced_blocks(frames: list[int], count: int) -> None:
    shards = [shard_frames(frames, index, count) for index in range(1, count + 1)]
    # Every frame in exactly one shard, shards in order: concatenation is the original list.
    assert [frame for shard in shards for frame in shard] == frames
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)
