"""Palette snap (`palette: snap`): regions of the line art take the palette colour the generated
colour votes for. A constructed frame whose answer is known, the colour spaces against their
published values, and the diffusion engine through `sketchcolor run` with a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from sketchcolor_cli.engines.base import FULL, Layers, Reference, WorkItem
from sketchcolor_cli.engines.diffusion.delivery import SnapSettings
from sketchcolor_cli.engines.diffusion.snap import snap_layers, to_perceptual
from sketchcolor_cli.engines.flat.paint import REVIEW_MARK
from sketchcolor_cli.outputs.writers import layer_pixels

RED, BLUE, GREEN, YELLOW = (0.85, 0.1, 0.1), (0.1, 0.2, 0.85), (0.1, 0.7, 0.2), (0.95, 0.85, 0.1)


def rgb16(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(round(v * 255)) * 257 for v in rgb)  # type: ignore[return-value]


def drawing() -> tuple[np.ndarray, dict[str, tuple[int, int, int, int]]]:
    """White paper with four boxes in black ink (8-bit values, fully opaque), and each box's
    interior (y0, y1, x0, x1)."""
    line = np.full((120, 160, 4), FULL, dtype=np.uint16)
    boxes = {"a": (10, 50, 10, 70), "b": (10, 50, 90, 150), "c": (70, 110, 10, 70), "d": (70, 110, 90, 150)}
    for y0, y1, x0, x1 in boxes.values():
        line[y0 - 2 : y1 + 2, x0 - 2 : x1 + 2, :3] = 0
        line[y0:y1, x0:x1, :3] = FULL
    return line, boxes


def snapped_case(space: str = "oklab"):
    line, boxes = drawing()
    colour = np.ones((120, 160, 3), dtype=np.float32)  # the "model" painted the paper white
    ya, yb, xa, xb = boxes["a"]
    colour[ya:yb, xa:xb] = np.array(RED) * np.linspace(0.8, 1.05, xb - xa)[None, :, None]  # shaded red
    ya, yb, xa, xb = boxes["b"]
    colour[ya:yb, xa:xb] = RED
    colour[ya:yb, (xa + xb) // 2 : xb] = BLUE  # split half and half: disputed
    ya, yb, xa, xb = boxes["c"]
    colour[ya:yb, xa:xb] = np.array(GREEN) * 0.9  # a darker green
    ya, yb, xa, xb = boxes["d"]
    colour[ya:yb, xa:xb] = YELLOW  # nearest palette colour overall: mika's yellow, but hero owns d
    colour = np.clip(colour, 0, 1)
    masks = {"hero": np.zeros((120, 160), bool), "mika": np.zeros((120, 160), bool)}
    masks["hero"][5:115, 5:155] = True
    masks["mika"][5:60, 5:80] = True  # mika owns box a (covers it wholly; hero's covers it too, not more)
    masks["hero"][5:60, 5:80] = False
    sheet = np.zeros((8, 8, 4), dtype=np.uint16)
    references = (
        Reference("hero", sheet, palette={"skin": rgb16(RED), "coat": rgb16(BLUE), "leaf": rgb16(GREEN),
                                          "sand": rgb16((0.8, 0.6, 0.2))}),
        Reference("mika", sheet, palette={"hair": rgb16(RED), "sun": rgb16(YELLOW)}),
    )
    item = WorkItem(frame=7, line_art=line, references=references, seed=0, masks=masks)
    return item, snap_layers(item, colour, SnapSettings(space=space)), boxes


@pytest.mark.parametrize("space", ["oklab", "cielab"])
def test_regions_take_the_palette_colour_their_pixels_vote_for(space):
    item, layers, boxes = snapped_case(space)

    def region(name):
        ya, yb, xa, xb = boxes[name]
        return layers.fill[ya + 3 : yb - 3, xa + 3 : xb - 3].reshape(-1, 4)

    for name, expected in (("a", RED), ("c", GREEN), ("d", (0.8, 0.6, 0.2))):
        values = np.unique(region(name), axis=0)
        assert values.tolist() == [list(rgb16(expected)) + [FULL]], (name, values)
    # The outer paper touches the border: background, transparent as in the flat engine.
    assert (layers.fill[0, 0] == 0).all()
    # Every fill pixel is a palette colour (or the transparent background).
    palette = {rgb16(c) for c in (RED, BLUE, GREEN, YELLOW, (0.8, 0.6, 0.2))}
    opaque = layers.fill[layers.fill[:, :, 3] == FULL][:, :3]
    assert {tuple(p) for p in np.unique(opaque, axis=0).tolist()} <= palette
    assert set(np.unique(layers.fill[:, :, 3]).tolist()) <= {0, FULL}


def test_the_review_marks_the_disputed_region_only():
    item, layers, boxes = snapped_case()

    def marked(name):
        ya, yb, xa, xb = boxes[name]
        return np.all(layers.review[ya:yb, xa:xb] == REVIEW_MARK, axis=2).mean()

    assert marked("b") > 0.2  # red and blue half and half
    assert marked("a") == marked("c") == 0.0
    assert marked("d") > 0.2  # yellow is not hero's: far from every colour hero may take
    assert layers.stats["unsure_regions"] == 2


def test_line_pixels_are_the_drawn_pixels():
    item, layers, _ = snapped_case()
    ink = item.line_art[:, :, 0] == 0
    assert np.array_equal(layers.color[ink], item.line_art[ink])
    assert (layers.line[ink] == FULL).all() and (layers.line[~ink] == 0).all()
    assert not np.array_equal(layers.fill[ink], item.line_art[ink])  # the fill has no lines


def test_without_any_palette_the_error_names_the_frame():
    line, _ = drawing()
    item = WorkItem(frame=12, line_art=line, references=(Reference("hero", np.zeros((8, 8, 4), np.uint16)),), seed=0)
    with pytest.raises(ValueError, match="frame 12: palette: snap needs palette colours"):
        snap_layers(item, np.ones((120, 160, 3), np.float32), SnapSettings())


def test_colour_spaces_match_their_published_values():
    # OKLab of sRGB red, green, blue and white (Ottosson's reference values), CIELAB (D65) of red.
    oklab = to_perceptual(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32), "oklab")
    expected = [[0.62796, 0.22486, 0.12585], [0.86644, -0.23389, 0.17950], [0.45201, -0.03246, -0.31153], [1, 0, 0]]
    assert np.allclose(oklab, expected, atol=2e-4)
    lab = to_perceptual(np.array([[1, 0, 0], [1, 1, 1]], np.float32), "cielab") * 100
    assert np.allclose(lab, [[53.24, 80.09, 67.20], [100, 0, 0]], atol=0.05)


def test_shade_is_written_for_engines_without_shading_as_their_fill():
    fill = np.zeros((2, 2, 4), np.uint16)
    plain = Layers(color=fill, fill=fill, line=fill[:, :, 0], review=fill)
    assert layer_pixels(plain, "shade") is fill
    shade = np.ones((2, 2, 4), np.uint16)
    assert layer_pixels(Layers(color=fill, fill=fill, line=fill[:, :, 0], review=fill, shade=shade), "shade") is shade


def test_bad_palette_mode_is_refused_with_its_field():
    from pydantic import ValidationError

    from sketchcolor_cli.engines.diffusion import DiffusionSettings

    with pytest.raises(ValidationError, match="palette"):
        DiffusionSettings(palette="exact")
    assert DiffusionSettings.model_validate({"palette": "snap", "snap": {"space": "cielab"}}).snap.space == "cielab"


# ---- through `sketchcolor run` with a tiny diffusion model -----------------------------------------


def test_run_with_palette_snap_gives_palette_exact_fills_and_a_shade_layer(small_cut, tmp_path, monkeypatch):
    # One thread in the spawned worker: on a shared machine OpenMP threads waiting on each other
    # make a tiny model many times slower.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytest.importorskip("torch")
    from diffusion_tiny import write_tiny_model
    from typer.testing import CliRunner

    from sketchcolor_cli.cli import app
    from sketchcolor_cli.frames.images import read_rgba16

    model = write_tiny_model(tmp_path / "model")
    manifest = yaml.safe_load((small_cut / "cut.yaml").read_text())
    manifest["engine"] = {"name": "diffusion", "diffusion": {
        "model": str(model["checkpoint"]), "clip": str(model["clip"]), "config": str(model["config"]),
        "steps": 1, "resolution": 256, "reference_guidance": 1.0}}
    manifest["outputs"].update(contact_sheet=False, flipbook=False, layers=["color", "fill", "review", "shade"])
    (small_cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(small_cut), "--out", str(out), "--frames", "2",
                                      "--set", "engine.diffusion.palette=snap", "--workers", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    palette = {tuple(int(h[i : i + 2], 16) * 257 for i in (1, 3, 5))
               for h in yaml.safe_load((small_cut / "refs" / "hero_palette.yaml").read_text()).values()}
    for frame in (2,):
        line_art = read_rgba16(small_cut / "line" / f"{frame:04d}.png")
        fill = read_rgba16(out / "fill" / f"walk.{frame:04d}.png")
        color = read_rgba16(out / "color" / f"walk.{frame:04d}.png")
        shade = read_rgba16(out / "shade" / f"walk.{frame:04d}.png")
        opaque = fill[:, :, 3] == FULL
        assert opaque.mean() > 0.05
        assert {tuple(p) for p in np.unique(fill[opaque][:, :3], axis=0).tolist()} <= palette
        assert set(np.unique(fill[:, :, 3]).tolist()) <= {0, FULL}
        ink = line_art[:, :, :3].max(axis=2) == 0
        assert ink.sum() > 100 and np.array_equal(color[ink], line_art[ink])
        # The shade is the model's own colour: shaded, so far more colours than the palette.
        assert len(np.unique(shade.reshape(-1, 4), axis=0)) > 4 * len(palette)
        assert (out / "review" / f"walk.{frame:04d}.png").is_file()
    records = [json.loads(line) for line in (out / "logs" / "frames.jsonl").read_text().splitlines()]
    assert all(r["stats"]["palette"] == "snap" and r["stats"]["regions"] > 5 for r in records)


def test_the_delivery_preset_turns_snap_hires_and_the_shade_layer_on(small_cut):
    from pathlib import Path

    from sketchcolor_cli.manifest.resolve import load_cut

    preset = Path(__file__).resolve().parents[1] / "presets" / "diffusion-delivery.yaml"
    manifest = yaml.safe_load((small_cut / "cut.yaml").read_text())
    manifest["engine"] = {"name": "diffusion"}
    del manifest["outputs"]["layers"]  # the manifest's own choice would win over the preset's
    (small_cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    resolved = load_cut(small_cut, preset=str(preset), overrides={"engine.diffusion.hires.size": "4k"})
    assert resolved.engine_settings.palette == "snap"
    assert resolved.engine_settings.hires.size == "4k" and resolved.engine_settings.hires.tile == 768
    assert "shade" in resolved.manifest.outputs.layers
