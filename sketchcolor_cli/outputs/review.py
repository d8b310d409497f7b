"""A cut's review files (contact sheet, flip-book), fed by its frames as they are written.

Made after the last frame by reading every shown frame back from disk, they cost a 1080p cut as
much CPU as colouring a fifth of it, and the wait came after the last frame. The writer that has a
frame's layers in memory makes the frame's share of the review there instead (`frame_preview`: the
sheet's thumbnails and the movie picture) and sends it with the frame's outcome; `CutReview` keeps
the thumbnails and streams the pictures to the movie encoder in frame order while the cut runs.
Whatever does not come that way (frames skipped as done, frames that arrived too far out of order,
failed frames, the pictures of workers in other processes) is read from its file, as
`sketchcolor preview` reads all of them, so a resumed run's review shows the whole cut.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sketchcolor_cli.outputs.contact_sheet import THUMB_WIDTH, sheet_rows, thumb_height, thumbnail, write_contact_sheet
from sketchcolor_cli.outputs.flipbook import FlipbookStream, FrameSequence, movie_picture, viewing_panel
from sketchcolor_cli.outputs.writers import layer_pixels, viewing_pixels

CONTACT_SHEET = "contact_sheet.png"
FLIPBOOK = "flipbook.mp4"
SHOWN_LAYERS = ("color", "review")  # the result layers a review shows, when written
LINE = "line"  # the input line art's column (sheet) and panel (movie)
# Pictures kept while an earlier frame is awaited; beyond this the rest of the movie is read from
# the files at the end (several workers colour far-apart frames at once).
MAX_WAITING_PICTURES = 8

SHEET = "sheet"  # what a worker makes for a frame: its contact-sheet thumbnails ...
MOVIE = "movie"  # ... and its flip-book picture


@dataclass(frozen=True)
class ReviewLayout:
    """What a cut's review shows, from its output settings and the layers it writes."""

    name: str
    engine: str
    shown: tuple[str, ...]
    contact_sheet: bool
    flipbook: bool
    side_by_side: bool
    fps: float

    @classmethod
    def of(cls, cut: Any, layers: list[str] | tuple[str, ...]) -> "ReviewLayout":
        outputs = cut.manifest.outputs
        shown = tuple(layer for layer in SHOWN_LAYERS if layer in layers)
        return cls(
            name=cut.name, engine=cut.manifest.engine.name, shown=shown, contact_sheet=outputs.contact_sheet,
            flipbook=bool(outputs.flipbook and shown), side_by_side=outputs.flipbook_side_by_side, fps=cut.manifest.fps,
        )  # fmt: skip

    @property
    def columns(self) -> tuple[str, ...]:
        """The contact sheet's columns: the line art, then the results."""
        return (LINE,) + self.shown

    @property
    def panels(self) -> tuple[str, ...]:
        """The flip-book's panels: the first result, then (side by side) the line art and the rest."""
        if not self.shown:
            return ()
        return self.shown[:1] + ((LINE,) + self.shown[1:] if self.side_by_side else ())


def frame_preview(layout: ReviewLayout, wants: tuple[str, ...], frame: int, line_art: np.ndarray, layers: Any) -> dict:
    """A frame's share of the review from its input line art (uint16 RGBA) and its layers in memory:
    {"thumbs": one sheet cell per column} and/or {"picture": the movie frame}, as `wants` asks."""
    viewed: dict[str, np.ndarray] = {}

    def view(name: str) -> np.ndarray:
        if name not in viewed:
            viewed[name] = viewing_pixels(line_art if name == LINE else layer_pixels(layers, name))
        return viewed[name]

    preview: dict = {}
    if SHEET in wants:
        height = thumb_height(line_art.shape[0] / line_art.shape[1])
        preview["thumbs"] = [thumbnail(view(column), THUMB_WIDTH, height) for column in layout.columns]
    if MOVIE in wants and layout.panels:
        panels = [viewing_panel(view(name)) for name in layout.panels]
        preview["picture"] = movie_picture(panels, frame, label=layout.name)
    return preview


class CutReview:
    """The review of one cut, filled while it runs (`frame_finished`) and written by `finish`.
    `contact_sheet` / `flipbook` override the cut's settings."""

    def __init__(self, plan: Any, *, contact_sheet: bool | None = None, flipbook: bool | None = None):
        from sketchcolor_cli.frames.images import remove_stale_temps

        cut = plan.cut
        layout = ReviewLayout.of(cut, plan.layers)
        if contact_sheet is not None:
            layout = replace(layout, contact_sheet=contact_sheet)
        if flipbook is not None:
            layout = replace(layout, flipbook=flipbook and bool(layout.shown))
        self.layout = layout
        self.out_dir: Path = cut.output_dir
        self.references = [cut.path(sheet.image) for c in cut.manifest.characters for sheet in c.references]
        self.units = {unit.frame: unit for unit in sorted(plan.units, key=lambda u: u.frame)}
        self.sheet_frames = set(sheet_rows(list(self.units))) if self.layout.contact_sheet else set()
        self.stream_pictures = False  # see `take_pictures`
        self.thumbs: dict[int, list[np.ndarray]] = {}
        # The movie, in frame order: a frame's picture once it has come (None: read its files).
        self._order = list(self.units) if self.layout.flipbook else []
        self._arrived: dict[int, np.ndarray | None] = {unit.frame: None for unit in plan.skipped}
        self._next = 0
        self._finishing = False
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stream: FlipbookStream | None = None
        self._sequences: list[FrameSequence] | None = None
        self._error: BaseException | None = None
        # a killed earlier run may have left a half-written sheet or movie beside these
        remove_stale_temps([self.out_dir / CONTACT_SHEET, self.out_dir / FLIPBOOK])

    # -- while the cut runs ----------------------------------------------------------------

    def take_pictures(self, in_process: bool) -> None:
        """Workers that run in this process send their frames' movie pictures (handed over, not
        copied); other workers send thumbnails only, and the movie is read from the files."""
        self.stream_pictures = in_process and self.layout.flipbook

    def wants(self, frame: int) -> tuple[str, ...]:
        """What the worker colouring `frame` should make for the review."""
        wanted = (SHEET,) if frame in self.sheet_frames else ()
        if self.stream_pictures:
            wanted += (MOVIE,)
        return wanted

    def frame_finished(self, frame: int, preview: dict | None) -> None:
        """A frame is written (or failed: no preview); its review pieces, if any, are kept."""
        preview = preview or {}
        if "thumbs" in preview and frame in self.sheet_frames:
            self.thumbs[frame] = preview["thumbs"]
        if not self._order or frame not in self.units:
            return
        picture = preview.get("picture")
        with self._condition:
            if picture is not None and sum(p is not None for p in self._arrived.values()) >= MAX_WAITING_PICTURES:
                # far out of order: stop holding pictures; these frames are read from their files
                self.stream_pictures = False
                self._arrived = dict.fromkeys(self._arrived)
                picture = None
            self._arrived[frame] = picture
            self._condition.notify()
        self._start()

    def _start(self) -> None:
        if self._thread is None and self._order:
            self._thread = threading.Thread(target=self._encode, name="sketchcolor-flipbook", daemon=True)
            self._thread.start()

    def _encode(self) -> None:
        """The movie's frames in order, each as soon as it and every frame before it have come."""
        try:
            while True:
                with self._condition:
                    while self._next < len(self._order):
                        frame = self._order[self._next]
                        if frame in self._arrived or self._finishing:
                            break
                        self._condition.wait()
                    if self._next == len(self._order):
                        break
                    picture = self._arrived.pop(frame, None)
                    self._next += 1
                if picture is None:
                    picture = self._picture_from_files(frame)
                if self._stream is None:
                    self._stream = FlipbookStream(self.out_dir / FLIPBOOK, fps=self.layout.fps)
                self._stream.append(picture)
        except BaseException as error:  # noqa: BLE001 - raised again by finish()
            self._error = error

    def _picture_from_files(self, frame: int) -> np.ndarray:
        if self._sequences is None:
            units = list(self.units.values())
            self._sequences = []
            for name in self.layout.panels:
                files = [(u.frame, u.line_path if name == LINE else u.outputs[name]) for u in units]
                self._sequences.append(FrameSequence(files, "checker", None if name == LINE else name))
        return movie_picture([s.panel(frame) for s in self._sequences], frame, label=self.layout.name)

    # -- at the end ------------------------------------------------------------------------

    def finish(self) -> dict[str, Path]:
        """Write the contact sheet (kept thumbnails, the rest read) and the rest of the movie."""
        written: dict[str, Path] = {}
        with self._condition:
            self._finishing = True
            self._condition.notify()
        self._start()
        try:
            if self.layout.contact_sheet:
                written["contact_sheet"] = self._write_contact_sheet()
        except BaseException:
            self.abort()
            raise
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            self.abort()
            raise self._error
        if self._stream is not None:
            written["flipbook"] = self._stream.close()
            self._stream = None
        return written

    def abort(self) -> None:
        """The run stopped: drop the half-made movie."""
        with self._condition:
            self._finishing = True
            self._order = self._order[: self._next]  # encode nothing more
            self._condition.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._stream is not None:
            self._stream.abort()
            self._stream = None

    def _write_contact_sheet(self) -> Path:
        columns = self.layout.columns
        rows = []
        for frame in sorted(self.sheet_frames):
            unit = self.units[frame]
            files = [(unit.line_path if c == LINE else unit.outputs[c], "" if c == LINE else c) for c in columns]
            rows.append((frame, self.thumbs.get(frame) or files))
        return write_contact_sheet(
            rows, list(columns), self.references, self.out_dir / CONTACT_SHEET,
            title=f"{self.layout.name}  ({self.layout.engine})",
        )  # fmt: skip


def write_cut_review(plan: Any, *, contact_sheet: bool | None = None, flipbook: bool | None = None) -> dict[str, Path]:
    """The contact sheet and the flip-book of a cut from its files on disk (`sketchcolor preview`);
    `contact_sheet` / `flipbook` override the cut's settings."""
    return CutReview(plan, contact_sheet=contact_sheet, flipbook=flipbook).finish()
