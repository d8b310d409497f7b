"""Deep checks of a resolved cut: does everything the manifest names exist and fit together?

Every problem is collected (none stops the others), each with its file, line and field, so a TD
fixes a manifest in one pass. Only image headers are read, so checking a long cut is quick.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sketchcolor_cli.errors import Problem
from sketchcolor_cli.frames.images import ImageError, image_size
from sketchcolor_cli.frames.sequence import SequenceError, find_sequence, sequence_path
from sketchcolor_cli.frames.spec import format_frame_spec, parse_frame_spec
from sketchcolor_cli.manifest.resolve import ResolvedCut
from sketchcolor_cli.manifest.yamlfile import load_yaml


def check_cut(cut: ResolvedCut) -> list[Problem]:
    manifest = cut.manifest
    document = load_yaml(cut.manifest_path)
    problems: list[Problem] = []

    def problem(message: str, field: tuple, *, hint: str | None = None, warning: bool = False) -> None:
        problems.append(
            Problem(
                message,
                file=cut.manifest_path,
                line=document.line_of(field),
                field=".".join(str(p) for p in field),
                hint=hint,
                warning=warning,
            )
        )

    def size_of(path: Path, field: tuple, what: str) -> tuple[int, int] | None:
        if not path.is_file():
            problem(f"{what} {path} does not exist", field, hint="check the path (relative to the cut folder)")
            return None
        try:
            return image_size(path)
        except ImageError as error:
            problem(f"{what} {path} cannot be read: {error}", field)
            return None

    # Line-art frames: found, one size, covering the range.
    frame_size = None
    frames: list[int] = []
    try:
        sequence = find_sequence(manifest.frames.source, cut.cut_dir)
    except SequenceError as error:
        problem(str(error), ("frames", "source"), hint="point `frames.source` at the line-art frames")
        sequence = None
    if sequence is not None:
        sizes: dict[tuple[int, int], list[int]] = {}
        for frame, path in sequence.frames.items():
            size = size_of(path, ("frames", "source"), f"line art of frame {frame}")
            if size:
                sizes.setdefault(size, []).append(frame)
        if sizes:
            frame_size = max(sizes, key=lambda s: len(sizes[s]))
            for size, odd in sizes.items():
                if size != frame_size:
                    problem(
                        f"frames {format_frame_spec(odd)} are {size[0]}x{size[1]} but the cut is "
                        f"{frame_size[0]}x{frame_size[1]}",
                        ("frames", "source"),
                        hint="every frame of a cut must have the same size",
                    )
        if manifest.frames.range:
            frames = sorted(set(parse_frame_spec(manifest.frames.range)))
            absent = [f for f in frames if f not in sequence.frames]
            if absent:
                problem(
                    f"frames {format_frame_spec(absent)} of the range have no line art "
                    f"(found {format_frame_spec(sequence.frames)})",
                    ("frames", "range"),
                    hint="narrow the range or add the missing frames",
                )
        else:
            frames = sorted(sequence.frames)
            if sequence.missing:
                problem(
                    f"the sequence has gaps: frames {format_frame_spec(sequence.missing)} are missing",
                    ("frames", "source"),
                    hint="fine for held frames; otherwise add them",
                    warning=True,
                )

    # Characters: references, palettes, masks, frames.
    for index, character in enumerate(manifest.characters):
        base = ("characters", index)
        for ref_index, sheet in enumerate(character.references):
            image = size_of(cut.path(sheet.image), base + ("references", ref_index, "image"), "reference")
            if sheet.line:
                line = size_of(cut.path(sheet.line), base + ("references", ref_index, "line"), "reference line art")
                if image and line and image != line:
                    problem(
                        f"reference line art is {line[0]}x{line[1]} but its colour sheet is {image[0]}x{image[1]}",
                        base + ("references", ref_index, "line"),
                        hint="the line art must be the same drawing as the sheet, pixel for pixel",
                    )
        if isinstance(character.palette, str):
            path = cut.path(character.palette)
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or not all(
                    isinstance(v, str) and len(v) == 7 and v.startswith("#") for v in data.values()
                ):
                    problem(f"palette {path} must map names to '#rrggbb' colours", base + ("palette",))
            except (OSError, yaml.YAMLError) as error:
                problem(f"palette {path} cannot be read: {error}", base + ("palette",))
        appears = set(parse_frame_spec(character.frames)) if character.frames else set(frames)
        if character.frames and frames:
            outside = sorted(appears - set(frames))
            if outside:
                problem(
                    f"frames {format_frame_spec(outside)} are not in the cut ({format_frame_spec(frames)})",
                    base + ("frames",),
                )
        if character.masks:
            _check_masks(character.masks, sorted(appears & set(frames)), frame_size, cut, base + ("masks",), problem)

    if manifest.keys is not None:
        try:
            keys = find_sequence(manifest.keys.source, cut.cut_dir)
            wanted = parse_frame_spec(manifest.keys.frames) if manifest.keys.frames else sorted(keys.frames)
            absent = [f for f in wanted if f not in keys.frames]
            if absent:
                problem(f"key frames {format_frame_spec(absent)} have no file", ("keys", "frames"))
            for frame in wanted:
                if frame in keys.frames and frame_size:
                    size = size_of(keys.frames[frame], ("keys", "source"), f"key frame {frame}")
                    if size and size != frame_size:
                        problem(f"key frame {frame} is {size[0]}x{size[1]}, not the cut's size", ("keys", "source"))
                if frames and frame not in frames:
                    problem(f"key frame {frame} is not a frame of the cut", ("keys", "frames"))
        except SequenceError as error:
            problem(str(error), ("keys", "source"))

    background = manifest.background
    if background.reference:
        size_of(cut.path(background.reference), ("background", "reference"), "background reference")
    if background.masks:
        _check_masks(background.masks, frames, frame_size, cut, ("background", "masks"), problem)

    # Computed masks: their model files, and computed masks that no longer fit the frames.
    for name in ("sketch_model", "reference_model"):
        value = getattr(manifest.masks, name)
        if value and not cut.path(value).is_file():
            problem(f"model file {cut.path(value)} does not exist", ("masks", name),
                    hint="name a local .onnx or .safetensors file (relative to the cut folder)")  # fmt: skip
    if manifest.masks.use_computed and frame_size and frames:
        wrong = []
        for frame in frames:
            path = sequence_path(manifest.masks.auto, cut.cut_dir, frame)
            try:
                if path.is_file() and image_size(path) != frame_size:
                    wrong.append(frame)
            except ImageError:
                wrong.append(frame)
        if wrong:
            problem(f"computed masks of frames {format_frame_spec(wrong)} do not fit the line art "
                    f"({manifest.masks.auto})", ("masks", "auto"),
                    hint="redo them: sketchcolor masks CUT --overwrite")  # fmt: skip

    if not manifest.characters and manifest.keys is None:
        problem(
            "no characters and no key frames: nothing gives colours",
            ("characters",),
            hint="add a character with a reference sheet, or `keys:` naming coloured frames",
        )
    return problems


def _check_masks(pattern, frames, frame_size, cut, field, problem) -> None:
    missing, wrong = [], []
    for frame in frames:
        path = sequence_path(pattern, cut.cut_dir, frame)
        if not path.is_file():
            missing.append(frame)
            continue
        try:
            size = image_size(path)
        except ImageError as error:
            problem(f"mask {path} cannot be read: {error}", field)
            continue
        if frame_size and size != frame_size:
            wrong.append(frame)
    if missing:
        problem(f"masks for frames {format_frame_spec(missing)} are missing ({pattern})", field)
    if wrong:
        problem(
            f"masks for frames {format_frame_spec(wrong)} are not the line art's size "
            f"{frame_size[0]}x{frame_size[1]}",
            field,
        )
