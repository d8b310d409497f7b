"""Image sequences: every pattern syntax on disk, padding rules, discovery, and the errors."""

from __future__ import annotations

from pathlib import Path

import fileseq
import pytest

from sketchcolor_cli.frames.sequence import (
    FrameSequence,
    SequenceError,
    discover_sequences,
    find_sequence,
    is_pattern,
    sequence_path,
)

PRESENT = [1, 2, 4, 5]  # frames 1-5 with frame 3 missing


def touch(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


# (pattern as written, name of frame n on disk, normalised pattern, padding)
SYNTAXES = [
    ("line/####.png", lambda n: f"line/{n:04d}.png", "line/####.png", 4),
    ("line/@@@@.png", lambda n: f"line/{n:04d}.png", "line/####.png", 4),
    ("line/%04d.png", lambda n: f"line/{n:04d}.png", "line/####.png", 4),
    ("line/$F4.png", lambda n: f"line/{n:04d}.png", "line/####.png", 4),
    ("line/name.1-24#.png", lambda n: f"line/name.{n}.png", "line/name.#.png", 1),
    ("line/sc01_###.tif", lambda n: f"line/sc01_{n:03d}.tif", "line/sc01_###.tif", 3),
    ("line/*.png", lambda n: f"line/cut.{n:04d}.png", "line/cut.####.png", 4),
    ("line/", lambda n: f"line/cut_{n:05d}.png", "line/cut_#####.png", 5),
    ("line", lambda n: f"line/{n:02d}.png", "line/##.png", 2),
]


@pytest.mark.parametrize(("pattern", "name_of", "normalised", "padding"), SYNTAXES)
def test_find_sequence_for_each_syntax(
    tmp_path: Path, pattern: str, name_of, normalised: str, padding: int
) -> None:
    touch(tmp_path, *(name_of(frame) for frame in PRESENT))
    touch(tmp_path, "line/notes.txt", "other.0003.png")  # not part of the sequence

    sequence = find_sequence(pattern, tmp_path)

    assert list(sequence.frames) == PRESENT
    assert sequence.frames == {frame: tmp_path / name_of(frame) for frame in PRESENT}
    assert all(path.is_file() for path in sequence.frames.values())
    assert sequence.missing == [3]
    assert (sequence.first, sequence.last) == (1, 5)
    assert sequence.pattern == normalised
    assert sequence.padding == padding
    assert sequence.base_dir == tmp_path
    assert sequence.path_for(3) == tmp_path / name_of(3)
    assert sequence.path_for(12345) == tmp_path / name_of(12345)


@pytest.mark.parametrize(("pattern", "name_of", "normalised", "padding"), SYNTAXES)
def test_sequence_path_for_each_syntax(tmp_path: Path, pattern: str, name_of, normalised: str, padding: int) -> None:
    touch(tmp_path, *(name_of(frame) for frame in PRESENT))
    if "*" in pattern:
        with pytest.raises(SequenceError, match="glob"):
            sequence_path(pattern, tmp_path, 3)
        return
    assert sequence_path(pattern, tmp_path, 3) == tmp_path / name_of(3)
    assert sequence_path(pattern, tmp_path, 10000) == tmp_path / name_of(10000)


def test_sequence_path_needs_no_files(tmp_path: Path) -> None:
    # Outputs and masks: the folder and the frames may not exist yet.
    assert sequence_path("out/color/sh010.####.exr", tmp_path, 7) == tmp_path / "out/color/sh010.0007.exr"
    assert sequence_path("masks/hero/%03d.png", tmp_path, 12) == tmp_path / "masks/hero/012.png"
    assert sequence_path("masks/$F.png", tmp_path, 12) == tmp_path / "masks/12.png"
    assert sequence_path("a/b_@@.png", tmp_path, 3) == tmp_path / "a/b_03.png"
    assert sequence_path("sh010_####_v2.png", tmp_path, 8) == tmp_path / "sh010_0008_v2.png"
    assert not (tmp_path / "out").exists()


def test_sequence_path_refuses_plain_file_names(tmp_path: Path) -> None:
    with pytest.raises(SequenceError, match="one file"):
        sequence_path("line/0001.png", tmp_path, 1)


# ---------------------------------------------------------------------------------------------
# Padding rules


def test_hash_is_one_digit_each(tmp_path: Path) -> None:
    assert sequence_path("a.#.png", tmp_path, 7) == tmp_path / "a.7.png"
    assert sequence_path("a.##.png", tmp_path, 7) == tmp_path / "a.07.png"
    assert sequence_path("a.####.png", tmp_path, 7) == tmp_path / "a.0007.png"
    assert sequence_path("a.@.png", tmp_path, 7) == tmp_path / "a.7.png"


def test_fileseq_pad_styles_pinned() -> None:
    # Why we pass PAD_STYLE_HASH1: fileseq's default reads one '#' as four digits.
    assert fileseq.PAD_STYLE_DEFAULT == fileseq.PAD_STYLE_HASH4
    assert fileseq.FileSequence("a.#.png").frame(7) == "a.0007.png"
    assert fileseq.FileSequence("a.####.png").frame(7) == "a.0000000000000007.png"
    assert fileseq.FileSequence("a.#.png", pad_style=fileseq.PAD_STYLE_HASH1).frame(7) == "a.7.png"
    assert fileseq.FileSequence("a.####.png", pad_style=fileseq.PAD_STYLE_HASH1).frame(7) == "a.0007.png"
    # '@' is one digit each in both styles; printf and $F carry their own width.
    for style in (fileseq.PAD_STYLE_HASH4, fileseq.PAD_STYLE_HASH1):
        assert fileseq.FileSequence("a.@@@.png", pad_style=style).frame(7) == "a.007.png"
        assert fileseq.FileSequence("a.%04d.png", pad_style=style).frame(7) == "a.0007.png"
        assert fileseq.FileSequence("a.$F4.png", pad_style=style).frame(7) == "a.0007.png"
    # fileseq reads the frame token only right before the extension.
    assert fileseq.FileSequence("sh010_####_v2.png", pad_style=fileseq.PAD_STYLE_HASH1).padding() == ""


def test_over_long_frame_numbers_are_found_and_wrong_widths_are_not(tmp_path: Path) -> None:
    touch(tmp_path, "line/0001.png", "line/9999.png", "line/10000.png", "line/123456.png")
    touch(tmp_path, "line/7.png", "line/00008.png", "line/012.png")  # other paddings, not ####
    sequence = find_sequence("line/####.png", tmp_path)
    assert list(sequence.frames) == [1, 9999, 10000, 123456]
    assert sequence.frames[10000] == tmp_path / "line/10000.png"


def test_unpadded_pattern_finds_every_width(tmp_path: Path) -> None:
    names = [f"line/x.{frame}.png" for frame in (1, 2, 9, 10, 99, 100, 1000)]
    touch(tmp_path, *names, "line/x.05.png")  # zero-padded: not an unpadded frame
    for pattern in ("line/x.#.png", "line/x.%d.png", "line/x.$F.png", "line/x.1-1000#.png"):
        sequence = find_sequence(pattern, tmp_path)
        assert list(sequence.frames) == [1, 2, 9, 10, 99, 100, 1000], pattern
        assert sequence.padding == 1


def test_range_form_takes_only_the_frames_it_names(tmp_path: Path) -> None:
    touch(tmp_path, *(f"line/a.{frame:04d}.png" for frame in range(1, 11)))
    assert list(find_sequence("line/a.3-6####.png", tmp_path).frames) == [3, 4, 5, 6]
    assert list(find_sequence("line/a.1-10x3####.png", tmp_path).frames) == [1, 4, 7, 10]
    with pytest.raises(SequenceError, match="frame range"):
        find_sequence("line/a.10-1x2####.png", tmp_path)


def test_negative_frames_in_patterns(tmp_path: Path) -> None:
    touch(tmp_path, "x.-002.png", "x.-001.png", "x.0000.png", "x.0001.png")
    sequence = find_sequence("x.####.png", tmp_path)
    assert list(sequence.frames) == [-2, -1, 0, 1]
    assert sequence.path_for(-1) == tmp_path / "x.-001.png"


def test_token_inside_the_name(tmp_path: Path) -> None:
    touch(tmp_path, "line/sh010_0001_v2.png", "line/sh010_0002_v2.png", "line/sh010_0002_v3.png")
    sequence = find_sequence("line/sh010_####_v2.png", tmp_path)
    assert list(sequence.frames) == [1, 2]
    assert sequence.path_for(5) == tmp_path / "line/sh010_0005_v2.png"


def test_path_for_without_files_on_disk() -> None:
    sequence = FrameSequence("out/c.##.png", Path("/cut"), {}, 2)
    assert sequence.path_for(4) == Path("/cut/out/c.04.png")
    assert sequence.missing == []
    with pytest.raises(SequenceError):
        _ = sequence.first


# ---------------------------------------------------------------------------------------------
# Discovery


def test_discovery_finds_two_sequences_in_one_cut(tmp_path: Path) -> None:
    touch(tmp_path, *(f"line/sh010_line.{frame:04d}.png" for frame in PRESENT))
    touch(tmp_path, *(f"color/SH010_COL_{frame:03d}.TIF" for frame in range(1, 4)))
    touch(tmp_path, "ref.png", "logo_v2.png", "notes/take_0001.txt", "notes/take_0002.txt", ".cache/0001.png")
    touch(tmp_path, "still/0001.png")  # a one-drawing cut: zero-padded, so a sequence

    found = discover_sequences(tmp_path)

    assert [sequence.pattern for sequence in found] == [
        "color/SH010_COL_###.TIF",
        "line/sh010_line.####.png",
        "still/####.png",
    ]
    color, line, still = found
    assert list(line.frames) == PRESENT and line.missing == [3]
    assert color.frames == {frame: tmp_path / f"color/SH010_COL_{frame:03d}.TIF" for frame in (1, 2, 3)}
    assert list(still.frames) == [1]
    assert all(sequence.base_dir == tmp_path for sequence in found)
    # A discovered pattern reads back to the same frames.
    for sequence in found:
        assert find_sequence(sequence.pattern, tmp_path).frames == sequence.frames


def test_discovery_not_recursive(tmp_path: Path) -> None:
    touch(tmp_path, "a.0001.png", "a.0002.png", "line/0001.png", "line/0002.png")
    assert [sequence.pattern for sequence in discover_sequences(tmp_path, recursive=False)] == ["a.####.png"]


def test_discovery_splits_paddings_and_keeps_over_long_frames(tmp_path: Path) -> None:
    touch(tmp_path, "0001.png", "0002.png", "10000.png", "1.png", "2.png", "001.png", "002.png")
    found = {sequence.pattern: list(sequence.frames) for sequence in discover_sequences(tmp_path)}
    assert found == {"###.png": [1, 2], "####.png": [1, 2, 10000], "#.png": [1, 2]}


def test_discovery_reads_hyphen_as_separator_unlike_fileseq(tmp_path: Path) -> None:
    touch(tmp_path, "shot-0001.png", "shot-0002.png", "shot-0003.png")
    # fileseq reads the hyphen as a minus sign; pinned here because it is why we group ourselves.
    (theirs,) = fileseq.findSequencesOnDisk(str(tmp_path), pad_style=fileseq.PAD_STYLE_HASH1)
    assert sorted(theirs.frameSet()) == [-3, -2, -1]
    (ours,) = discover_sequences(tmp_path)
    assert ours.pattern == "shot-####.png"
    assert list(ours.frames) == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# Errors


def test_glob_with_no_match(tmp_path: Path) -> None:
    touch(tmp_path, "line/0001.jpg")
    with pytest.raises(SequenceError) as caught:
        find_sequence("line/*.png", tmp_path)
    message = str(caught.value)
    assert "line/*.png" in message and str(tmp_path) in message and "0001.jpg" in message


def test_glob_with_duplicate_number(tmp_path: Path) -> None:
    touch(tmp_path, "line/take1_0001.png", "line/take2_0001.png", "line/take2_0002.png")
    with pytest.raises(SequenceError) as caught:
        find_sequence("line/*.png", tmp_path)
    message = str(caught.value)
    assert "line/take1_0001.png" in message and "line/take2_0001.png" in message and "frame 1" in message


def test_glob_with_a_file_without_number(tmp_path: Path) -> None:
    touch(tmp_path, "line/0001.png", "line/0002.png", "line/cover.png")
    with pytest.raises(SequenceError, match="without a frame number.*cover.png"):
        find_sequence("line/*.png", tmp_path)


def test_glob_over_two_sequences(tmp_path: Path) -> None:
    touch(tmp_path, "line/a_0001.png", "line/b_0002.png")
    with pytest.raises(SequenceError, match="2 sequences"):
        find_sequence("line/*.png", tmp_path)


def test_pattern_with_no_frames(tmp_path: Path) -> None:
    touch(tmp_path, "line/1.png", "line/2.png")
    with pytest.raises(SequenceError) as caught:
        find_sequence("line/####.png", tmp_path)
    message = str(caught.value)
    # Names the pattern, the folder, what it expected and what is there.
    assert "line/####.png" in message and str(tmp_path / "line") in message
    assert "0001.png" in message and "1.png, 2.png" in message


def test_missing_folder_and_plain_file(tmp_path: Path) -> None:
    with pytest.raises(SequenceError, match="does not exist"):
        find_sequence("nope/####.png", tmp_path)
    touch(tmp_path, "line/0001.png")
    with pytest.raises(SequenceError, match="one file"):
        find_sequence("line/0001.png", tmp_path)
    with pytest.raises(SequenceError, match="more than one frame token"):
        find_sequence("line/####_##.png", tmp_path)


def test_folder_with_two_sequences_or_none(tmp_path: Path) -> None:
    touch(tmp_path, "line/a.0001.png", "line/a.0002.png", "line/b.0001.png", "line/b.0002.png")
    with pytest.raises(SequenceError) as caught:
        find_sequence("line/", tmp_path)
    assert "line/a.####.png" in str(caught.value) and "line/b.####.png" in str(caught.value)
    touch(tmp_path, "empty/readme.txt")
    with pytest.raises(SequenceError, match="no image sequence"):
        find_sequence("empty/", tmp_path)


def test_sequence_error_is_a_value_error() -> None:
    assert issubclass(SequenceError, ValueError)


# ---------------------------------------------------------------------------------------------
# is_pattern


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("line/####.png", True),
        ("line/@@@@.png", True),
        ("line/%04d.png", True),
        ("line/$F4.png", True),
        ("line/name.1-24#.png", True),
        ("line/*.png", True),
        ("line/frame_[0-9].png", True),
        ("line/", True),
        ("sh010_####_v2.png", True),
        ("line/0001.png", False),
        ("refs/model_sheet.png", False),
        ("refs/logo@2x.png", False),
        ("name.1-24.png", False),
    ],
)
def test_is_pattern(text: str, expected: bool) -> None:
    assert is_pattern(text) is expected
