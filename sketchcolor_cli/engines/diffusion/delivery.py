"""Settings of the diffusion engine's delivery passes (torch-free, read by ``--help`` and manifest
checks): the high-resolution pass (``hires``) and the palette snap (``palette: snap``, ``snap``).

Both passes work for any diffusion pipeline: the hi-res pass needs what
`sketchcolor_cli.engines.diffusion.hires.HiresPipeline` names, the snap only the generated colour.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..base import EngineSettings

# Named delivery sizes: (width, height) boxes the frame is fitted into, aspect kept.
NAMED_SIZES: dict[str, tuple[int, int]] = {
    "1080p": (1920, 1080),
    "hd": (1920, 1080),
    "2k": (2048, 1080),  # DCI 2K container
    "uhd": (3840, 2160),
    "4k": (3840, 2160),  # UHD, the TV 4K
    "dci4k": (4096, 2160),
}
_SIZE = re.compile(r"^\s*(\d{2,5})\s*[xX]\s*(\d{2,5})\s*$")


def parse_delivery_size(value: str) -> tuple[int, int] | Literal["off", "auto"]:
    """'off', 'auto' (the line art's own size), a name from NAMED_SIZES, or 'WIDTHxHEIGHT'."""
    text = str(value).strip().lower()
    if text in ("off", "auto"):
        return text  # type: ignore[return-value]
    if text in NAMED_SIZES:
        return NAMED_SIZES[text]
    found = _SIZE.match(text)
    if not found:
        raise ValueError(
            f"hires size {value!r}: write off, auto (the line art's size), {', '.join(NAMED_SIZES)}, or WIDTHxHEIGHT "
            "such as 1920x1080"
        )
    width, height = int(found.group(1)), int(found.group(2))
    if not (64 <= width <= 8192 and 64 <= height <= 8192):
        raise ValueError(f"hires size {value!r}: width and height must be 64-8192 pixels")
    return width, height


class HiresSettings(EngineSettings):
    """The high-resolution pass: after the base generation the colour is upscaled to the delivery
    size, encoded, and refined at low strength in overlapping latent tiles that are all denoised at
    every step and blended with weights (MultiDiffusion), then decoded tile by tile."""

    size: str = Field(
        "off",
        description="Delivery size: off (no pass: the colour is resized from the model resolution), auto (the "
        "line art's own size), 1080p, 2k (2048x1080), 4k (3840x2160), dci4k, or WIDTHxHEIGHT. The frame is fitted "
        "into it with its aspect kept; the layers are written at the line art's size as always.",
    )
    strength: float = Field(
        0.35, gt=0.0, le=1.0,
        description="How much of the denoising is redone at the delivery size (0.2-0.45 adds detail and keeps the "
        "colours; 1 would generate anew).",
    )
    steps: int | None = Field(
        None, ge=1, le=200,
        description="Denoising schedule length of the pass (default: the engine's steps); about steps x strength "
        "steps are run.",
    )
    tile: int = Field(
        768, ge=128, le=2048, multiple_of=64,
        description="Tile size in pixels (multiple of 64); about the model's training size.",
    )
    overlap: int = Field(
        128, ge=16, le=1024, multiple_of=16,
        description="Overlap between neighbouring tiles in pixels (multiple of 16); blended with weights that "
        "fall off across it.",
    )
    vae_tile: int = Field(
        512, ge=64, le=4096, multiple_of=64,
        description="Tile size of the tiled VAE encode and decode in pixels (smaller: less memory).",
    )
    upscale: Literal["lanczos", "bicubic"] = Field("lanczos", description="How the base colour is upscaled first.")

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_delivery_size(value)
        return str(value).strip().lower()

    @model_validator(mode="after")
    def _overlap_fits(self) -> "HiresSettings":
        if self.overlap >= self.tile:
            raise ValueError(f"hires overlap {self.overlap} must be smaller than the tile {self.tile}")
        return self

    @property
    def enabled(self) -> bool:
        return self.size != "off"


class SnapSettings(EngineSettings):
    """How ``palette: snap`` turns the generated colour into exact palette colours."""

    space: Literal["oklab", "cielab"] = Field(
        "oklab", description="Colour space of the votes (each pixel votes for its nearest palette colour there)."
    )
    review_share: float = Field(
        0.6, ge=0.0, le=1.0,
        description="A region whose winning colour has fewer than this share of its pixels' votes is marked in the "
        "review layer (the generated colour is split between palette colours there).",
    )
    review_distance: float = Field(
        0.15, ge=0.0,
        description="A region whose pixels are, by their median, farther than this from the chosen colour is marked "
        "too (the model painted something the palette does not hold). In lightness units of 0-1 (OKLab; CIELAB "
        "distances are divided by 100).",
    )
    edge_px: int = Field(
        1, ge=0, le=16,
        description="Pixels along the lines left out of the votes (the model's colour bleeds across lines).",
    )
    gap_close_px: int = Field(4, ge=0, le=64, description="Regions: as the flat engine's gap_close_px.")
    min_region_px: int = Field(3, ge=0, description="Regions: as the flat engine's min_region_px.")
    hint_lines: bool = Field(True, description="Regions: as the flat engine's hint_lines.")


__all__ = ["HiresSettings", "NAMED_SIZES", "SnapSettings", "parse_delivery_size"]
