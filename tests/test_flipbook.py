"""Tests for the flip-book movie writer (H.264 MP4 via imageio-ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from movies import read_movie as _read_movie

from sketchcolor_cli.frames.images import write_exr_layers, write_image
from sketchcolor_cli.outputs.flipbook import write_flipbook

WIDTH, HEIGHT = 96, 64
COLOURS = [(65535, 0, 0), (0, 65535, 0), (0, 0, 65535), (65535, 65535, 0), (0, 65535, 65535)]


def _frame(colour: tuple[int, int, int], alpha: int = 65535) -> np.ndarray:
    image = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint16)
    image[:, :, :3] = colour
    image[:, :, 3] = alpha
    return image


def _write_frames(folder: Path, images: list[np.ndarray], first: int = 101) -> list[tuple[int, Path]]:
    frames = []
    for offset, image in enumerate(images):
        path = folder / f"shot.{first + offset:04d}.png"
        write_image(path, image)
        frames.append((first + offset, path))
    return frames


def test_five_coloured_frames(tmp_path: Path) -> None:
    frames = _write_frames(tmp_path, [_frame(c) for c in COLOURS])
    out = write_flipbook(frames, tmp_path / "review" / "cut.mp4", fps=12, label="cut 12")
    assert out == tmp_path / "review" / "cut.mp4"
    movie = _read_movie(out)
    assert len(movie) == 5
    height, width = movie[0].shape[:2]
    assert height % 2 == 0 and width % 2 == 0
    assert (width, height) == (WIDTH, HEIGHT)
    # away from the burnt-in corner each frame shows its own colour (H.264 is lossy: loose bound)
    for picture, colour in zip(movie, COLOURS):
        centre = picture[HEIGHT // 2 :, WIDTH // 2 :].reshape(-1, 3).mean(axis=0)
        assert np.abs(centre - np.array(colour) / 257).max() < 30
    # atomic: nothing but the movie in the folder
    assert [p.name for p in (tmp_path / "review").iterdir()] == ["cut.mp4"]


def test_frame_number_is_burnt_into_the_corner(tmp_path: Path) -> None:
    # identical pictures: only the burnt-in frame number can make the frames differ
    frames = _write_frames(tmp_path, [_frame((30000, 30000, 30000))] * 3, first=7)
    movie = _read_movie(write_flipbook(frames, tmp_path / "same.mp4"))
    corner = [frame[: HEIGHT // 3, : WIDTH // 2].astype(int) for frame in movie]
    far = [frame[HEIGHT // 2 :, WIDTH // 2 :].astype(int) for frame in movie]
    assert np.abs(corner[0] - corner[1]).mean() > 2
    assert np.abs(corner[1] - corner[2]).mean() > 2
    assert np.abs(far[0] - far[1]).max() < 12
    # the text has bright and dark strokes (white with a dark outline) on a mid-grey frame
    assert corner[0].max() > 200 and corner[0].min() < 60


def test_transparent_pixels_show_a_checker(tmp_path: Path) -> None:
    frames = _write_frames(tmp_path, [_frame((65535, 0, 0), alpha=0)] * 2)
    picture = _read_movie(write_flipbook(frames, tmp_path / "clear.mp4", background="checker"))[0]
    lower = picture[HEIGHT // 2 :].astype(int)
    # no red shows through, and the checker has two distinct greys
    assert np.abs(lower[:, :, 0] - lower[:, :, 1]).mean() < 8
    assert lower[:, :, 1].max() - lower[:, :, 1].min() > 25
    plain = _read_movie(write_flipbook(frames, tmp_path / "grey.mp4", background="grey"))[0]
    assert plain[HEIGHT // 2 :].astype(int).std() < 4


def test_side_by_side_doubles_width_and_max_width_scales(tmp_path: Path) -> None:
    frames = _write_frames(tmp_path / "a", [_frame(c) for c in COLOURS])
    others = _write_frames(tmp_path / "b", [_frame((65535, 65535, 65535))] * 5)
    movie = _read_movie(write_flipbook(frames, tmp_path / "pair.mp4", side_by_side=[others]))
    assert len(movie) == 5
    assert movie[0].shape[:2] == (HEIGHT, 2 * WIDTH)
    # right half is the second sequence (white), left half the first (red on frame one)
    assert movie[0][HEIGHT // 2 :, WIDTH + 10 :].mean() > 230
    assert movie[0][HEIGHT // 2 :, 10:WIDTH - 10, 0].mean() > 220
    assert movie[0][HEIGHT // 2 :, 10:WIDTH - 10, 1].mean() < 30

    scaled = _read_movie(write_flipbook(frames, tmp_path / "small.mp4", side_by_side=[others], max_width=97))
    height, width = scaled[0].shape[:2]
    assert width <= 98 and width % 2 == 0 and height % 2 == 0
    assert abs(height - round(HEIGHT * 97 / (2 * WIDTH))) <= 1


def test_missing_frame_becomes_a_black_card(tmp_path: Path) -> None:
    frames = _write_frames(tmp_path, [_frame((65535, 65535, 65535))] * 2)
    frames.insert(1, (150, tmp_path / "shot.0150.png"))  # never written
    movie = _read_movie(write_flipbook(frames, tmp_path / "gap.mp4"))
    assert len(movie) == 3
    assert movie[0].mean() > 200 and movie[2].mean() > 200
    card = movie[1].astype(int)
    assert card.mean() < 60  # mostly black
    assert card[HEIGHT // 3 : 2 * HEIGHT // 3].max() > 150  # with light text across the middle


def test_odd_sizes_are_padded_even(tmp_path: Path) -> None:
    image = np.zeros((33, 51, 4), dtype=np.uint16)
    image[:, :, 1] = 65535
    image[:, :, 3] = 65535
    path = tmp_path / "odd.png"
    write_image(path, image)
    movie = _read_movie(write_flipbook([(1, path), (2, path)], tmp_path / "odd.mp4"))
    assert movie[0].shape[:2] == (34, 52)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frames"):
        write_flipbook([], tmp_path / "x.mp4")
    path = tmp_path / "a.png"
    write_image(path, _frame((0, 0, 0)))
    with pytest.raises(ValueError, match=r"\.mp4"):
        write_flipbook([(1, path)], tmp_path / "x.mov")
    assert not list(tmp_path.glob("*.mov")) and not list(tmp_path.glob(".*"))


def test_layer_of_multi_layer_exr_frames(tmp_path: Path) -> None:
    frames = []
    for number in (1, 2):
        path = tmp_path / f"out.{number:04d}.exr"
        write_exr_layers(path, {"color": _frame((65535, 0, 0)), "fill": _frame((0, 0, 65535))})
        frames.append((number, path))
    fill = _read_movie(write_flipbook(frames, tmp_path / "fill.mp4", layer="fill"))
    colour = _read_movie(write_flipbook(frames, tmp_path / "color.mp4", layer="color", side_by_side=[frames],
                                        side_by_side_layers=["fill"]))
    lower = slice(HEIGHT // 2, None)
    assert fill[0][lower, :, 2].mean() > 220 and fill[0][lower, :, 0].mean() < 30
    assert colour[0][lower, :WIDTH, 0].mean() > 220 and colour[0][lower, WIDTH:, 2].mean() > 220
    card = _read_movie(write_flipbook(frames, tmp_path / "none.mp4", layer="review"))[0]
    assert card.mean() < 60  # no such layer: a black card, not a crash
