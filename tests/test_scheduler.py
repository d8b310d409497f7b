"""The scheduler: workers, dependency order, determinism, faults (killed workers, OOM, bad frames,
time limits), several cuts at once, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fake_engines import ENGINES
from sketchcolor_cli.cli import app
from sketchcolor_cli.engines import base as engines
from sketchcolor_cli.runner.cut import RunRequest, plan_cut, run_cuts
from sketchcolor_cli.runner.progress import Reporter
from sketchcolor_cli.runner.scheduler import RunOptions
from sketchcolor_cli.synthetic.cut import make_cut

TESTS = Path(__file__).parent
runner = CliRunner()


@pytest.fixture(autouse=True)
def fake_engines(monkeypatch):
    """The fake engines, known here and (through the environment) to subprocesses."""
    for name, target in ENGINES.items():
        monkeypatch.setitem(engines._REGISTRY, name, target)
    monkeypatch.setenv(engines.ENGINES_ENV, ",".join(f"{k}={v}" for k, v in ENGINES.items()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def _two_chain_master(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chains") / "walk"
    make_cut(root, frames=8, size=(128, 128), seed=5, hint_lines=True, gaps=1, key_frames=(1, 5))
    return root


@pytest.fixture
def two_chain_cut(_two_chain_master, tmp_path) -> Path:
    """An 8-frame cut with key frames 1 and 5: two chains of frames that carry colours."""
    import shutil

    target = tmp_path / "chains"
    shutil.copytree(_two_chain_master, target)
    return target


def output_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png")) if p.name != "contact_sheet.png"}


def records(out: Path, name: str = "frames.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / name).read_text().splitlines()]


def run_plans_in_process(cut: Path, out: Path, options: RunOptions, frames: str | None = None, **settings):
    overrides = {"outputs.folder": str(out), **settings}
    return run_cuts([plan_cut(RunRequest(cut, frames=frames, overrides=overrides))], Reporter(), options)[0]


def command(cut: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sketchcolor_cli", "run", str(cut), "--out", str(out), *extra]


def worker_pids(parent: int) -> list[int]:
    """The spawned worker processes of a run (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _still_running(pids: list[int], wait_s: float) -> list[int]:
    """The processes among `pids` still running (zombies waiting to be reaped do not count)."""
    deadline = time.monotonic() + wait_s
    while True:
        running = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                running.append(pid)
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


# -- dependency order and determinism -----------------------------------------------------------


def test_two_workers_run_chains_in_parallel_with_the_same_bytes(two_chain_cut, tmp_path):
    one = run_plans_in_process(two_chain_cut, tmp_path / "one", RunOptions(workers=1))
    two = run_plans_in_process(two_chain_cut, tmp_path / "two", RunOptions(workers=2))
    assert sorted(one.frames_done) == sorted(two.frames_done) == list(range(1, 9))
    assert output_bytes(tmp_path / "one") == output_bytes(tmp_path / "two")
    logged = {r["frame"]: r for r in records(tmp_path / "two")}
    # every carried frame read the result of its neighbour towards the nearest key, keys none
    # (frame 4 is nearer key 5 than key 1, so it carries backwards from 5)
    assert {f: r["inputs"]["previous"] for f, r in logged.items()} == {
        1: None, 2: 1, 3: 2, 4: 5, 5: None, 6: 5, 7: 6, 8: 7,
    }  # fmt: skip
    # both workers coloured frames; which worker takes which frame depends on timing (an idle
    # worker may take a chain's next frame from the file), but a frame that took its previous
    # result from memory ran on the worker that made it
    assert len(two.workers) == 2 and all(w["frames"] > 0 for w in two.workers)
    assert sum(w["frames"] for w in two.workers) == 8
    from_memory = [f for f, r in logged.items() if r["inputs"]["previous_from"] == "memory"]
    assert from_memory, "no frame was pipelined behind its previous one"
    assert all(logged[f]["worker"] == logged[logged[f]["inputs"]["previous"]]["worker"] for f in from_memory)
    assert 0.0 <= two.engine_idle_share < 1.0
    summary = json.loads((tmp_path / "two" / "logs" / "summary.json").read_text())
    assert summary["engine_idle_share"] == two.engine_idle_share and len(summary["workers"]) == 2
    assert "engine idle" in (tmp_path / "two" / "logs" / "run.log").read_text()


def test_chain_frames_carry_in_memory_with_the_bytes_of_frame_by_frame_runs(two_chain_cut, tmp_path):
    whole, single = tmp_path / "whole", tmp_path / "single"
    run_plans_in_process(two_chain_cut, whole, RunOptions(workers=1))
    for frame in (1, 2, 3, 5, 4, 6, 7, 8):  # each its own run: the previous fill comes from its file
        run_plans_in_process(two_chain_cut, single, RunOptions(workers=1), frames=str(frame))
    assert output_bytes(whole) == output_bytes(single)
    sources = {r["frame"]: r["inputs"]["previous_from"] for r in records(whole)}
    assert sources[1] is None and sources[5] is None  # the keys carry from nothing
    assert "memory" in sources.values()  # along a chain the next frame did not wait for the file
    assert {r["inputs"]["previous_from"] for r in records(single) if r["inputs"]["previous"]} == {"file"}


def test_a_frame_after_one_the_engine_failed_on_waits_for_its_retry(tmp_path):
    cut = tmp_path / "chain"
    make_cut(cut, frames=6, size=(64, 64), seed=3, key_frames=(1,))  # one chain: 1 -> 2 -> ... -> 6
    marker = tmp_path / "attempted"
    for frame in (1, 2, 4, 5, 6):  # only frame 3 fails its first attempt
        Path(f"{marker}.{frame}").touch()
    clean = run_plans_in_process(cut, tmp_path / "clean", RunOptions(workers=1), **{"engine.name": "fake_chain"})
    failing = run_plans_in_process(
        cut, tmp_path / "failing", RunOptions(workers=1),
        # the engine's pace lets the scheduler send frame 4 on before frame 3 is coloured
        **{"engine.name": "fake_chain", "engine.fake_chain.fail_once_marker": str(marker), "engine.fake_chain.sleep_s": 0.2},
    )  # fmt: skip
    assert sorted(clean.frames_done) == sorted(failing.frames_done) == list(range(1, 7))
    assert not failing.frames_failed and failing.frames_retried == [3]
    # frame 4 was sent on behind frame 3 and handed back when 3 failed, not coloured from the
    # references: the result is the clean run's (pixels: the settings, so the metadata, differ)
    from sketchcolor_cli.frames.images import read_rgba16

    for path in sorted((tmp_path / "clean").glob("fill/*.png")):
        assert np.array_equal(read_rgba16(path), read_rgba16(tmp_path / "failing" / "fill" / path.name)), path.name
    logged = {r["frame"]: r for r in records(tmp_path / "failing")}
    assert logged[4]["attempts"] == 1 and logged[4]["inputs"]["previous"] == 3 and not logged[4]["notes"]


def test_independent_frames_spread_over_workers_in_batches(two_chain_cut, tmp_path):
    summary = run_plans_in_process(
        two_chain_cut, tmp_path / "out", RunOptions(workers=2), **{"engine.name": "fake", "run.batch_size": 2}
    )
    assert sorted(summary.frames_done) == list(range(1, 9))
    assert sorted(w["frames"] for w in summary.workers) != [0, 8]  # both workers coloured frames
    assert all(r["inputs"]["previous"] is None for r in records(tmp_path / "out"))


# -- faults -------------------------------------------------------------------------------------


def test_killed_worker_has_its_frames_redone_elsewhere(two_chain_cut, tmp_path):
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    slow = ["--engine", "fake_chain", "--set", "engine.fake_chain.sleep_s=0.15"]
    assert subprocess.run(command(two_chain_cut, clean, *slow, "-q"), capture_output=True).returncode == 0
    proc = subprocess.Popen(command(two_chain_cut, faulty, *slow, "--workers", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    killed = None
    deadline = time.time() + 60
    while time.time() < deadline and killed is None:
        line = proc.stderr.readline()
        if " done " in line:
            pids = worker_pids(proc.pid)
            assert len(pids) == 2, pids
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
    stdout, stderr = proc.communicate(timeout=90)
    assert killed is not None and proc.returncode == 0, stderr
    summary = json.loads((faulty / "logs" / "summary.json").read_text())
    assert sorted(summary["frames_done"]) == list(range(1, 9)) and not summary["frames_failed"]
    assert len(summary["workers_lost"]) == 1 and "SIGKILL" in summary["workers_lost"][0]
    done = [r["frame"] for r in records(faulty) if r["status"] == "done"]
    assert sorted(done) == list(range(1, 9))  # each frame recorded done exactly once
    assert output_bytes(clean) == output_bytes(faulty)
    assert not list(faulty.rglob("*.tmp-*"))


@pytest.mark.slow
def test_killed_run_with_two_workers_resumes_to_identical_bytes(two_chain_cut, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    slow = ["--engine", "fake_chain", "--set", "engine.fake_chain.sleep_s=0.15", "--workers", "2"]
    assert subprocess.run(command(two_chain_cut, clean, *slow, "-q"), capture_output=True).returncode == 0
    proc = subprocess.Popen(command(two_chain_cut, killed, *slow), stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        if " done " in line:
            pids = worker_pids(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert pids, "the run ended before a worker could be seen"
    assert not _still_running(pids, wait_s=5), "workers outlived the killed run"
    layers = ("color", "fill", "line", "review")
    finished = len(set.intersection(*({p.name for p in (killed / layer).glob("*.png")} for layer in layers)))
    assert 1 <= finished < 8
    resumed = subprocess.run(command(two_chain_cut, killed, *slow, "--json"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert len(json.loads(resumed.stdout)["frames_skipped"]) == finished
    assert output_bytes(clean) == output_bytes(killed)


@pytest.mark.parametrize("engine", ["fake", "fake_torch_oom"])
def test_out_of_memory_halves_the_batch_until_frames_fit(two_chain_cut, tmp_path, engine):
    settings = {"engine.name": engine, "run.batch_size": 4}
    if engine == "fake":
        settings["engine.fake.oom_above"] = 1
    summary = run_plans_in_process(two_chain_cut, tmp_path / "out", RunOptions(workers=1), **settings)
    assert sorted(summary.frames_done) == list(range(1, 9)) and not summary.frames_failed
    assert summary.oom_halvings >= 2
    logged = records(tmp_path / "out")
    assert all(r["attempts"] == 1 for r in logged)  # out of memory is not the frame's fault
    assert any(r["oom_halvings"] >= 1 for r in logged)
    assert "batches are now at most 1 frame(s)" in (tmp_path / "out" / "logs" / "run.log").read_text()


def test_corrupt_frame_fails_alone_after_one_retry(two_chain_cut, tmp_path):
    (two_chain_cut / "line" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    summary = run_plans_in_process(two_chain_cut, tmp_path / "out", RunOptions(workers=1))
    assert list(summary.frames_failed) == [2] and sorted(summary.frames_done) == [1, 3, 4, 5, 6, 7, 8]
    logged = {r["frame"]: r for r in records(tmp_path / "out")}
    assert logged[2]["status"] == "failed" and logged[2]["attempts"] == 2 and logged[2]["retried"]
    assert "0002.png" in logged[2]["error"] and "0002.png" in logged[2]["attempt_errors"][0]
    # frame 3 carries from frame 2: it is coloured from the references instead, and says so
    assert logged[3]["inputs"]["previous"] is None and any("references" in n for n in logged[3]["notes"])
    assert logged[1]["attempts"] == 1 and not logged[1]["retried"]


def test_a_frame_that_fails_once_is_retried_and_done(two_chain_cut, tmp_path):
    marker = tmp_path / "attempted"
    summary = run_plans_in_process(
        two_chain_cut, tmp_path / "out", RunOptions(workers=1),
        **{"engine.name": "fake", "engine.fake.fail_once_marker": str(marker), "run.batch_size": 2},
    )  # fmt: skip
    assert sorted(summary.frames_done) == list(range(1, 9)) and not summary.frames_failed
    # a batch the engine fails on is split first (no attempt used); a frame failing alone is retried
    assert summary.frames_retried
    for record in records(tmp_path / "out"):
        if record["frame"] in summary.frames_retried:
            assert record["attempts"] == 2 and "first attempt fails" in record["attempt_errors"][0]
        else:
            assert record["attempts"] == 1 and not record["retried"]


def test_frame_past_the_time_limit_fails_and_the_run_ends(two_chain_cut, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    proc = subprocess.run(
        command(two_chain_cut, out, "--engine", "fake", "--set", "engine.fake.hang_frame=3", "--frames", "1-4",
                "--frame-timeout", "1", "--json"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert list(summary["frames_failed"]) == ["3"] and "time limit" in summary["frames_failed"]["3"]
    assert sorted(summary["frames_done"]) == [1, 2, 4]
    (three,) = [r for r in records(out) if r["frame"] == 3]
    assert three["attempts"] == 2
    assert time.monotonic() - started < 60


# -- several cuts, exit codes, registry -----------------------------------------------------------


def test_several_cuts_share_the_workers(two_chain_cut, small_cut, tmp_path):
    listing = tmp_path / "tonight.txt"
    listing.write_text(f"# tonight's cuts\n{two_chain_cut}\n\n{small_cut.name}\n")
    # each cut writes into its own folder (outputs.folder is relative to the cut)
    result = runner.invoke(app, ["run", f"@{listing}", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    assert [Path(s["output_dir"]).parent.name for s in summaries] == ["chains", "walk"]
    assert sorted(summaries[0]["frames_done"]) == list(range(1, 9)) and len(summaries[1]["frames_done"]) == 5
    assert summaries[0]["workers"] == summaries[1]["workers"]  # the same loaded workers
    assert summaries[0]["run_id"] == summaries[1]["run_id"]


def test_no_device_exits_3_and_usage_errors_exit_2(small_cut, tmp_path, monkeypatch):
    from sketchcolor_cli.runner import devices

    monkeypatch.setattr(devices, "detect_gpus", lambda: [])
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(small_cut), "--out", str(out), "--gpus", "all"]).exit_code == 3
    monkeypatch.setattr(devices, "detect_gpus", lambda: ["0", "1"])
    result = runner.invoke(app, ["run", str(small_cut), "--out", str(out), "--gpus", "3"])
    assert result.exit_code == 3 and "found 0, 1" in result.output
    assert runner.invoke(app, ["run", str(small_cut), "--gpus", "0", "--workers", "2"]).exit_code == 2
    assert runner.invoke(app, ["run", str(small_cut), "--shard", "5/4"]).exit_code == 2
    assert runner.invoke(app, ["run", str(small_cut), "--frames", "1-x"]).exit_code == 2
    assert runner.invoke(app, ["run", str(small_cut), "--backend", "spark"]).exit_code == 2
    assert not out.exists()


def test_gpu_layout_gives_each_worker_one_device(monkeypatch):
    from sketchcolor_cli.runner import devices

    monkeypatch.setattr(devices, "detect_gpus", lambda: ["0", "1", "3"])
    assert devices.resolve_gpus("all") == ["0", "1", "3"] and devices.resolve_gpus("3,0") == ["3", "0"]
    assert devices.choose_layout(uses_gpu=True, parallelism=100).devices == ("0", "1", "3")
    assert devices.choose_layout(uses_gpu=True, parallelism=100, workers=2).devices == ("", "")  # GPUs hidden
    monkeypatch.setattr(devices, "cpu_cores", lambda: 8)
    assert devices.choose_layout(uses_gpu=False, parallelism=3).count == 3  # capped by the chains
    assert devices.choose_layout(uses_gpu=False, parallelism=50).count == 8


def test_engine_registry_from_the_environment(monkeypatch):
    monkeypatch.setenv(engines.ENGINES_ENV, "extra=fake_engines:FakeEngine, other = fake_engines:FakeChainEngine")
    assert {"extra", "other", "flat"} <= set(engines.engine_names())
    assert engines.engine_class("other").frame_dependency == "previous"
    with pytest.raises(ValueError, match="name=package.module:ClassName"):
        engines.register_engine("broken", "no_colon_here")
    monkeypatch.setenv(engines.ENGINES_ENV, "bad")
    with pytest.raises(ValueError, match="SKETCHCOLOR_ENGINES"):
        engines.engine_names()
