"""Speed and memory of the diffusion engine's switch model against a stock diffusers SD2.1
UNet + ControlNet doing the same work, both full size with random weights.

    python benchmarks/diffusion_speed.py --sizes 256 --steps 2            # the CPU figures in the README
    python benchmarks/diffusion_speed.py --sizes 512 768 1024 --steps 20 --device cuda --dtype float16

Per size, each side runs in its own process (so each peak memory is its own) and colours
`--frames` frames after one warm-up frame:
* ours: `SwitchPipeline` end to end: CLIP ViT-H/14 reference tokens (a full-size random tower),
  threshold embedder + ClusterTransformer, sketch encoder, the split-attention UNet with dual
  classifier-free guidance (3 branches in one batched call per step), VAE decode;
* stock: diffusers' `UNet2DConditionModel` (SD2.1 config) + `ControlNetModel` built from it, with
  ordinary classifier-free guidance (2 branches batched), a random 77 x 1024 text context, VAE decode.
Both use DPM-Solver++ multistep. Writes benchmarks/results/diffusion_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_info import machine as describe_machine  # noqa: E402  (beside this script)


def peak_memory_gib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def random_zero_layers(module, generator) -> None:
    import torch

    with torch.no_grad():
        for tensor in module.parameters():
            if not tensor.any():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)


def run_ours(size: int, steps: int, frames: int, device, dtype) -> dict:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from sketchcolor_cli.engines.diffusion.loading import SwitchConfig
    from sketchcolor_cli.engines.diffusion.loading.single_file import build_components
    from sketchcolor_cli.engines.diffusion.pipelines.switch import SwitchPipeline, make_scheduler

    config = SwitchConfig()
    torch.manual_seed(0)
    parts = build_components(config)
    generator = torch.Generator().manual_seed(1)
    for module in parts.values():
        random_zero_layers(module, generator)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(  # laion CLIP-ViT-H-14's vision tower
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5))
    pipe = SwitchPipeline(unet=parts["unet"], vae=parts["vae"], sketch_encoder=parts["sketch_encoder"],
                          image_encoder=clip.eval(), scheduler=make_scheduler("dpmpp_2m", config.scheduler, "epsilon"),
                          threshold_embedder=parts["threshold_embedder"], cluster_transformer=parts["cluster_transformer"])
    for module in pipe._parts():
        module.to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    sketch = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1

    def frame(seed: int):
        return pipe(sketch, [[torch.rand(3, 512, 384, generator=g) * 2 - 1]], sketch_mask=mask,
                    reference_masks=[[torch.ones(1, 512, 384)]], num_inference_steps=steps,
                    reference_guidance=4.0, sketch_guidance=2.0,
                    generator=[torch.Generator().manual_seed(seed)])

    return _time(frame, frames, device)


def run_stock(size: int, steps: int, frames: int, device, dtype) -> dict:
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from sketchcolor_cli.engines.diffusion.loading.configs import sd21_scheduler_config, sd21_unet_config, sd21_vae_config
    from sketchcolor_cli.engines.diffusion.pipelines.switch import make_scheduler

    torch.manual_seed(0)
    unet_config = {**sd21_unet_config(), "use_linear_projection": True}  # stock SD2.1
    unet = UNet2DConditionModel.from_config(unet_config).eval()
    controlnet = ControlNetModel.from_unet(unet).eval()
    generator = torch.Generator().manual_seed(1)
    random_zero_layers(controlnet, generator)
    vae = AutoencoderKL.from_config(sd21_vae_config()).eval()
    for module in (unet, controlnet, vae):
        module.to(device=device, dtype=dtype)
    scheduler = make_scheduler("dpmpp_2m", sd21_scheduler_config(), "epsilon")
    g = torch.Generator().manual_seed(2)
    hint = torch.rand(1, 3, size, size, generator=g).to(device, dtype)
    text = torch.randn(2, 77, 1024, generator=g).to(device, dtype)

    @torch.no_grad()
    def frame(seed: int):
        scheduler.set_timesteps(steps, device=device)
        latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(seed)).to(device)
        latents = latents * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(latents, t).to(dtype).repeat(2, 1, 1, 1)
            down, mid = controlnet(model_in, t, text, controlnet_cond=hint.repeat(2, 1, 1, 1), return_dict=False)
            out = unet(model_in, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
            cond, uncond = out.float().chunk(2)
            latents = scheduler.step(uncond + 4.0 * (cond - uncond), t, latents).prev_sample
        return vae.decode((latents / vae.config.scaling_factor).to(dtype)).sample

    return _time(frame, frames, device)


def _time(frame, frames: int, device) -> dict:
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    frame(0)  # warm-up
    sync()
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for seed in range(1, frames + 1):
        frame(seed)
    sync()
    per_frame = (time.perf_counter() - start) / frames
    return {"s_per_frame": per_frame, "warmup_s": warmup, "peak_memory_gib": peak_memory_gib(device)}


def machine(device) -> str:
    import torch

    gpu = [torch.cuda.get_device_name(device)] if device.type == "cuda" else []
    return describe_machine(f"torch {torch.__version__}", *gpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--frames", type=int, default=1, help="timed frames per side and size (after one warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", choices=["ours", "stock"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.only:  # a child process: one side, one size
        torch.set_grad_enabled(False)
        run = run_ours if args.only == "ours" else run_stock
        print(json.dumps(run(args.sizes[0], args.steps, args.frames, device, dtype)))
        return

    rows = []
    for size in args.sizes:
        row = {"size_px": size, "steps": args.steps}
        for side in ("ours", "stock"):
            command = [sys.executable, __file__, "--only", side, "--sizes", str(size), "--steps", str(args.steps),
                       "--frames", str(args.frames), "--device", args.device, "--dtype", args.dtype]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{side} at {size} px failed:\n{done.stderr[-4000:]}")
            row[side] = json.loads(done.stdout.strip().splitlines()[-1])
            print(size, side, row[side], flush=True)
        row["ratio"] = row["ours"]["s_per_frame"] / row["stock"]["s_per_frame"]
        rows.append(row)
    result = {"machine": machine(device), "device": args.device, "dtype": args.dtype, "date": time.strftime("%Y-%m-%d"),
              "frames_timed": args.frames, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diffusion_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Diffusion engine speed: switch model vs stock diffusers SD2.1 UNet + ControlNet",
        "",
        f"Machine: {result['machine']}; device {args.device}, {args.dtype}; {result['date']}. Random weights, full-size "
        "architectures; DPM-Solver++; ours with dual guidance (3 branches), stock with ordinary guidance (2 branches).",
        "",
        "| size | steps | ours s/frame | stock s/frame | ratio ours/stock | ours peak GiB | stock peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['size_px']} | {r['steps']} | {r['ours']['s_per_frame']:.1f} | {r['stock']['s_per_frame']:.1f} | "
                     f"{r['ratio']:.2f} | {r['ours']['peak_memory_gib']:.1f} | {r['stock']['peak_memory_gib']:.1f} |")
    lines += ["", "Peak memory: on the CPU the process's peak resident size (weights included); on CUDA the peak "
              "allocated by torch."]
    (args.out / "diffusion_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
