"""Writing a frame's layers: one file per layer, or one EXR holding them all; always atomic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sketchcolor_cli.engines.base import Layers
from sketchcolor_cli.frames.images import (
    as_read_back_8bit,
    exact_exr_pixel_type,
    image_attributes,
    read_exr_layers,
    read_rgba16,
    write_exr_layers,
    write_image,
)

EXR_PIXEL_TYPE = "sketchcolor:exr_pixel_type"
# Metadata that engines hand to the next frame (`Layers.handoff`) has keys starting with this.
HANDOFF_PREFIX = "sketchcolor:handoff:"


def layer_pixels(layers: Layers, name: str) -> np.ndarray:
    if name == "shade" and layers.shade is None:
        return layers.fill  # an engine without shading: its shade is its flat fill
    return getattr(layers, name)


def write_frame_layers(
    layers: Layers,
    outputs: dict[str, Path],
    *,
    bit_depth: int | str,
    compression: str | None,
    metadata: dict[str, str | int | float],
) -> None:
    """Write every layer named in `outputs` (layer -> path); layers sharing a path go into one EXR."""
    by_file: dict[Path, list[str]] = {}
    for name, path in outputs.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        tagged = dict(metadata, **{"sketchcolor:layers": ",".join(names)})
        if path.suffix.lower() == ".exr":
            pixels = {name: layer_pixels(layers, name) for name in names}
            pixel_type = str(bit_depth)
            if pixel_type == "half" and any(exact_exr_pixel_type(p) == "float" for p in pixels.values()):
                pixel_type = "float"  # 16-bit colours would round in half; float keeps them exact
            write_exr_layers(
                path,
                pixels,
                pixel_type=pixel_type,
                compression=compression or "zip",
                metadata=dict(tagged, **{EXR_PIXEL_TYPE: pixel_type}),
            )
        else:
            (name,) = names
            write_image(path, layer_pixels(layers, name), bit_depth=bit_depth, metadata=tagged)


def read_fill_layer(path: Path) -> np.ndarray:
    """A finished frame's fill layer, read back exactly as it was before it was written."""
    if path.suffix.lower() != ".exr":
        return read_rgba16(path)
    fill = read_exr_layers(path)["fill"]
    if image_attributes(path).get(EXR_PIXEL_TYPE) == "half":
        # Written as half only when every value was 8-bit-origin: round back onto that grid.
        fill = (((fill.astype(np.uint32) + 128) // 257) * 257).astype(np.uint16)
    return fill


def carries_handoff(path: Path) -> bool:
    """Whether a fill file of this format holds the hand-off metadata (TGA's comment field is
    too short: its frames hand nothing on, from memory or from the file alike)."""
    return path.suffix.lower() != ".tga"


def read_fill_handoff(path: Path) -> dict[str, str]:
    """The engine's hand-off text (`Layers.handoff`) written with a finished frame's fill."""
    return {key: str(value) for key, value in image_attributes(path).items() if key.startswith(HANDOFF_PREFIX)}


def fill_read_back_is_exact(path: Path, bit_depth: int | str) -> bool:
    """Whether `fill_as_read_back` knows what this fill file will read back as (lossless formats
    at depths that hold palette colours on a known grid)."""
    ext = path.suffix.lower()
    return ext == ".exr" or (ext in (".png", ".tif", ".tiff") and bit_depth in (8, 16))


def fill_as_read_back(fill: np.ndarray, path: Path, *, bit_depth: int | str) -> np.ndarray | None:
    """The fill layer exactly as `read_fill_layer` will return it once written to `path`, so that a
    frame carried from it in memory comes out as it would from the file; None where that is not
    known (see `fill_read_back_is_exact`)."""
    if not fill_read_back_is_exact(path, bit_depth):
        return None
    if path.suffix.lower() != ".exr" and bit_depth == 8:
        return as_read_back_8bit(fill)
    return fill  # 16-bit, and EXR (half only for 8-bit-origin values, float otherwise: both exact)


def read_layer(path: Path, layer: str) -> np.ndarray:
    """One layer of a written frame as uint16 (H x W x 4; the line layer H x W)."""
    if path.suffix.lower() == ".exr":
        return read_exr_layers(path)[layer]
    return read_rgba16(path)


_TO_BGRA = {1: cv2.COLOR_GRAY2BGRA, 3: cv2.COLOR_BGR2BGRA}


def read_for_viewing(path: Path, layer: str = "", *, what: str = "image") -> np.ndarray:
    """A written frame's layer ("" for a plain image) as H x W x 4 uint8 in OpenCV's BGRA order,
    for looking at (contact sheets, flip-books): an 8-bit PNG straight from the decoder, without
    the round trip through 16 bits (callers scale down first and reorder the small picture);
    anything else through `read_layer` / `read_rgba16`, rounded to 8 bits."""
    if path.suffix.lower() == ".png" and path.is_file():
        data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if data is not None and data.dtype == np.uint8:
            channels = 1 if data.ndim == 2 else data.shape[2]
            if channels == 4:
                return data
            if channels in _TO_BGRA:
                return cv2.cvtColor(data, _TO_BGRA[channels])
    return viewing_pixels(read_layer(path, layer) if layer else read_rgba16(path, what=what))


def viewing_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint16 RGBA pixels (a frame's layer in memory, or read back) as `read_for_viewing` gives
    them: H x W x 4 uint8 BGRA, rounded to 8 bits; a single-channel line layer as ink on white."""
    if pixels.ndim == 2:
        grey = 65535 - pixels
        pixels = np.dstack([grey, grey, grey, np.full_like(grey, 65535)])
    rgba8 = cv2.convertScaleAbs(np.ascontiguousarray(pixels), alpha=1 / 257).reshape(pixels.shape)
    return cv2.cvtColor(rgba8, cv2.COLOR_RGBA2BGRA)
