"""Palette snap benchmark: `palette: snap` of the diffusion engine against the flat engine alone, on
the flat benchmark's synthetic cuts, scored with `sketchcolor eval`'s metrics.

Protocol: "model sheet alone" of benchmarks/flat_accuracy.py (every frame coloured on its own from
the character's model sheet, palette and masks; no key frame, nothing carried), the one protocol
both engines share: the diffusion engine colours each frame from the sheets alone. Rows:

* flat engine alone (weights-free region matching against the sheet);
* diffusion + palette snap, through `sketchcolor run`, with a TINY RANDOM-WEIGHT switch model
  (tests/diffusion_tiny.py): no trained weights can be had here, so this row measures the pipeline
  end to end, not the model; its colours are noise and the figure says so;
* palette snap of a degraded truth: the truth colour, blurred, shaded (a lightness ramp across the
  frame), with noise, and bled across the lines, snapped by the same code (`snap_layers`). It stands
  in for a trained model whose colours are about right, and measures what the snap itself gives.

    python benchmarks/diffusion_snap.py            # writes benchmarks/results/diffusion_snap.{json,md}
    python benchmarks/diffusion_snap.py --quick    # small cuts, a smoke run
"""

from __future__ import annotations

import os

# One thread per process: on a shared machine OpenMP threads waiting on each other make torch many
# times slower; set before torch loads (the spawned workers inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from flat_accuracy import _Quiet, score  # noqa: E402
from machine_info import machine  # noqa: E402

from sketchcolor_cli.engines.diffusion.delivery import SnapSettings  # noqa: E402
from sketchcolor_cli.engines.diffusion.snap import snap_layers  # noqa: E402
from sketchcolor_cli.frames.images import read_rgba16, write_image  # noqa: E402
from sketchcolor_cli.runner.cut import RunRequest, plan_cut, run_cut  # noqa: E402
from sketchcolor_cli.runner.inputs import CutInputs  # noqa: E402
from sketchcolor_cli.synthetic.cut import make_cut  # noqa: E402

CUTS = {
    "hero walking (hint lines, 2 gaps per frame)": dict(seed=11, characters=1),
    "hero walking, another take (seed 7)": dict(seed=7, characters=1),
    "hero walking, anti-aliased lines": dict(seed=3, characters=1, antialias=True),
    "two characters crossing (occlusion)": dict(seed=11, characters=2),
}
ROWS = ("flat engine alone", "diffusion (tiny random weights) + snap", "snap of a degraded truth")
METRIC_NAMES = {"acc_thres": "acc>10px", "acc": "acc", "pix_acc_wobg": "fg pix acc", "bmiou": "bg IoU"}


def run_engine(cut: Path, out: Path, engine: dict) -> float:
    """Colour every frame from the sheets alone, as `sketchcolor run` does; seconds taken."""
    overrides = {"outputs.folder": str(out), "outputs.layers": ["fill"], "outputs.contact_sheet": False,
                 "outputs.flipbook": False, "keys": None, **engine}
    plan = plan_cut(RunRequest(target=cut, overrides=overrides))
    started = time.perf_counter()
    summary = run_cut(plan, _Quiet())
    if summary.frames_failed:
        raise SystemExit(f"{cut.name}: frames failed: {summary.frames_failed}")
    return time.perf_counter() - started


def degraded_truth(truth_color: np.ndarray, line_art: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The truth colour as a roughly right model might paint it (H x W x 3 in [0, 1])."""
    rgba = truth_color.astype(np.float32) / 65535
    rgb = rgba[:, :, :3] * rgba[:, :, 3:] + (1 - rgba[:, :, 3:])  # over white
    ink = line_art[:, :, :3].max(axis=2) < 32768
    # Colour bleeds over the lines: the lines take their neighbourhood's colour, then a blur.
    filled = cv2.inpaint((rgb * 255).astype(np.uint8), ink.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    rgb = cv2.GaussianBlur(filled.astype(np.float32) / 255, (0, 0), 2.0)
    height, width = rgb.shape[:2]
    ramp = np.linspace(0.85, 1.08, width, dtype=np.float32)[None, :, None]  # light from the right
    rgb = rgb * ramp + rng.normal(0, 0.04, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 1)


def snap_degraded(cut: Path, out: Path, seed: int) -> float:
    plan = plan_cut(RunRequest(target=cut, overrides={"keys": None}))
    inputs = CutInputs(plan.cut)
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for unit in plan.units:
        item = inputs.work_item(unit, None)
        truth = read_rgba16(cut / "truth" / "color" / f"{unit.frame:04d}.png")
        colour = degraded_truth(truth, item.line_art, rng)
        layers = snap_layers(item, colour, SnapSettings())
        write_image(out / f"walk.{unit.frame:04d}.png", layers.fill, bit_depth=8)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small cuts for a smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to write the results")
    args = parser.parse_args()
    frames = 4 if args.quick else 12
    size = (256, 256) if args.quick else (512, 512)
    steps, resolution = (2, 256) if args.quick else (10, 512)
    report: dict = {"machine": machine(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"),
                    "date": time.strftime("%Y-%m-%d"), "quick": args.quick, "frames": frames,
                    "size": f"{size[0]}x{size[1]}", "protocol": "model sheet alone",
                    "diffusion": {"model": "tiny random-weight switch (tests/diffusion_tiny.py)", "steps": steps,
                                  "resolution": resolution, "sampler": "dpmpp_2m", "reference_guidance": 4.0},
                    "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from diffusion_tiny import write_tiny_model

        model = write_tiny_model(work / "model")
        diffusion = {"engine.name": "diffusion", "engine.diffusion": {
            "model": str(model["checkpoint"]), "clip": str(model["clip"]), "config": str(model["config"]),
            "steps": steps, "resolution": resolution, "palette": "snap"}}
        for index, (name, options) in enumerate(CUTS.items()):
            cut = work / f"cut{index}"
            make_cut(cut, frames=frames, size=size, hint_lines=True, gaps=2, key_frames=(), **options)
            scored = list(range(1, frames + 1))
            rows = {}
            seconds = run_engine(cut, cut / "out_flat", {"engine.flat.carry": False})
            rows[ROWS[0]] = score(cut / "out_flat" / "fill", cut, scored) | {"seconds": round(seconds, 2)}
            seconds = run_engine(cut, cut / "out_snap", diffusion)
            rows[ROWS[1]] = score(cut / "out_snap" / "fill", cut, scored) | {"seconds": round(seconds, 2)}
            seconds = snap_degraded(cut, cut / "out_degraded", seed=index)
            rows[ROWS[2]] = score(cut / "out_degraded", cut, scored) | {"seconds": round(seconds, 2)}
            report["results"][name] = rows
            print(name, {row: round(100 * r["acc_thres"], 2) for row, r in rows.items()}, flush=True)
    report["mean"] = {
        row: {m: float(np.mean([report["results"][c][row][m] for c in CUTS])) for m in METRIC_NAMES} for row in ROWS
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (args.out / f"diffusion_snap{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"diffusion_snap{suffix}.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    d = report["diffusion"]
    lines = [
        f"# Palette snap benchmark ({report['date']})",
        "",
        f"Machine: {report['machine']}. The flat benchmark's synthetic cuts, {report['frames']} frames at "
        f"{report['size']}, protocol '{report['protocol']}' (every frame on its own from the model sheet, "
        "palette and masks). Metrics in % (BasicPBC definitions, `sketchcolor eval`).",
        "",
        f"The diffusion row runs a **tiny random-weight** switch model ({d['steps']} steps, {d['resolution']} px, "
        f"{d['sampler']}, reference guidance {d['reference_guidance']}) through `sketchcolor run`: its colours are "
        "noise, so the row checks the pipeline end to end and says nothing about a trained model. The last row "
        "snaps a degraded truth (blurred, bled over the lines, shaded by a lightness ramp, with noise), standing "
        "in for a model whose colours are about right: it measures the snap itself.",
        "",
        "## Mean over the cuts",
        "",
        "| | " + " | ".join(METRIC_NAMES.values()) + " |",
        "|---|" + "---|" * len(METRIC_NAMES),
    ]
    for row in ROWS:
        lines.append(f"| {row} | " + " | ".join(pct(report["mean"][row][m]) for m in METRIC_NAMES) + " |")
    lines += ["", "## Per cut (acc>10px; seconds for the whole cut)", "", "| cut | " + " | ".join(ROWS) + " |",
              "|---|" + "---|" * len(ROWS)]
    for cut, rows in report["results"].items():
        lines.append(f"| {cut} | " + " | ".join(f"{pct(rows[r]['acc_thres'])} ({rows[r]['seconds']} s)" for r in ROWS)
                     + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
