"""The ``flat`` engine: weights-free, CPU-only, palette-exact paint-bucket colouring.

Each line-art frame is split into closed regions (`segment`), each region gets one exact colour
from a key frame, the previous frame or the references (`match`), and the layers are painted
(`paint`). No region ever gets a blend of colours, and the same inputs give the same bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..base import Engine, EngineSettings, Layers, LayersPaintedLater, WorkItem
from .match import (
    REGION_CONFIDENCE,
    Assignment,
    ImageCache,
    MatchSettings,
    describe_sources,
    encode_region_confidence,
    main_source,
    mask_leaks,
    match_regions,
    remember_frame,
)
from .paint import fill_palette, paint_fill, paint_rest
from .segment import Segmentation


# Bump when the same inputs and settings would give different pixels.
ENGINE_VERSION = "1"


class FlatSettings(EngineSettings):
    """Settings of the flat engine."""

    line_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Line strength above which a pixel is line: on white paper 1 minus its darkest "
        "channel (the darkness of black or grey ink; full for a saturated coloured stroke), on "
        "transparent paper its alpha. Lower it for faint pencil lines, raise it for grey paper.",
    )
    gap_close_px: int = Field(
        4,
        ge=0,
        le=64,
        description="Largest gap in a line, in pixels, that is closed so a region does not leak into its "
        "neighbour. About 4 suits 1080p; scale with the resolution; 0 turns gap closing off.",
    )
    hint_lines: bool = Field(
        True,
        description="Treat saturated red, green and blue strokes as hint lines: they split regions "
        "(shadow / highlight boundaries) and take an adjacent region's colour in the output.",
    )
    min_region_px: int = Field(
        3,
        ge=0,
        description="Regions of this many pixels or fewer are merged into a neighbour (line specks).",
    )
    key_reach: int = Field(
        12,
        ge=0,
        description="Key frames up to this many frames away are also carried from directly (both sides); "
        "farther ones reach a frame only along the chain of frames from them.",
    )
    carry: bool = Field(
        True,
        description="Carry colours from frame to frame, out from the key frames (or from the first frame "
        "coloured from the sheets). Off: every frame is coloured from the key frames around it and the "
        "model sheets alone, so frames do not wait for each other (more parallel, less consistent).",
    )
    review_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Regions whose colour confidence is below this are marked (magenta hatching) in "
        "the review layer, for an artist to check first.",
    )
    previous_min_confidence: float = Field(
        0.75,
        ge=0.0,
        le=1.0,
        description="A region carried from the previous frame with less confidence than this is "
        "matched again against the references, and takes whichever answer is more confident.",
    )


@dataclass(frozen=True)
class _Prepared:
    seg: Segmentation
    seconds: float


class FlatEngine(Engine):
    """Paint-bucket colouring: regions from the line art, one exact reference colour each."""

    name: ClassVar[str] = "flat"
    settings_model: ClassVar[type[EngineSettings]] = FlatSettings
    frame_dependency: ClassVar[Literal["none", "previous"]] = "previous"

    def __init__(self, settings: FlatSettings) -> None:
        self.settings = settings
        self._match_settings = MatchSettings(
            line_threshold=settings.line_threshold,
            gap_close_px=settings.gap_close_px,
            hint_lines=settings.hint_lines,
            min_region_px=settings.min_region_px,
            previous_min_confidence=settings.previous_min_confidence,
            key_reach=settings.key_reach,
        )
        self._cache = ImageCache()

    @classmethod
    def dependency_for(cls, settings: EngineSettings) -> Literal["none", "previous"]:
        return "previous" if getattr(settings, "carry", True) else "none"

    @classmethod
    def load(cls, settings: EngineSettings) -> "FlatEngine":
        if not isinstance(settings, FlatSettings):
            settings = FlatSettings.model_validate(settings.model_dump())
        return cls(settings)

    def describe(self) -> str:
        s = self.settings
        return (
            f"flat {ENGINE_VERSION} (line_threshold={s.line_threshold}, gap_close_px={s.gap_close_px}, "
            f"hint_lines={s.hint_lines}, min_region_px={s.min_region_px})"
        )

    # -- the three stages, public so that tools and timing scripts can call them one by one --

    def segment(self, item: WorkItem) -> Segmentation:
        return self._match_settings.segment(item.line_art, f"frame {item.frame} line art")

    def prepare(self, item: WorkItem) -> WorkItem:
        """Segment the line art ahead, with the regions' properties (they depend on this frame alone)."""
        started = time.perf_counter()
        seg = self.segment(item).analyse()
        return replace(item, prepared=_Prepared(seg, time.perf_counter() - started))

    def match(self, item: WorkItem, seg: Segmentation) -> Assignment:
        return match_regions(item, seg, self._match_settings, self._cache)

    def paint(self, item: WorkItem, seg: Segmentation, assignment: Assignment) -> Layers:
        """The fill now (the next frame carries from it); the colour, line and review layers when
        first read (a worker's writer thread: see `LayersPaintedLater`)."""
        fill = paint_fill(seg, assignment.colors)
        threshold = self.settings.review_threshold
        confidence = assignment.confidence.copy()

        def rest() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            background = assignment.background
            leaks = None if background is None else mask_leaks(seg, item.masks, background, item.frame)
            if leaks is not None:  # in the frame's log: a gap in the lines let the character run out
                stats["mask_leak_px"] = int(np.count_nonzero(leaks))
            return paint_rest(seg, assignment.colors, confidence, item.line_art, threshold, fill, leaks)

        # Hand this frame's analysis to the next one, which gets these arrays as its previous.
        remember_frame(self._cache, item.line_art, fill, seg, *fill_palette(assignment.colors))
        regions = assignment.confidence[1:]
        unsure = int(np.count_nonzero(regions < self.settings.review_threshold))
        stats = {
            "regions": int(seg.n_regions),
            "unsure_regions": unsure,
            "mean_confidence": round(float(regions.mean()), 4) if regions.size else 1.0,
            "source": main_source(assignment),
            "sources": describe_sources(assignment),
        }
        if assignment.shift is not None:
            stats["shift_px"] = [int(assignment.shift[0]), int(assignment.shift[1])]
        if assignment.motion is not None:
            stats["motion"] = assignment.motion
        return LayersPaintedLater(fill, rest, stats, {REGION_CONFIDENCE: encode_region_confidence(assignment.confidence)})

    def colorize(self, batch: list[WorkItem]) -> list[Layers]:
        results = []
        for item in batch:
            started = time.perf_counter()
            if isinstance(item.prepared, _Prepared):
                seg, segment_seconds = item.prepared.seg, item.prepared.seconds
            else:
                seg, segment_seconds = self.segment(item), None
            segmented = time.perf_counter()
            assignment = self.match(item, seg)
            matched = time.perf_counter()
            layers = self.paint(item, seg, assignment)
            # Where the time goes, for the log (never part of the outputs).
            layers.stats["seconds"] = {
                "segment": round(segment_seconds if segment_seconds is not None else segmented - started, 4),
                "match": round(matched - segmented, 4),
                "paint": round(time.perf_counter() - matched, 4),
            }
            results.append(layers)
        return results


__all__ = ["FlatEngine", "FlatSettings"]
