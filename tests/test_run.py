"""`sketchcolor run` end to end: outputs, logs, resume, overwrite, failures, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from movies import read_movie as _movie
from typer.testing import CliRunner

from sketchcolor_cli.cli import app
from sketchcolor_cli.frames.images import read_image, read_rgba16

runner = CliRunner()


def run_cli(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def output_bytes(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*.png"))
        if p.name != "contact_sheet.png"
    }


def test_run_writes_layers_logs_and_contact_sheet(small_cut, tmp_path):
    out = tmp_path / "out"
    result = run_cli("run", small_cut, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames_done"] == [1, 2, 3, 4, 5] and summary["status"] == "ok"
    for layer in ("color", "fill", "line", "review"):
        files = sorted((out / layer).glob("walk.*.png"))
        assert [f.name for f in files] == [f"walk.{n:04d}.png" for n in range(1, 6)]
    line = read_rgba16(small_cut / "line" / "0003.png")
    color = read_rgba16(out / "color" / "walk.0003.png")
    assert color.shape == line.shape  # the input's resolution
    records = [json.loads(x) for x in (out / "logs" / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [1, 2, 3, 4, 5]
    assert {r["status"] for r in records} == {"done"}
    assert records[2]["inputs"]["previous"] == 2 and records[0]["inputs"]["previous"] is None
    assert all(r["seed"] is not None and r["settings_digest"] for r in records)
    assert (out / "contact_sheet.png").is_file() and (out / "flipbook.mp4").is_file()
    assert (out / "logs" / "run.log").read_text().count("done") >= 5
    meta = read_image(out / "color" / "walk.0003.png").attributes
    assert meta["sketchcolor:frame"] == 3 and meta["sketchcolor:engine"].startswith("flat")


def test_preview_remakes_the_runs_contact_sheet(small_cut, tmp_path):
    """The run makes its review from the frames in memory; `sketchcolor preview` makes it again
    from the files: the same contact sheet byte for byte, the same movie frame for frame."""
    out = tmp_path / "out"
    assert run_cli("run", small_cut, "--out", out, "-q").exit_code == 0
    during = (out / "contact_sheet.png").read_bytes()
    movie = _movie(out / "flipbook.mp4")
    (out / "contact_sheet.png").unlink()
    (out / "flipbook.mp4").unlink()
    assert run_cli("preview", small_cut, "--out", out).exit_code == 0
    assert (out / "contact_sheet.png").read_bytes() == during
    again = _movie(out / "flipbook.mp4")
    assert len(again) == len(movie) == 5 and all(np.array_equal(a, b) for a, b in zip(movie, again))
    assert not list(out.glob(".*.tmp-*"))


def test_review_of_a_resumed_run_and_of_worker_processes_shows_the_whole_cut(small_cut, tmp_path):
    """Frames skipped as done, and frames from workers in other processes (which send thumbnails
    but no pictures), are read from their files: the same review as a single clean run."""
    clean, resumed, spawned = tmp_path / "clean", tmp_path / "resumed", tmp_path / "spawned"
    assert run_cli("run", small_cut, "--out", clean, "-q").exit_code == 0
    assert run_cli("run", small_cut, "--out", resumed, "-q", "--frames", "1-2").exit_code == 0
    assert run_cli("run", small_cut, "--out", resumed, "-q").exit_code == 0
    assert run_cli("run", small_cut, "--out", spawned, "-q", "--workers", "2").exit_code == 0
    for out in (resumed, spawned):
        assert (out / "contact_sheet.png").read_bytes() == (clean / "contact_sheet.png").read_bytes()
        movie = _movie(out / "flipbook.mp4")
        assert len(movie) == 5 and all(np.array_equal(a, b) for a, b in zip(movie, _movie(clean / "flipbook.mp4")))


def test_fill_is_palette_exact_and_line_pixels_are_kept(small_cut, tmp_path):
    out = tmp_path / "out"
    assert run_cli("run", small_cut, "--out", out, "-q").exit_code == 0
    import yaml

    palette = yaml.safe_load((small_cut / "refs" / "hero_palette.yaml").read_text())
    allowed = {tuple(int(v[i : i + 2], 16) * 257 for i in (1, 3, 5)) for v in palette.values()}
    for frame in range(1, 6):
        fill = read_rgba16(out / "fill" / f"walk.{frame:04d}.png")
        opaque = fill[fill[:, :, 3] > 0][:, :3]
        used = {tuple(c) for c in np.unique(opaque, axis=0)}
        assert used <= allowed, f"frame {frame}: colours outside the palette: {used - allowed}"
        line = read_rgba16(small_cut / "line" / f"{frame:04d}.png")
        color = read_rgba16(out / "color" / f"walk.{frame:04d}.png")
        ink = line[:, :, :3].max(axis=2) == 0  # the synthetic lines are pure black
        assert np.array_equal(color[ink], line[ink])


def test_key_frame_cut_with_gaps_and_hint_lines_is_palette_exact_with_a_review_layer(tmp_path):
    import yaml

    from sketchcolor_cli.synthetic.cut import make_cut

    cut = tmp_path / "keyed"
    make_cut(cut, frames=5, size=(192, 192), seed=8, hint_lines=True, gaps=3, key_frames=(3,))
    out = tmp_path / "out"
    assert run_cli("run", cut, "--out", out, "-q").exit_code == 0
    palette = yaml.safe_load((cut / "refs" / "hero_palette.yaml").read_text())
    allowed = {tuple(int(v[i : i + 2], 16) * 257 for i in (1, 3, 5)) for v in palette.values()}
    for frame in range(1, 6):
        fill = read_rgba16(out / "fill" / f"walk.{frame:04d}.png")
        used = {tuple(c) for c in np.unique(fill[fill[:, :, 3] > 0][:, :3], axis=0)}
        assert used <= allowed, f"frame {frame}: colours outside the palette: {used - allowed}"
        line = read_rgba16(cut / "line" / f"{frame:04d}.png")
        color = read_rgba16(out / "color" / f"walk.{frame:04d}.png")
        ink = line[:, :, :3].max(axis=2) == 0
        assert np.array_equal(color[ink], line[ink])
        # Hint lines (saturated red / blue strokes) take a neighbour's colour: none is left in colour.
        hint = (line[:, :, 0] == 65535) & (line[:, :, 1] == 0) & (line[:, :, 2] == 0)
        assert not ((color[hint][:, :3] == (65535, 0, 0)).all(axis=1)).any()
        review = read_rgba16(out / "review" / f"walk.{frame:04d}.png")
        assert review.shape == fill.shape
    records = [json.loads(line) for line in (out / "logs" / "frames.jsonl").read_text().splitlines()]
    assert all("unsure_regions" in r["stats"] for r in records)


def test_rerun_skips_done_frames_and_overwrite_redoes_them(small_cut, tmp_path):
    out = tmp_path / "out"
    assert run_cli("run", small_cut, "--out", out, "-q").exit_code == 0
    again = json.loads(run_cli("run", small_cut, "--out", out, "--json").stdout)
    assert again["frames_done"] == [] and again["frames_skipped"] == [1, 2, 3, 4, 5]
    redo = json.loads(run_cli("run", small_cut, "--out", out, "--json", "--frames", "2-3", "--overwrite").stdout)
    assert redo["frames_done"] == [2, 3]


def test_resume_after_partial_run_is_byte_identical(small_cut, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    assert run_cli("run", small_cut, "--out", full, "-q").exit_code == 0
    assert run_cli("run", small_cut, "--out", split, "-q", "--frames", "1-2").exit_code == 0
    assert run_cli("run", small_cut, "--out", split, "-q").exit_code == 0
    assert output_bytes(full) == output_bytes(split)


def test_rerun_removes_temp_files_a_killed_run_left(small_cut, tmp_path):
    out = tmp_path / "out"
    assert run_cli("run", small_cut, "--out", out, "-q", "--frames", "1-2").exit_code == 0
    done = sorted((out / "color").glob("*.png"))[0]
    third = done.with_name(done.name.replace("0001", "0003"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = third.with_name(f".{third.name}.tmp-{dead.pid}-0a1b2c3d.png")
        writing = third.with_name(f".{third.name}.tmp-{alive.pid}-0a1b2c3d.png")
        other = third.with_name(f".unrelated.png.tmp-{dead.pid}-0a1b2c3d.png")
        for path in (stale, writing, other):
            path.write_bytes(b"")
        assert run_cli("run", small_cut, "--out", out, "-q").exit_code == 0
        assert not stale.exists()  # its writer is gone
        assert writing.exists() and other.exists()  # a live writer's, and not one of this cut's outputs
    finally:
        alive.kill()
        alive.wait()


def test_frame_whose_dependency_is_missing_pulls_it_in(small_cut, tmp_path):
    out = tmp_path / "out"
    plan = json.loads(run_cli("run", small_cut, "--out", out, "--frames", "4", "--dry-run", "--json").stdout)
    assert plan["to_colour"] == [1, 2, 3, 4] and plan["added_as_dependencies"] == [1, 2, 3]
    assert not out.exists()  # a dry run writes nothing


def test_colours_flow_out_from_every_key_in_both_directions(tmp_path):
    from sketchcolor_cli.runner.cut import RunRequest, plan_cut
    from sketchcolor_cli.synthetic.cut import make_cut

    cut = tmp_path / "keys"
    make_cut(cut, frames=8, size=(128, 128), seed=2, key_frames=(3, 8))
    plan = plan_cut(RunRequest(target=cut, overrides={"outputs.folder": str(tmp_path / "out")}))
    depends = {u.frame: u.depends_on for u in plan.units}
    # Before the first key the chain runs backwards; between keys towards the nearer (ties: back).
    assert depends == {1: 2, 2: 3, 3: None, 4: 3, 5: 4, 6: 7, 7: 8, 8: None}
    order = [u.frame for u in plan.units]
    assert all(order.index(d) < order.index(f) for f, d in depends.items() if d is not None)
    assert order[:3] == [3, 2, 1]  # a chain walked from its key, frame after frame
    assert plan.unit(5).near_keys.keys() == {3, 8} and plan.unit(1).near_keys.keys() == {3}

    out = tmp_path / "run"
    assert run_cli("run", cut, "--out", out, "-q").exit_code == 0
    records = [json.loads(line) for line in (out / "logs" / "frames.jsonl").read_text().splitlines()]
    previous = {r["frame"]: r["inputs"]["previous"] for r in records if r["status"] == "done"}
    assert previous == depends
    both = next(r for r in records if r["frame"] == 5)
    assert sum("color/" in ref for ref in both["inputs"]["references"]) == 2  # keys 3 and 8, directly


def test_corrupt_frame_fails_alone_with_exit_1(small_cut, tmp_path):
    out = tmp_path / "out"
    (small_cut / "line" / "0004.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run_cli("run", small_cut, "--out", out, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["frames_done"] == [1, 2, 3, 5]
    assert "0004.png" in summary["frames_failed"]["4"]
    records = [json.loads(x) for x in (out / "logs" / "frames.jsonl").read_text().splitlines()]
    (failed,) = [r for r in records if r["status"] == "failed"]
    assert failed["frame"] == 4 and "0004.png" in failed["error"]
    # frame 5 could not carry colours from frame 4, so it was coloured from the references
    (five,) = [r for r in records if r["frame"] == 5]
    assert any("references" in note for note in five["notes"])


def test_wrong_size_mask_fails_that_frame(small_cut, tmp_path):
    import cv2

    cv2.imwrite(str(small_cut / "masks" / "hero" / "0002.png"), np.zeros((10, 10), np.uint8))
    result = run_cli("run", small_cut, "--out", tmp_path / "out", "--json")
    assert result.exit_code == 1
    assert "10x10" in json.loads(result.stdout)["frames_failed"]["2"]


def test_frames_outside_the_cut_fail_by_number(small_cut, tmp_path):
    result = run_cli("run", small_cut, "--out", tmp_path / "out", "--frames", "5-6", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert 5 in summary["frames_done"] and "no line art for frame 6" in summary["frames_failed"]["6"]


def test_bad_manifest_exits_2_without_writing(small_cut, tmp_path):
    manifest = small_cut / "cut.yaml"
    manifest.write_text(manifest.read_text().replace("bit_depth: 8", "bit_depth: 9"))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sketchcolor_cli", "run", str(small_cut), "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "outputs.bit_depth" in proc.stderr and "cut.yaml:" in proc.stderr
    assert not out.exists()


def test_subprocess_run_prints_farm_progress_lines(small_cut, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sketchcolor_cli", "run", str(small_cut), "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stderr.splitlines() if "Progress:" in line]
    assert progress[-1].endswith("Progress: 100%") and len(progress) == 6  # start + one per frame


def test_killed_run_resumes_to_identical_bytes(small_cut, tmp_path):
    """SIGKILL a real run mid-way, run again: only the rest is done, bytes equal a clean run."""
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert run_cli("run", small_cut, "--out", clean, "-q").exit_code == 0
    command = [sys.executable, "-m", "sketchcolor_cli", "run", str(small_cut), "--out", str(killed)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        if " frame 2 done" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = {p.name for p in (killed / "fill").glob("*.png")}
    assert 2 <= len(done_before) < 5
    resumed = subprocess.run(command + ["--json"], capture_output=True, text=True)
    summary = json.loads(resumed.stdout)
    assert sorted(summary["frames_skipped"]) == sorted(int(n.split(".")[1]) for n in done_before)
    assert output_bytes(clean) == output_bytes(killed)
    assert not list(killed.rglob("*.tmp-*"))  # no half-written temp files left behind
