"""The cut manifest and presets as versioned, validated data (schema version 1).

Paths in a manifest are relative to the manifest's folder (the cut folder). Every model forbids
unknown keys, so a typo is reported with its line instead of being ignored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1
LAYER_NAMES = ("color", "fill", "line", "review")
OUTPUT_FORMATS = ("png", "tif", "tiff", "tga", "dpx", "exr")

_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


def _check_color(value: str) -> str:
    if not _HEX_COLOR.match(value):
        raise ValueError(f"{value!r} is not a colour; write it as '#rrggbb', e.g. '#f2c9a0'")
    return value.lower()


def _check_frame_spec(value: Any) -> str:
    from sketchcolor_cli.frames.spec import parse_frame_spec

    text = str(value)
    parse_frame_spec(text)  # raises FrameSpecError (a ValueError) with the bad item named
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FrameSource(_Strict):
    source: str = Field(
        description="Line-art frames: a pattern such as 'line/####.png', 'line/%04d.png', "
        "'line/@@@@.png', 'line/$F4.png', a glob 'line/*.png', or a folder 'line/'."
    )
    range: str | None = Field(None, description="Frames of the cut to use, e.g. '1-24' or '1-48x2'.")

    _range = field_validator("range", mode="before")(lambda v: None if v is None else _check_frame_spec(v))


class ReferenceSheet(_Strict):
    image: str = Field(description="A coloured reference: a colour model sheet or a finished frame.")
    line: str | None = Field(None, description="The line art of that same drawing, if you have it.")


class Character(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Character name (letters, digits, _ . -).")
    references: list[ReferenceSheet] = Field(min_length=1, description="Colour model sheets or coloured frames.")
    palette: str | dict[str, str] | None = Field(
        None, description="Named colours: a YAML file of name: '#rrggbb', or the mapping itself."
    )
    masks: str | None = Field(None, description="Per-frame foreground masks, a pattern like 'masks/hero/####.png'.")
    frames: str | None = Field(None, description="Frames where the character appears (default: all).")
    engine: dict[str, dict[str, Any]] | None = Field(
        None,
        description="Engine settings for the frames where this character appears, under the engine's name, "
        "e.g. {diffusion: {reference_strength: 0.8}}; they override the cut's engine settings there.",
    )

    _frames = field_validator("frames", mode="before")(lambda v: None if v is None else _check_frame_spec(v))

    @field_validator("references", mode="before")
    @classmethod
    def _plain_paths(cls, value: Any) -> Any:
        # `references: [sheet.png]` is the short form of `- image: sheet.png`.
        if isinstance(value, list):
            return [{"image": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("palette")
    @classmethod
    def _palette_colors(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: _check_color(color) for name, color in value.items()}
        return value


class KeyFrames(_Strict):
    source: str = Field(description="Finished colour frames of this cut, a pattern like 'color/####.png'.")
    frames: str | None = Field(None, description="Which of them to use as keys (default: every one found).")

    _frames = field_validator("frames", mode="before")(lambda v: None if v is None else _check_frame_spec(v))


class Background(_Strict):
    mode: Literal["transparent", "reference", "color"] = Field(
        "transparent", description="transparent: alpha 0; reference: coloured from `reference`; color: `color`."
    )
    reference: str | None = Field(None, description="Background reference image (mode: reference).")
    color: str | None = Field(None, description="Background colour '#rrggbb' (mode: color).")
    masks: str | None = Field(None, description="Per-frame background masks, a pattern.")

    _color = field_validator("color")(lambda v: None if v is None else _check_color(v))

    @model_validator(mode="after")
    def _mode_needs_its_value(self) -> "Background":
        if self.mode == "reference" and not self.reference:
            raise ValueError("mode 'reference' needs `reference: path/to/background.png`")
        if self.mode == "color" and not self.color:
            raise ValueError("mode 'color' needs `color: '#rrggbb'`")
        return self


class AutoMasks(_Strict):
    """Computed masks (`sketchcolor masks`): where they go, which local model files make them."""

    auto: str = Field(
        "masks/auto/####.png",
        description="Where `sketchcolor masks` writes each frame's computed foreground mask (white = "
        "foreground), and where `run` reads it for characters without masks of their own.",
    )
    references: str = Field(
        "masks/auto/references/{character}.{index}.png",
        description="Where computed reference-sheet masks go ({character}, {index} of its references).",
    )
    sketch_model: str | None = Field(
        None,
        description="Sketch-mask model: ISNet (anime-segmentation architecture, e.g. upstream xl's "
        "sketch-segment weights) as .safetensors (torch) or .onnx (onnxruntime). A local file.",
    )
    reference_model: str | None = Field(
        None,
        description="Reference-mask model: ISNet (.safetensors or .onnx), or an RMBG-2.0 / BiRefNet ONNX "
        "export (set reference_model_type: rmbg). A local file; without it no reference masks are made.",
    )
    reference_model_type: Literal["auto", "isnet", "rmbg"] = Field(
        "auto",
        description="How the reference model is fed: isnet, or rmbg (RMBG-2.0, BiRefNet: ImageNet "
        "normalisation); auto: isnet for .safetensors, rmbg for .onnx.",
    )
    threshold: float = Field(
        0.05, ge=0.0, le=1.0,
        description="Computed sketch-mask value above which a pixel is written as foreground (upstream's "
        "sketch-mask threshold), so the file shows exactly the foreground the engine will use.",
    )
    sketch_fit: Literal["stretch", "pad"] = Field(
        "stretch",
        description="How a frame meets the sketch model's square input: stretch (upstream's autofit canvas) "
        "or pad (centred on white paper, upstream's default square canvas).",
    )
    use_computed: bool = Field(
        True, description="`run` uses the computed masks for characters without masks of their own."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else the CPU.")

    @field_validator("auto")
    @classmethod
    def _frame_padding(cls, value: str) -> str:
        if not any(token in value for token in ("#", "@", "%", "$F")):
            raise ValueError("the computed-mask pattern needs frame padding, e.g. 'masks/auto/####.png'")
        return value

    @field_validator("references")
    @classmethod
    def _reference_fields(cls, value: str) -> str:
        if "{character}" not in value or "{index}" not in value:
            raise ValueError("the reference-mask pattern needs {character} and {index}, e.g. "
                             "'masks/auto/references/{character}.{index}.png'")
        return value


class EngineChoice(BaseModel):
    """`name` picks the engine; a key named after an engine holds that engine's settings."""

    model_config = ConfigDict(extra="allow")
    name: str = Field("flat", description="The engine: 'flat' (no model files, CPU).")

    @model_validator(mode="after")
    def _known_engines(self) -> "EngineChoice":
        from sketchcolor_cli.engines.base import engine_names

        known = engine_names()
        if self.name not in known:
            raise ValueError(f"unknown engine {self.name!r}; known engines: {', '.join(known)}")
        for key, value in (self.model_extra or {}).items():
            if key not in known:
                raise ValueError(f"unknown key {key!r}: engine settings go under an engine's name ({', '.join(known)})")
            if not isinstance(value, dict):
                raise ValueError(f"settings of engine {key!r} must be a mapping")
        return self

    def settings_for(self, name: str) -> dict[str, Any]:
        return dict((self.model_extra or {}).get(name, {}))


class Outputs(_Strict):
    folder: str = Field("out", description="Output folder, relative to the cut folder.")
    name: str | None = Field(
        None,
        description="File naming pattern with {cut}, {layer}, {ext} and frame padding, e.g. "
        "'{layer}/{cut}.####.{ext}' (default). EXR holds every layer in one file: '{cut}.####.exr'.",
    )
    layers: list[Literal["color", "fill", "line", "review", "shade"]] = Field(
        default_factory=lambda: list(LAYER_NAMES),
        description="color: colour with the original lines; fill: colour without lines; "
        "line: line alpha (where lines were); review: regions to check first; shade: the generated colour with "
        "its shading, without lines (diffusion engine; with palette: snap the fill is palette-exact and this is "
        "the model's colour; engines without shading write their fill).",
    )
    format: Literal["png", "tif", "tiff", "tga", "dpx", "exr"] = Field("png", description="Output file format.")
    bit_depth: Literal[8, 16, "half", "float"] = Field(8, description="8 or 16 for integer formats, half/float for EXR.")
    compression: str | None = Field(None, description="EXR compression (zip, piz, dwaa, ...).")
    contact_sheet: bool = Field(True, description="Write contact_sheet.png (line, result, review) per cut.")
    flipbook: bool = Field(True, description="Write flipbook.mp4 of the result per cut.")
    flipbook_side_by_side: bool = Field(
        False, description="Show the line art and the review layer beside the result in the flip-book."
    )

    @model_validator(mode="after")
    def _depth_fits_format(self) -> "Outputs":
        if self.format == "exr" and self.bit_depth not in ("half", "float"):
            raise ValueError(f"EXR holds half or float, not {self.bit_depth}; set bit_depth: half or float")
        if self.format != "exr" and self.bit_depth in ("half", "float"):
            raise ValueError(f"{self.format} holds 8 or 16 bit integers; use bit_depth 8 or 16, or format exr")
        if self.format == "tga" and self.bit_depth != 8:
            raise ValueError("TGA holds 8 bits per channel; set bit_depth: 8")
        if self.name is not None and self.format != "exr" and len(self.layers) > 1 and "{layer}" not in self.name:
            raise ValueError("several layers need '{layer}' in the naming pattern, e.g. '{layer}/{cut}.####.{ext}'")
        if self.name is not None and "#" not in self.name and "%" not in self.name and "@" not in self.name:
            raise ValueError("the naming pattern needs frame padding, e.g. '####' or '%04d'")
        if not self.layers:
            raise ValueError("name at least one layer")
        return self

    def file_pattern(self) -> str:
        if self.name:
            return self.name
        return "{cut}.####.exr" if self.format == "exr" else "{layer}/{cut}.####.{ext}"


class RunSettings(_Strict):
    batch_size: int = Field(4, ge=1, description="Frames handed to the engine at once.")
    frame_timeout_s: float | None = Field(
        None,
        gt=0,
        description="A frame that takes longer than this many seconds is failed and its worker restarted "
        "(so a run never hangs); `--frame-timeout` on the command line. Default: no limit.",
    )


class CutManifest(_Strict):
    """A cut: its line-art frames, the characters' references, the engine, and the outputs."""

    schema_version: Literal[1] = Field(description="Manifest schema version; this sketchcolor writes 1.")
    name: str | None = Field(None, description="Cut name (default: the cut folder's name).")
    fps: float = Field(24.0, gt=0, description="Frame rate, for the flip-book.")
    seed: int = Field(0, description="The cut's seed; each frame's seed derives from it and the frame number.")
    preset: str | None = Field(None, description="A preset name (see `sketchcolor presets list`) or a YAML path.")
    frames: FrameSource
    keys: KeyFrames | None = Field(None, description="Finished colour frames of this cut, used as references.")
    characters: list[Character] = Field(default_factory=list)
    background: Background = Field(default_factory=Background)
    engine: EngineChoice = Field(default_factory=EngineChoice)
    outputs: Outputs = Field(default_factory=Outputs)
    run: RunSettings = Field(default_factory=RunSettings)
    masks: AutoMasks = Field(default_factory=AutoMasks, description="Computed masks (`sketchcolor masks`).")

    @model_validator(mode="after")
    def _unique_characters(self) -> "CutManifest":
        names = [c.name for c in self.characters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"character names must be unique; repeated: {', '.join(duplicates)}")
        return self


class Preset(_Strict):
    """A preset: settings shared by many cuts (engine, outputs, run). A manifest overrides it."""

    schema_version: Literal[1] = 1
    description: str = ""
    seed: int | None = None
    engine: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    masks: dict[str, Any] | None = None

