"""Speed and memory of the diffusion engine's xl/xlv2 models against a stock diffusers SDXL UNet +
ControlNet doing the same denoising work, all full size with random weights.

    python benchmarks/diffusion_xl_speed.py --size 256 --steps 2          # the CPU figures in the README
    python benchmarks/diffusion_xl_speed.py --size 1024 --steps 20 --device cuda --dtype float16

Each side runs in its own process (its own peak memory) and colours one frame after a warm-up frame.
Full-size float32 SDXL needs ~10 GiB for the UNet alone, so the parts that run once per frame are
built, timed and freed one at a time, and their times added:

* ours: (1) the reference encoders: CLIP ViT-bigG-14 vision + WD tagger (SwinV2-B at 448) +
  ClusterConcat, for the fg and the bg reference; (2) xlv2 only: the ReferenceNet pass (VAE encode
  of the background + one pass at t = 0, banks kept); (3) `XLPipeline` with the context (and banks)
  from (1)-(2): sketch encoder, the split-attention UNet with two guidance branches in one batched
  call per step (reference guidance on, sketch guidance 1 as published), VAE decode.
* stock: diffusers' SDXL `UNet2DConditionModel` + `ControlNetModel.from_unet`, ordinary
  classifier-free guidance (2 branches), random 77 x 2048 prompt embeddings and pooled/time ids
  (its text encoders are not timed, like our reference encoders' share is shown apart), VAE decode.

Both sample with DPM++ 3M SDE (exponential schedule). The UNet's share of the machine's matrix rate:
its counted FLOPs per second (torch's FlopCounterMode on the warm-up frame) over the measured
float32 matmul rate of this machine (`matrix_rate`). Writes benchmarks/results/diffusion_xl_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_info import machine as describe_machine  # noqa: E402  (beside this script)


def free_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed weights back to the system
    except OSError:
        pass


def peak_memory_gib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matrix_rate(device, dtype, seconds: float = 3.0) -> float:
    """Measured FLOP/s of large square matmuls on this device."""
    import torch

    n = 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start)


def randomise_zero_layers(module, generator) -> None:
    import torch

    with torch.no_grad():
        for tensor in module.parameters():
            if not tensor.any():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def run_ours(family: str, size: int, steps: int, device, dtype) -> dict:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from torch.utils.flop_counter import FlopCounterMode

    from sketchcolor_cli.engines.diffusion.loading.xl_configs import XLConfig
    from sketchcolor_cli.engines.diffusion.loading.xl_single_file import build_xl_components
    from sketchcolor_cli.engines.diffusion.models.cluster_concat import ClusterConcat
    from sketchcolor_cli.engines.diffusion.models.wd_tagger import WDTagger
    from sketchcolor_cli.engines.diffusion.models.xl_reference_encoder import xl_reference_context
    from sketchcolor_cli.engines.diffusion.pipelines.switch import make_scheduler
    from sketchcolor_cli.engines.diffusion.pipelines.xl import XLPipeline

    rate = matrix_rate(device, dtype)
    config = XLConfig.for_family(family)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(2)
    reference = torch.rand(1, 3, 512, 384, generator=g) * 2 - 1
    times: dict[str, float] = {}

    # 1. reference encoders (fg and bg reference), then freed
    torch.manual_seed(0)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(  # laion CLIP-ViT-bigG-14's vision tower
        hidden_size=1664, intermediate_size=8192, num_hidden_layers=48, num_attention_heads=16, image_size=224,
        patch_size=14, projection_dim=1280, hidden_act="gelu", layer_norm_eps=1e-5)).eval().to(device, dtype)
    tagger, proj = WDTagger().eval().to(device, dtype), ClusterConcat().eval().to(device, dtype)
    with torch.no_grad():
        xl_reference_context(clip, tagger, proj, reference.to(device))  # warm-up
        contexts, times["reference_encoders_s"] = timed(
            lambda: [xl_reference_context(clip, tagger, proj, r.to(device)) for r in (reference, reference.flip(3))], device)
    del clip, tagger, proj
    free_memory()

    # 2. xlv2: the ReferenceNet pass (with the VAE encode), then freed (its banks are small: kept)
    from dataclasses import replace

    from diffusers import AutoencoderKL

    from sketchcolor_cli.engines.diffusion.models.unet_xl import ReferenceNetXL
    from sketchcolor_cli.engines.diffusion.models.xl_attention import install_bank_writers, install_xl_attention

    sketch = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    reference_mask = torch.ones(1, 512, 384)
    banks = None
    if config.reference_net is not None:
        net = ReferenceNetXL.from_config(config.reference_net)
        install_bank_writers(net)
        vae = AutoencoderKL.from_config(config.vae)
        for module in (net, vae):
            module.eval().to(device=device, dtype=dtype)
        helper = XLPipeline(unet=vae, vae=vae, sketch_encoder=None, image_encoder=None, tagger=None, proj=None,
                            scheduler=None, reference_net=net, scalar_embed_dim=config.scalar_embed_dim)
        bank_args = ([reference[0]], mask, [reference_mask], size, size, [torch.Generator().manual_seed(3)])
        with torch.no_grad():
            helper._background_banks(*bank_args)  # warm-up
            banks, times["reference_net_s"] = timed(lambda: helper._background_banks(*bank_args), device)
        del helper, net, vae
        free_memory()

    parts = build_xl_components(replace(config, reference_net=None))
    install_xl_attention(parts["unet"], reference_bank=banks is not None)
    randomise_zero_layers(parts["unet"], torch.Generator().manual_seed(1))
    for module in parts.values():
        module.to(device=device, dtype=dtype)
    pipe = XLPipeline(unet=parts["unet"], vae=parts["vae"], sketch_encoder=parts["sketch_encoder"],
                      image_encoder=None, tagger=None, proj=parts["proj"],
                      scheduler=make_scheduler("dpmpp_3m_sde", config.scheduler, "v_prediction"))
    pipe.xlv2 = banks is not None

    # 3. the pipeline with the encoded context and banks
    queue: list = []
    pipe._context = lambda images: queue.pop(0)  # type: ignore[method-assign]
    if banks is not None:
        pipe._background_banks = lambda *args: banks  # type: ignore[method-assign]

    def frame(seed: int):
        queue[:] = [contexts[0], contexts[1]]
        return pipe(sketch, [[reference[0]]], sketch_mask=mask, reference_masks=[[reference_mask]],
                    num_inference_steps=steps, reference_guidance=4.0, sketch_guidance=1.0,
                    background_enhance=True, generator=[torch.Generator().manual_seed(seed)])

    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            frame(0)  # warm-up, counted
        unet_flops = _unet_flops(counter)
        _, times["denoise_decode_s"] = timed(lambda: frame(1), device)
        _, unet_eval_s = timed(lambda: _one_unet_eval(pipe, sketch, mask, contexts, queue), device)
    return {
        **times,
        "s_per_frame": sum(times.values()),
        "unet_eval_s": unet_eval_s,
        "unet_gflops_per_eval": unet_flops / steps / 1e9,
        "unet_share_of_matrix_rate": unet_flops / steps / unet_eval_s / rate,
        "matrix_rate_gflops": rate / 1e9,
        "peak_memory_gib": peak_memory_gib(device),
    }


def _unet_flops(counter) -> float:
    totals = counter.get_flop_counts()
    return float(sum(totals.get("XLUNet2DConditionModel", {}).values()))


def _one_unet_eval(pipe, sketch, mask, contexts, queue):
    queue[:] = [contexts[0], contexts[1]]
    conditions = pipe.prepare_xl_conditions(
        sketch, [[sketch[0]]], sketch_mask=mask, reference_masks=[[mask[0]]], background=None, reference_guidance=4.0,
        sketch_guidance=1.0, reference_strength=1.0, sketch_strength=1.0, sketch_level_strengths=None, fg_strength=1.0,
        bg_strength=1.0, merge_scale=0.0, sketch_mask_threshold=0.05, reference_mask_threshold=0.5,
        background_enhance=True, reference_padding=1.0, generators=[__import__("torch").Generator().manual_seed(0)])
    latents = __import__("torch").randn(1, 4, sketch.shape[2] // 8, sketch.shape[3] // 8).to(pipe.run_device)
    return pipe.evaluate(conditions, latents, 500)


def run_stock(size: int, steps: int, device, dtype) -> dict:
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from sketchcolor_cli.engines.diffusion.loading.configs import sd21_scheduler_config
    from sketchcolor_cli.engines.diffusion.loading.xl_configs import sdxl_unet_config, sdxl_vae_config
    from sketchcolor_cli.engines.diffusion.pipelines.switch import make_scheduler

    rate = matrix_rate(device, dtype)
    torch.manual_seed(0)
    stock_config = {**sdxl_unet_config(), "class_embed_type": None, "addition_embed_type": "text_time",
                    "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816}
    unet = UNet2DConditionModel.from_config(stock_config).eval()
    controlnet = ControlNetModel.from_unet(unet).eval()
    randomise_zero_layers(controlnet, torch.Generator().manual_seed(1))
    vae = AutoencoderKL.from_config(sdxl_vae_config()).eval()
    for module in (unet, controlnet, vae):
        module.to(device=device, dtype=dtype)
    scheduler = make_scheduler("dpmpp_3m_sde", sd21_scheduler_config(), "v_prediction")
    g = torch.Generator().manual_seed(2)
    hint = torch.rand(2, 3, size, size, generator=g).to(device, dtype)
    text = torch.randn(2, 77, 2048, generator=g).to(device, dtype)
    added = {"text_embeds": torch.randn(2, 1280, generator=g).to(device, dtype),
             "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=dtype, device=device)}

    def evaluate(model_in, t):
        down, mid = controlnet(model_in, t, text, controlnet_cond=hint, added_cond_kwargs=added, return_dict=False)
        return unet(model_in, t, text, added_cond_kwargs=added, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample

    def frame(seed: int):
        scheduler.set_timesteps(steps, device=device)
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn(1, 4, size // 8, size // 8, generator=generator).to(device) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(latents, t).to(dtype).repeat(2, 1, 1, 1)
            cond, uncond = evaluate(model_in, t).float().chunk(2)
            latents = scheduler.step(uncond + 4.0 * (cond - uncond), t, latents, generator=generator).prev_sample
        return vae.decode((latents / vae.config.scaling_factor).to(dtype)).sample

    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            frame(0)
        totals = counter.get_flop_counts()
        flops = float(sum(v for k in ("UNet2DConditionModel", "ControlNetModel") for v in totals.get(k, {}).values()))
        _, per_frame = timed(lambda: frame(1), device)
        x = torch.randn(2, 4, size // 8, size // 8, device=device, dtype=dtype)
        _, eval_s = timed(lambda: evaluate(x, torch.tensor(500, device=device)), device)
    return {"s_per_frame": per_frame, "unet_eval_s": eval_s, "unet_gflops_per_eval": flops / steps / 1e9,
            "unet_share_of_matrix_rate": flops / steps / eval_s / rate, "matrix_rate_gflops": rate / 1e9,
            "peak_memory_gib": peak_memory_gib(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--families", nargs="+", default=["xl", "xlv2"], choices=["xl", "xlv2"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.only:  # a child process: one side
        torch.set_grad_enabled(False)
        result = run_stock(args.size, args.steps, device, dtype) if args.only == "stock" else run_ours(
            args.only, args.size, args.steps, device, dtype)
        print(json.dumps(result))
        return

    sides = {}
    for side in ["stock", *args.families]:
        command = [sys.executable, __file__, "--only", side, "--size", str(args.size), "--steps", str(args.steps),
                   "--device", args.device, "--dtype", args.dtype]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{side} failed:\n{done.stderr[-4000:]}")
        sides[side] = json.loads(done.stdout.strip().splitlines()[-1])
        print(side, sides[side], flush=True)
    gpu = [torch.cuda.get_device_name(device)] if device.type == "cuda" else []
    result = {"machine": describe_machine(f"torch {torch.__version__}", *gpu), "device": args.device,
              "dtype": args.dtype, "date": time.strftime("%Y-%m-%d"), "size_px": args.size, "steps": args.steps,
              "sides": sides}
    stock = sides["stock"]
    for family in args.families:
        ours = sides[family]
        ours["ratio_denoise_decode_vs_stock"] = ours["denoise_decode_s"] / stock["s_per_frame"]
        ours["ratio_frame_vs_stock"] = ours["s_per_frame"] / stock["s_per_frame"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diffusion_xl_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.out)


def write_markdown(result: dict, out: Path) -> None:
    sides, families = result["sides"], [k for k in result["sides"] if k != "stock"]
    stock = sides["stock"]
    lines = [
        "# Diffusion engine speed: xl/xlv2 vs stock diffusers SDXL UNet + ControlNet",
        "",
        f"Machine: {result['machine']}; device {result['device']}, {result['dtype']}; {result['date']}. Random weights, "
        f"full-size architectures; {result['size_px']} px, {result['steps']} steps of DPM++ 3M SDE; two guidance branches "
        "on both sides; ours with the split (mask-bias) cross-attention, xlv2 also with the ReferenceNet bank, the "
        "soft split and the merged LoRA.",
        "",
        "| side | reference encoders s | ReferenceNet s | denoise + decode s | s/frame | ratio (denoise+decode) / stock | "
        "UNet eval s | UNet GFLOP/eval | matrix rate GFLOP/s | share of matrix rate | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| stock SDXL + ControlNet | - | - | {stock['s_per_frame']:.1f} | {stock['s_per_frame']:.1f} | 1.00 | "
        f"{stock['unet_eval_s']:.1f} | {stock['unet_gflops_per_eval']:.0f} | {stock['matrix_rate_gflops']:.0f} | "
        f"{stock['unet_share_of_matrix_rate']:.0%} | {stock['peak_memory_gib']:.1f} |",
    ]
    for family in families:
        o = sides[family]
        lines.append(
            f"| ours {family} | {o['reference_encoders_s']:.1f} | {o.get('reference_net_s', 0):.1f} | "
            f"{o['denoise_decode_s']:.1f} | {o['s_per_frame']:.1f} | {o['ratio_denoise_decode_vs_stock']:.2f} | "
            f"{o['unet_eval_s']:.1f} | {o['unet_gflops_per_eval']:.0f} | {o['matrix_rate_gflops']:.0f} | "
            f"{o['unet_share_of_matrix_rate']:.0%} | {o['peak_memory_gib']:.1f} |")
    lines += ["", "Each side measures the float32 2048^2 matmul rate at its start; on a shared machine it moves with the "
              "load, so compare the FLOP counts (the work) as much as the seconds. Stock's GFLOP/eval counts UNet + "
              "ControlNet; its text encoders are not run (random prompt embeddings); ours count the UNet (its 392-token "
              "context's K/V projections are a large share at 256 px, a small one at 1024). Peak memory: the "
              "process's peak resident size on the CPU (weights included), peak allocated on CUDA."]
    (out / "diffusion_xl_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
