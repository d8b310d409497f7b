"""Hi-res pass benchmark: what the pass costs per 1920x1080 frame on the CPU against the plain resize,
and a 100% crop of the two side by side.

Times are CPU seconds of the process with one torch thread (the machine may be shared; wall
seconds are given too). The diffusion engine with a TINY RANDOM-WEIGHT switch model (tests/diffusion_tiny.py; no trained
weights can be had here) colours synthetic 1920x1080 frames twice: plain (generated at
``resolution`` on the long side, resized to 1920x1080, as without the pass) and with ``hires: {size:
auto}`` (the line art's own size) at the pass's defaults. Times are per frame after a warm-up frame,
with the pass split into upscale + tiled VAE encode, tiled denoising and tiled VAE decode. The UNet
work is also given in latent pixels denoised, which carries over to the full-size model (attention
costs more per pixel in tiles larger than the base canvas). A tiny model's seconds say little
about a real one's.

The crop image (plain | hi-res | difference x4) shows the mechanics at 100%: with random weights
the "detail" the pass adds is noise-like texture, not drawing; what it shows is that the result is
sharp at the delivery size, that the lines stay the drawn pixels, and that no tile grid shows.

    python benchmarks/diffusion_hires.py            # benchmarks/results/diffusion_hires.{json,md} + crop PNG
    python benchmarks/diffusion_hires.py --quick    # one timed frame, fewer steps
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from machine_info import machine  # noqa: E402

from sketchcolor_cli.engines.diffusion import DiffusionSettings  # noqa: E402
from sketchcolor_cli.engines.diffusion import hires as hires_module  # noqa: E402
from sketchcolor_cli.engines.diffusion.delivery import HiresSettings  # noqa: E402
from sketchcolor_cli.engines.diffusion.hires import LATENT_SCALE, delivery_canvas, latent_tiles  # noqa: E402
from sketchcolor_cli.engines.diffusion.imaging import Canvas  # noqa: E402
from sketchcolor_cli.engines.diffusion.runtime import SwitchRuntime  # noqa: E402
from sketchcolor_cli.runner.cut import RunRequest, plan_cut  # noqa: E402
from sketchcolor_cli.runner.inputs import CutInputs  # noqa: E402
from sketchcolor_cli.synthetic.cut import make_cut  # noqa: E402

SIZE = (1920, 1080)
CROP = 360  # pixels of each crop panel (shown at 100%)


@contextmanager
def timed_stages(seconds: dict[str, float]):
    """Adds the time spent in the pass's three stages to `seconds` while active."""
    names = {"encode_tiled": "encode", "refine_latents": "denoise", "decode_tiled": "decode"}
    originals = {name: getattr(hires_module, name) for name in names}

    def wrap(name, function):
        def timed(*args, **kwargs):
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[names[name]] = seconds.get(names[name], 0.0) + time.process_time() - started
        return timed

    for name, function in originals.items():
        setattr(hires_module, name, wrap(name, function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(hires_module, name, function)


def unet_work(settings: DiffusionSettings, shape: tuple[int, int]) -> dict:
    """Latent pixels through the UNet per frame, base generation and pass (guidance branches alike)."""
    base = Canvas.fit(shape, settings.resolution)
    base_pixels = (base.height // LATENT_SCALE) * (base.width // LATENT_SCALE) * settings.steps
    target = delivery_canvas(shape, settings.hires)
    height, width = target.height // LATENT_SCALE, target.width // LATENT_SCALE
    boxes = latent_tiles(height, width, settings.hires.tile // LATENT_SCALE, settings.hires.overlap // LATENT_SCALE)
    steps = settings.hires.steps or settings.steps
    run = min(max(int(round(steps * settings.hires.strength)), 1), steps)
    hires_pixels = sum(b.height * b.width for b in boxes) * run
    return {"base_canvas": [base.width, base.height], "base_steps": settings.steps,
            "hires_canvas": [target.width, target.height], "tiles": len(boxes), "hires_steps_run": run,
            "latent_pixel_steps_base": base_pixels, "latent_pixel_steps_hires": hires_pixels,
            "unet_work_ratio": round(hires_pixels / base_pixels, 2)}


def crop_sheet(line_art: np.ndarray, plain: np.ndarray, hires: np.ndarray, centre: tuple[int, int]) -> np.ndarray:
    """plain | hi-res | |difference| x 4, 100% crops around `centre` (x, y), with a title strip."""
    x, y = centre
    height, width = plain.shape[:2]
    x0 = int(np.clip(x - CROP // 2, 0, width - CROP))
    y0 = int(np.clip(y - CROP // 2, 0, height - CROP))
    window = np.s_[y0 : y0 + CROP, x0 : x0 + CROP, :3]
    a = (plain[window] // 257).astype(np.uint8)
    b = (hires[window] // 257).astype(np.uint8)
    difference = np.clip(np.abs(a.astype(np.int16) - b.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
    gap = np.full((CROP, 8, 3), 255, np.uint8)
    row = np.concatenate([a, gap, b, gap, difference], axis=1)
    title = np.full((28, row.shape[1], 3), 255, np.uint8)
    for i, text in enumerate(("plain resize", "hi-res pass", "difference x4")):
        cv2.putText(title, text, (i * (CROP + 8) + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([title, row], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one timed frame, fewer steps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where to write the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timed = 1 if args.quick else 2
    steps = 8 if args.quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from diffusion_tiny import write_tiny_model

        model = write_tiny_model(work / "model")
        cut = work / "cut"
        make_cut(cut, frames=timed + 1, size=SIZE, seed=5, hint_lines=True, gaps=2, key_frames=())
        plan = plan_cut(RunRequest(target=cut))
        inputs = CutInputs(plan.cut)
        items = [inputs.work_item(unit, None) for unit in plan.units]
        settings = DiffusionSettings(
            model=str(model["checkpoint"]), clip=str(model["clip"]), config=str(model["config"]), steps=steps,
            resolution=512, reference_guidance=4.0, sampler="dpmpp_2m", hires=HiresSettings(size="auto"),
        )
        plain_settings = settings.model_copy(update={"hires": HiresSettings()})
        runtime = SwitchRuntime.load(settings)
        runtime.colorize(items[:1], plain_settings)  # warm-up: first calls allocate and pick kernels
        runtime.colorize(items[:1], settings)
        plain_seconds, hires_seconds, stages, outputs = [], [], {}, {}
        wall = {"plain": 0.0, "hires": 0.0}
        for item in items[1:]:
            started, wall_started = time.process_time(), time.perf_counter()
            plain = runtime.colorize([item], plain_settings)[0]
            plain_seconds.append(time.process_time() - started)
            wall["plain"] += time.perf_counter() - wall_started
            with timed_stages(stages):
                started, wall_started = time.process_time(), time.perf_counter()
                refined = runtime.colorize([item], settings)[0]
                hires_seconds.append(time.process_time() - started)
                wall["hires"] += time.perf_counter() - wall_started
            outputs[item.frame] = (item, plain, refined)
        item, plain, refined = outputs[items[-1].frame]
        mask = next(iter(item.masks.values()))
        ys, xs = np.nonzero(mask)
        sheet = crop_sheet(item.line_art, plain.color, refined.color, (int(xs.mean()), int(ys.mean())))
        ink = item.line_art[:, :, :3].max(axis=2) == 0
        lines_kept = bool(np.array_equal(refined.color[ink], item.line_art[ink]))

    frames = len(plain_seconds)
    per_frame = {name: round(value / frames, 2) for name, value in stages.items()}
    plain_mean = float(np.mean(plain_seconds))
    hires_mean = float(np.mean(hires_seconds))
    report = {
        "machine": machine(f"{args.threads} torch thread(s)", f"torch {torch.__version__}"),
        "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
        "model": "tiny random-weight switch (tests/diffusion_tiny.py)", "frame_size": f"{SIZE[0]}x{SIZE[1]}",
        "settings": {"steps": steps, "resolution": settings.resolution, "sampler": settings.sampler,
                     "reference_guidance": settings.reference_guidance, "hires": settings.hires.model_dump()},
        "frames_timed": frames,
        "plain_seconds_per_frame": round(plain_mean, 2),
        "hires_seconds_per_frame": round(hires_mean, 2),
        "hires_extra_seconds_per_frame": round(hires_mean - plain_mean, 2),
        "hires_stage_seconds_per_frame": per_frame,
        "wall_seconds_per_frame": {k: round(v / frames, 2) for k, v in wall.items()},
        "unet_work": unet_work(settings, (SIZE[1], SIZE[0])),
        "lines_kept": lines_kept,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    cv2.imwrite(str(args.out / f"diffusion_hires_crop{suffix}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    (args.out / f"diffusion_hires{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"diffusion_hires{suffix}.md").write_text(markdown(report, f"diffusion_hires_crop{suffix}.png"))
    print(markdown(report, f"diffusion_hires_crop{suffix}.png"))


def markdown(report: dict, crop: str) -> str:
    h = report["settings"]["hires"]
    work = report["unet_work"]
    stages = report["hires_stage_seconds_per_frame"]
    tokens = h["tile"] ** 2 / (work["base_canvas"][0] * work["base_canvas"][1])
    return "\n".join([
        f"# Hi-res pass benchmark ({report['date']})",
        "",
        f"Machine: {report['machine']}. {report['frames_timed']} synthetic frame(s) of {report['frame_size']} after a "
        f"warm-up frame; {report['model']}; {report['settings']['steps']} {report['settings']['sampler']} steps at "
        f"{report['settings']['resolution']} px, reference guidance {report['settings']['reference_guidance']}. "
        f"Pass: size {h['size']} ({work['hires_canvas'][0]}x{work['hires_canvas'][1]} canvas), strength {h['strength']}, "
        f"tile {h['tile']} px, overlap {h['overlap']} px, VAE tile {h['vae_tile']} px, {h['upscale']} upscale.",
        "",
        "Seconds are CPU seconds of this process (one torch thread: what one core spends on a frame); the "
        "machine is shared, so wall-clock seconds were longer: "
        f"plain {report['wall_seconds_per_frame']['plain']} s, with the pass {report['wall_seconds_per_frame']['hires']} s.",
        "",
        "| per frame | CPU seconds |",
        "|---|---|",
        f"| plain: generate at {report['settings']['resolution']} px, resize to {report['frame_size']} | "
        f"{report['plain_seconds_per_frame']} |",
        f"| with the hi-res pass | {report['hires_seconds_per_frame']} |",
        f"| of which: tiled VAE encode | {stages.get('encode', 0)} |",
        f"| of which: tiled denoising ({work['tiles']} tiles x {work['hires_steps_run']} steps) | {stages.get('denoise', 0)} |",
        f"| of which: tiled VAE decode | {stages.get('decode', 0)} |",
        "",
        f"UNet work, in latent pixels x steps: base {work['latent_pixel_steps_base']:,} "
        f"({work['base_canvas'][0]}x{work['base_canvas'][1]}, {work['base_steps']} steps), pass "
        f"{work['latent_pixel_steps_hires']:,}: **{work['unet_work_ratio']}x** the base generation's UNet work in "
        "pixels. The time grows faster than that (here the tiled denoising took "
        f"{stages.get('denoise', 0) / max(report['plain_seconds_per_frame'], 1e-9):.1f}x the whole plain frame): "
        "self-attention at the first UNet level costs the square of the tokens per call (a "
        f"{h['tile']} px tile has {tokens:.1f}x the tokens of the {work['base_canvas'][0]}x{work['base_canvas'][1]} "
        f"base canvas, so {tokens ** 2:.0f}x its attention per call), as in the full-size SD2.1 UNet. Smaller "
        "tiles cut that part; VAE encode and decode stay linear in the pixels.",
        "",
        f"Line pixels kept bit for bit with the pass: {report['lines_kept']}.",
        "",
        f"![plain resize | hi-res pass | difference x4, 100% crops]({crop})",
        "",
        "With random weights the pass adds noise-like texture, not drawing: the crop shows the mechanics (sharp at "
        "the delivery size, the drawn lines kept, no tile grid in the difference), not what a trained model adds.",
        "",
    ])


if __name__ == "__main__":
    main()
