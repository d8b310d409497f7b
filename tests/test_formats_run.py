"""The pipeline formats through `sketchcolor run`: EXR with named layers, 16-bit and TIFF/TGA/DPX
outputs palette-exact, resume through EXR, and `init` on sequences named the ways TDs name them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import OpenImageIO as oiio
import pytest
from typer.testing import CliRunner

from sketchcolor_cli.cli import app
from sketchcolor_cli.frames.images import image_attributes, read_exr_layers, read_rgba16, write_image

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_exr_output_holds_named_layers_and_exact_palette(small_cut, tmp_path):
    out = tmp_path / "exr"
    result = invoke("run", small_cut, "--out", out, "--preset", "comp-exr", "-q",
                    "--set", "outputs.format=exr", "--set", "outputs.bit_depth=half")
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("walk.*.exr"))
    assert [f.name for f in files] == [f"walk.{n:04d}.exr" for n in range(1, 6)]
    handle = oiio.ImageInput.open(str(files[2]))
    names = list(handle.spec().channelnames)
    handle.close()
    assert {"color.R", "color.G", "color.B", "color.A", "fill.R", "fill.A", "line.A", "review.R"} <= set(names)
    assert image_attributes(files[2])["sketchcolor:frame"] == 3
    png = tmp_path / "png"
    assert invoke("run", small_cut, "--out", png, "-q").exit_code == 0
    layers = read_exr_layers(files[2])
    as_png = read_rgba16(png / "fill" / "walk.0003.png")
    back_to_8bit = (layers["fill"].astype(np.uint32) + 128) // 257 * 257
    assert np.array_equal(back_to_8bit, as_png)  # exact palette colours after the linear round trip


def test_exr_resume_matches_a_clean_run(small_cut, tmp_path):
    options = ["-q", "--set", "outputs.format=exr", "--set", "outputs.bit_depth=half"]
    clean, split = tmp_path / "clean", tmp_path / "split"
    assert invoke("run", small_cut, "--out", clean, *options).exit_code == 0
    assert invoke("run", small_cut, "--out", split, "--frames", "1-2", *options).exit_code == 0
    assert invoke("run", small_cut, "--out", split, *options).exit_code == 0
    for frame in range(1, 6):
        a = read_exr_layers(clean / f"walk.{frame:04d}.exr")
        b = read_exr_layers(split / f"walk.{frame:04d}.exr")
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_tga_frames_are_palette_exact_and_carry_without_the_hand_off(small_cut, tmp_path):
    """TGA cannot hold the engine's hand-off (region confidences): its frames carry colours
    without it, from memory and from the file alike, so a resumed TGA run equals a clean one."""
    reference, clean, split = tmp_path / "ref", tmp_path / "clean", tmp_path / "split"
    options = ["-q", "--set", "outputs.format=tga"]
    assert invoke("run", small_cut, "--out", reference, "-q").exit_code == 0
    assert invoke("run", small_cut, "--out", clean, *options).exit_code == 0
    assert invoke("run", small_cut, "--out", split, "--frames", "1-2", *options).exit_code == 0
    assert invoke("run", small_cut, "--out", split, *options).exit_code == 0
    import yaml

    named = yaml.safe_load((small_cut / "refs" / "hero_palette.yaml").read_text())
    palette = {(int(v[1:3], 16) * 257, int(v[3:5], 16) * 257, int(v[5:7], 16) * 257, 65535) for v in named.values()}
    for frame in range(1, 6):
        got = read_rgba16(clean / "fill" / f"walk.{frame:04d}.tga")
        assert np.array_equal(got, read_rgba16(split / "fill" / f"walk.{frame:04d}.tga"))
        assert {tuple(c) for c in got.reshape(-1, 4).tolist()} <= palette | {(0, 0, 0, 0)}
    assert np.array_equal(read_rgba16(clean / "fill" / "walk.0001.tga"), read_rgba16(reference / "fill" / "walk.0001.png"))


@pytest.mark.parametrize("fmt,depth", [("png", 16), ("tif", 8), ("tif", 16), ("dpx", 16)])
def test_integer_formats_carry_the_same_palette_exact_fill(small_cut, tmp_path, fmt, depth):
    reference = tmp_path / "ref"
    assert invoke("run", small_cut, "--out", reference, "-q").exit_code == 0
    out = tmp_path / fmt
    result = invoke("run", small_cut, "--out", out, "-q", "--set", f"outputs.format={fmt}",
                    "--set", f"outputs.bit_depth={depth}")
    assert result.exit_code == 0, result.output
    for frame in (1, 5):
        expected = read_rgba16(reference / "fill" / f"walk.{frame:04d}.png")
        got = read_rgba16(out / "fill" / f"walk.{frame:04d}.{fmt}")
        assert np.array_equal(got, expected)


@pytest.mark.parametrize(
    "names",
    [
        ["sh010.{:04d}.png"],  # #### / %04d
        ["sh010_{}.png"],  # unpadded ($F, #)
        ["line.{:03d}.tga"],  # 3-digit padding
        ["{:05d}.tif"],
    ],
)
def test_init_finds_the_sequence_and_reports_a_missing_frame(small_cut, tmp_path, names):
    cut = tmp_path / "cut"
    (cut / "line").mkdir(parents=True)
    for frame in (1, 2, 4, 5):
        image = read_rgba16(small_cut / "line" / f"{frame:04d}.png")
        write_image(cut / "line" / names[0].format(frame), image[:, :, :3], bit_depth=8)
    shutil.copytree(small_cut / "refs", cut / "refs")
    result = invoke("init", cut)
    assert result.exit_code == 0, result.output
    assert "missing line-art frames: 3" in result.output
    check = json.loads(invoke("validate", cut, "--json").stdout)
    assert check["valid"], check["problems"]
    plan = json.loads(invoke("run", cut, "--dry-run", "--json").stdout)
    assert plan["to_colour"] == [1, 2, 4, 5]


def test_exr_half_turns_float_for_16_bit_colours_and_reads_back_exactly(tmp_path):
    from sketchcolor_cli.engines.base import Layers
    from sketchcolor_cli.outputs.writers import read_fill_layer, write_frame_layers

    fill = np.zeros((8, 8, 4), np.uint16)
    fill[..., 3] = 65535
    eight_bit = fill.copy()
    eight_bit[..., :3] = np.array([12, 200, 255]) * 257
    sixteen_bit = fill.copy()
    sixteen_bit[..., :3] = [1001, 40000, 65534]  # not 8-bit-origin: half would round these
    for name, pixels, expected_type in (("a", eight_bit, "half"), ("b", sixteen_bit, "float")):
        layers = Layers(color=pixels, fill=pixels, line=pixels[..., 0], review=pixels)
        path = tmp_path / f"{name}.exr"
        write_frame_layers(layers, {"fill": path, "color": path}, bit_depth="half", compression=None, metadata={})
        assert image_attributes(path)["sketchcolor:exr_pixel_type"] == expected_type
        assert np.array_equal(read_fill_layer(path), pixels)


def test_flipbook_side_by_side_is_three_times_as_wide(small_cut, tmp_path):
    import imageio.v2 as imageio

    plain, wide = tmp_path / "plain", tmp_path / "wide"
    assert invoke("run", small_cut, "--out", plain, "-q").exit_code == 0
    assert invoke("run", small_cut, "--out", wide, "-q", "--set", "outputs.flipbook_side_by_side=true").exit_code == 0
    sizes = []
    for folder in (plain, wide):
        reader = imageio.get_reader(folder / "flipbook.mp4")
        frame = reader.get_data(0)
        sizes.append(frame.shape[1])
        assert reader.count_frames() == 5
        reader.close()
    assert abs(sizes[1] - 3 * sizes[0]) <= 2
