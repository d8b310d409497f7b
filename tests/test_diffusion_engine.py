"""The diffusion engine end to end on the CPU: tiny random-weight switch models saved in the
published single-file layout, loaded by the real loader, run through `sketchcolor run`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from typer.testing import CliRunner  # noqa: E402

from sketchcolor_cli.cli import app  # noqa: E402
from sketchcolor_cli.engines.base import FULL  # noqa: E402
from sketchcolor_cli.frames.images import read_rgba16, write_image  # noqa: E402

from diffusion_tiny import write_tiny_model  # noqa: E402

runner = CliRunner()
ENGINE = {"steps": 2, "resolution": 256, "reference_guidance": 2.0, "sketch_guidance": 1.5}


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def diffusion_cut(cut: Path, model: dict, **settings) -> Path:
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    manifest["engine"] = {
        "name": "diffusion",
        "diffusion": {"model": str(model["checkpoint"]), "clip": str(model["clip"]), "config": str(model["config"]),
                      **ENGINE, **settings},
    }
    manifest["outputs"]["contact_sheet"] = False
    manifest["outputs"]["flipbook"] = False
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    return cut


def pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def frames_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / "frames.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_run_colours_every_frame_keeps_lines_and_is_deterministic(small_cut, tiny_model, tmp_path):
    cut = diffusion_cut(small_cut, tiny_model)
    first, second = tmp_path / "a", tmp_path / "b"
    result = run_cli("run", cut, "--out", first, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames_done"] == [1, 2, 3, 4, 5]
    for frame in range(1, 6):
        line_art = read_rgba16(cut / "line" / f"{frame:04d}.png")
        color = read_rgba16(first / "color" / f"walk.{frame:04d}.png")
        fill = read_rgba16(first / "fill" / f"walk.{frame:04d}.png")
        assert color.shape == fill.shape == line_art.shape == (192, 192, 4)
        ink = line_art[:, :, :3].max(axis=2) == 0  # fully black ink: kept bit for bit
        assert ink.sum() > 100
        assert np.array_equal(color[ink], line_art[ink])
        assert (fill[:, :, 3] == FULL).all()
        assert not np.array_equal(fill[ink], line_art[ink])  # the fill has no lines
    records = frames_log(first)
    assert all(r["stats"]["masks"] == ["hero"] for r in records)
    assert len({r["seed"] for r in records}) == 5
    # Same inputs, same seed: same bytes.
    assert run_cli("run", cut, "--out", second).exit_code == 0
    assert pngs(first) == pngs(second)


@pytest.mark.slow
def test_a_frame_redone_alone_is_identical_and_the_reference_matters(small_cut, tiny_model, tmp_path):
    cut = diffusion_cut(small_cut, tiny_model, sampler="euler_a")  # ancestral: per-step noise too
    full, alone, changed = tmp_path / "full", tmp_path / "alone", tmp_path / "changed"
    assert run_cli("run", cut, "--out", full, "--frames", "1-3").exit_code == 0
    assert run_cli("run", cut, "--out", alone, "--frames", "2").exit_code == 0
    name = "color/walk.0002.png"
    assert pngs(alone)[name] == pngs(full)[name]
    assert pngs(full)["color/walk.0001.png"] != pngs(full)["color/walk.0002.png"]  # seeds differ per frame

    sheet = cut / "refs" / "hero_sheet.png"
    image = read_rgba16(sheet)
    image[:, :, :3] = FULL - image[:, :, :3]  # other colours
    write_image(sheet, image, bit_depth=8)
    assert run_cli("run", cut, "--out", changed, "--frames", "2").exit_code == 0
    before = read_rgba16(full / name).astype(np.int64)
    after = read_rgba16(changed / name).astype(np.int64)
    changed_pixels = np.any(before[:, :, :3] != after[:, :, :3], axis=2)
    assert changed_pixels.mean() > 0.05, changed_pixels.mean()


def test_without_masks_the_whole_frame_is_foreground(small_cut, tiny_model, tmp_path):
    cut = diffusion_cut(small_cut, tiny_model, steps=1, reference_guidance=1.0)
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    del manifest["characters"][0]["masks"]
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    result = run_cli("run", cut, "--out", tmp_path / "o", "--frames", "1", "--set", "engine.diffusion.sampler=ddim")
    assert result.exit_code == 0, result.output
    record = frames_log(tmp_path / "o")[0]
    assert record["stats"]["masks"] == "none: whole frame foreground"


def test_convert_writes_a_folder_that_gives_the_same_frames(small_cut, tiny_model, tmp_path):
    converted = tmp_path / "converted"
    result = run_cli("convert", tiny_model["checkpoint"], converted, "--config", tiny_model["config"],
                     "--clip", tiny_model["clip"])
    assert result.exit_code == 0, result.output
    assert (converted / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((converted / "switch_config.json").read_text())["prediction_type"] == "epsilon"
    settings = {"steps": 1, "reference_guidance": 1.0}
    single = diffusion_cut(small_cut, tiny_model, **settings)
    assert run_cli("run", single, "--out", tmp_path / "single", "--frames", "1").exit_code == 0
    folder_cut = tmp_path / "folder_cut"
    shutil.copytree(small_cut, folder_cut)
    manifest = yaml.safe_load((folder_cut / "cut.yaml").read_text())
    manifest["engine"]["diffusion"] = {"model": str(converted), **ENGINE, **settings}
    (folder_cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    assert run_cli("run", folder_cut, "--out", tmp_path / "folder", "--frames", "1").exit_code == 0
    for layer in ("color", "fill"):  # the file metadata names the model, so compare pixels
        name = f"{layer}/walk.0001.png"
        assert np.array_equal(read_rgba16(tmp_path / "single" / name), read_rgba16(tmp_path / "folder" / name))


def test_convert_refuses_a_checkpoint_with_missing_keys(tiny_model, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_model["checkpoint"]))
    del state["first_stage_model.decoder.conv_out.bias"]
    broken = tmp_path / "switch-eps-broken.safetensors"
    save_file(state, str(broken))
    result = run_cli("convert", broken, tmp_path / "out", "--config", tiny_model["config"])
    assert result.exit_code == 2
    assert "first_stage_model.decoder.conv_out.bias" in result.output


def test_model_paths_are_relative_to_the_cut_folder(small_cut, tiny_model):
    local = small_cut / "models"
    shutil.copytree(tiny_model["checkpoint"].parent, local)
    manifest = yaml.safe_load((small_cut / "cut.yaml").read_text())
    manifest["engine"] = {"name": "diffusion", "diffusion": {"model": "models/switch-eps-tiny.safetensors"}}
    (small_cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    from sketchcolor_cli.manifest.resolve import load_cut

    resolved = load_cut(small_cut)
    assert Path(resolved.engine_settings.model) == (small_cut / "models" / "switch-eps-tiny.safetensors").resolve()


def test_settings_are_checked_without_loading_torch():
    probe = (
        "import sys; from sketchcolor_cli.engines.base import engine_class; "
        "cls = engine_class('diffusion'); cls.settings_model(steps=30, resolution=768); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_per_character_settings_override_the_cut_in_their_frames(small_cut, tiny_model, tmp_path):
    cut = diffusion_cut(small_cut, tiny_model, steps=1, reference_guidance=1.0)
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())

    def run(override, out):
        if override is None:
            manifest["characters"][0].pop("engine", None)
        else:
            manifest["characters"][0]["engine"] = {"diffusion": override}
        (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
        assert run_cli("run", cut, "--out", tmp_path / out, "--frames", "2").exit_code == 0
        return read_rgba16(tmp_path / out / "fill" / "walk.0002.png")

    plain = run(None, "plain")
    assert np.array_equal(run({"reference_strength": 1.0}, "same"), plain)  # the cut's value: no change
    assert not np.array_equal(run({"reference_strength": 0.0}, "off"), plain)


def test_bad_per_character_setting_is_reported_with_its_field(small_cut, tiny_model):
    cut = diffusion_cut(small_cut, tiny_model)
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    manifest["characters"][0]["engine"] = {"diffusion": {"merge_scale": 3}}
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    result = run_cli("validate", cut)
    assert result.exit_code == 2
    assert "merge_scale" in result.output


def test_preset_and_cli_options_reach_the_engine_settings(small_cut, tiny_model, tmp_path):
    from sketchcolor_cli.manifest.resolve import load_cut

    cut = diffusion_cut(small_cut, tiny_model)
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    del manifest["engine"]["diffusion"]["resolution"]  # so the preset's value shows
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    resolved = load_cut(cut, preset="diffusion-switch", overrides={"engine.diffusion.steps": 7})
    assert resolved.engine_settings.resolution == 768 and resolved.engine_settings.steps == 7
