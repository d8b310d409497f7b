"""The other commands, in-process and through a real subprocess: help, validate, init, config,
schema, presets, frame, eval, preview."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from sketchcolor_cli.cli import app
from sketchcolor_cli.frames.images import read_rgba16

runner = CliRunner()
COMMANDS = ["run", "frame", "validate", "init", "config", "schema", "eval", "preview", "presets list", "presets show"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_is_fast_to_import_and_has_examples():
    proc = subprocess.run([sys.executable, "-m", "sketchcolor_cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Examples" in proc.stdout
    # heavy libraries stay unloaded for --help
    probe = "import sys, sketchcolor_cli.cli; print(sorted(m for m in ('torch','diffusers','onnxruntime','cv2','OpenImageIO') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    assert loaded == "[]"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example(command):
    result = invoke(*command.split(), "--help")
    assert result.exit_code == 0
    assert "sketchcolor " in result.output and "Example" in result.output


def test_version():
    from sketchcolor_cli import __version__

    assert __version__ in invoke("--version").output


def test_validate_good_cut(small_cut):
    result = invoke("validate", small_cut)
    assert result.exit_code == 0, result.output


def test_validate_reports_three_mistakes_with_lines_and_exits_2(small_cut):
    manifest = small_cut / "cut.yaml"
    text = manifest.read_text()
    text = text.replace("fps: 24", "fps: -3").replace("format: png", "format: gif")
    text = text.replace("  masks: masks/hero", "  maskz: masks/hero")
    manifest.write_text(text)
    lines = text.splitlines()
    expected = {
        "fps": next(i for i, l in enumerate(lines, 1) if l.startswith("fps:")),
        "outputs.format": next(i for i, l in enumerate(lines, 1) if "format: gif" in l),
        "characters.0.maskz": next(i for i, l in enumerate(lines, 1) if "maskz:" in l),
    }
    proc = subprocess.run([sys.executable, "-m", "sketchcolor_cli", "validate", str(small_cut), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    problems = json.loads(proc.stdout)["problems"]
    assert {p["field"]: p["line"] for p in problems} == expected
    human = subprocess.run([sys.executable, "-m", "sketchcolor_cli", "validate", str(small_cut)],
                           capture_output=True, text=True)
    assert human.returncode == 2 and "3 problem(s) found" in human.stderr
    for field, line in expected.items():
        assert f"cut.yaml:{line}: {field}" in human.stderr


def test_validate_checks_files_sizes_and_ranges(small_cut):
    import cv2

    manifest = small_cut / "cut.yaml"
    manifest.write_text(manifest.read_text().replace("source: line/####.png", "source: line/####.png\n  range: 1-7"))
    (small_cut / "refs" / "hero_sheet_line.png").unlink()
    cv2.imwrite(str(small_cut / "masks" / "hero" / "0002.png"), np.zeros((8, 8), np.uint8))
    result = invoke("validate", small_cut, "--json")
    assert result.exit_code == 2
    messages = " | ".join(p["message"] for p in json.loads(result.stdout)["problems"])
    assert "frames 6-7 of the range have no line art" in messages
    assert "hero_sheet_line.png does not exist" in messages
    assert "masks for frames 2 are not the line art's size" in messages


def test_init_writes_a_manifest_that_validates(small_cut):
    (small_cut / "cut.yaml").unlink()
    (small_cut / "line" / "0003.png").unlink()
    result = invoke("init", small_cut)
    assert result.exit_code == 0, result.output
    assert "missing line-art frames: 3" in result.output
    assert invoke("init", small_cut).exit_code == 2  # never replaces a manifest without --force
    check = json.loads(invoke("validate", small_cut, "--json").stdout)
    assert check["valid"], check
    assert any("gaps" in p["message"] for p in check["problems"])  # the missing frame, as a warning


def test_config_shows_resolved_settings_and_origins(small_cut):
    result = invoke("config", small_cut, "--preset", "tv1080", "--set", "run.batch_size=3", "--origins", "--json")
    data = json.loads(result.stdout)
    assert data["settings"]["outputs"]["bit_depth"] == 8  # the manifest says 8, over the preset's 16
    assert data["origins"]["outputs.bit_depth"] == "manifest"
    assert data["settings"]["run"]["batch_size"] == 3 and data["origins"]["run.batch_size"] == "command line"
    assert "gap_close_px" in data["settings"]["engine"]["flat"]


def test_schema_is_json_schema_of_the_manifest(tmp_path):
    out = tmp_path / "cut.schema.json"
    assert invoke("schema", "-o", out).exit_code == 0
    schema = json.loads(out.read_text())
    assert "frames" in schema["properties"] and "schema_version" in schema["required"]


def test_presets_list_and_show():
    listing = invoke("presets", "list").output
    assert "tv1080" in listing and "preview" in listing
    assert "bit_depth: 16" in invoke("presets", "show", "tv1080").output
    assert invoke("presets", "show", "nope").exit_code != 0


def test_frame_command_colours_one_drawing(small_cut, tmp_path):
    out = tmp_path / "one.png"
    args = ["frame", small_cut / "line" / "0002.png", "--ref", small_cut / "refs" / "hero_sheet.png",
            "--ref-line", small_cut / "refs" / "hero_sheet_line.png", "-o", out]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    colour = read_rgba16(out)
    assert colour.shape == read_rgba16(small_cut / "line" / "0002.png").shape
    assert invoke(*args).exit_code == 2  # exists: needs --overwrite
    assert invoke(*args, "--overwrite", "--layer", "fill", "--bit-depth", "16").exit_code == 0


def test_frame_command_unreadable_sketch_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    result = invoke("frame", bad, "--ref", bad, "-o", tmp_path / "o.png")
    assert result.exit_code == 2 and "bad.png" in result.output


def test_eval_and_preview_after_a_run(small_cut, tmp_path):
    out = tmp_path / "out"
    assert invoke("run", small_cut, "--out", out, "-q").exit_code == 0
    scores = json.loads(invoke("eval", out / "fill", small_cut / "truth" / "fill",
                               "--labels", small_cut / "truth" / "labels", "--json").stdout)
    assert 0.0 <= scores["mean"]["acc_thres"] <= 1.0
    (out / "contact_sheet.png").unlink()
    (out / "flipbook.mp4").unlink()
    result = invoke("preview", small_cut, "--out", out)
    assert result.exit_code == 0
    assert (out / "contact_sheet.png").is_file() and (out / "flipbook.mp4").is_file()
