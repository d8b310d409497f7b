"""Flat engine benchmark: region accuracy against ground truth, and speed, through the real runner.

Generates synthetic cuts with known truth (sketchcolor_cli.synthetic: characters of many small
closed regions, red/blue hint lines, gaps in the lines, walking and turning limbs, blinks, two
characters crossing in front of each other) and colours them with the same code `sketchcolor run`
runs (plan -> runner -> flat engine -> writers), then scores the fill layers with `sketchcolor
eval`'s metrics (BasicPBC's definitions; accuracy over segments > 10 px leaves out the background).

The protocols are the peers' (see ../shared/reference/peers.md):

* consecutive: frame t coloured from the finished frame t-1 (its truth given as a key frame);
* key 6 frames away: frame t coloured from the key frame t-6, carried through the frames between;
* model sheet alone: every frame coloured from the character's colour model sheet only;
* the whole cut from the sheet: frame 1 from the sheet, each next frame carried (the demo).

Speed: `sketchcolor run` in a subprocess at 1920x1080 (start-up, reading, writing, contact sheet
and flip-book included), five times: the median run, the range of frames/s, the children's peak
memory and the time split from the run's log.

    python benchmarks/flat_accuracy.py            # writes benchmarks/results/flat_accuracy.{json,md}
    python benchmarks/flat_accuracy.py --quick    # small cuts, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sketchcolor_cli.evaluation.metrics import evaluate_paths, scores_to_dict  # noqa: E402
from sketchcolor_cli.runner.cut import RunRequest, plan_cut, run_cut  # noqa: E402
from sketchcolor_cli.runner.progress import PlainReporter  # noqa: E402
from sketchcolor_cli.synthetic.cut import make_cut  # noqa: E402

from machine_info import machine  # noqa: E402

METRICS = ("acc", "acc_thres", "pix_acc", "pix_acc_wobg", "bmiou")
KEY_DISTANCE = 6


class _Quiet(PlainReporter):
    def __init__(self) -> None:
        super().__init__(stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run


def colour(cut: Path, out: Path, *, keys: str, frames: str | None = None, carry: bool = True) -> None:
    """Colour `frames` of `cut` into `out` with key frames `keys` ("" = none), as `sketchcolor run`."""
    overrides: dict[str, object] = {"outputs.folder": str(out), "outputs.layers": ["fill"],
                                    "outputs.contact_sheet": False, "outputs.flipbook": False}
    if not carry:
        overrides["engine.flat.carry"] = False
    if keys:
        overrides["keys.frames"] = keys
    else:
        overrides["keys"] = None  # colour from the model sheets only
    plan = plan_cut(RunRequest(target=cut, overrides=overrides, frames=frames))
    summary = run_cut(plan, _Quiet())
    if summary.frames_failed:
        raise SystemExit(f"{cut.name}: frames failed: {summary.frames_failed}")


def score(pred: Path, cut: Path, frames: list[int]) -> dict:
    exclude = tuple(f for f in range(1, 1000) if f not in frames)
    scores = evaluate_paths(pred, cut / "truth" / "fill", labels=cut / "truth" / "segments", exclude_frames=exclude)
    data = scores_to_dict(scores)
    return {name: data["mean"].get(name) for name in METRICS} | {"frames_scored": data["frames_counted"].get("acc")}


def colour_each_from_key(cut: Path, name: str, targets: list[int], distance: int) -> dict:
    """Each target frame t in a run of its own, from the key frame t - distance (and the frames
    between, carried); the target frames' fills are gathered and scored together."""
    gathered = cut / f"out_{name}" / "fill"
    gathered.mkdir(parents=True)
    for t in targets:
        out = cut / f"out_{name}" / f"frame_{t}"
        colour(cut, out, keys=str(t - distance), frames=str(t))
        (target,) = [p for p in (out / "fill").iterdir() if p.stem.endswith(f"{t:04d}")]
        target.replace(gathered / target.name)
    return score(gathered, cut, targets)


def protocol_consecutive(cut: Path, frames: int) -> dict:
    return colour_each_from_key(cut, "consecutive", list(range(2, frames + 1)), 1)


def protocol_key_away(cut: Path, frames: int) -> dict:
    return colour_each_from_key(cut, "key_away", list(range(KEY_DISTANCE + 1, frames + 1)), KEY_DISTANCE)


def protocol_sheet_alone(cut: Path, frames: int) -> dict:
    out = cut / "out_sheet_alone"
    colour(cut, out, keys="", carry=False)  # every frame on its own: nothing is carried
    return score(out / "fill", cut, list(range(1, frames + 1)))


def protocol_sheet_carried(cut: Path, frames: int) -> dict:
    out = cut / "out_sheet_carried"
    colour(cut, out, keys="")
    return score(out / "fill", cut, list(range(1, frames + 1)))


PROTOCOLS = {
    "consecutive": protocol_consecutive,
    f"key {KEY_DISTANCE} frames away": protocol_key_away,
    "model sheet alone": protocol_sheet_alone,
    "model sheet, carried through the cut": protocol_sheet_carried,
}


def speed(work: Path, size: tuple[int, int], frames: int, repeats: int = 1) -> dict:
    """`sketchcolor run` in a subprocess, everything included, on a cut with one key frame; with
    `repeats`, run that many times and report the median run and the range of frames/s (a shared
    2-core machine varies by 10-20% from run to run)."""
    cut = work / f"speed_{size[0]}x{size[1]}"
    make_cut(cut, frames=frames, size=size, seed=5, hint_lines=True, gaps=2, key_frames=(1,))
    runs = [_speed_run(cut, size, frames) for _ in range(max(1, repeats))]
    median = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {**median, "runs": len(runs), "fps_range": [min(r["fps"] for r in runs), max(r["fps"] for r in runs)],
            "peak_memory_mb": max(r["peak_memory_mb"] for r in runs)}


def _speed_run(cut: Path, size: tuple[int, int], frames: int) -> dict:
    out = cut / "out"
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sketchcolor_cli", "run", str(cut), "--out", str(out), "-q"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"speed run failed:\n{proc.stderr}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    records = [json.loads(line) for line in (out / "logs" / "frames.jsonl").read_text().splitlines()]
    stages: dict[str, float] = {}
    for record in records:
        for stage, value in record.get("stats", {}).get("seconds", {}).items():
            stages[stage] = stages.get(stage, 0.0) + value
    accuracy = score(out / "fill", cut, list(range(2, frames + 1)))
    summary = json.loads((out / "logs" / "summary.json").read_text())
    run_seconds = float(summary["seconds"])
    return {
        # reading, colouring, writing the layers, and the review made from them as they are written
        "run_seconds": round(run_seconds, 2),
        # start-up, and what is left of the contact sheet and flip-book after the last frame
        "review_and_startup_seconds": round(seconds - run_seconds, 2),
        "engine_idle_share": summary.get("engine_idle_share"),
        "size": f"{size[0]}x{size[1]}", "frames": frames, "seconds": round(seconds, 2),
        "fps": round(frames / seconds, 2), "peak_memory_mb": round(max(peak_mb, before / 1024)),
        "engine_seconds_per_frame": {k: round(v / frames, 4) for k, v in stages.items()},
        "acc_thres": accuracy["acc_thres"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small cuts for a smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to write the results")
    parser.add_argument("--skip-speed", action="store_true", help="accuracy only")
    args = parser.parse_args()
    frames = 8 if args.quick else 12
    size = (256, 256) if args.quick else (512, 512)
    cuts = {
        "hero walking (hint lines, 2 gaps per frame)": dict(seed=11, characters=1),
        "hero walking, another take (seed 7)": dict(seed=7, characters=1),
        "hero walking, anti-aliased lines": dict(seed=3, characters=1, antialias=True),
        "two characters crossing (occlusion)": dict(seed=11, characters=2),
    }
    report: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
                    "frames": frames, "size": f"{size[0]}x{size[1]}", "accuracy": {}, "speed": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, options in cuts.items():
            cut = work / f"cut{len(report['accuracy'])}"
            # Every frame's finished colour is written; each protocol picks its key frames.
            make_cut(cut, frames=frames, size=size, hint_lines=True, gaps=2,
                     key_frames=range(1, frames + 1), **options)
            report["accuracy"][name] = {}
            for protocol, run in PROTOCOLS.items():
                started = time.perf_counter()
                result = run(cut, frames)
                result["seconds"] = round(time.perf_counter() - started, 2)
                report["accuracy"][name][protocol] = result
                print(f"{name} / {protocol}: acc>10px {100 * result['acc_thres']:.2f}", flush=True)
        if not args.skip_speed:
            sizes = [(960, 540)] if args.quick else [(1920, 1080)]
            for hd in sizes:
                report["speed"].append(speed(work, hd, frames=12 if args.quick else 48, repeats=1 if args.quick else 5))
                print(report["speed"][-1], flush=True)

    means = {}
    for protocol in PROTOCOLS:
        values = [report["accuracy"][c][protocol]["acc_thres"] for c in cuts]
        means[protocol] = sum(values) / len(values)
    report["mean_acc_thres"] = means
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (args.out / f"flat_accuracy{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"flat_accuracy{suffix}.md").write_text(markdown(report, list(cuts), list(PROTOCOLS)))
    print(markdown(report, list(cuts), list(PROTOCOLS)))


def markdown(report: dict, cuts: list[str], protocols: list[str]) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = [
        f"# Flat engine benchmark ({report['date']})",
        "",
        f"Machine: {report['machine']}. Synthetic cuts of {report['frames']} frames at {report['size']}; "
        "metrics in % (BasicPBC definitions).",
        "",
        "## Accuracy over segments > 10 px (acc>10px), by protocol",
        "",
        "| cut | " + " | ".join(protocols) + " |",
        "|---|" + "---|" * len(protocols),
    ]
    for cut in cuts:
        row = report["accuracy"][cut]
        lines.append(f"| {cut} | " + " | ".join(pct(row[p]["acc_thres"]) for p in protocols) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{pct(report['mean_acc_thres'][p])}**" for p in protocols) + " |")
    lines += ["", "## All metrics", "", "| cut | protocol | acc | acc>10px | pix acc | fg pix acc | bg IoU |",
              "|---|---|---|---|---|---|---|"]
    for cut in cuts:
        for p in protocols:
            r = report["accuracy"][cut][p]
            lines.append(f"| {cut} | {p} | {pct(r['acc'])} | {pct(r['acc_thres'])} | {pct(r['pix_acc'])} "
                         f"| {pct(r['pix_acc_wobg'])} | {pct(r['bmiou'])} |")
    if report["speed"]:
        lines += ["", "## Speed through `sketchcolor run` (one key frame, carried; everything included)", "",
                  "The median of the runs (by time); frames/s also as the range over the runs.", "",
                  "| size | frames | runs | seconds | frames/s | frames/s range | peak memory "
                  "| engine s/frame (segment / match / paint) | frames written (s) "
                  "| start-up and review tail (s) | engine idle | acc>10px |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in report["speed"]:
            stages = s["engine_seconds_per_frame"]
            split = " / ".join(f"{stages.get(k, 0):.3f}" for k in ("segment", "match", "paint"))
            idle = s.get("engine_idle_share")
            low, high = s.get("fps_range", [s["fps"], s["fps"]])
            lines.append(f"| {s['size']} | {s['frames']} | {s.get('runs', 1)} | {s['seconds']} | {s['fps']} "
                         f"| {low}-{high} | {s['peak_memory_mb']} MB | {split} | {s['run_seconds']} "
                         f"| {s['review_and_startup_seconds']} | {'-' if idle is None else f'{100 * idle:.0f}%'} "
                         f"| {pct(s['acc_thres'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
