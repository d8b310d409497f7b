"""Flat engine benchmark: region accuracy against ground truth, and speed, through the real CLI.

Generates synthetic cuts with known truth (sketchcolor_cli.synthetic), colours them with
`sketchcolor run` / `sketchcolor frame` in a subprocess (so start-up, image reading and writing
count), and scores the fill layers with `sketchcolor eval`'s metrics (BasicPBC's definitions).

    python benchmarks/flat_accuracy.py                 # all scenarios, writes results/flat_accuracy.{json,md}
    python benchmarks/flat_accuracy.py --quick         # smaller cuts, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sketchcolor_cli.evaluation.metrics import evaluate_paths, scores_to_dict  # noqa: E402
from sketchcolor_cli.synthetic.cut import make_cut  # noqa: E402

METRICS = ("acc", "acc_thres", "pix_acc", "pix_acc_wobg", "bmiou")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def sketchcolor(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sketchcolor_cli", *args], capture_output=True, text=True)
    return proc, time.perf_counter() - start


def score(pred: Path, cut: Path, exclude: tuple[int, ...] = ()) -> dict:
    scores = evaluate_paths(pred, cut / "truth" / "fill", labels=cut / "truth" / "segments", exclude_frames=exclude)
    data = scores_to_dict(scores)
    return {name: data["mean"].get(name) for name in METRICS} | {"frames_scored": data["frames_counted"].get("acc")}


def scenario_run(work: Path, name: str, *, keys: tuple[int, ...], **cut_options) -> dict:
    """Colour a whole cut with `sketchcolor run` (colours carried frame to frame)."""
    cut = work / name
    make_cut(cut, key_frames=keys, **cut_options)
    out = cut / "out"
    proc, seconds = sketchcolor("run", str(cut), "--out", str(out), "--json", "-q")
    if proc.returncode != 0:
        raise SystemExit(f"{name}: sketchcolor run failed:\n{proc.stderr}")
    frames = cut_options["frames"]
    result = score(out / "fill", cut, exclude=keys)
    result.update(seconds=round(seconds, 2), frames=frames, fps=round(frames / seconds, 2))
    return result


def scenario_sheet_alone(work: Path, name: str, **cut_options) -> dict:
    """Colour every frame from the model sheet alone (`sketchcolor frame`, nothing carried)."""
    cut = work / name
    make_cut(cut, key_frames=(), **cut_options)
    out = cut / "out_fill"
    out.mkdir(parents=True)
    started = time.perf_counter()
    for frame in range(1, cut_options["frames"] + 1):
        proc, _ = sketchcolor(
            "frame", str(cut / "line" / f"{frame:04d}.png"),
            "--ref", str(cut / "refs" / "hero_sheet.png"), "--ref-line", str(cut / "refs" / "hero_sheet_line.png"),
            "--layer", "fill", "-o", str(out / f"{frame:04d}.png"),
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"{name}: sketchcolor frame failed:\n{proc.stderr}")
    result = score(out, cut)
    result.update(seconds=round(time.perf_counter() - started, 2), frames=cut_options["frames"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small cuts for a smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to write the results")
    args = parser.parse_args()
    frames = 6 if args.quick else 12
    size = (256, 256) if args.quick else (512, 512)
    hd = (960, 540) if args.quick else (1920, 1080)
    common = dict(frames=frames, size=size, seed=11, hint_lines=True, gaps=2)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["key frame 1, carried frame to frame (consecutive)"] = scenario_run(work, "key", keys=(1,), **common)
        results["model sheet, carried frame to frame (the demo)"] = scenario_run(work, "sheet", keys=(), **common)
        results["model sheet alone, each frame on its own"] = scenario_sheet_alone(work, "alone", **common)
        results[f"speed at {hd[0]}x{hd[1]}, key frame 1, carried"] = scenario_run(
            work, "hd", keys=(1,), frames=frames, size=hd, seed=5, hint_lines=True, gaps=2
        )

    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "quick": args.quick, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (args.out / f"flat_accuracy{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Flat engine benchmark ({report['date']})",
        "",
        f"Machine: {report['machine']}. Metrics in % (BasicPBC definitions; key frames excluded).",
        "",
        "| scenario | acc | acc>10px | pix acc | fg pix acc | bg IoU | frames/s (all-in) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        pct = lambda k: "-" if r.get(k) is None else f"{100 * r[k]:.2f}"  # noqa: E731
        fps = r.get("fps", round(r["frames"] / r["seconds"], 2))
        lines.append(f"| {name} | {pct('acc')} | {pct('acc_thres')} | {pct('pix_acc')} | {pct('pix_acc_wobg')} "
                     f"| {pct('bmiou')} | {fps} |")
    text = "\n".join(lines) + "\n"
    (args.out / f"flat_accuracy{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
