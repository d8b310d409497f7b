"""Training step time and peak memory of the FULL-SIZE switch architecture (SD2.1 UNet with its
fg/bg LoRAs, sketch encoder, ClusterTransformer, threshold embedder, ViT-H/14 reference encoder;
random weights, float32) at a small size on the CPU, with and without gradient checkpointing,
and an ESTIMATE of what a full-size xl step needs at 1024 px in bf16.

    python benchmarks/training_step.py [--size 256] [--steps 3] [--modes switch,lora]

Each configuration runs in a fresh process. Peak memory is that process's peak resident set
(VmHWM) over its steps minus its resident set once the model is built: the activations,
gradients and optimizer state a step adds. The machine is shared: run it once.
Writes benchmarks/results/training_step.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine_info import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1024**3


def rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def vit_h_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                            image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")


def build(mode: str, checkpointing: bool):
    from transformers import CLIPVisionModelWithProjection

    from sketchcolor_cli.engines.diffusion.loading.configs import SwitchConfig
    from sketchcolor_cli.engines.diffusion.loading.single_file import build_components
    from sketchcolor_cli.training.switch import SwitchTraining

    config = SwitchConfig(prediction_type="epsilon")
    parts = build_components(config)
    clip = CLIPVisionModelWithProjection(vit_h_config()).eval()
    return SwitchTraining(parts, config, "epsilon", clip, train=mode, lora_rank=16,
                          gradient_checkpointing=checkpointing), config


def measure(mode: str, checkpointing: bool, size: int, steps: int) -> dict:
    from sketchcolor_cli.training.recipe import Losses

    torch.manual_seed(0)
    model, _ = build(mode, checkpointing)
    trained = model.trainable_parameters()
    optimizer = torch.optim.AdamW(trained, lr=1e-5)
    batch = {
        "line": torch.rand(1, 3, size, size), "color": torch.rand(1, 3, size, size),
        "mask": (torch.rand(1, 1, size, size) > 0.5).float(), "reference": torch.rand(1, 3, 224, 224),
        "reference_mask": (torch.rand(1, 1, 224, 224) > 0.5).float(),
    }
    generator = torch.Generator().manual_seed(0)
    before = rss("VmRSS")
    times = []
    for _ in range(steps + 1):  # the first step allocates the optimizer state; not timed
        start = time.perf_counter()
        out = model(batch, model.draw(batch, generator, Losses()), use_gram=False)
        out["diffusion_loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak = rss("VmHWM")
    result = {
        "mode": mode, "gradient_checkpointing": checkpointing, "size": size,
        "trained_parameters": sum(p.numel() for p in trained),
        "all_parameters": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times[1:]), "first_step_s": times[0],
        "peak_added_gib": (peak - before) / GIB, "model_gib": before / GIB,
    }
    del model, optimizer, trained
    return result


def sdxl_unet_parameters() -> int:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=128, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, class_embed_type="projection", projection_class_embeddings_input_dim=512)
    return sum(p.numel() for p in unet.parameters())


def activation_units(levels: list[tuple[int, int, int]], latent: int) -> float:
    """Sum over UNet levels of channels x pixels x (resnets + 4 x transformer blocks): a rough
    measure of what a forward saves for backward (a transformer block keeps about four
    N x C tensors per resnet's one)."""
    total = 0.0
    for level, (channels, resnets, transformers) in enumerate(levels):
        pixels = (latent // 2**level) ** 2
        total += channels * pixels * (resnets + 4 * transformers)
    return total


def estimate_xl(measured: list[dict]) -> dict:
    """Full xl training at 1024 px in bf16 (paper b: whole UNet + sketch encoder + projection trained,
    AdamW, mixed precision with float32 master weights), per GPU, batch 1, dual branch on."""
    unet = sdxl_unet_parameters()
    others_trained = 0.25e9  # sketch encoder (MultiScaleAttentionEncoder, 1280-d) + ClusterConcat: rough
    frozen = 84e6 + 1.84e9 + 0.09e9  # VAE, CLIP ViT-bigG vision tower, WD tagger (bf16)
    trained = unet + others_trained
    states = trained * (4 + 4 + 8)  # fp32 weights, fp32 grads, AdamW m and v
    # Activations: the switch UNet's measured float32 activations at the CPU size, scaled by tokens,
    # by architecture (activation_units) and by half the bytes (bf16); x2 for the mismatched branch.
    sd21 = [(320, 3, 1 * 3), (640, 3, 1 * 3), (1280, 3, 1 * 3), (1280, 3, 0)]
    xl = [(320, 3, 0), (640, 3, 2 * 3), (1280, 3, 10 * 3)]
    out = {"sdxl_unet_parameters": unet, "trained_parameters": trained, "states_gib": states / GIB,
           "frozen_bf16_gib": frozen * 2 / GIB}
    for checkpointing in (False, True):
        runs = [m for m in measured if m["mode"] == "lora" and m["gradient_checkpointing"] == checkpointing]
        if not runs:
            continue
        m = runs[0]
        # In lora mode the added memory is (almost) only activations: its adapters and their states are small.
        adapters = m["trained_parameters"] * 16 / GIB
        activations = max(0.0, m["peak_added_gib"] - adapters)
        latent_cpu, latent_xl = m["size"] // 8, 1024 // 8
        scale = activation_units(xl, latent_xl) / activation_units(sd21, latent_cpu) * 0.5
        out[f"activations_gib_{'checkpointing' if checkpointing else 'no_checkpointing'}"] = activations * scale * 2
    for key in ("checkpointing", "no_checkpointing"):
        if f"activations_gib_{key}" in out:
            out[f"total_gib_{key}"] = out["states_gib"] + out["frozen_bf16_gib"] + out[f"activations_gib_{key}"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--modes", default="switch,lora")
    parser.add_argument("--min-free-gib", type=float, default=12.0)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # MODE:on|off, one configuration (internal)
    args = parser.parse_args()
    free = available_gib()
    if not args.one and free < args.min_free_gib:
        sys.exit(f"only {free:.1f} GiB available; the full-size model needs about {args.min_free_gib} GiB. "
                 "Run it when the machine is quieter")
    if args.one:
        mode, checkpointing = args.one.split(":")
        print(json.dumps(measure(mode, checkpointing == "on", args.size, args.steps)), flush=True)
        return
    measured = []
    for mode in args.modes.split(","):
        for checkpointing in ("off", "on"):
            # A fresh process per configuration: its peak resident set is its own.
            done = subprocess.run([sys.executable, __file__, "--one", f"{mode}:{checkpointing}", "--size",
                                   str(args.size), "--steps", str(args.steps)], capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{mode} (checkpointing {checkpointing}) failed:\n{done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(result), flush=True)
            measured.append(result)
    estimate = estimate_xl(measured)
    print(json.dumps(estimate), flush=True)
    report = {"machine": machine(f"torch {torch.__version__}", f"{torch.get_num_threads()} torch threads"),
              "measured_cpu_float32": measured, "xl_1024_bf16_estimate": estimate}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training_step.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Training step, full-size switch architecture on the CPU (float32, batch 1)", "",
        f"Machine: {report['machine']} (shared with other jobs while measured).", "",
        "| trains | gradient checkpointing | size | trained params | step (s) | peak added (GiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in measured:
        lines.append(f"| {m['mode']} | {'on' if m['gradient_checkpointing'] else 'off'} | {m['size']} px | "
                     f"{m['trained_parameters'] / 1e6:.1f} M | {m['step_s']:.1f} | {m['peak_added_gib']:.2f} |")
    e = estimate
    lines += ["", "## xl at 1024 px, bf16: an ESTIMATE (no GPU was lent; not measured)", "",
              f"SDXL UNet {e['sdxl_unet_parameters'] / 1e9:.2f} B parameters (counted from its config); trained with the "
              f"sketch encoder and projection (~{e['trained_parameters'] / 1e9:.2f} B) under AdamW with float32 master "
              f"weights: {e['states_gib']:.0f} GiB of weights, gradients and optimizer state; frozen VAE, CLIP "
              f"bigG and tagger in bf16: {e['frozen_bf16_gib']:.1f} GiB."]
    for key, label in (("no_checkpointing", "without"), ("checkpointing", "with")):
        if f"total_gib_{key}" in e:
            lines.append(f"- {label} gradient checkpointing, dual branch on, batch 1: activations ~"
                         f"{e[f'activations_gib_{key}']:.0f} GiB, total ~{e[f'total_gib_{key}']:.0f} GiB per GPU")
    lines += ["", "Activations are scaled from the switch UNet's CPU figures above by tokens, by an architecture "
              "factor (channels x pixels x (resnets + 4 x transformer blocks) per level) and by 2 bytes instead of 4, "
              "then doubled for the mismatched branch: an order of magnitude, not a measurement."]
    (RESULTS / "training_step.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
