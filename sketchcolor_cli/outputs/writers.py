"""Writing a frame's layers: one file per layer, or one EXR holding them all; always atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sketchcolor_cli.engines.base import Layers
from sketchcolor_cli.frames.images import read_rgba16, write_exr_layers, write_image


def layer_pixels(layers: Layers, name: str) -> np.ndarray:
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
            write_exr_layers(
                path,
                {name: layer_pixels(layers, name) for name in names},
                pixel_type=str(bit_depth),
                compression=compression or "zip",
                metadata=tagged,
            )
        else:
            (name,) = names
            write_image(path, layer_pixels(layers, name), bit_depth=bit_depth, metadata=tagged)


def read_fill_layer(path: Path, *, bit_depth: int | str) -> np.ndarray:
    """A finished frame's fill layer, read back exactly as the next frame needs it."""
    if path.suffix.lower() == ".exr":
        from sketchcolor_cli.frames.images import read_exr_layers

        fill = read_exr_layers(path)["fill"]
    else:
        fill = read_rgba16(path)
    if bit_depth == "half":
        # Half floats hold 8-bit colours exactly only after rounding back to the 8-bit grid.
        fill = (((fill.astype(np.uint32) + 128) // 257) * 257).astype(np.uint16)
    return fill


def read_layer(path: Path, layer: str) -> np.ndarray:
    """One layer of a written frame as H x W x 4 uint16, for looking at (contact sheets, flip-books)."""
    if path.suffix.lower() == ".exr":
        from sketchcolor_cli.frames.images import read_exr_layers

        pixels = read_exr_layers(path)[layer]
    else:
        pixels = read_rgba16(path)
    if pixels.ndim == 2:  # the line layer: show ink where the alpha is
        grey = 65535 - pixels
        pixels = np.dstack([grey, grey, grey, np.full_like(grey, 65535)])
    return pixels
