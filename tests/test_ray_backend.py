"""The Ray backend: the same workers as Ray actors on a local Ray (2 CPUs), a real small cut,
and a lost actor whose frames are redone by the others."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from fake_engines import ENGINES  # noqa: E402
from sketchcolor_cli.engines import base as engines  # noqa: E402
from sketchcolor_cli.runner.cut import RunRequest, plan_cut  # noqa: E402
from sketchcolor_cli.runner.progress import Reporter  # noqa: E402
from sketchcolor_cli.runner.scheduler import RunOptions, Scheduler  # noqa: E402
from sketchcolor_cli.synthetic.cut import make_cut  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    tests = str(Path(__file__).parent)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, previous]))  # actors import fake_engines
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if previous is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = previous


@pytest.fixture
def chains(tmp_path) -> Path:
    root = tmp_path / "chains"
    make_cut(root, frames=8, size=(128, 128), seed=5, hint_lines=True, gaps=1, key_frames=(1, 5))
    return root


def output_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def plan_for(cut: Path, out: Path, **settings):
    return plan_cut(RunRequest(cut, overrides={"outputs.folder": str(out), **settings}))


def test_ray_actors_colour_a_cut_like_local_workers(local_ray, chains, tmp_path):
    (local,) = Scheduler([plan_for(chains, tmp_path / "local")], Reporter(), RunOptions(workers=1)).run()
    (remote,) = Scheduler([plan_for(chains, tmp_path / "ray")], Reporter(), RunOptions(backend="ray")).run()
    assert sorted(remote.frames_done) == list(range(1, 9)) and not remote.frames_failed
    assert remote.backend == "ray" and len(remote.workers) == 2  # 2 CPUs, 2 chains
    assert output_bytes(tmp_path / "local") == output_bytes(tmp_path / "ray")


def test_a_lost_actor_has_its_frames_redone(local_ray, chains, tmp_path, monkeypatch):
    for name, target in ENGINES.items():
        monkeypatch.setitem(engines._REGISTRY, name, target)
    settings = {"engine.name": "fake_chain", "engine.fake_chain.sleep_s": 0.3}
    (clean,) = Scheduler([plan_for(chains, tmp_path / "clean", **settings)], Reporter(), RunOptions(workers=1)).run()
    scheduler = Scheduler([plan_for(chains, tmp_path / "ray", **settings)], Reporter(), RunOptions(backend="ray"))
    results = []
    thread = threading.Thread(target=lambda: results.extend(scheduler.run()))
    thread.start()
    deadline = time.time() + 120
    victim = None
    while time.time() < deadline and victim is None:
        time.sleep(0.05)
        busy = [w for w in list(scheduler.workers.values()) if w.handle.pid and w.in_flight and w.loaded_at]
        if busy and any(c.summary.frames_done for c in scheduler.cuts):
            victim = busy[0].handle.pid
            os.kill(victim, signal.SIGKILL)
    thread.join(180)
    assert victim is not None and results
    (summary,) = results
    assert sorted(summary.frames_done) == list(range(1, 9)) and not summary.frames_failed
    assert summary.workers_lost and "Ray actor lost" in summary.workers_lost[0]
    assert output_bytes(tmp_path / "clean") == output_bytes(tmp_path / "ray")
