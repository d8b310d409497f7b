"""Scaling of `sketchcolor run` over local workers, written to benchmarks/results/scaling.{md,json}.

    python benchmarks/scaling.py            # the figures in the README (about a minute on 2 cores)
    python benchmarks/scaling.py --quick    # smaller, for a smoke run (writes scaling_quick.*)

1. The flat engine with 1 and 2 CPU workers on a synthetic cut whose key frames come every 6
   frames (so chains can run side by side): frames per second of the whole run (worker start-up
   included, contact sheet and flip-book not), the engine's idle share, and whether the outputs
   are byte-identical.
2. The scheduler's own cost per frame, with an engine of fixed cost (it sleeps 20 ms a frame) on
   independent frames and 1/2/4/8 workers: the time each worker's engine waited per frame
   ((active - engine) / frames, everything that is not colouring: messages, reading and writing
   the small frames, waiting for work), against a target of < 5 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sketchcolor_cli.engines.base import register_engine  # noqa: E402
from sketchcolor_cli.runner.cut import RunRequest, plan_cut  # noqa: E402
from sketchcolor_cli.runner.progress import Reporter  # noqa: E402
from sketchcolor_cli.runner.scheduler import RunOptions, run_plans  # noqa: E402
from sketchcolor_cli.synthetic.cut import make_cut  # noqa: E402

from machine_info import machine  # noqa: E402

register_engine("fixed_cost", "fixed_cost_engine:FixedCostEngine")


def timed_run(cut: Path, out: Path, workers: int, **settings) -> tuple[float, object]:
    shutil.rmtree(out, ignore_errors=True)
    plan = plan_cut(RunRequest(cut, overrides={"outputs.folder": str(out), **settings}))
    started = time.perf_counter()
    (summary,) = run_plans([plan], Reporter(), RunOptions(workers=workers))
    return time.perf_counter() - started, summary


def output_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def flat_scaling(work: Path, frames: int, size: tuple[int, int]) -> list[dict]:
    cut = work / "flat_cut"
    make_cut(cut, frames=frames, size=size, seed=7, hint_lines=True, gaps=1, key_frames=tuple(range(1, frames + 1, 6)))
    rows, reference = [], None
    for workers in (1, 2):
        out = work / f"flat_{workers}"
        seconds, summary = timed_run(cut, out, workers)
        produced = output_bytes(out)
        reference = reference or produced
        rows.append({
            "workers": workers, "frames": len(summary.frames_done), "seconds": round(seconds, 2),
            "frames_per_s": round(len(summary.frames_done) / seconds, 2),
            "engine_idle_share": summary.engine_idle_share, "identical_to_1_worker": produced == reference,
        })  # fmt: skip
    return rows


def overhead(work: Path, frames: int, cost_s: float, worker_counts: tuple[int, ...]) -> list[dict]:
    cut = work / "small_cut"
    make_cut(cut, frames=frames, size=(64, 64), seed=3, hint_lines=False, gaps=0, key_frames=())
    rows = []
    for workers in worker_counts:
        for batch in (1, 4):
            seconds, summary = timed_run(cut, work / f"fixed_{workers}_{batch}", workers, **{
                "engine.name": "fixed_cost", "engine.fixed_cost.seconds_per_frame": cost_s, "run.batch_size": batch,
                "outputs.contact_sheet": False, "outputs.flipbook": False,
            })  # fmt: skip
            active = sum(w["active_seconds"] for w in summary.workers)
            engine = sum(w["engine_seconds"] for w in summary.workers)
            done = len(summary.frames_done)
            rows.append({
                "workers": workers, "batch_size": batch, "frames": done, "seconds": round(seconds, 2),
                "frames_per_s": round(done / seconds, 1), "ideal_frames_per_s": round(workers / cost_s, 1),
                "overhead_ms_per_frame": round(1000 * (active - engine) / done, 2),
                "engine_idle_share": summary.engine_idle_share,
            })  # fmt: skip
    return rows


def write(results: dict, out: Path, suffix: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scaling{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Scaling over local workers", "", f"Machine: {results['machine']}. Measured {results['date']}.", "",
             "## Flat engine, synthetic cut with a key frame every 6 frames "
             f"({results['flat_cut']})", "",
             "| workers | frames | seconds | frames/s | engine idle | bytes identical to 1 worker |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in results["flat"]:
        lines.append(f"| {row['workers']} | {row['frames']} | {row['seconds']} | {row['frames_per_s']} | "
                     f"{100 * row['engine_idle_share']:.0f}% | {row['identical_to_1_worker']} |")  # fmt: skip
    lines += ["", f"## Scheduler overhead, engine of fixed cost ({results['fixed_cost_ms']:.0f} ms a frame), "
              f"{results['overhead_frames']} independent 64x64 frames", "",
              "| workers | batch | frames/s | ideal frames/s | overhead ms/frame (target < 5) | engine idle |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for row in results["overhead"]:
        lines.append(f"| {row['workers']} | {row['batch_size']} | {row['frames_per_s']} | {row['ideal_frames_per_s']} | "
                     f"{row['overhead_ms_per_frame']} | {100 * row['engine_idle_share']:.0f}% |")  # fmt: skip
    lines += ["", "Frames/s include starting the worker processes (spawned Python processes, ~0.5-1 s each on "
              "this machine). Overhead per frame is the time a worker's engine waited, per frame it coloured: "
              "messages, reading and writing the frame, and waiting for work at the start and end of the run.", ""]
    (out / f"scaling{suffix}.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller cuts, for a smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    flat_frames, size, fixed_frames = (12, (256, 256), 40) if args.quick else (36, (768, 768), 200)
    with tempfile.TemporaryDirectory(prefix="sketchcolor-scaling-") as temp:
        work = Path(temp)
        results = {
            "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "flat_cut": f"{flat_frames} frames at {size[0]}x{size[1]}", "flat": flat_scaling(work, flat_frames, size),
            "fixed_cost_ms": 20.0, "overhead_frames": fixed_frames,
            "overhead": overhead(work, fixed_frames, 0.02, (1, 2, 4, 8)),
        }  # fmt: skip
    write(results, args.out, "_quick" if args.quick else "")
    print((args.out / f"scaling{'_quick' if args.quick else ''}.md").read_text())


if __name__ == "__main__":
    main()
