"""A flip-book movie of a cut: the frames as an H.264 MP4 with frame numbers burnt in.

Meant for quick review, not delivery: transparency is shown over a grey checker (or plain grey),
extra sequences (line art | result | review) can sit side by side, the picture is scaled down to
a maximum width and padded to even dimensions (H.264 with yuv420p needs them). Frames that are
missing or unreadable become black cards that say so, so one bad frame never stops the movie.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
from pathlib import Path
from typing import Literal

import cv2
import imageio.v2 as imageio
import numpy as np

from sketchcolor_cli.frames.images import ImageError, image_size
from sketchcolor_cli.outputs.writers import read_for_viewing

log = logging.getLogger(__name__)

__all__ = ["FlipbookStream", "movie_picture", "viewing_panel", "write_flipbook"]

Frames = list[tuple[int, Path]]

CHECKER_DARK = 0.40  # mid-grey checker: reads as "transparent" and keeps light and dark lines visible
CHECKER_LIGHT = 0.60
PLAIN_GREY = 0.50
FALLBACK_SIZE = (640, 360)  # when no frame of a sequence can be read at all
QUALITY = 6.5  # imageio's 0-10 scale; 6.5 is x264's CRF 17, visually lossless


@functools.lru_cache(maxsize=4)
def _background(height: int, width: int, kind: Literal["checker", "grey"]) -> np.ndarray:
    """H x W x 1 float background in [0, 1], in sRGB-encoded values like the frames."""
    if kind == "grey":
        return np.full((height, width, 1), PLAIN_GREY)
    cell = max(8, min(height, width) // 24)
    ys, xs = np.indices((height, width))
    odd = ((ys // cell) + (xs // cell)) % 2 == 1
    return np.where(odd, CHECKER_LIGHT, CHECKER_DARK)[:, :, None]


def viewing_panel(bgra8: np.ndarray, kind: Literal["checker", "grey"] = "checker") -> np.ndarray:
    """A frame's layer, straight-alpha uint8 BGRA (OpenCV's order), as a flip-book panel: H x W x 3
    uint8 RGB over the grey background, in 8-bit OpenCV calls (a preview's precision); an opaque
    frame skips the blend."""
    bgra8 = np.ascontiguousarray(bgra8)
    rgb8, alpha = cv2.cvtColor(bgra8, cv2.COLOR_BGRA2RGB), cv2.extractChannel(bgra8, 3)
    if cv2.minMaxLoc(alpha)[0] >= 255:
        return rgb8
    # out = background + (colour - background) * alpha / 255, in 8-bit integer OpenCV calls
    alpha3 = cv2.cvtColor(alpha, cv2.COLOR_GRAY2RGB)
    back = _background_rgb8(bgra8.shape[0], bgra8.shape[1], kind)
    return cv2.add(cv2.multiply(rgb8, alpha3, scale=1 / 255), cv2.multiply(back, cv2.bitwise_not(alpha3), scale=1 / 255))


@functools.lru_cache(maxsize=4)
def _background_rgb8(height: int, width: int, kind: Literal["checker", "grey"]) -> np.ndarray:
    back = np.round(_background(height, width, kind) * 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(back, 3, axis=2))


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """White text with a dark outline, readable on any colour (drawn in place)."""
    thickness = max(1, round(scale * 2))
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, text, origin, font, scale, (0, 0, 0), thickness + 2 * max(1, thickness), cv2.LINE_AA)
    cv2.putText(image, text, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def _font_scale(height: int) -> float:
    return max(0.35, height / 720.0)


def _card(width: int, height: int, message: str) -> np.ndarray:
    """A black card with a centred message, for a frame that cannot be shown."""
    card = np.zeros((height, width, 3), dtype=np.uint8)
    scale = _font_scale(height) * 1.2
    thickness = max(1, round(scale * 2))
    # shrink until it fits the card's width
    while scale > 0.3:
        (text_w, text_h), _ = cv2.getTextSize(message, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        if text_w <= width * 0.9:
            break
        scale *= 0.85
    (text_w, text_h), _ = cv2.getTextSize(message, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    _text(card, message, (max(0, (width - text_w) // 2), (height + text_h) // 2), scale)
    return card


class FrameSequence:
    """One column of the flip-book: frame number -> image path, drawn at a fixed size."""

    def __init__(self, frames: Frames, background: Literal["checker", "grey"], layer: str | None = None):
        self.paths = {int(number): Path(path) for number, path in frames}
        self.background = background
        self.layer = layer  # which layer of a multi-layer (EXR) frame file to show
        self.size = self._reference_size(frames)

    @staticmethod
    def _reference_size(frames: Frames) -> tuple[int, int]:
        for _, path in frames:
            try:
                return image_size(path, what="flip-book frame")
            except ImageError:
                continue
        return FALLBACK_SIZE

    def panel(self, number: int) -> np.ndarray:
        """The frame as H x W x 3 uint8 at this sequence's size, or a card saying what is wrong."""
        width, height = self.size
        path = self.paths.get(number)
        if path is None or not path.exists():
            return _card(width, height, f"missing frame {number}")
        try:
            rgba = read_for_viewing(path, self.layer or "", what="flip-book frame")
        except ImageError as error:
            log.warning("flip-book: %s", error)
            return _card(width, height, f"unreadable frame {number}")
        except KeyError:
            log.warning("flip-book: frame %d '%s' has no layer %r", number, path, self.layer)
            return _card(width, height, f"no {self.layer} in frame {number}")
        rgb = viewing_panel(rgba, self.background)
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        return rgb


def _fit_height(panel: np.ndarray, height: int) -> np.ndarray:
    if panel.shape[0] == height:
        return panel
    width = max(1, round(panel.shape[1] * height / panel.shape[0]))
    interpolation = cv2.INTER_AREA if height < panel.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(panel, (width, height), interpolation=interpolation)


def _scale_and_even(image: np.ndarray, max_width: int) -> np.ndarray:
    height, width = image.shape[:2]
    if width > max_width:
        new_height = max(2, round(height * max_width / width))
        image = cv2.resize(image, (max_width, new_height), interpolation=cv2.INTER_AREA)
        height, width = image.shape[:2]
    # pad (never crop) to even dimensions
    pad_bottom, pad_right = height % 2, width % 2
    if pad_bottom or pad_right:
        image = cv2.copyMakeBorder(image, 0, pad_bottom, 0, pad_right, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return image


def _burn_in(image: np.ndarray, number: int, label: str) -> np.ndarray:
    image = np.ascontiguousarray(image)
    scale = _font_scale(image.shape[0])
    text = f"{number:04d}" + (f"  {label}" if label else "")
    (_, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(scale * 2)))
    margin = max(4, text_h // 2)
    _text(image, text, (margin, margin + text_h), scale)
    return image


def movie_picture(panels: list[np.ndarray], number: int, *, label: str = "", max_width: int = 1920) -> np.ndarray:
    """One movie frame: RGB `panels` (the main sequence first) side by side at the first one's
    height, scaled down to `max_width`, padded to even size, the frame number burnt in. The same
    for pictures made from files here and from a frame's layers in memory (`outputs.review`)."""
    main_height = panels[0].shape[0]
    picture = _scale_and_even(np.concatenate([_fit_height(p, main_height) for p in panels], axis=1), max_width)
    return _burn_in(picture, number, label)


class FlipbookStream:
    """An H.264 MP4 written a frame at a time: to a temp file beside `out_path`, renamed into place
    by `close()`; `abort()` removes it. `quality` is imageio's 0-10 scale."""

    def __init__(self, out_path: Path, *, fps: float = 24, quality: float = QUALITY):
        out_path = Path(out_path)
        if fps <= 0:
            raise ValueError(f"cannot write flip-book '{out_path}': fps must be positive, got {fps}")
        if out_path.suffix.lower() != ".mp4":
            raise ValueError(f"cannot write flip-book '{out_path}': the name must end in .mp4")
        self.out_path = out_path
        out_path.parent.mkdir(parents=True, exist_ok=True)
        self.temp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{out_path.suffix}")
        self._writer = imageio.get_writer(
            str(self.temp),
            format="FFMPEG",
            mode="I",
            fps=float(fps),
            codec="libx264",
            quality=quality,
            pixelformat="yuv420p",
            macro_block_size=1,  # we make sizes even ourselves; don't let imageio resize
            ffmpeg_log_level="error",
            # A review movie, watched once. x264's superfast preset at CRF 17 (imageio's quality
            # 6.5) looks as close to the frames as veryfast at CRF 10 did (45 dB on a 1080p
            # cut) for half the CPU: encoding runs beside the engine while the cut is coloured.
            output_params=["-preset", "superfast"],
        )

    def append(self, picture: np.ndarray) -> None:
        self._writer.append_data(picture)

    def close(self) -> Path:
        try:
            self._writer.close()
            os.replace(self.temp, self.out_path)
        except BaseException:
            self.abort()
            raise
        return self.out_path

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - the movie is being thrown away
            pass
        try:
            self.temp.unlink()
        except FileNotFoundError:
            pass


def write_flipbook(
    frames: list[tuple[int, Path]],
    out_path: Path,
    *,
    fps: float = 24,
    label: str = "",
    max_width: int = 1920,
    side_by_side: list[list[tuple[int, Path]]] | None = None,
    background: Literal["checker", "grey"] = "checker",
    quality: float = QUALITY,
    layer: str | None = None,
    side_by_side_layers: list[str | None] | None = None,
) -> Path:
    """Write an H.264 MP4 of `frames` (frame number, image path), one movie frame per entry.

    `side_by_side` sequences are matched by frame number and drawn to the right, each scaled to
    the main sequence's height. The movie is scaled down to `max_width` and padded to even size.
    `quality` is imageio's 0-10 scale. `layer` picks the layer shown from multi-layer frame files
    (e.g. "color" of an EXR holding color/fill/line); `side_by_side_layers` does the same for each
    extra sequence. Written atomically; returns `out_path`.
    """
    out_path = Path(out_path)
    if not frames:
        raise ValueError(f"cannot write flip-book '{out_path}': no frames given")
    if max_width < 2:
        raise ValueError(f"cannot write flip-book '{out_path}': max_width must be at least 2, got {max_width}")
    extras = side_by_side or []
    extra_layers = list(side_by_side_layers or []) + [None] * len(extras)
    sequences = [FrameSequence(frames, background, layer)] + [
        FrameSequence(extra, background, extra_layer) for extra, extra_layer in zip(extras, extra_layers)
    ]
    stream = FlipbookStream(out_path, fps=fps, quality=quality)
    try:
        for number, _ in frames:
            stream.append(movie_picture([s.panel(number) for s in sequences], number, label=label, max_width=max_width))
    except BaseException:
        stream.abort()
        raise
    return stream.close()
