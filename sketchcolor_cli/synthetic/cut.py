"""Synthetic cuts with known truth: animated line art of walking characters, and its exact colours.

`SyntheticCut` renders frames and model sheets in memory; `make_cut` writes a whole cut folder
(line art, truth layers, masks, model sheets, palettes, key frames and a `cut.yaml` manifest) and
returns a `CutTruth` describing it. Everything is deterministic for a seed: the same arguments
write the same bytes.

Folder layout (frames numbered from 1, four digits)::

    cut.yaml                      manifest (schema 1)
    line/####.png                 line art, RGB, white paper, black + hint lines
    truth/color/####.png          true colours with the lines on top, RGB, white background
    truth/fill/####.png           true colours without lines, RGBA, background alpha 0
    truth/labels/####.png         region ids, 16-bit grey, 0 = background
    truth/segments/####.png       segments for scoring: 0 = line, 1 = background, region id + 1
    truth/regions.yaml            region id -> character, region, colour name, '#rrggbb'
    masks/<character>/####.png    255 where the character is (its lines included)
    refs/<character>_sheet.png    colour model sheet (reference pose), with lines
    refs/<character>_sheet_line.png   its line art
    refs/<character>_palette.yaml     colour name -> '#rrggbb'
    color/####.png                finished colour of the key frames (= truth/color)
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import yaml

from .characters import (
    CYCLE_FRAMES,
    DESIGNS,
    Design,
    Placement,
    Pose,
    reference_pose,
    skeleton,
    walk_pose,
)
from .render import PAPER, Drawing, HintKind, Part, Rendered, render

MANIFEST_MARKER = "# Synthetic cut written by sketchcolor_cli.synthetic"
CHARACTER_ORDER = ("hero", "mika")  # the first `characters` of these appear
LABELS_PER_CHARACTER = 100  # character i owns labels 100 * i + 1 .. 100 * i + 99
_GENERATED_FOLDERS = ("line", "truth", "masks", "refs", "color")

LAYOUT = {
    "line": "line/{frame:04d}.png",
    "truth_color": "truth/color/{frame:04d}.png",
    "truth_fill": "truth/fill/{frame:04d}.png",
    "truth_labels": "truth/labels/{frame:04d}.png",
    "truth_segments": "truth/segments/{frame:04d}.png",
    "mask": "masks/{character}/{frame:04d}.png",
    "key": "color/{frame:04d}.png",
    "sheet": "refs/{character}_sheet.png",
    "sheet_line": "refs/{character}_sheet_line.png",
    "palette": "refs/{character}_palette.yaml",
    "regions": "truth/regions.yaml",
    "manifest": "cut.yaml",
}


@dataclass(frozen=True)
class RegionInfo:
    """One region (label id) of the cut."""

    label: int
    character: str
    region: str  # e.g. "near_sleeve"
    color_name: str  # palette name, e.g. "jacket"
    rgb: tuple[int, int, int]
    hint: HintKind | None = None  # shading regions: "shadow" (red line) or "highlight" (blue line)
    shades: int | None = None  # shading regions: the label of the region they shade


@dataclass(frozen=True)
class FrameTruth:
    """One rendered frame (or model sheet) and its truth, 8-bit arrays."""

    labels: np.ndarray  # H x W uint16
    line: np.ndarray  # H x W x 3 uint8
    ink: np.ndarray  # H x W uint8 line coverage
    color: np.ndarray  # H x W x 3 uint8
    fill: np.ndarray  # H x W x 4 uint8
    masks: dict[str, np.ndarray]  # character -> H x W bool
    gaps: int  # line breaks cut in this frame


@dataclass(frozen=True)
class CutTruth:
    """What `make_cut` wrote, and the truth needed to score a result."""

    root: Path
    name: str
    frames: int  # frames are numbered 1 .. frames
    size: tuple[int, int]  # (width, height)
    seed: int
    characters: tuple[str, ...]
    palettes: dict[str, dict[str, tuple[int, int, int]]]  # character -> colour name -> RGB
    regions: dict[int, RegionInfo]  # label -> region
    key_frames: tuple[int, ...]
    hint_lines: bool
    gaps: int
    antialias: bool
    background: tuple[int, int, int] | None

    @property
    def manifest(self) -> Path:
        return self.root / LAYOUT["manifest"]

    @property
    def frame_numbers(self) -> range:
        return range(1, self.frames + 1)

    def path(self, kind: str, frame: int | None = None, character: str | None = None) -> Path:
        """Path of a written file: kind is one of `LAYOUT`'s keys."""
        try:
            pattern = LAYOUT[kind]
        except KeyError:
            raise KeyError(f"unknown file kind {kind!r}; known: {', '.join(LAYOUT)}") from None
        return self.root / pattern.format(frame=frame or 0, character=character or "")

    def label_colors(self) -> np.ndarray:
        """RGB of every label as a lookup table (row 0, the background, is white)."""
        lut = np.zeros((max(self.regions, default=0) + 1, 3), dtype=np.uint8)
        lut[0] = PAPER
        for label, info in self.regions.items():
            lut[label] = info.rgb
        return lut


def hex_to_rgb(value: str) -> tuple[int, int, int]:
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        raise ValueError(f"{value!r} is not a colour; write it as '#rrggbb'")
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


def rgb_to_hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


@dataclass(frozen=True)
class _Actor:
    design: Design
    base: int  # first label id - 1
    phase: float  # walk phase at the first frame, radians
    start_x: float  # pelvis x at the first and last frame, fractions of the width
    end_x: float
    ground: float  # feet line, fraction of the height
    zoom: float  # size relative to a character filling the frame height
    facing: int


class SyntheticCut:
    """Renders the frames and model sheets of a synthetic cut in memory."""

    def __init__(
        self,
        *,
        frames: int = 12,
        size: tuple[int, int] = (512, 512),
        seed: int = 0,
        characters: int = 1,
        hint_lines: bool = True,
        gaps: int = 0,
        antialias: bool = False,
        background: str | tuple[int, int, int] | None = None,
    ) -> None:
        _check_settings(frames=frames, size=size, characters=characters, gaps=gaps)
        self.frames = frames
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.hint_lines = hint_lines
        self.gaps = gaps
        self.antialias = antialias
        self.background = _background_rgb(background)
        width, height = self.size
        self.line_radius = max(1, round(min(width, height) / 512))
        rng = np.random.default_rng([seed, 7])
        self._blink_index = int(rng.integers(4, 10))
        self._mouth_phase = float(rng.uniform(0.0, 2 * math.pi))
        self._roll_phase = float(rng.uniform(0.0, 2 * math.pi))
        # (start x, end x, ground, zoom, facing) of each character, by how many there are
        staging = {
            1: [(0.42, 0.55, 0.93, 0.84, 1)],
            # the second walks the other way, a step further back, and meets the first
            2: [(0.3, 0.44, 0.95, 0.72, 1), (0.8, 0.5, 0.88, 0.66, -1)],
        }[characters]
        actors = []
        for index, (name, (start_x, end_x, ground, zoom, facing)) in enumerate(zip(CHARACTER_ORDER, staging)):
            phase = float(rng.uniform(0.0, 2 * math.pi))
            jitter = float(rng.uniform(-0.03, 0.03))
            actors.append(
                _Actor(
                    design=DESIGNS[name], base=LABELS_PER_CHARACTER * index, phase=phase, start_x=start_x + jitter,
                    end_x=end_x + jitter, ground=ground, zoom=zoom, facing=facing,
                )  # fmt: skip
            )
        self._actors = tuple(actors)
        self.regions = self._region_table()
        self.palettes = {
            actor.design.name: {
                name: hex_to_rgb(value)
                for name, value in actor.design.palette.items()
                if name in {info.color_name for info in self.regions.values() if info.character == actor.design.name}
            }
            for actor in self._actors
        }
        self._lut = np.zeros((max(self.regions) + 1, 3), dtype=np.uint8)
        for label, info in self.regions.items():
            self._lut[label] = info.rgb
        self._hint_pairs: dict[tuple[int, int], HintKind] = {
            (info.shades, label): info.hint
            for label, info in self.regions.items()
            if info.hint is not None and info.shades is not None
        }

    @property
    def characters(self) -> tuple[str, ...]:
        return tuple(actor.design.name for actor in self._actors)

    def _region_table(self) -> dict[int, RegionInfo]:
        table: dict[int, RegionInfo] = {}
        for actor in self._actors:
            design = actor.design
            labels = {spec.name: actor.base + 1 + i for i, spec in enumerate(design.regions)}
            if len(labels) >= LABELS_PER_CHARACTER:
                raise ValueError(f"character {design.name!r} has more than {LABELS_PER_CHARACTER - 1} regions")
            for spec in design.regions:
                if spec.hint is not None and not self.hint_lines:
                    continue
                table[labels[spec.name]] = RegionInfo(
                    label=labels[spec.name],
                    character=design.name,
                    region=spec.name,
                    color_name=spec.color,
                    rgb=hex_to_rgb(design.palette[spec.color]),
                    hint=spec.hint,
                    shades=labels[spec.shades] if spec.shades else None,
                )
        return table

    def _drawing(self, actor: _Actor) -> Drawing:
        design = actor.design
        return Drawing(
            region_labels={spec.name: actor.base + 1 + i for i, spec in enumerate(design.regions)},
            clips={spec.name: spec.clip_region for spec in design.regions},
            shading={spec.name: spec.hint is not None for spec in design.regions},
            hint_lines=self.hint_lines,
        )

    def _placement(self, actor: _Actor, u: float, zoom: float, roll: float, center_x: float | None = None) -> Placement:
        width, height = self.size
        body = actor.design.body
        scale = height * actor.zoom / (body.above_pelvis + body.below_pelvis) * zoom
        x = center_x if center_x is not None else actor.start_x + (actor.end_x - actor.start_x) * u
        y = height * actor.ground - body.below_pelvis * scale
        return Placement(x=x * width, y=y, scale=scale, facing=actor.facing, roll=roll)

    def _finish(self, parts: list[Part], *, gaps: int, rng: np.random.Generator | None) -> FrameTruth:
        rendered: Rendered = render(
            parts,
            self.size,
            palette_lut=self._lut,
            hint_pairs=self._hint_pairs,
            line_radius=self.line_radius,
            gaps=gaps,
            rng=rng,
            antialias=self.antialias,
            background=self.background,
        )
        masks = {
            actor.design.name: (rendered.labels > actor.base) & (rendered.labels < actor.base + LABELS_PER_CHARACTER)
            for actor in self._actors
        }
        return FrameTruth(
            labels=rendered.labels,
            line=rendered.line,
            ink=rendered.ink,
            color=rendered.color,
            fill=rendered.fill,
            masks=masks,
            gaps=rendered.gaps,
        )

    def pose(self, actor_index: int, frame: int) -> Pose:
        """The pose of a character at a frame (numbered from 1)."""
        actor = self._actors[actor_index]
        i = frame - 1
        phase = actor.phase + 2 * math.pi * i / CYCLE_FRAMES
        mouth = 0.5 + 0.5 * math.sin(1.9 * i + self._mouth_phase + actor_index)
        return walk_pose(phase, mouth_open=mouth, eyes_open=(i != self._blink_index + actor_index))

    def render_frame(self, frame: int) -> FrameTruth:
        """Frame `frame` (1 .. frames) of the cut."""
        if not 1 <= frame <= self.frames:
            raise ValueError(f"frame {frame} is outside this cut's frames 1-{self.frames}")
        u = (frame - 1) / max(self.frames - 1, 1)
        zoom = 1.0 + 0.05 * u  # a slow push in
        roll = 1.5 * math.sin(2 * math.pi * u + self._roll_phase)
        parts: list[Part] = []
        # the last character stands furthest back, so paint in reverse order
        for index in reversed(range(len(self._actors))):
            actor = self._actors[index]
            drawing = self._drawing(actor)
            bones = skeleton(actor.design.body, self.pose(index, frame), self._placement(actor, u, zoom, roll))
            actor.design.draw(drawing, bones, self.pose(index, frame), actor.design.body)
            parts.extend(drawing.parts)
        rng = np.random.default_rng([self.seed, frame, 1])
        return self._finish(parts, gaps=self.gaps, rng=rng)

    def render_sheet(self, character: str) -> FrameTruth:
        """The colour model sheet of a character: the reference pose, centred, no gaps."""
        for actor in self._actors:
            if actor.design.name == character:
                break
        else:
            raise KeyError(f"no character {character!r} in this cut; it has {', '.join(self.characters)}")
        sheet_actor = replace(actor, ground=0.95, zoom=0.88)
        drawing = self._drawing(sheet_actor)
        pose = reference_pose()
        bones = skeleton(actor.design.body, pose, self._placement(sheet_actor, 0.0, 1.0, 0.0, center_x=0.5))
        actor.design.draw(drawing, bones, pose, actor.design.body)
        return self._finish(drawing.parts, gaps=0, rng=None)


def _background_rgb(background: str | Sequence[int] | None) -> tuple[int, int, int] | None:
    if background is None:
        return None
    if isinstance(background, str):
        return hex_to_rgb(background)
    rgb = tuple(int(v) for v in background)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"background must be '#rrggbb' or three 0-255 values, got {background!r}")
    return rgb  # type: ignore[return-value]


def _check_settings(*, frames: int, size: tuple[int, int], characters: int, gaps: int) -> None:
    if not isinstance(frames, int) or not 1 <= frames <= 9999:
        raise ValueError(f"frames must be a whole number from 1 to 9999, got {frames!r}")
    if len(size) != 2 or min(size) < 64:
        raise ValueError(f"size must be (width, height), each at least 64 pixels, got {size!r}")
    if characters not in (1, 2):
        raise ValueError(f"characters must be 1 or 2, got {characters!r}")
    if gaps < 0:
        raise ValueError(f"gaps must be 0 or more line breaks per frame, got {gaps!r}")


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write RGB/RGBA (converted to cv2's BGR order), grey 8-bit or grey 16-bit as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[..., ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., [2, 1, 0, 3]]
    if not cv2.imwrite(str(path), np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {path}; check that the folder is writable")


class _BlockDumper(yaml.SafeDumper):
    """Block style for mappings, flow style only for short lists of scalars (`[a, b]`)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    inline = all(isinstance(item, (str, int, float, bool)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


class _Row(dict):
    """A mapping written on one line (`{a: 1, b: 2}`), for tables such as truth/regions.yaml."""


_BlockDumper.add_representer(list, _represent_list)
_BlockDumper.add_representer(
    _Row, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)
)


def _write_yaml(path: Path, data: object, header: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=100)
    path.write_text(header + text, encoding="utf-8")


def _prepare_folder(root: Path) -> None:
    """Clear what an earlier synthetic cut wrote here; refuse to touch anything else."""
    manifest = root / LAYOUT["manifest"]
    if manifest.exists():
        if not manifest.read_text(encoding="utf-8").startswith(MANIFEST_MARKER):
            raise FileExistsError(f"{manifest} exists and was not written by make_cut; choose an empty folder")
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and holds no synthetic cut; choose an empty folder")
    for folder in _GENERATED_FOLDERS:
        if (root / folder).is_dir():
            shutil.rmtree(root / folder)


def _frame_list(frames: Iterable[int]) -> str:
    return ",".join(str(f) for f in frames)


def scoring_segments(result: FrameTruth) -> np.ndarray:
    """The segment map `sketchcolor eval --labels` scores against, in BasicPBC's convention:
    0 on line pixels (black and hint lines, not scored), 1 for the background, region id + 1."""
    segments = result.labels.astype(np.uint16) + 1
    segments[result.ink > 0] = 0
    return segments


def make_cut(
    out_dir: str | Path,
    *,
    name: str = "walk",
    frames: int = 12,
    size: tuple[int, int] = (512, 512),
    seed: int = 0,
    characters: int = 1,
    hint_lines: bool = True,
    gaps: int = 0,
    key_frames: Sequence[int] = (1,),
    antialias: bool = False,
    background: str | tuple[int, int, int] | None = None,
) -> CutTruth:
    """Write a synthetic cut to `out_dir` and return its truth.

    size is (width, height). `characters`: 1 (hero) or 2 (hero and mika, who cross). `hint_lines`
    adds shadow/highlight regions bounded by red/blue lines. `gaps`: line breaks per frame.
    `key_frames`: frames whose finished colour goes to color/ (and into the manifest's `keys`).
    `antialias`: soft line edges instead of hard 1-bit ones. `background`: None for a transparent
    background, or a colour ('#rrggbb' or RGB) that fills the background in the truth.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"name {name!r} must use letters, digits, '_', '.' or '-' only")
    keys = tuple(sorted(set(int(f) for f in key_frames)))
    bad = [f for f in keys if not 1 <= f <= frames]
    if bad:
        raise ValueError(f"key_frames {bad} are outside the cut's frames 1-{frames}")
    cut = SyntheticCut(
        frames=frames, size=size, seed=seed, characters=characters, hint_lines=hint_lines,
        gaps=gaps, antialias=antialias, background=background,
    )  # fmt: skip
    root = Path(out_dir)
    _prepare_folder(root)
    root.mkdir(parents=True, exist_ok=True)
    truth = CutTruth(
        root=root, name=name, frames=frames, size=cut.size, seed=seed, characters=cut.characters,
        palettes=cut.palettes, regions=cut.regions, key_frames=keys, hint_lines=hint_lines, gaps=gaps,
        antialias=antialias, background=cut.background,
    )  # fmt: skip

    for frame in truth.frame_numbers:
        result = cut.render_frame(frame)
        _write_png(truth.path("line", frame), result.line)
        _write_png(truth.path("truth_color", frame), result.color)
        _write_png(truth.path("truth_fill", frame), result.fill)
        _write_png(truth.path("truth_labels", frame), result.labels)
        _write_png(truth.path("truth_segments", frame), scoring_segments(result))
        for character, mask in result.masks.items():
            _write_png(truth.path("mask", frame, character), mask.astype(np.uint8) * 255)
        if frame in keys:
            _write_png(truth.path("key", frame), result.color)

    for character in cut.characters:
        sheet = cut.render_sheet(character)
        _write_png(truth.path("sheet", character=character), sheet.color)
        _write_png(truth.path("sheet_line", character=character), sheet.line)
        _write_yaml(
            truth.path("palette", character=character),
            {color: rgb_to_hex(rgb) for color, rgb in cut.palettes[character].items()},
            header=f"# Palette of {character}: colour name -> sRGB 8-bit.\n",
        )

    _write_yaml(
        truth.path("regions"),
        {
            label: _Row(
                character=info.character,
                region=info.region,
                color=info.color_name,
                rgb=rgb_to_hex(info.rgb),
                **({"hint": info.hint, "shades": info.shades} if info.hint else {}),
            )
            for label, info in sorted(cut.regions.items())
        },
        header="# Region ids of truth/labels/*.png (0 = background): label -> region and its colour.\n",
    )
    _write_manifest(truth)
    return truth


def _write_manifest(truth: CutTruth) -> None:
    manifest: dict[str, object] = {
        "schema_version": 1,
        "name": truth.name,
        "fps": 24,
        "seed": truth.seed,
        "frames": {"source": "line/####.png"},
    }
    if truth.key_frames:
        manifest["keys"] = {"source": "color/####.png", "frames": _frame_list(truth.key_frames)}
    manifest["characters"] = [
        {
            "name": character,
            "references": [
                {"image": f"refs/{character}_sheet.png", "line": f"refs/{character}_sheet_line.png"}
            ],
            "palette": f"refs/{character}_palette.yaml",
            "masks": f"masks/{character}/####.png",
        }
        for character in truth.characters
    ]
    if truth.background is None:
        manifest["background"] = {"mode": "transparent"}
    else:
        manifest["background"] = {"mode": "color", "color": rgb_to_hex(truth.background)}
    manifest["engine"] = {"name": "flat"}
    manifest["outputs"] = {
        "folder": "out",
        "layers": ["color", "fill", "line", "review"],
        "format": "png",
        "bit_depth": 8,
    }
    width, height = truth.size
    background = None if truth.background is None else rgb_to_hex(truth.background)
    header = (
        f"{MANIFEST_MARKER}.make_cut(name={truth.name!r}, frames={truth.frames},\n"
        f"#   size=({width}, {height}), seed={truth.seed}, characters={len(truth.characters)}, "
        f"hint_lines={truth.hint_lines}, gaps={truth.gaps},\n"
        f"#   key_frames={list(truth.key_frames)}, antialias={truth.antialias}, background={background!r}).\n"
        "# The true colours are in truth/ (truth/regions.yaml names each label); regenerate, don't edit.\n"
    )
    _write_yaml(truth.path("manifest"), manifest, header=header)


__all__ = [
    "LAYOUT",
    "CutTruth",
    "FrameTruth",
    "RegionInfo",
    "SyntheticCut",
    "make_cut",
]
