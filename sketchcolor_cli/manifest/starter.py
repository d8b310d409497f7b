"""A starter manifest from what a cut folder holds: the line-art sequence, coloured key frames,
reference sheets and masks, guessed from folder and file names and written out for a TD to edit.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sketchcolor_cli.frames.sequence import FrameSequence, discover_sequences
from sketchcolor_cli.manifest.model import SCHEMA_VERSION

_LINE_WORDS = ("line", "lines", "sketch", "lineart", "line_art", "genga", "douga", "inbetween")
_KEY_WORDS = ("color", "colour", "paint", "key", "keys")
_IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".tga", ".dpx", ".exr", ".jpg", ".jpeg", ".psd"}


def _words(sequence: FrameSequence) -> str:
    return sequence.pattern.lower()


def _pick(sequences: list[FrameSequence], words: tuple[str, ...]) -> FrameSequence | None:
    for sequence in sequences:
        first = _words(sequence).split("/")[0]
        if any(first == w or first.startswith(w) for w in words):
            return sequence
    return None


def starter_manifest(folder: Path) -> tuple[str, list[str]]:
    """YAML text for `folder`'s cut.yaml, and notes on what was found or is missing."""
    sequences = [s for s in discover_sequences(folder) if not s.pattern.startswith(("out/", "truth/"))]
    notes: list[str] = []
    line = _pick(sequences, _LINE_WORDS) or (sequences[0] if sequences else None)
    if line is None:
        raise FileNotFoundError(f"no image sequence found in {folder}; put the line-art frames in e.g. line/0001.png")
    notes.append(f"line art: {line.pattern} (frames {line.first}-{line.last}, {len(line.frames)} found)")
    if line.missing:
        notes.append(f"missing line-art frames: {', '.join(map(str, line.missing))}")
    rest = [s for s in sequences if s is not line]
    keys = _pick(rest, _KEY_WORDS)

    data: dict = {"schema_version": SCHEMA_VERSION, "name": folder.resolve().name, "fps": 24, "seed": 0}
    data["frames"] = {"source": line.pattern}
    if keys is not None:
        data["keys"] = {"source": keys.pattern}
        notes.append(f"key frames: {keys.pattern} (frames {', '.join(map(str, keys.frames))})")

    masks = {s.pattern.split("/")[1]: s for s in rest if s.pattern.startswith("masks/") and s.pattern.count("/") >= 2}
    sheets = sorted(
        p for p in (folder / "refs").glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and "_line" not in p.stem
    ) if (folder / "refs").is_dir() else []
    characters = []
    for sheet in sheets:
        name = sheet.stem.removesuffix("_sheet").removesuffix("_ref")
        reference = {"image": f"refs/{sheet.name}"}
        line_file = sheet.with_name(f"{sheet.stem}_line{sheet.suffix}")
        if line_file.is_file():
            reference["line"] = f"refs/{line_file.name}"
        entry: dict = {"name": name, "references": [reference]}
        palette = folder / "refs" / f"{name}_palette.yaml"
        if palette.is_file():
            entry["palette"] = f"refs/{palette.name}"
        if name in masks:
            entry["masks"] = masks[name].pattern
        characters.append(entry)
        notes.append(f"character {name}: reference {reference['image']}")
    if not characters and keys is None:
        notes.append("no reference sheets (refs/*.png) or key frames (color/) found: add a character by hand")
    data["characters"] = characters
    data["background"] = {"mode": "transparent"}
    data["engine"] = {"name": "flat"}
    data["outputs"] = {"folder": "out", "layers": ["color", "fill", "line", "review"], "format": "png", "bit_depth": 8}
    header = (
        "# sketchcolor cut manifest, written by `sketchcolor init`; edit freely.\n"
        "# `sketchcolor validate` checks it; `sketchcolor schema` describes every field.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False), notes
