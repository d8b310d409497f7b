"""Tests for the OpenImageIO image layer: exact round trips, metadata, errors, atomic writes."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from sketchcolor_cli.frames import images
from sketchcolor_cli.frames.images import (
    EXR_COMPRESSIONS,
    ImageError,
    exact_exr_pixel_type,
    image_size,
    linear_to_srgb,
    read_exr_layers,
    read_image,
    read_rgba16,
    srgb_to_linear,
    write_exr_layers,
    write_image,
)


def _palette_image() -> np.ndarray:
    """16 x 256 RGBA, every 8-bit value in every channel (alpha 0 included), stored as v * 257."""
    rng = np.random.default_rng(7)
    rows = []
    for _ in range(16):
        rows.append(np.stack([rng.permutation(256) for _ in range(4)], axis=-1))
    return (np.stack(rows).astype(np.uint16) * 257).astype(np.uint16)


def _to8(values: np.ndarray) -> np.ndarray:
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _write_raw(path: Path, pixels: np.ndarray, pixel_type: str, names: list[str] | None = None, **attrs) -> None:
    """Write a file straight through OIIO, as some other program would have."""
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], pixels.shape[2], pixel_type)
    if names:
        spec.channelnames = tuple(names)
    for key, value in attrs.items():
        spec.attribute(key, value)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(np.ascontiguousarray(pixels)), out.geterror()
    out.close()


# --------------------------------------------------------------------------- transfer functions


def test_transfer_functions_published_points_and_inverse() -> None:
    # reference values of the IEC 61966-2-1 curve (widely tabulated)
    assert srgb_to_linear(np.array([0.5]))[0] == pytest.approx(0.214041140, abs=1e-8)
    assert linear_to_srgb(np.array([0.18]))[0] == pytest.approx(0.461356129, abs=1e-8)
    assert srgb_to_linear(np.array([0.0, 1.0])).tolist() == pytest.approx([0.0, 1.0], abs=1e-12)
    # the two pieces meet: continuous at the break points
    assert srgb_to_linear(np.array([0.04045]))[0] == pytest.approx(0.04045 / 12.92, abs=1e-7)
    assert linear_to_srgb(np.array([0.0031308]))[0] == pytest.approx(0.0031308 * 12.92, abs=1e-7)
    grid = np.linspace(0.0, 1.0, 100001)
    # the standard's break points (0.04045 vs 0.0031308 * 12.92) disagree by ~6e-8, so the inverse
    # is exact only to that, far below half a 16-bit step (7.6e-6)
    assert np.abs(linear_to_srgb(srgb_to_linear(grid)) - grid).max() < 1e-7
    away = grid[np.abs(grid - 0.04045) > 1e-6]
    assert np.abs(linear_to_srgb(srgb_to_linear(away)) - away).max() < 1e-12
    assert np.all(np.diff(srgb_to_linear(grid)) > 0)
    assert srgb_to_linear(grid.astype(np.float32)).dtype == np.float32


# --------------------------------------------------------------------------- palette exactness

INTEGER_FORMATS = [
    ("png8.png", 8),
    ("png16.png", 16),
    ("tif8.tif", 8),
    ("tif16.tiff", 16),
    ("tga8.tga", 8),
    ("dpx8.dpx", 8),
    ("dpx16.dpx", 16),
]


@pytest.mark.parametrize(("name", "bit_depth"), INTEGER_FORMATS + [("float.exr", "float")])
def test_palette_colours_are_exact(tmp_path: Path, name: str, bit_depth) -> None:
    palette = _palette_image()
    write_image(tmp_path / name, palette, bit_depth=bit_depth)
    back = read_rgba16(tmp_path / name)
    assert back.dtype == np.uint16 and back.shape == palette.shape
    assert np.array_equal(back, palette)


@pytest.mark.parametrize(("name", "bit_depth"), [("png16.png", 16), ("tif16.tif", 16), ("dpx16.dpx", 16), ("f.exr", "float")])
def test_true_16_bit_values_are_exact(tmp_path: Path, name: str, bit_depth) -> None:
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    pixels = np.stack([every, every[::-1], every.T, np.roll(every, 77)], axis=-1)
    write_image(tmp_path / name, pixels, bit_depth=bit_depth)
    assert np.array_equal(read_rgba16(tmp_path / name), pixels)


def test_half_exr_keeps_8_bit_palette_but_rounds_16_bit(tmp_path: Path) -> None:
    palette = _palette_image()
    write_image(tmp_path / "half.exr", palette, bit_depth="half")
    assert np.array_equal(_to8(read_rgba16(tmp_path / "half.exr")), _to8(palette))

    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    pixels = np.stack([every, every, every, every.T], axis=-1)
    write_image(tmp_path / "h16.exr", pixels, bit_depth="half")
    write_image(tmp_path / "f16.exr", pixels, bit_depth="float")
    assert not np.array_equal(read_rgba16(tmp_path / "h16.exr"), pixels)  # half rounds 16-bit values
    assert np.array_equal(read_rgba16(tmp_path / "f16.exr"), pixels)
    assert exact_exr_pixel_type(palette) == "half"
    assert exact_exr_pixel_type(pixels) == "float"


@pytest.mark.parametrize(("name", "bit_depth"), [("dpx10.dpx", 10), ("dpx12.dpx", 12)])
def test_10_and_12_bit_dpx_keep_8_bit_values(tmp_path: Path, name: str, bit_depth: int) -> None:
    palette = _palette_image()[:, :, :3] if bit_depth == 10 else _palette_image()
    write_image(tmp_path / name, palette, bit_depth=bit_depth)
    data = read_image(tmp_path / name)
    assert data.pixels.dtype == np.uint16
    assert data.attributes["oiio:BitsPerSample"] == bit_depth
    assert np.array_equal(_to8(read_rgba16(tmp_path / name)), _to8(to_rgba(palette)))


def to_rgba(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[2] == 4:
        return pixels
    return np.concatenate([pixels, np.full(pixels.shape[:2] + (1,), 65535, np.uint16)], axis=2)


def test_uint16_to_uint8_rounds_to_nearest(tmp_path: Path) -> None:
    values = np.array([0, 128, 129, 385, 386, 65535, 65407, 65406], dtype=np.uint16)
    pixels = np.repeat(values[None, :, None], 3, axis=2)
    write_image(tmp_path / "r.png", pixels, bit_depth=8)
    stored = read_image(tmp_path / "r.png").pixels[0, :, 0]
    assert stored.dtype == np.uint8
    # nearest 8-bit level, computed independently in floating point
    assert stored.tolist() == np.floor(values / 257.0 + 0.5).astype(int).tolist()


# --------------------------------------------------------------------------- reading


def test_read_image_native_types_and_linear_flag(tmp_path: Path) -> None:
    palette = _palette_image()
    write_image(tmp_path / "a.png", palette, bit_depth=8)
    write_image(tmp_path / "b.png", palette, bit_depth=16)
    write_image(tmp_path / "c.exr", palette, bit_depth="half")
    a, b, c = (read_image(tmp_path / n) for n in ("a.png", "b.png", "c.exr"))
    assert (a.pixels.dtype, b.pixels.dtype, c.pixels.dtype) == (np.uint8, np.uint16, np.float32)
    assert a.channel_names == ["R", "G", "B", "A"] and a.path == tmp_path / "a.png"
    assert (a.linear, b.linear, c.linear) == (False, False, True)
    # EXR holds linear light: mid sRGB grey is stored near 0.214
    assert c.attributes["oiio:ColorSpace"] == images.LINEAR_COLORSPACE
    assert c.attributes["sketchcolor:colorspace"] == images.SKETCHCOLOR_COLORSPACE
    mid = np.full((2, 2, 3), 128 * 257, np.uint16)
    write_image(tmp_path / "mid.exr", mid, bit_depth="float")
    assert read_image(tmp_path / "mid.exr").pixels[0, 0, 0] == pytest.approx(0.2158605, abs=1e-6)


def test_grey_and_grey_alpha_and_rgb_become_rgba(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (5, 7, 1)).astype(np.uint8)
    alpha = rng.integers(0, 256, (5, 7, 1)).astype(np.uint8)
    _write_raw(tmp_path / "g.png", grey, "uint8")
    _write_raw(tmp_path / "ga.png", np.concatenate([grey, alpha], axis=2), "uint8", ["Y", "A"],
               **{"oiio:UnassociatedAlpha": 1})
    rgb = rng.integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    write_image(tmp_path / "rgb.png", rgb, bit_depth=16)

    g = read_rgba16(tmp_path / "g.png")
    assert np.array_equal(g[:, :, :3], np.repeat(grey.astype(np.uint16) * 257, 3, axis=2))
    assert np.all(g[:, :, 3] == 65535)
    ga = read_rgba16(tmp_path / "ga.png")
    assert np.array_equal(ga[:, :, 0], grey[:, :, 0].astype(np.uint16) * 257)
    assert np.array_equal(ga[:, :, 3], alpha[:, :, 0].astype(np.uint16) * 257)  # straight, not premultiplied
    c = read_rgba16(tmp_path / "rgb.png")
    assert np.array_equal(c[:, :, :3], rgb) and np.all(c[:, :, 3] == 65535)


def test_single_channel_layers_round_trip(tmp_path: Path) -> None:
    line = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    for name, depth in [("l.png", 8), ("l16.png", 16), ("l.tif", 16), ("l.exr", "float")]:
        write_image(tmp_path / name, line, bit_depth=depth)
        back = read_rgba16(tmp_path / name)
        assert np.array_equal(back[:, :, 0], line), name  # data layer: no transfer function in EXR


def test_foreign_premultiplied_exr_is_unpremultiplied(tmp_path: Path) -> None:
    colour_srgb = np.array([0.8, 0.4, 0.2])
    alpha = 0.5
    pixel = np.append(srgb_to_linear(colour_srgb) * alpha, alpha).astype(np.float32)
    _write_raw(tmp_path / "nuke.exr", np.tile(pixel, (2, 3, 1)), "float")
    back = read_rgba16(tmp_path / "nuke.exr")[0, 0]
    assert np.abs(back[:3].astype(float) / 65535 - colour_srgb).max() < 2e-5
    assert back[3] == round(alpha * 65535)


def test_exr_data_window_is_placed_in_display_window(tmp_path: Path) -> None:
    spec = oiio.ImageSpec(4, 3, 4, "half")
    spec.x, spec.y = 2, 1
    spec.full_x, spec.full_y, spec.full_width, spec.full_height = 0, 0, 10, 8
    out = oiio.ImageOutput.create(str(tmp_path / "bbox.exr"))
    assert out.open(str(tmp_path / "bbox.exr"), spec)
    out.write_image(np.ones((3, 4, 4), np.float32))
    out.close()
    assert image_size(tmp_path / "bbox.exr") == (10, 8)
    rgba = read_rgba16(tmp_path / "bbox.exr")
    assert rgba.shape == (8, 10, 4)
    assert np.all(rgba[1:4, 2:6] == 65535) and rgba[:, :, 3].sum() == 12 * 65535


def test_psd_composite(tmp_path: Path) -> None:
    # minimal Photoshop file (version 1, RGB, 8 bit, no layers) with a raw composite image
    height, width = 3, 5
    planes = np.random.default_rng(5).integers(0, 256, (3, height, width)).astype(np.uint8)
    header = b"8BPS" + struct.pack(">H6sHIIHH", 1, b"\0" * 6, 3, height, width, 8, 3)
    body = struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + planes.tobytes()
    (tmp_path / "art.psd").write_bytes(header + body)
    rgba = read_rgba16(tmp_path / "art.psd")
    assert np.array_equal(rgba[:, :, :3], planes.transpose(1, 2, 0).astype(np.uint16) * 257)


def test_one_bit_tiff_scan(tmp_path: Path) -> None:
    ink = np.random.default_rng(2).integers(0, 2, (5, 9, 1)).astype(np.uint8) * 255
    _write_raw(tmp_path / "scan.tif", ink, "uint8", **{"oiio:BitsPerSample": 1})
    rgba = read_rgba16(tmp_path / "scan.tif")
    assert np.array_equal(rgba[:, :, 0], ink[:, :, 0].astype(np.uint16) * 257)
    assert np.all(rgba[:, :, 3] == 65535)


def test_image_size_reads_header(tmp_path: Path) -> None:
    write_image(tmp_path / "a.tif", np.zeros((37, 53, 4), np.uint16), bit_depth=16)
    assert image_size(tmp_path / "a.tif") == (53, 37)


# --------------------------------------------------------------------------- read errors


def _truncate(path: Path, fraction: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("name", ["t.png", "t.tif", "t.exr", "t.jpg", "t.dpx"])
def test_truncated_files_raise(tmp_path: Path, name: str) -> None:
    noise = np.random.default_rng(1).integers(0, 65536, (64, 64, 3)).astype(np.uint16)
    write_image(tmp_path / name, noise, bit_depth="half" if name.endswith("exr") else 8)
    _truncate(tmp_path / name)
    with pytest.raises(ImageError) as caught:
        read_image(tmp_path / name, what="line art")
    assert caught.value.path == tmp_path / name
    assert "cannot read line art" in str(caught.value) and str(tmp_path / name) in str(caught.value)
    assert "re-export" in str(caught.value)
    with pytest.raises(ImageError):
        read_rgba16(tmp_path / name)


def test_missing_and_foreign_files_raise(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist") as caught:
        read_image(tmp_path / "none.png")
    assert caught.value.path == tmp_path / "none.png"
    with pytest.raises(ImageError, match="folder"):
        image_size(tmp_path)
    (tmp_path / "x.png").write_bytes(b"this is not a picture" * 20)
    with pytest.raises(ImageError, match=r"not an image file OpenImageIO knows.*re-export it as PNG/TIFF/EXR"):
        read_image(tmp_path / "x.png", what="line art")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match="notes.txt"):
        image_size(tmp_path / "notes.txt")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png"):
        read_rgba16(tmp_path / "empty.png")


# --------------------------------------------------------------------------- write checks


def test_refuses_what_a_format_cannot_hold(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 4), np.uint16)
    for name, depth in [("a.tga", 16), ("a.png", "half"), ("a.exr", 8), ("a.tif", "float"), ("a.jpg", 16), ("a.png", 10)]:
        with pytest.raises(ValueError, match="cannot hold bit depth"):
            write_image(tmp_path / name, pixels, bit_depth=depth)
    with pytest.raises(ValueError, match="10-bit RGBA DPX"):
        write_image(tmp_path / "a.dpx", pixels, bit_depth=10)
    with pytest.raises(ValueError, match="unknown image extension"):
        write_image(tmp_path / "a.bmp", pixels)
    with pytest.raises(ValueError, match="no alpha"):
        write_image(tmp_path / "a.jpg", pixels)
    with pytest.raises(TypeError, match="uint16"):
        write_image(tmp_path / "a.png", pixels.astype(np.uint8))
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 2), np.uint16))
    with pytest.raises(ValueError, match="piz"):
        write_image(tmp_path / "a.exr", pixels, bit_depth="half", compression="lzma")
    with pytest.raises(ValueError, match="lzw"):
        write_image(tmp_path / "a.tif", pixels, compression="piz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "compression"),
    [("a.png", "none"), ("a.png", "zip:9"), ("a.tif", "lzw"), ("a.tif", "packbits"), ("a.tga", "rle"), ("a.tga", "none")],
)
def test_integer_compressions_stay_exact(tmp_path: Path, name: str, compression: str) -> None:
    palette = _palette_image()
    write_image(tmp_path / name, palette, compression=compression)
    assert np.array_equal(read_rgba16(tmp_path / name), palette)


def test_jpeg_writes_opaque_rgb(tmp_path: Path) -> None:
    pixels = np.zeros((16, 16, 4), np.uint16)
    pixels[:, :, 0] = 200 * 257
    pixels[:, :, 3] = 65535
    write_image(tmp_path / "a.jpg", pixels, compression="jpeg:95")
    back = read_rgba16(tmp_path / "a.jpg")
    assert abs(int(back[8, 8, 0]) // 257 - 200) <= 3 and np.all(back[:, :, 3] == 65535)


# --------------------------------------------------------------------------- metadata

METADATA = {"engine": "flat 1.0 — ünïcode", "frame": 1012, "seed": 2**40 + 3, "strength": 0.1, "sketchcolor:cut": "c012"}
EXPECTED = {
    "sketchcolor:engine": "flat 1.0 — ünïcode",
    "sketchcolor:frame": 1012,
    "sketchcolor:seed": 2**40 + 3,
    "sketchcolor:strength": 0.1,
    "sketchcolor:cut": "c012",
}


@pytest.mark.parametrize(
    ("name", "depth"), [("m.png", 8), ("m.png", 16), ("m.tif", 8), ("m.tif", 16), ("m.exr", "half"), ("m.exr", "float"), ("m.dpx", 16), ("m.tga", 8), ("m.jpg", 8)]
)
def test_metadata_round_trips_with_types(tmp_path: Path, name: str, depth) -> None:
    pixels = np.full((4, 4, 3), 257 * 9, np.uint16)
    meta = METADATA if not name.endswith("tga") else {"engine": "flat", "frame": 3, "strength": 0.25}
    write_image(tmp_path / name, pixels, bit_depth=depth, metadata=meta)
    attributes = read_image(tmp_path / name).attributes
    wanted = EXPECTED if meta is METADATA else {"sketchcolor:engine": "flat", "sketchcolor:frame": 3, "sketchcolor:strength": 0.25}
    got = {key: attributes.get(key) for key in wanted}
    assert got == wanted
    assert all(type(got[k]) is type(v) for k, v in wanted.items())
    assert "ImageDescription" not in attributes  # our JSON carrier is unpacked, not shown twice


def test_metadata_also_as_separate_png_and_exr_attributes(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4, 3), np.uint16)
    write_image(tmp_path / "m.png", pixels, metadata={"frame": 12, "engine": "flat"})
    write_image(tmp_path / "m.exr", pixels, bit_depth="half", metadata={"frame": 12, "engine": "flat"})
    spec_png = oiio.ImageInput.open(str(tmp_path / "m.png")).spec()
    assert spec_png.get_string_attribute("sketchcolor:frame") == "12"  # PNG text chunk
    spec_exr = oiio.ImageInput.open(str(tmp_path / "m.exr")).spec()
    assert spec_exr.get_int_attribute("sketchcolor:frame") == 12
    assert spec_exr.get_string_attribute("sketchcolor:engine") == "flat"


def test_tga_metadata_too_long_is_dropped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        write_image(tmp_path / "m.tga", np.zeros((2, 2, 3), np.uint16), metadata={"note": "x" * 400})
    assert "TGA" in caplog.text
    assert "sketchcolor:note" not in read_image(tmp_path / "m.tga").attributes


def test_bad_metadata_values(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="'k'"):
        write_image(tmp_path / "m.png", np.zeros((2, 2, 3), np.uint16), metadata={"k": [1, 2]})
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- atomic writes


def test_write_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out" / "frame.png"
    original = np.full((4, 4, 4), 257 * 50, np.uint16)
    write_image(target, original)  # parent folder created

    def broken(temp: Path, target_path: Path, spec, pixels) -> None:
        temp.write_bytes(b"\x89PNG half written")
        raise OSError("disk full")

    def broken_png(temp: Path, target_path: Path, data, items, compression) -> None:
        broken(temp, target_path, None, data)

    monkeypatch.setattr(images, "_write_oiio", broken)
    monkeypatch.setattr(images, "_write_png", broken_png)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, np.zeros((4, 4, 4), np.uint16))
    with pytest.raises(OSError, match="disk full"):
        write_image(target.with_suffix(".tif"), np.zeros((4, 4, 4), np.uint16))
    with pytest.raises(OSError, match="disk full"):
        write_exr_layers(tmp_path / "out" / "layers.exr", {"color": original})
    assert sorted(p.name for p in target.parent.iterdir()) == ["frame.png"]
    assert np.array_equal(read_rgba16(target), original)  # the old file is untouched


def test_write_leaves_no_temp_files(tmp_path: Path) -> None:
    for name, depth in [("a.png", 8), ("b.tif", 16), ("c.exr", "half"), ("d.dpx", 16), ("e.tga", 8)]:
        write_image(tmp_path / "deep" / "er" / name, np.zeros((3, 3, 4), np.uint16), bit_depth=depth)
    assert sorted(p.name for p in (tmp_path / "deep" / "er").iterdir()) == ["a.png", "b.tif", "c.exr", "d.dpx", "e.tga"]


# --------------------------------------------------------------------------- EXR layers


def _layers() -> dict[str, np.ndarray]:
    palette = _palette_image()
    rng = np.random.default_rng(11)
    return {
        "color": palette,
        "fill": np.ascontiguousarray(palette[::-1, ::-1]),
        "review": np.ascontiguousarray(palette[:, :, [2, 0, 1]]),  # 3 channels
        "line": np.ascontiguousarray(palette[:, :, 3]),
        "mask_hero": (rng.integers(0, 2, palette.shape[:2]) * 65535).astype(np.uint16),
    }


@pytest.mark.parametrize("compression", ["none", "rle", "zips", "zip", "piz", "zip:9"])
def test_exr_layers_float_exact(tmp_path: Path, compression: str) -> None:
    layers = _layers()
    write_exr_layers(tmp_path / "l.exr", layers, pixel_type="float", compression=compression, metadata={"frame": 5})
    back = read_exr_layers(tmp_path / "l.exr")
    assert sorted(back) == sorted(layers)
    for name, pixels in layers.items():
        assert back[name].shape == pixels.shape and back[name].dtype == np.uint16
        assert np.array_equal(back[name], pixels), name
    info = read_image(tmp_path / "l.exr")
    assert info.attributes["sketchcolor:frame"] == 5
    assert info.attributes["compression"] == compression.split(":")[0]


def test_exr_layers_half_keeps_8_bit_values_and_names(tmp_path: Path) -> None:
    layers = _layers()
    write_exr_layers(tmp_path / "l.exr", layers)
    back = read_exr_layers(tmp_path / "l.exr")
    for name, pixels in layers.items():
        assert np.array_equal(_to8(back[name]), _to8(pixels)), name
    names = read_image(tmp_path / "l.exr").channel_names
    assert {"color.R", "color.G", "color.B", "color.A", "review.R", "review.G", "review.B", "line.A"} <= set(names)
    assert "review.A" not in names
    # colour is stored linear, single-channel data is not transformed
    info = read_image(tmp_path / "l.exr")
    line_index, red_index = names.index("line.A"), names.index("color.R")
    assert np.allclose(info.pixels[:, :, line_index], layers["line"] / 65535.0, atol=1e-3)
    assert np.allclose(info.pixels[:, :, red_index], srgb_to_linear(layers["color"][:, :, 0] / 65535.0), atol=1e-3)


def test_exr_layer_checks(tmp_path: Path) -> None:
    good = np.zeros((4, 4, 4), np.uint16)
    with pytest.raises(ValueError) as caught:
        write_exr_layers(tmp_path / "x.exr", {"color": good}, compression="lzw")
    assert all(name in str(caught.value) for name in EXR_COMPRESSIONS)
    with pytest.raises(ValueError, match="share a size"):
        write_exr_layers(tmp_path / "x.exr", {"color": good, "line": np.zeros((5, 4), np.uint16)})
    with pytest.raises(ValueError, match="pixel_type"):
        write_exr_layers(tmp_path / "x.exr", {"color": good}, pixel_type="uint16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="EXR only"):
        write_exr_layers(tmp_path / "x.tif", {"color": good})
    with pytest.raises(ValueError, match="no layers"):
        write_exr_layers(tmp_path / "x.exr", {})
    assert list(tmp_path.iterdir()) == []


def test_read_rgba16_of_layered_exr_takes_first_colour_layer(tmp_path: Path) -> None:
    layers = _layers()
    write_exr_layers(tmp_path / "l.exr", {"line": layers["line"], "color": layers["color"]}, pixel_type="float")
    assert np.array_equal(read_rgba16(tmp_path / "l.exr"), layers["color"])


@pytest.mark.parametrize(
    ("name", "bit_depth", "layers"),
    [("f.png", 8, False), ("f.png", 16, False), ("f.tif", 8, False), ("f.exr", "half", True), ("f.exr", "float", True)],
)
def test_fill_carried_in_memory_is_what_its_file_reads_back(tmp_path: Path, name: str, bit_depth, layers: bool) -> None:
    """A chain's next frame takes the previous fill from memory: it must equal the file's pixels."""
    from sketchcolor_cli.engines.base import Layers
    from sketchcolor_cli.outputs.writers import fill_as_read_back, read_fill_layer, write_frame_layers

    rng = np.random.default_rng(4)
    for fill in (rng.integers(0, 256, (9, 7, 4)).astype(np.uint16) * 257, rng.integers(0, 65536, (9, 7, 4), dtype=np.uint16)):
        path = tmp_path / name
        frame = Layers(color=fill, fill=fill, line=fill[:, :, 3], review=fill, stats={})
        outputs = {"fill": path, "color": path} if layers else {"fill": path}
        write_frame_layers(frame, outputs, bit_depth=bit_depth, compression=None, metadata={})
        assert np.array_equal(fill_as_read_back(fill, path, bit_depth=bit_depth), read_fill_layer(path))


# --------------------------------------------------------------------------- our PNG encoder


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("depth", [8, 16])
def test_png_encoder_round_trips_through_openimageio(tmp_path: Path, channels: int, depth: int) -> None:
    rng = np.random.default_rng(channels * depth)
    # 16-bit random values do not deflate: over a megabyte, so the data spans several IDAT chunks
    pixels = rng.integers(0, 65536, (420, 700, channels), dtype=np.uint16)
    if depth == 8:
        pixels = (pixels // 257) * 257
    target = tmp_path / "frame.png"
    write_image(target, pixels[:, :, 0] if channels == 1 else pixels, bit_depth=depth,
                metadata={"frame": 7, "source": "/cuts/scène ✓/0007.png", "gain": 0.25})
    image = read_image(target)
    back = image.pixels.reshape(pixels.shape)
    assert back.dtype == (np.uint8 if depth == 8 else np.uint16)
    assert np.array_equal(back.astype(np.uint16) * (257 if depth == 8 else 1), pixels)
    assert image.attributes["sketchcolor:frame"] == 7 and image.attributes["sketchcolor:gain"] == 0.25
    assert image.attributes["sketchcolor:source"] == "/cuts/scène ✓/0007.png"
    data = target.read_bytes()
    assert data.count(b"IDAT") >= (2 if len(data) > (1 << 20) else 1) and b"iTXt" in data and b"tEXt" in data


def test_png_compression_level_is_honoured(tmp_path: Path) -> None:
    flat = np.zeros((64, 64, 4), np.uint16)
    flat[:, :32] = 257 * 200
    write_image(tmp_path / "stored.png", flat, compression="none")
    write_image(tmp_path / "deflated.png", flat, compression="zip:9")
    assert (tmp_path / "stored.png").stat().st_size > 64 * 64 * 4 > 10 * (tmp_path / "deflated.png").stat().st_size
    for name in ("stored.png", "deflated.png"):
        assert np.array_equal(read_rgba16(tmp_path / name), flat)


@pytest.mark.parametrize("fast", [True, False])
def test_png_encoder_with_and_without_isal_gives_the_same_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                fast: bool) -> None:
    """ISA-L deflates the fast levels where it is installed; zlib where it is not: same pixels."""
    from sketchcolor_cli.frames import png

    if fast and png._isal_zlib is None:
        pytest.skip("isal is not installed on this platform")
    if not fast:
        monkeypatch.setattr(png, "_isal_zlib", None)
    pixels = np.zeros((90, 160, 4), np.uint8)
    pixels[20:70, 30:120] = (200, 40, 10, 255)
    pixels[::7, :, 3] = 128
    for level in (1, 3, 6):
        target = tmp_path / f"l{level}-{fast}.png"
        target.write_bytes(png.encode_png(pixels, level=level))
        assert np.array_equal(read_rgba16(target), pixels.astype(np.uint16) * 257)


def test_png_encoder_rejects_what_png_cannot_hold() -> None:
    from sketchcolor_cli.frames.png import encode_png

    with pytest.raises(ValueError, match="float32"):
        encode_png(np.zeros((2, 2, 4), np.float32))
    with pytest.raises(ValueError, match="1 to 79"):
        encode_png(np.zeros((2, 2, 4), np.uint8), {"k" * 80: "v"})


@pytest.mark.parametrize("kind", ["L", "LA", "RGB", "RGBA", "P", "P+tRNS", "RGB+tRNS", "1", "I;16"])
def test_png_fast_reader_matches_the_general_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    from PIL import Image  # imageio's dependency: every PNG flavour, written by another library

    rng = np.random.default_rng(3)
    planes = rng.integers(0, 256, (4, 21, 33), dtype=np.uint8)
    mode = kind.split("+")[0]
    if mode in ("P", "RGB"):
        picture = Image.merge("RGB", [Image.fromarray(p) for p in planes[:3]])
        if mode == "P":
            picture = picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode == "I;16":
        picture = Image.fromarray(planes[0].astype(np.uint16) * 251)
    elif mode == "1":
        picture = Image.fromarray(planes[0] > 127)
    else:
        picture = Image.merge(mode, [Image.fromarray(p) for p in planes[: len(mode)]])
    path = tmp_path / "flavour.png"
    transparency = {"P+tRNS": 3, "RGB+tRNS": tuple(int(v) for v in planes[:3, 0, 0])}.get(kind)
    picture.save(path, **({"transparency": transparency} if transparency is not None else {}))
    fast = images._read_png_rgba16(path)
    assert fast is not None
    monkeypatch.setattr(images, "_read_png_rgba16", lambda p: None)
    general = read_rgba16(path)
    assert np.array_equal(fast, general)
    if transparency is not None:
        assert (general[:, :, 3] == 0).any()  # the transparent colour did become transparent
