"""Reading what a frame needs (line art, masks, references, palettes) into engine work items."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from sketchcolor_cli.engines.base import FULL, PreviousResult, Reference, WorkItem
from sketchcolor_cli.errors import FrameError
from sketchcolor_cli.frames.images import ImageError, read_image, read_rgba16
from sketchcolor_cli.manifest.resolve import ResolvedCut
from sketchcolor_cli.plan import FrameUnit


def hex_to_rgb16(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    return tuple(int(value[i : i + 2], 16) * 257 for i in (0, 2, 4))  # type: ignore[return-value]


def read_palette(cut: ResolvedCut, palette: str | dict[str, str] | None) -> dict[str, tuple[int, int, int]] | None:
    if palette is None:
        return None
    if isinstance(palette, str):
        path = cut.path(palette)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise FrameError(f"cannot read palette {path}: {error}") from None
        if not isinstance(data, dict):
            raise FrameError(f"palette {path} must map colour names to '#rrggbb'")
        palette = {str(k): str(v) for k, v in data.items()}
    return {name: hex_to_rgb16(color) for name, color in palette.items()}


def read_mask(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    if not path.is_file():
        raise FrameError(f"{what} {path} is missing; add it or remove `masks` from the manifest")
    image = read_image(path, what=what)
    pixels = image.pixels
    if pixels.shape[:2] != shape:
        raise FrameError(
            f"{what} {path} is {pixels.shape[1]}x{pixels.shape[0]} but the line art is {shape[1]}x{shape[0]}"
        )
    # White (or opaque, when the mask has alpha) is the character; compared in the file's own type.
    full = 1.0 if pixels.dtype.kind == "f" else np.iinfo(pixels.dtype).max
    half = 0.5 if pixels.dtype.kind == "f" else (full + 1) // 2
    names = [name.upper() for name in image.channel_names]
    alpha = names.index("A") if "A" in names else None
    if alpha is not None and pixels[:, :, alpha].min() < full:
        return pixels[:, :, alpha] >= half
    colour = [i for i, name in enumerate(names) if name != "A"][:3] or [0]
    values = pixels[:, :, colour[0]] if len(colour) == 1 else pixels[:, :, colour].max(axis=2)
    return values >= half


def without_artists_masks(masks: dict[str, np.ndarray], sources: dict[str, str]) -> dict[str, np.ndarray]:
    """A computed foreground covers every character; the parts the artists' own character masks
    claim are taken out of it, so the artists' masks always win."""
    computed = [name for name, source in sources.items() if source == "computed" and name in masks]
    drawn = [mask for name, mask in masks.items() if sources.get(name) == "manifest" and name != "background"]
    if not computed or not drawn:
        return masks
    claimed = np.logical_or.reduce(drawn)
    return {name: (mask & ~claimed if name in computed else mask) for name, mask in masks.items()}


class CutInputs:
    """Loads a cut's shared inputs once (references, palettes, background) and each frame's own."""

    def __init__(self, cut: ResolvedCut):
        self.cut = cut
        self._keys: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.reference_mask_files: dict[str, str] = {}  # reference source -> its computed mask file

    @cached_property
    def references(self) -> dict[str, tuple[Reference, ...]]:
        """character -> its references (model sheets), read once per run."""
        loaded: dict[str, tuple[Reference, ...]] = {}
        for character in self.cut.manifest.characters:
            palette = read_palette(self.cut, character.palette)
            sheets = []
            for number, sheet in enumerate(character.references, start=1):
                image_path = self.cut.path(sheet.image)
                image = read_rgba16(image_path)
                line = read_rgba16(self.cut.path(sheet.line)) if sheet.line else None
                if line is not None and line.shape[:2] != image.shape[:2]:
                    raise FrameError(
                        f"reference line art {sheet.line} is {line.shape[1]}x{line.shape[0]} but its colour "
                        f"sheet {sheet.image} is {image.shape[1]}x{image.shape[0]}; they must be the same drawing"
                    )
                mask = self.reference_mask(character.name, number, image.shape[:2], str(image_path))
                sheets.append(Reference(character=character.name, image=image, line=line, palette=palette,
                                        source=str(image_path), mask=mask))  # fmt: skip
            loaded[character.name] = tuple(sheets)
        return loaded

    def reference_mask(self, character: str, number: int, shape: tuple[int, int], source: str) -> np.ndarray | None:
        """The computed mask of a reference sheet (`sketchcolor masks`), if there is one."""
        from sketchcolor_cli.plan import reference_mask_path

        if not self.cut.manifest.masks.use_computed:
            return None
        path = reference_mask_path(self.cut, character, number)
        if not path.is_file():
            return None
        self.reference_mask_files[source] = str(path)
        return read_mask(path, shape, f"computed mask of {character}'s reference {number}")

    @cached_property
    def background(self) -> np.ndarray | None:
        settings = self.cut.manifest.background
        if settings.mode == "reference" and settings.reference:
            return read_rgba16(self.cut.path(settings.reference))
        return None

    def work_item(self, unit: FrameUnit, previous: PreviousResult | None) -> WorkItem:
        if unit.line_path is None:
            raise FrameError(
                f"no line art for frame {unit.frame} ({self.cut.manifest.frames.source} has no file for it)"
            )
        try:
            line_art = read_rgba16(unit.line_path)
            shape = line_art.shape[:2]
            masks = {name: read_mask(path, shape, f"{name} mask") for name, path in unit.mask_paths.items()}
            masks = without_artists_masks(masks, unit.mask_sources)
            references = [r for name in unit.characters for r in self.references.get(name, ())]
            if unit.key_path is not None:
                key = read_rgba16(unit.key_path)
                if key.shape[:2] != shape:
                    raise FrameError(f"key frame {unit.key_path} is not the size of the line art {unit.line_path}")
                references.insert(0, Reference(character="", image=key, line=line_art, source=str(unit.key_path),
                                               frame=unit.frame))
        except ImageError as error:
            raise FrameError(str(error)) from None
        for frame, (colour_path, line_path) in sorted(unit.near_keys.items()):
            key_image, key_line = self.key_frame(frame, colour_path, line_path)
            if key_image.shape[:2] == shape and key_line.shape[:2] == shape:
                references.append(Reference(character="", image=key_image, line=key_line,
                                            source=str(colour_path), frame=frame))
        if previous is not None and previous.line_art.shape != line_art.shape:
            previous = None  # a size change breaks the carry; colour from the references instead
        return WorkItem(
            frame=unit.frame,
            line_art=line_art,
            references=tuple(references),
            seed=unit.seed,
            masks=masks,
            previous=previous,
            background=self.background_for(shape),
            character_settings=self.character_settings(unit.characters),
        )

    def key_frame(self, frame: int, colour_path: Path, line_path: Path) -> tuple[np.ndarray, np.ndarray]:
        """A key frame's colour and line art, kept while the frames around it are coloured (the
        same arrays each time, so the engine analyses each key once)."""
        if frame not in self._keys:
            try:
                self._keys[frame] = (read_rgba16(colour_path), read_rgba16(line_path))
            except ImageError as error:
                raise FrameError(f"key frame {frame}: {error}") from None
            while len(self._keys) > 4:
                self._keys.pop(next(iter(self._keys)))
        return self._keys[frame]

    def character_settings(self, present: tuple[str, ...]) -> dict[str, dict]:
        engine = self.cut.manifest.engine.name
        return {
            c.name: dict(c.engine[engine])
            for c in self.cut.manifest.characters
            if c.name in present and c.engine and c.engine.get(engine)
        }

    def background_for(self, shape: tuple[int, int]) -> np.ndarray | None:
        """The background image at the frame's size: the reference, a plain colour, or none."""
        settings = self.cut.manifest.background
        if settings.mode == "color" and settings.color:
            plain = np.empty(shape + (4,), dtype=np.uint16)
            plain[:, :, :3] = hex_to_rgb16(settings.color)
            plain[:, :, 3] = FULL
            return plain
        background = self.background
        if background is not None and background.shape[:2] != shape:
            import cv2

            background = cv2.resize(background, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return background
