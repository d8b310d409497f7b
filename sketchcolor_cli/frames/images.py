"""Image I/O for sketchcolor: every pixel that enters or leaves the tool goes through here.

Built on OpenImageIO, so studios can feed PNG (1-16 bit, grey, grey+alpha, RGB, RGBA, palette),
TIFF, TGA, DPX, EXR (half/float), JPEG and PSD composites. Writers: PNG 8/16, TIFF 8/16, TGA 8,
DPX 8/10/12/16, EXR half/float, JPEG 8.

Conventions (see ``engines/base.py``): colour crosses the tool as ``H x W x 4`` ``uint16`` sRGB with
straight alpha, an 8-bit value ``v`` stored as ``v * 257``; single-channel layers are ``H x W``
``uint16``.

* Integer files are palette-exact: ``uint16 -> uint8`` uses ``(v + 128) // 257``, which inverts
  ``v * 257`` exactly, and nothing else touches the values.
* EXR holds scene-linear values: colour channels (R, G, B, Y) go through the exact IEC 61966-2-1
  sRGB transfer function on the way in and out; alpha and single-channel data layers are stored
  as ``value / 65535`` untouched. Float EXR gives back identical ``uint16`` values; half EXR gives
  back identical 8-bit values (``(v + 128) // 257``) but rounds true 16-bit values, so 16-bit
  sources need ``"float"`` (see `exact_exr_pixel_type`).
* Our EXRs keep *straight* alpha (exactness needs it) and say so in ``sketchcolor:alpha``; an EXR
  without that mark follows the OpenEXR convention (premultiplied) and is unpremultiplied when read.
* Writes are atomic: a temp file next to the target, then ``os.replace``.
* Metadata (``sketchcolor:*`` keys) travels as a JSON object in ``ImageDescription`` (PNG, TIFF,
  TGA up to 323 characters, JPEG, EXR) or in ``dpx:UserData`` (DPX), so values come back with
  their types; PNG text chunks and EXR attributes also carry each key on its own for other tools.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import numpy as np
import OpenImageIO as oiio

from sketchcolor_cli.engines.base import FULL, to_rgba16
from sketchcolor_cli.frames.png import DEFAULT_LEVEL as DEFAULT_PNG_LEVEL, encode_png

log = logging.getLogger(__name__)

__all__ = [
    "EXR_COMPRESSIONS",
    "ImageData",
    "ImageError",
    "LINEAR_COLORSPACE",
    "SKETCHCOLOR_COLORSPACE",
    "exact_exr_pixel_type",
    "image_size",
    "linear_to_srgb",
    "read_exr_layers",
    "read_image",
    "read_rgba16",
    "srgb_to_linear",
    "write_exr_layers",
    "write_image",
]

META_PREFIX = "sketchcolor:"
# What we write into every EXR so compositing software and people know what the numbers mean.
LINEAR_COLORSPACE = "lin_rec709_scene"  # OIIO 3 / ACES-config name for linear sRGB primaries
SKETCHCOLOR_COLORSPACE = "linear sRGB primaries (converted from sRGB with the exact transfer function)"
STRAIGHT_ALPHA = "straight (unassociated); premultiply before compositing"

# OpenEXR compression names OIIO understands (checked against OIIO 3.2 / OpenEXR 3).
# Lossless: none, rle, zips, zip, piz, htj2k32/htj2k256. Lossy: pxr24 (float channels only),
# b44/b44a (half), dwaa/dwab -- palette exactness holds only with the lossless ones.
EXR_COMPRESSIONS = ("none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab", "htj2k32", "htj2k256")
_EXR_LEVELLED = {"zip", "zips", "dwaa", "dwab"}  # accept e.g. "zip:6", "dwaa:45"

BitDepth = Literal[8, 10, 12, 16, "half", "float"]

# extension -> (OIIO format name, allowed bit depths, allowed compressions or None for "any level form")
_FORMATS: dict[str, tuple[str, tuple[Any, ...], tuple[str, ...]]] = {
    "png": ("png", (8, 16), ("none", "zip")),
    "tif": ("tiff", (8, 16), ("none", "lzw", "zip", "packbits")),
    "tiff": ("tiff", (8, 16), ("none", "lzw", "zip", "packbits")),
    "tga": ("targa", (8,), ("none", "rle")),
    "dpx": ("dpx", (8, 10, 12, 16), ("none",)),
    "exr": ("openexr", ("half", "float"), EXR_COMPRESSIONS),
    "jpg": ("jpeg", (8,), ("jpeg",)),
    "jpeg": ("jpeg", (8,), ("jpeg",)),
}
_TGA_DESCRIPTION_LIMIT = 323  # OIIO's TGA comment field: 3 lines of 81 + one of 80 characters
_COLOUR_CHANNELS = {"R", "G", "B", "Y"}  # the ones a transfer function applies to


class ImageError(Exception):
    """An image file that cannot be read or written; the message says which file and what to do."""

    def __init__(self, path: str | os.PathLike[str], message: str):
        super().__init__(message)
        self.path = Path(path)


@dataclass
class ImageData:
    """One decoded image in the file's own pixel type (uint8, uint16 or float32)."""

    pixels: np.ndarray  # H x W x C
    path: Path
    channel_names: list[str]
    linear: bool  # True when the values are scene-linear (float formats such as EXR)
    attributes: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- transfer functions


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear, IEC 61966-2-1 piecewise (float in, same float out)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(x.dtype, copy=False)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear values in [0, 1] to sRGB encoding, IEC 61966-2-1 piecewise (float in, same float out)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    # clip below 0 only inside the power branch so negatives never reach a fractional power
    powered = 1.055 * np.maximum(x, 0.0031308) ** (1.0 / 2.4) - 0.055
    return np.where(x <= 0.0031308, x * 12.92, powered).astype(x.dtype, copy=False)


def exact_exr_pixel_type(pixels: np.ndarray) -> Literal["half", "float"]:
    """"half" when every value is 8-bit-origin (a multiple of 257, exact through half), else "float"."""
    return "half" if not np.any(np.asarray(pixels, dtype=np.uint16) % 257) else "float"


# --------------------------------------------------------------------------- reading


def _describe(what: str, path: Path) -> str:
    return f"cannot read {what} '{path}'"


def _open_input(path: str | os.PathLike[str], what: str) -> tuple[Path, Any]:
    """Open an image for reading or raise an ImageError that says why and what to do."""
    path = Path(path)
    if not path.exists():
        raise ImageError(path, f"{_describe(what, path)}: the file does not exist; check the path and frame numbers")
    if path.is_dir():
        raise ImageError(path, f"{_describe(what, path)}: it is a folder, not an image file")
    config = oiio.ImageSpec()
    # keep straight alpha as stored (PNG, TGA, TIFF); OIIO premultiplies by default
    config.attribute("oiio:UnassociatedAlpha", 1)
    oiio.geterror()  # drop stale messages from earlier failures on this thread
    handle = oiio.ImageInput.open(str(path), config)
    if handle is None:
        reason = oiio.geterror().strip() or "unknown reason"
        if "could not find a format reader" in reason or "not a" in reason.lower() or path.stat().st_size == 0:
            raise ImageError(
                path,
                f"{_describe(what, path)}: not an image file OpenImageIO knows ({reason}); "
                "re-export it as PNG/TIFF/EXR",
            )
        raise ImageError(path, f"{_describe(what, path)}: the file is damaged or truncated ({reason}); re-export it")
    return path, handle


def _numpy_type(spec: Any) -> tuple[str, type]:
    """The OIIO read type and numpy type for a file: uint8, uint16 (any other integer) or float32."""
    # compare type names: BASETYPE enum aliases (UCHAR/UINT8) do not compare equal in the bindings
    formats = {str(fmt) for fmt in (list(spec.channelformats) or [spec.format])}
    if formats & {"half", "float", "double"}:
        return "float", np.float32
    if formats == {"uint8"}:
        return "uint8", np.uint8
    return "uint16", np.uint16  # 10/12-bit DPX and PNG, signed/wider integer TIFFs


def _attribute_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _decode_carrier(text: str) -> dict[str, Any] | None:
    """Our JSON metadata object, or None when the text is something else."""
    for candidate in (text, text.replace("\n", "")):  # TGA wraps its comment field with newlines
        try:
            data = json.loads(candidate)
        except (ValueError, TypeError):
            continue
        if isinstance(data, dict) and data and all(isinstance(k, str) and k.startswith(META_PREFIX) for k in data):
            return data
    return None


def _read_attributes(spec: Any) -> dict[str, Any]:
    attributes = {item.name: _attribute_value(item.value) for item in spec.extra_attribs}
    description = attributes.get("ImageDescription")
    if isinstance(description, str):
        carried = _decode_carrier(description)
        if carried is not None:
            del attributes["ImageDescription"]
            attributes.update(carried)  # exact types win over per-key copies (PNG text is str)
    user_data = attributes.get("dpx:UserData")
    if isinstance(user_data, list):
        try:
            carried = _decode_carrier(bytes(user_data).rstrip(b"\0").decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            carried = None
        if carried is not None:
            del attributes["dpx:UserData"]
            attributes.update(carried)
    return attributes


def _is_linear(read_type: str, attributes: Mapping[str, Any]) -> bool:
    space = str(attributes.get("oiio:ColorSpace", "")).lower()
    if "srgb" in space or "rec709_display" in space or "gamma" in space:
        return False
    if space.startswith("lin") or "linear" in space:
        return True
    return read_type == "float"


def read_image(path: str | os.PathLike[str], *, what: str = "image") -> ImageData:
    """Read the first subimage in its native pixel type; `what` names the file's role in errors.

    Half is read as float32, 10/12-bit data as uint16. An EXR whose data window is smaller than
    its display window is placed into a display-window-sized canvas (zeros outside).
    """
    path, handle = _open_input(path, what)
    try:
        spec = handle.spec()
        read_type, dtype = _numpy_type(spec)
        pixels = handle.read_image(0, 0, 0, spec.nchannels, read_type)
        # Some readers (JPEG) return data *and* an error for a truncated file: treat it as broken.
        problem = handle.geterror().strip()
        if pixels is None or problem:
            problem = problem or oiio.geterror().strip() or "no pixels decoded"
            raise ImageError(
                path, f"{_describe(what, path)}: the file is damaged or truncated ({problem}); re-export it"
            )
    finally:
        handle.close()
    pixels = np.asarray(pixels, dtype=dtype)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    elif pixels.ndim == 4:  # volumetric (depth) images: first slice
        pixels = pixels[0]
    pixels = _into_display_window(spec, pixels)
    attributes = _read_attributes(spec)
    return ImageData(
        pixels=np.ascontiguousarray(pixels),
        path=path,
        channel_names=list(spec.channelnames),
        linear=_is_linear(read_type, attributes),
        attributes=attributes,
    )


def _into_display_window(spec: Any, pixels: np.ndarray) -> np.ndarray:
    if (spec.x, spec.y, spec.width, spec.height) == (spec.full_x, spec.full_y, spec.full_width, spec.full_height):
        return pixels
    if spec.full_width <= 0 or spec.full_height <= 0:
        return pixels
    canvas = np.zeros((spec.full_height, spec.full_width, pixels.shape[2]), dtype=pixels.dtype)
    # overlap of the data window with the display window, in both coordinate systems
    x0, y0 = max(spec.x, spec.full_x), max(spec.y, spec.full_y)
    x1 = min(spec.x + spec.width, spec.full_x + spec.full_width)
    y1 = min(spec.y + spec.height, spec.full_y + spec.full_height)
    if x1 > x0 and y1 > y0:
        canvas[y0 - spec.full_y : y1 - spec.full_y, x0 - spec.full_x : x1 - spec.full_x] = pixels[
            y0 - spec.y : y1 - spec.y, x0 - spec.x : x1 - spec.x
        ]
    return canvas


def image_size(path: str | os.PathLike[str], *, what: str = "image") -> tuple[int, int]:
    """(width, height) of the first subimage's display window, from the header only."""
    _, handle = _open_input(path, what)
    try:
        spec = handle.spec()
        width, height = spec.full_width, spec.full_height
        if width <= 0 or height <= 0:
            width, height = spec.width, spec.height
        return int(width), int(height)
    finally:
        handle.close()


def image_attributes(path: str | os.PathLike[str], *, what: str = "image") -> dict[str, Any]:
    """The metadata attributes of the first subimage, from the header only (no pixels decoded)."""
    _, handle = _open_input(path, what)
    try:
        return _read_attributes(handle.spec())
    finally:
        handle.close()


def _split_channel(name: str) -> tuple[str, str]:
    """'color.R' -> ('color', 'R'); 'R' -> ('', 'R')."""
    layer, _, channel = name.rpartition(".")
    return layer, channel


def _pick_rgba(names: list[str]) -> list[int]:
    """Channel indices to build RGBA from: plain R,G,B[,A], else Y[,A], else the first colour layer."""
    split = [_split_channel(n) for n in names]
    layers: dict[str, dict[str, int]] = {}
    for index, (layer, channel) in enumerate(split):
        layers.setdefault(layer, {}).setdefault(channel, index)
    order = [""] + [layer for layer in layers if layer != ""]
    for layer in order:
        chans = layers.get(layer, {})
        if {"R", "G", "B"} <= chans.keys():
            picked = [chans["R"], chans["G"], chans["B"]]
            return picked + ([chans["A"]] if "A" in chans else [])
    for layer in order:
        chans = layers.get(layer, {})
        if "Y" in chans:
            return [chans["Y"]] + ([chans["A"]] if "A" in chans else [])
    return list(range(min(len(names), 4)))  # unnamed channels: grey, grey+alpha, RGB or RGBA


def _float_to_srgb_unit(data: np.ndarray, names: list[str], linear: bool, premultiplied: bool) -> np.ndarray:
    """Float channels (colour + optional alpha last) to sRGB-encoded values in [0, 1]."""
    out = data.astype(np.float64)
    has_alpha = len(names) in (2, 4) and _split_channel(names[-1])[1] == "A"
    colour = [i for i, n in enumerate(names) if _split_channel(n)[1] in _COLOUR_CHANNELS]
    if has_alpha and premultiplied and colour:
        alpha = np.clip(out[:, :, -1:], 0.0, None)
        safe = np.where(alpha > 0, alpha, 1.0)
        out[:, :, colour] = np.where(alpha > 0, out[:, :, colour] / safe, 0.0)
    out = np.clip(out, 0.0, 1.0)
    if linear and colour:
        out[:, :, colour] = linear_to_srgb(out[:, :, colour])
    return out


def _read_png_rgba16(path: Path) -> np.ndarray | None:
    """A PNG as H x W x 4 uint16 through OpenCV's libpng decoder, in about half OpenImageIO's CPU
    time (a frame's line art, mask and review thumbnails are read every frame); None where OpenCV
    cannot read it, so that the general reader says what is wrong."""
    import cv2

    if not path.is_file():
        return None
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # unchanged: no orientation, no gamma
    if data is None or data.dtype not in (np.uint8, np.uint16):
        return None
    channels = 1 if data.ndim == 2 else data.shape[2]
    code = {1: cv2.COLOR_GRAY2RGBA, 3: cv2.COLOR_BGR2RGBA, 4: cv2.COLOR_BGRA2RGBA}.get(channels)
    return None if code is None else to_rgba16(cv2.cvtColor(data, code))


def read_rgba16(path: str | os.PathLike[str], *, what: str = "image") -> np.ndarray:
    """Any readable image as H x W x 4 uint16 sRGB, straight alpha (65535 where the file has none)."""
    if str(path).lower().endswith(".png"):
        fast = _read_png_rgba16(Path(path))
        if fast is not None:
            return fast
    image = read_image(path, what=what)
    indices = _pick_rgba(image.channel_names)
    if indices == list(range(len(indices))):
        data = image.pixels[:, :, : len(indices)]  # the usual case: a view, not a copy
    else:
        data = image.pixels[:, :, indices]
    names = [image.channel_names[i] for i in indices]
    if data.dtype == np.float32:
        straight = str(image.attributes.get("sketchcolor:alpha", "")).startswith("straight")
        # float files other than ours follow the OpenEXR rule: colour is premultiplied by alpha
        data = _float_to_srgb_unit(data, names, image.linear, premultiplied=image.linear and not straight)
    elif data.shape[2] in (1, 3) and data.dtype in (np.uint8, np.uint16):
        import cv2  # adds the opaque alpha several times faster than numpy's strided copies

        code = cv2.COLOR_GRAY2RGBA if data.shape[2] == 1 else cv2.COLOR_RGB2RGBA
        data = cv2.cvtColor(np.ascontiguousarray(data), code)
    return to_rgba16(data)


# --------------------------------------------------------------------------- writing


def _extension(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    if ext not in _FORMATS:
        known = ", ".join(sorted(_FORMATS))
        raise ValueError(f"cannot write '{path}': unknown image extension '.{ext}'; use one of {known}")
    return ext


def _check_compression(path: Path, ext: str, compression: str | None) -> str | None:
    if compression is None:
        return None
    allowed = _FORMATS[ext][2]
    base, _, level = compression.partition(":")
    ok = base in allowed and (not level or (level.isdigit() and (ext != "exr" or base in _EXR_LEVELLED)))
    if ext == "jpg" or ext == "jpeg":
        ok = base == "jpeg" and level.isdigit() and 1 <= int(level) <= 100
        allowed = ("jpeg:<quality 1-100>",)
    if not ok:
        raise ValueError(
            f"cannot write '{path}': compression {compression!r} is not one {ext.upper()} supports; "
            f"use one of {', '.join(allowed)}"
            + (" (optionally with a level, e.g. 'zip:6')" if ext in ("exr", "png", "tif", "tiff") else "")
        )
    if ext == "png" and base == "none":
        return "zip:0"  # PNG always deflates; level 0 stores
    return compression


def _check_bit_depth(path: Path, ext: str, bit_depth: Any) -> None:
    allowed = _FORMATS[ext][1]
    if bit_depth not in allowed or isinstance(bit_depth, bool):
        raise ValueError(
            f"cannot write '{path}': {ext.upper()} cannot hold bit depth {bit_depth!r}; "
            f"it can hold {', '.join(repr(b) for b in allowed)}"
        )


def _metadata_items(metadata: Mapping[str, Any] | None) -> dict[str, str | int | float]:
    items: dict[str, str | int | float] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"metadata keys must be non-empty strings, got {key!r}")
        if not isinstance(value, (str, int, float)):
            raise TypeError(f"metadata {key!r}: value must be str, int or float, got {type(value).__name__}")
        if isinstance(value, float) and not np.isfinite(value):
            raise ValueError(f"metadata {key!r}: value must be finite, got {value!r}")
        items[key if key.startswith(META_PREFIX) else META_PREFIX + key] = value
    return items


def _apply_metadata(spec: Any, ext: str, items: Mapping[str, str | int | float], path: Path) -> None:
    if not items:
        return
    carrier = json.dumps(dict(items), ensure_ascii=False, separators=(",", ":"))
    if ext == "dpx":
        payload = np.frombuffer(carrier.encode("utf-8"), dtype=np.uint8)
        spec.attribute("dpx:UserData", oiio.TypeDesc(oiio.BASETYPE.UINT8, oiio.AGGREGATE.SCALAR,
                                                     oiio.VECSEMANTICS.NOXFORM, len(payload)), payload)
        return
    if ext == "tga" and len(carrier) > _TGA_DESCRIPTION_LIMIT:
        log.warning("'%s': %d characters of metadata do not fit TGA's %d-character comment; not written",
                    path, len(carrier), _TGA_DESCRIPTION_LIMIT)
    else:
        spec.attribute("ImageDescription", carrier)
    for key, value in items.items():
        if ext == "png":
            spec.attribute(key, str(value))  # OIIO's PNG writer keeps string text chunks only
        elif ext == "exr":
            if isinstance(value, bool):
                spec.attribute(key, int(value))
            elif isinstance(value, int):
                # EXR ints are 32-bit; wider ones go as text (the JSON copy keeps the exact int)
                spec.attribute(key, value if -(2**31) <= value < 2**31 else str(value))
            else:
                spec.attribute(key, value)  # floats are stored as float32 here; JSON copy is exact


def _atomic_write(path: Path, write: Any) -> None:
    """Call write(temp_path) for a temp file beside `path`, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # same folder (so os.replace is atomic) and same extension (OIIO picks the writer by it)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        try:
            temp.unlink()
        except FileNotFoundError:
            pass
        raise


def remove_stale_temps(paths: Iterable[Path]) -> int:
    """Remove the temp files a killed writer left beside these outputs (`.name.tmp-PID-...`, PID no
    longer running on this machine); a live writer's temps are left alone. One listing per folder.
    Returns how many went."""
    wanted: dict[Path, set[str]] = {}
    for path in paths:
        wanted.setdefault(path.parent, set()).add(path.name)
    removed = 0
    for folder, names in wanted.items():
        try:
            entries = [entry.name for entry in os.scandir(folder)]
        except FileNotFoundError:
            continue
        for entry in entries:
            if not entry.startswith(".") or ".tmp-" not in entry:
                continue
            target, _, rest = entry[1:].rpartition(".tmp-")
            pid = rest.split("-", 1)[0].split(".", 1)[0]
            if target in names and pid.isdigit() and not _process_alive(int(pid)):
                (folder / entry).unlink(missing_ok=True)
                removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:  # Linux: a zombie (killed, not yet reaped) writes nothing more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _write_oiio(temp: Path, target: Path, spec: Any, pixels: np.ndarray) -> None:
    oiio.geterror()
    output = oiio.ImageOutput.create(str(temp))
    if output is None:
        raise ImageError(target, f"cannot write '{target}': no writer for this format ({oiio.geterror().strip()})")
    try:
        if not output.open(str(temp), spec):
            raise ImageError(target, f"cannot write '{target}': {output.geterror().strip()}; "
                                     "check the folder is writable and has free space")
        if not output.write_image(pixels):
            raise ImageError(target, f"cannot write '{target}': {output.geterror().strip()}; "
                                     "check the folder is writable and has free space")
    finally:
        if not output.close():
            message = output.geterror().strip()
            if message:
                raise ImageError(target, f"cannot write '{target}': {message}; check the folder has free space")


def _check_pixels(path: Path, pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint16:
        raise TypeError(
            f"cannot write '{path}': pixels must be uint16 (the engines/base.py convention), got {pixels.dtype}; "
            "convert with to_rgba16()"
        )
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or 0 in pixels.shape:
        raise ValueError(
            f"cannot write '{path}': expected H x W, H x W x 3 or H x W x 4 pixels, got shape {pixels.shape}"
        )
    return pixels


def _to_exr_float(pixels: np.ndarray, colour: list[int]) -> np.ndarray:
    """uint16 sRGB to float32 linear: colour channels through the transfer function, others as-is."""
    unit = pixels.astype(np.float64) / FULL
    if colour:
        unit[:, :, colour] = srgb_to_linear(unit[:, :, colour])
    return unit.astype(np.float32)


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """uint16 -> the nearest uint8, (v + 128) // 257 (so v * 257 -> v exactly); OpenCV's rounding
    of v / 257 is the same for every 16-bit value (257 is odd: no ties) and many times faster."""
    import cv2

    out = cv2.convertScaleAbs(pixels, alpha=1 / 257)
    return out.reshape(pixels.shape)  # OpenCV drops a trailing channel axis of 1


def as_read_back_8bit(pixels: np.ndarray) -> np.ndarray:
    """uint16 pixels as they read back after an 8-bit write (nearest 8-bit value, times 257)."""
    return _to_8bit(pixels).astype(np.uint16) * np.uint16(257)


def _write_png(temp: Path, target: Path, data: np.ndarray, items: Mapping[str, str | int | float],
               compression: str | None) -> None:
    """PNG through our encoder (`frames/png.py`): the same file OpenImageIO would read back, for
    a quarter of its CPU time. Metadata as OpenImageIO writes it: the JSON carrier in the
    description, and each key as its own text chunk for other tools."""
    level = DEFAULT_PNG_LEVEL
    if compression is not None and ":" in compression:
        level = int(compression.partition(":")[2])
    text = {}
    if items:
        text["Description"] = json.dumps(dict(items), ensure_ascii=False, separators=(",", ":"))
        text.update({key: str(value) for key, value in items.items()})
    try:
        encoded = encode_png(data, text, level=level)
    except ValueError as error:
        raise ImageError(target, f"cannot write '{target}': {error}") from None
    try:
        with open(temp, "wb") as handle:
            handle.write(encoded)
    except OSError as error:
        raise ImageError(target, f"cannot write '{target}': {error.strerror or error}; "
                                 "check the folder is writable and has free space") from None


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    bit_depth: BitDepth = 8,
    metadata: Mapping[str, str | int | float] | None = None,
    compression: str | None = None,
) -> None:
    """Write uint16 pixels (H x W, H x W x 3 or H x W x 4) atomically; format from the extension.

    bit_depth: 8, 16 (PNG, TIFF, DPX), 10/12 (DPX), "half"/"float" (EXR). A depth the format
    cannot hold is a ValueError. EXR colour is converted sRGB -> linear; alpha and single-channel
    data are stored as value / 65535. Metadata keys get a ``sketchcolor:`` prefix.
    """
    path = Path(path)
    ext = _extension(path)
    _check_bit_depth(path, ext, bit_depth)
    compression = _check_compression(path, ext, compression)
    pixels = _check_pixels(path, pixels)
    height, width, channels = pixels.shape
    items = _metadata_items(metadata)

    if ext in ("jpg", "jpeg") and channels == 4:
        if np.any(pixels[:, :, 3] != FULL):
            raise ValueError(f"cannot write '{path}': JPEG has no alpha and this image is not fully opaque; "
                             "write PNG, TIFF or EXR instead")
        pixels, channels = pixels[:, :, :3], 3

    if ext == "exr":
        names = {1: ["A"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}[channels]
        data = _to_exr_float(pixels, [i for i, n in enumerate(names) if n in _COLOUR_CHANNELS])
        oiio_type = str(bit_depth)
        items = {**_exr_standard_items(alpha=channels == 4), **items}
    else:
        names = {1: ["Y"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}[channels]
        if bit_depth == 8:
            data = _to_8bit(pixels)
            oiio_type = "uint8"
        else:
            data, oiio_type = pixels, "uint16"

    if ext == "png":
        _atomic_write(path, lambda temp: _write_png(temp, path, data, items, compression))
        return

    spec = oiio.ImageSpec(width, height, channels, oiio_type)
    spec.channelnames = tuple(names)
    spec.alpha_channel = names.index("A") if "A" in names and channels > 1 else -1
    if ext == "dpx" and bit_depth == 10 and channels == 4:
        # OIIO 3.2 drops the last alpha sample of rows whose width % 3 == 1 (10-bit packing)
        raise ValueError(f"cannot write '{path}': 10-bit RGBA DPX loses alpha samples in OpenImageIO; "
                         "write 12 or 16 bit, or RGB without alpha")
    if ext == "dpx" and bit_depth in (10, 12):
        spec.attribute("oiio:BitsPerSample", int(bit_depth))  # OIIO quantises the uint16 data
    if ext != "exr":
        spec.attribute("oiio:UnassociatedAlpha", 1)  # our alpha is straight: don't divide it out
    else:
        spec.attribute("oiio:ColorSpace", LINEAR_COLORSPACE)
    if compression is not None:
        spec.attribute("compression", compression)
    _apply_metadata(spec, ext, items, path)
    data = np.ascontiguousarray(data)
    _atomic_write(path, lambda temp: _write_oiio(temp, path, spec, data))


def _exr_standard_items(alpha: bool) -> dict[str, str]:
    items = {"sketchcolor:colorspace": SKETCHCOLOR_COLORSPACE}
    if alpha:
        items["sketchcolor:alpha"] = STRAIGHT_ALPHA
    return items


# --------------------------------------------------------------------------- EXR layers


def write_exr_layers(
    path: str | os.PathLike[str],
    layers: Mapping[str, np.ndarray],
    *,
    pixel_type: Literal["half", "float"] = "half",
    compression: str = "zip",
    metadata: Mapping[str, str | int | float] | None = None,
) -> None:
    """One EXR holding named layers: 4 channels -> name.R/G/B/A, 3 -> name.R/G/B, 1 -> name.A.

    All layers must share H x W and be uint16 (our convention). Colour goes sRGB -> linear,
    alpha and single-channel layers are stored as value / 65535. Atomic.
    """
    path = Path(path)
    if path.suffix.lower() != ".exr":
        raise ValueError(f"cannot write '{path}': layered images are EXR only; use a .exr name")
    if pixel_type not in ("half", "float"):
        raise ValueError(f"cannot write '{path}': pixel_type must be 'half' or 'float', got {pixel_type!r}")
    compression = _check_compression(path, "exr", compression) or "zip"
    if not layers:
        raise ValueError(f"cannot write '{path}': no layers given")
    planes: list[np.ndarray] = []
    names: list[str] = []
    size: tuple[int, int] | None = None
    any_alpha = False
    for layer, pixels in layers.items():
        if not isinstance(layer, str) or not layer.strip() or layer != layer.strip():
            raise ValueError(f"cannot write '{path}': layer names must be non-empty without outer spaces, got {layer!r}")
        pixels = _check_pixels(path, pixels)
        if size is None:
            size = pixels.shape[:2]
        elif pixels.shape[:2] != size:
            raise ValueError(
                f"cannot write '{path}': layer {layer!r} is {pixels.shape[1]}x{pixels.shape[0]} but the first layer "
                f"is {size[1]}x{size[0]}; all layers of one EXR must share a size"
            )
        channels = {1: ["A"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}[pixels.shape[2]]
        any_alpha = any_alpha or "A" in channels
        planes.append(_to_exr_float(pixels, [i for i, c in enumerate(channels) if c in _COLOUR_CHANNELS]))
        names.extend(f"{layer}.{c}" for c in channels)
    assert size is not None
    data = np.ascontiguousarray(np.concatenate(planes, axis=2))
    spec = oiio.ImageSpec(size[1], size[0], data.shape[2], pixel_type)
    spec.channelnames = tuple(names)
    spec.alpha_channel = -1  # several alphas; none of them is "the" alpha of the file
    spec.attribute("compression", compression)
    spec.attribute("oiio:ColorSpace", LINEAR_COLORSPACE)
    items = {**_exr_standard_items(alpha=any_alpha), **_metadata_items(metadata)}
    _apply_metadata(spec, "exr", items, path)
    _atomic_write(path, lambda temp: _write_oiio(temp, path, spec, data))


def read_exr_layers(path: str | os.PathLike[str], *, what: str = "EXR") -> dict[str, np.ndarray]:
    """Inverse of `write_exr_layers`: layer name -> uint16 array in our convention.

    R/G/B[/A] layers come back H x W x 3 or 4 (sRGB, straight alpha); single-channel layers H x W.
    Channels without a layer prefix are the layer "". Other channel sets are returned as stored,
    clipped to 0..1, in file order. A file not written by sketchcolor is taken as premultiplied.
    """
    image = read_image(path, what=what)
    if image.pixels.dtype != np.float32:
        raise ImageError(image.path, f"cannot read {what} '{image.path}' as EXR layers: it holds "
                                     f"{image.pixels.dtype} pixels, not half/float; write it as EXR")
    straight = str(image.attributes.get("sketchcolor:alpha", "")).startswith("straight")
    grouped: dict[str, dict[str, int]] = {}
    for index, name in enumerate(image.channel_names):
        layer, channel = _split_channel(name)
        grouped.setdefault(layer, {})[channel] = index
    result: dict[str, np.ndarray] = {}
    for layer, chans in grouped.items():
        if {"R", "G", "B"} <= chans.keys() and set(chans) <= {"R", "G", "B", "A"}:
            order = ["R", "G", "B"] + (["A"] if "A" in chans else [])
        else:
            order = list(chans)
        indices = [chans[c] for c in order]
        unit = _float_to_srgb_unit(image.pixels[:, :, indices], order, image.linear,
                                   premultiplied=not straight)
        values = np.round(unit * FULL).astype(np.uint16)
        result[layer] = values[:, :, 0] if values.shape[2] == 1 else np.ascontiguousarray(values)
    return result
