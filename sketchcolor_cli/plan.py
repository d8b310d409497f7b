"""From a resolved manifest to units of work: which frames, with which inputs, in which order.

The plan knows files and frame numbers, never models. When the engine carries colours from frame
to frame (``frame_dependency == "previous"``), each frame that is not a key frame depends on its
neighbour towards the nearest key frame (the previous frame after a key, the next frame before
the first key; the previous one when there are no keys), so colours flow out from every key in
both directions; and each unit names the nearest key frames on either side, which the engine may
also carry from directly. A requested frame whose dependency is neither requested nor finished on
disk pulls that dependency into the plan, so a frame comes out the same however a cut is split
into runs.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from sketchcolor_cli.frames.sequence import FrameSequence, find_sequence, sequence_path
from sketchcolor_cli.frames.spec import parse_frame_spec
from sketchcolor_cli.manifest.resolve import ResolvedCut

_EXTENSIONS = {"tiff": "tif"}
# The key of a computed foreground mask shared by several characters without masks of their own
# in one frame (not a valid character name, so it never collides with one).
COMPUTED_FOREGROUND = "auto:foreground"


def frame_seed(cut_seed: int, frame: int) -> int:
    """A frame's seed: from the cut's seed and the frame number only, never from run order."""
    digest = hashlib.blake2b(f"sketchcolor:{cut_seed}:{frame}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


@dataclass
class FrameUnit:
    frame: int
    line_path: Path | None  # None: the cut has no line art for this frame
    outputs: dict[str, Path]  # layer -> file (every layer the same file for EXR)
    seed: int
    depends_on: int | None = None  # the frame whose result this one carries colours from
    characters: tuple[str, ...] = ()
    mask_paths: dict[str, Path] = field(default_factory=dict)  # character or "background" -> mask file
    # Where each mask comes from: "manifest" (the artists' files), "computed" (`sketchcolor masks`),
    # or "none" for a character that has neither (the engine then treats it as it did before).
    mask_sources: dict[str, str] = field(default_factory=dict)
    key_path: Path | None = None  # this frame's own finished colour, when it is a key frame
    # The nearest key frames before and after this one (frame -> (colour, line art)).
    near_keys: dict[int, tuple[Path, Path]] = field(default_factory=dict)
    requested: bool = True  # False: planned only because a requested frame depends on it
    done: bool = False  # every output already exists

    @property
    def output_files(self) -> list[Path]:
        return sorted(set(self.outputs.values()))


@dataclass
class Plan:
    cut: ResolvedCut
    line_sequence: FrameSequence
    layers: list[str]  # layers written (the fill layer is added when frames depend on each other)
    units: list[FrameUnit]  # dependencies before dependents (each chain from its start)
    overwrite: bool = False

    def unit(self, frame: int) -> FrameUnit:
        return self._by_frame[frame]

    def __post_init__(self) -> None:
        self._by_frame = {u.frame: u for u in self.units}

    @property
    def todo(self) -> list[FrameUnit]:
        return [u for u in self.units if self.overwrite and u.requested or not u.done]

    @property
    def skipped(self) -> list[FrameUnit]:
        return [u for u in self.units if u.requested and u.done and not self.overwrite]


def output_paths(cut: ResolvedCut, layers: list[str], frame: int) -> dict[str, Path]:
    outputs = cut.manifest.outputs
    ext = _EXTENSIONS.get(outputs.format, outputs.format)
    pattern = outputs.file_pattern()
    paths = {}
    for layer in layers:
        named = pattern.replace("{cut}", cut.name).replace("{layer}", layer).replace("{ext}", ext)
        paths[layer] = sequence_path(named, cut.output_dir, frame)
    return paths


def computed_mask_path(cut: ResolvedCut, frame: int) -> Path | None:
    """Where `sketchcolor masks` writes this frame's foreground (None: computed masks are off)."""
    settings = cut.manifest.masks
    return sequence_path(settings.auto, cut.cut_dir, frame) if settings.use_computed else None


def reference_mask_path(cut: ResolvedCut, character: str, index: int) -> Path:
    """Where `sketchcolor masks` writes the mask of a character's reference sheet (index from 1)."""
    return cut.path(cut.manifest.masks.references.format(character=character, index=index))


def mask_sources_summary(units: list[FrameUnit]) -> str:
    """One line for the run log: where each character's masks come from, over which frames."""
    from sketchcolor_cli.frames.spec import format_frame_spec

    frames: dict[tuple[str, str], list[int]] = {}
    for unit in units:
        for name, source in unit.mask_sources.items():
            frames.setdefault((name, source), []).append(unit.frame)
    parts = [f"{name} {source} (frames {format_frame_spec(sorted(found))})" for (name, source), found in sorted(frames.items())]
    return "masks: " + ("; ".join(parts) if parts else "none")


def cut_frames(cut: ResolvedCut, sequence: FrameSequence) -> list[int]:
    """The frames that make up the cut: the manifest's range, else every frame found."""
    if cut.manifest.frames.range:
        return sorted(set(parse_frame_spec(cut.manifest.frames.range)))
    return sorted(sequence.frames)


def build_plan(
    cut: ResolvedCut,
    *,
    frame_dependency: str = "none",
    selection: list[int] | None = None,
    overwrite: bool = False,
) -> Plan:
    manifest = cut.manifest
    sequence = find_sequence(manifest.frames.source, cut.cut_dir)
    frames = cut_frames(cut, sequence)
    requested = sorted(set(selection)) if selection is not None else frames
    carries = frame_dependency == "previous"

    layers = list(manifest.outputs.layers)
    if carries and "fill" not in layers:
        # A resumed run reads the previous frame back from its palette-exact fill layer.
        layers.append("fill")

    key_frames: dict[int, Path] = {}
    if manifest.keys is not None:
        keys = find_sequence(manifest.keys.source, cut.cut_dir)
        wanted = set(parse_frame_spec(manifest.keys.frames)) if manifest.keys.frames else set(keys.frames)
        key_frames = {f: p for f, p in keys.frames.items() if f in wanted}

    appears = {
        c.name: (set(parse_frame_spec(c.frames)) if c.frames else None) for c in manifest.characters
    }
    existing = [f for f in frames if f in sequence.frames]
    keys_drawn = sorted(f for f in key_frames if f in sequence.frames)
    position = {f: i for i, f in enumerate(existing)}

    def nearest_keys(frame: int) -> tuple[int | None, int | None]:
        index = bisect.bisect_left(keys_drawn, frame)
        before = keys_drawn[index - 1] if index > 0 else None
        after = next((k for k in keys_drawn[index:] if k != frame), None)
        return before, after

    def dependency_of(frame: int) -> int | None:
        """The neighbour towards the nearest key (ties: the previous frame)."""
        if frame not in position:
            return None
        index = position[frame]
        previous = existing[index - 1] if index > 0 else None
        following = existing[index + 1] if index + 1 < len(existing) else None
        before, after = nearest_keys(frame)
        if after is not None and (before is None or after - frame < frame - before):
            return following
        return previous

    def make_unit(frame: int, is_requested: bool) -> FrameUnit:
        present = tuple(name for name, where in appears.items() if where is None or frame in where)
        masks = {
            c.name: sequence_path(c.masks, cut.cut_dir, frame)
            for c in manifest.characters
            if c.masks and c.name in present
        }
        sources = {name: "manifest" for name in masks}
        maskless = [c.name for c in manifest.characters if c.name in present and not c.masks]
        if maskless or not manifest.characters:
            computed = computed_mask_path(cut, frame)
            if computed is not None and computed.is_file():
                # One foreground per frame: it is the character's own when only one lacks a mask,
                # else a shared foreground (the runner takes the artists' masks out of it).
                key = maskless[0] if len(maskless) == 1 else COMPUTED_FOREGROUND
                masks[key] = computed
                sources[key] = "computed"
            else:
                sources.update({name: "none" for name in maskless})
        if manifest.background.masks:
            masks["background"] = sequence_path(manifest.background.masks, cut.cut_dir, frame)
            sources["background"] = "manifest"
        outputs = output_paths(cut, layers, frame)
        depends = None
        near: dict[int, tuple[Path, Path]] = {}
        if frame not in key_frames:
            depends = dependency_of(frame) if carries else None
            near = {k: (key_frames[k], sequence.frames[k]) for k in nearest_keys(frame) if k is not None}
        return FrameUnit(
            frame=frame,
            line_path=sequence.frames.get(frame),
            outputs=outputs,
            seed=frame_seed(manifest.seed, frame),
            depends_on=depends,
            characters=present,
            mask_paths=masks,
            mask_sources=sources,
            key_path=key_frames.get(frame),
            near_keys=near,
            requested=is_requested,
            done=all(p.is_file() for p in outputs.values()),
        )

    units: dict[int, FrameUnit] = {f: make_unit(f, True) for f in requested}
    # Pull in unfinished dependencies (walking towards the key) until a finished frame, a key
    # frame or the cut's end.
    for frame in requested:
        unit = units[frame]
        while unit.depends_on is not None and unit.depends_on not in units:
            dependency = make_unit(unit.depends_on, False)
            if dependency.done:
                units[dependency.frame] = dependency
                break
            units[dependency.frame] = dependency
            unit = dependency
    return Plan(cut=cut, line_sequence=sequence, layers=layers, units=chain_order(units), overwrite=overwrite)


def chain_order(units: dict[int, FrameUnit]) -> list[FrameUnit]:
    """Units with every dependency before its dependents, each chain walked from its start (so
    one worker colours a chain frame after frame); chains in the order of their first frame."""
    dependents: dict[int, list[int]] = {}
    starts = []
    for frame in sorted(units):
        depends = units[frame].depends_on
        if depends is not None and depends in units:
            dependents.setdefault(depends, []).append(frame)
        else:
            starts.append(frame)
    ordered: list[FrameUnit] = []
    stack = list(reversed(starts))
    while stack:
        frame = stack.pop()
        ordered.append(units[frame])
        # A key frame may start two chains (forward and backward): the nearer frame first.
        stack.extend(sorted(dependents.get(frame, []), key=lambda f: (abs(f - frame), f), reverse=True))
    return ordered
