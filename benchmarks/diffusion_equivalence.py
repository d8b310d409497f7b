"""Equivalence of the diffusion engine's switch model with the upstream code.

    python benchmarks/diffusion_equivalence.py --upstream /path/to/colorizeDiffusion \
        --upstream-python /tmp/upstream-venv/bin/python [--size 256]

With the same weights and inputs, ONE denoiser evaluation (sketch encoder, threshold embedder,
ClusterTransformer, split cross-attention with the background LoRA, all three dual-guidance
branches batched) must agree with upstream's to a relative error below 1e-4 in float32.

1. Here (our venv): build the full-size switch architecture with random weights (the zero-initialised
   layers get random values too, so every path counts), write it as a single-file checkpoint in the
   published key layout, load it back through the strict loader, and evaluate our pipeline's
   `prepare_conditions` + `evaluate` on random inputs at a small latent size.
2. In the upstream checkout, with its own Python (a separate venv: upstream pins other versions of
   diffusers/transformers), a harness builds upstream's modules from its `configs/inference/
   switch.yaml` (DualCondUNet, MultiEncoder, LoraModules, ScalarEmbedder, ClusterTransformer), loads
   the same file with ``strict=True`` per part, and calls upstream's own
   ``InferenceWrapper.prepare_conditions`` and ``CustomizedWrapper.apply_model`` on the same inputs.
   Run-time patches, none touching the arithmetic: xformers' attention is replaced by plain
   softmax(q k^T / sqrt(d)) v, ``Tensor.cuda`` is a no-op, torchvision's meta registrations are
   skipped (they fail beside the CPU torch wheel), and the CLIP image encoder is a stub returning the
   given tokens (CLIP is not part of the UNet evaluation; its token path is tested separately).
3. Compare; write benchmarks/results/diffusion_equivalence.{json,md}.

Nothing of the upstream code is copied here; the harness imports it from the path given.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_info import machine  # noqa: E402  (beside this script)

UPSTREAM_HARNESS = r'''
import json, sys, types
from pathlib import Path
import torch

upstream, work = Path(sys.argv[1]), Path(sys.argv[2])
settings = json.loads((work / "settings.json").read_text())
sys.path.insert(0, str(upstream))

# -- run-time patches (no arithmetic changes) --
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
import diffusers.schedulers  # noqa: F401  (before the xformers stand-in, which diffusers would probe)

def plain_attention(q, k, v, attn_bias=None, op=None):
    weights = torch.softmax((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)
    return weights @ v
xformers = types.ModuleType("xformers"); xformers.ops = types.ModuleType("xformers.ops")
xformers.ops.memory_efficient_attention = plain_attention
sys.modules["xformers"], sys.modules["xformers.ops"] = xformers, xformers.ops
torch.Tensor.cuda = lambda self, *args, **kwargs: self

from omegaconf import OmegaConf
from safetensors.torch import load_file
from refnet.util import instantiate_from_config
from refnet.modules.lora import LoraModules
from refnet.models.basemodel import CustomizedLDM, CustomizedWrapper, reconstruct_cond
from refnet.models.switch import InferenceWrapper
from refnet.ldm.ddpm import DiffusionWrapper
from refnet.modules.unet import hack_inference_forward

params = OmegaConf.load(upstream / "configs/inference/switch.yaml").model.params
torch.manual_seed(0)
unet = instantiate_from_config(params.unet_config)
control_encoder = instantiate_from_config(params.control_encoder_config)
thresh_embedder = instantiate_from_config(params.thresh_embedder_config)
transformer = instantiate_from_config(params.transformer_config)
loras = LoraModules(unet, **params.lora_config)

state = load_file(str(work / "checkpoint.safetensors"))
def part(prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
for module, prefix in ((unet, "model.diffusion_model."), (control_encoder, "control_encoder."),
                       (thresh_embedder, "thresh_embedder."), (transformer, "transformer.")):
    module.load_state_dict(part(prefix), strict=True)
    module.eval()
del state

inputs = torch.load(work / "inputs.pt")

class ClipStub:
    """Returns the given tokens: 257 for the reference ("full"), 256 for the whitened one ("local")."""
    def encode(self, image, output="cls", **kwargs):
        return inputs["reference_full"] if output == "full" else inputs["background_local"]

class Wrapper:
    def __init__(self):
        self.diffusion_model = unet
    def __call__(self, x, t, **cond):
        return DiffusionWrapper.forward(self, x, t, **cond)

self = types.SimpleNamespace()
self.model = Wrapper()
self.cond_stage_model = ClipStub()
self.control_encoder, self.thresh_embedder, self.transformer, self.loras = control_encoder, thresh_embedder, transformer, loras
self.dtype, self.token_type, self.num_timesteps = torch.float32, "local", 1000
self.guidance_steps, self.no_guidance_steps = (0, 1), (-0.05, -0.05)
self.check_manipulate = lambda scales: CustomizedWrapper.check_manipulate(self, scales)
self.adjust_fgbg_scale = lambda *a: CustomizedWrapper.adjust_fgbg_scale(self, *a)
CustomizedLDM.retrieve_attn_modules(self)
CustomizedLDM.retrieve_attn_layers(self)
hack_inference_forward(unet)

s = settings
with torch.no_grad():
    CustomizedWrapper.adjust_reference_scale(self, s["reference_strength"])
    c, uc = InferenceWrapper.prepare_conditions(
        self, bs=1, sketch=inputs["sketch"], reference=torch.zeros(1, 3, 224, 224),
        control_scale=s["sketch_strength"], merge_scale=s["merge_scale"], fg_scale=s["fg_strength"],
        bg_scale=s["bg_strength"], smask=inputs["latent_mask"], rmask=torch.zeros(1, 1, 224, 224),
        mask_threshold_ref=s["reference_mask_threshold"], mask_threshold_sketch=s["sketch_mask_threshold"],
        bg_enhance=True, fg_enhance=False)
    cond = reconstruct_cond(c, uc)
    x = inputs["latents"].repeat(3, 1, 1, 1)
    t = torch.full((3,), s["timestep"], dtype=torch.long)
    out = CustomizedWrapper.apply_model(self, x, t, cond)
torch.save({"out": out, "context": cond["context"][0]}, work / "upstream_out.pt")
print("upstream done", tuple(out.shape))
'''


def free_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def ours(work: Path, size: int, settings: dict) -> dict:
    import torch
    from safetensors.torch import save_file

    from sketchcolor_cli.engines.diffusion.loading import SwitchConfig
    from sketchcolor_cli.engines.diffusion.loading.single_file import build_components, to_ldm_state_dict
    from sketchcolor_cli.engines.diffusion.pipelines.switch import SwitchPipeline, make_scheduler

    config = SwitchConfig()
    torch.manual_seed(0)
    parts = build_components(config)
    del parts["vae"]  # not part of a denoiser evaluation; saves memory on both sides
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in parts.values():
            for tensor in module.parameters():
                if not tensor.any():  # zero-initialised (LoRA up, zero convs, proj_out): give it weights
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
    state = to_ldm_state_dict(parts, config)
    # Published checkpoints carry the schedule buffers too; the loader accepts and ignores them.
    state["betas"] = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    checkpoint = work / "checkpoint.safetensors"
    save_file(state, str(checkpoint))
    n_params = {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}
    del state, parts
    free_memory()

    latent = size // 8
    g = torch.Generator().manual_seed(2)
    sketch = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[:, :, size // 4 : 3 * size // 4, size // 5 : 4 * size // 5] = 1.0  # a character in the middle
    inputs = {
        "sketch": sketch,
        "pixel_mask": mask,
        "latent_mask": torch.nn.functional.interpolate(mask, scale_factor=0.125, mode="bicubic"),
        "reference_full": torch.randn(1, 257, 1024, generator=g),
        "background_local": torch.randn(1, 256, 1024, generator=g),
        "latents": torch.randn(1, 4, latent, latent, generator=g),
    }
    torch.save(inputs, work / "inputs.pt")
    (work / "settings.json").write_text(json.dumps(settings))

    # Load back through the strict loader (a VAE-less file: check it strictly against the rest).
    vae_free = SwitchConfig()
    loaded = _load_without_vae(checkpoint, vae_free)
    tokens = iter([inputs["reference_full"][:, 1:], inputs["background_local"]])
    pipe = SwitchPipeline(unet=loaded["unet"], vae=None, sketch_encoder=loaded["sketch_encoder"], image_encoder=None,
                          scheduler=make_scheduler("dpmpp_2m", config.scheduler, "epsilon"),
                          threshold_embedder=loaded["threshold_embedder"],
                          cluster_transformer=loaded["cluster_transformer"])
    pipe._tokens = lambda images: next(tokens)  # CLIP stubbed exactly as on the upstream side
    start = time.perf_counter()
    with torch.no_grad():
        conditions = pipe.prepare_conditions(
            sketch, [[torch.zeros(3, 224, 224)]], sketch_mask=mask, reference_masks=[[torch.zeros(1, 224, 224)]],
            background=None, reference_guidance=4.0, sketch_guidance=2.0,
            reference_strength=settings["reference_strength"], sketch_strength=settings["sketch_strength"],
            fg_strength=settings["fg_strength"], bg_strength=settings["bg_strength"],
            merge_scale=settings["merge_scale"], sketch_mask_threshold=settings["sketch_mask_threshold"],
            reference_mask_threshold=settings["reference_mask_threshold"], background_enhance=True,
            foreground_enhance=False,
        )
        out = torch.cat(pipe.evaluate(conditions, inputs["latents"], torch.tensor(settings["timestep"])))
    seconds = time.perf_counter() - start
    torch.save({"out": out, "context": conditions.context}, work / "our_out.pt")
    return {"params": n_params, "seconds": seconds}


def _load_without_vae(checkpoint: Path, config):
    """The strict loader, on a checkpoint written without the VAE (the VAE has no part in a
    denoiser evaluation): the expected VAE keys are the only ones allowed to be missing."""
    from sketchcolor_cli.engines.diffusion.loading import CheckpointKeyError, load_switch_components

    try:
        return load_switch_components(checkpoint, config)
    except CheckpointKeyError as error:
        others = [k for k in error.missing if not k.startswith("first_stage_model.")]
        if others or error.unexpected or error.mismatched:
            raise
    # Everything but the VAE matched: load the parts without it.
    import torch
    from safetensors import safe_open

    from sketchcolor_cli.engines.diffusion.loading.keymaps import SCHEDULE_BUFFERS
    from sketchcolor_cli.engines.diffusion.loading.single_file import build_components, key_map

    parts = build_components(config, device="meta")
    del parts["vae"]
    mapping = key_map(config)
    states = {name: {} for name in parts}
    with safe_open(str(checkpoint), framework="pt") as handle:
        for key in handle.keys():
            if key in SCHEDULE_BUFFERS:
                continue
            part, ours_key, _ = mapping.to_ours(key)
            states[part][ours_key] = handle.get_tensor(key).to(torch.float32)
    for name, module in parts.items():
        module.load_state_dict(states[name], strict=True, assign=True)
        module.eval()
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", type=Path, required=True, help="upstream checkout (tellurion-kanata/colorizeDiffusion)")
    parser.add_argument("--upstream-python", default=sys.executable, help="Python of a venv with upstream's requirements")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (latent = size / 8)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--upstream-revision", default="", help="the upstream commit, when --upstream is not a git checkout")
    args = parser.parse_args()

    import torch

    settings = {
        "timestep": 601,
        "reference_strength": 0.9,
        "sketch_strength": 1.2,
        "fg_strength": 0.8,
        "bg_strength": 0.7,
        "merge_scale": 0.3,
        "sketch_mask_threshold": 0.05,
        "reference_mask_threshold": 0.5,
    }
    with tempfile.TemporaryDirectory(prefix="switch-equivalence-") as tmp:
        work = Path(tmp)
        ours_info = ours(work, args.size, settings)
        free_memory()
        (work / "harness.py").write_text(UPSTREAM_HARNESS)
        run = subprocess.run([args.upstream_python, str(work / "harness.py"), str(args.upstream.resolve()), str(work)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"the upstream harness failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}")
        a = torch.load(work / "our_out.pt")
        b = torch.load(work / "upstream_out.pt")
    revision = subprocess.run(["git", "-C", str(args.upstream), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or args.upstream_revision or "unknown"

    def relative(x, y):
        return float((x.double() - y.double()).norm() / y.double().norm())

    branches = ("conditional", "reference-free", "sketch-free")
    result = {
        "what": "one denoiser evaluation of the switch model (sketch encoder, threshold embedder, ClusterTransformer, "
                "split cross-attention with bg LoRA, fg/bg strength, merge scale), 3 dual-guidance branches batched",
        "upstream": f"{args.upstream.name} @ {revision}",
        "size_px": args.size,
        "latent": args.size // 8,
        "dtype": "float32",
        "settings": settings,
        "relative_error": relative(a["out"], b["out"]),
        "relative_error_per_branch": {n: relative(x, y) for n, x, y in zip(branches, a["out"].chunk(3), b["out"].chunk(3))},
        "max_abs_error": float((a["out"] - b["out"]).abs().max()),
        "output_rms": float(b["out"].pow(2).mean().sqrt()),
        "context_relative_error": relative(a["context"], b["context"]),
        "threshold": 1e-4,
        "params": ours_info["params"],
        "machine": machine(f"torch {torch_version()}"),
        "date": time.strftime("%Y-%m-%d"),
    }
    result["passed"] = result["relative_error"] < result["threshold"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diffusion_equivalence.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Diffusion engine vs upstream: one switch-model denoiser evaluation",
        "",
        f"Upstream {result['upstream']}, full-size architecture with random weights, float32, {args.size} px "
        f"(latent {args.size // 8}), {result['date']}. Machine: {result['machine']}.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| relative error (all branches, L2) | {result['relative_error']:.2e} |",
        *[f"| relative error, {n} branch | {v:.2e} |" for n, v in result["relative_error_per_branch"].items()],
        f"| max abs error / output RMS | {result['max_abs_error']:.2e} / {result['output_rms']:.3f} |",
        f"| cross-attention context relative error | {result['context_relative_error']:.2e} |",
        f"| threshold | < {result['threshold']:.0e} ({'passed' if result['passed'] else 'FAILED'}) |",
        "",
        f"Settings: {json.dumps(settings)}.",
    ]
    (args.out / "diffusion_equivalence.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()


def torch_version() -> str:
    import torch

    return torch.__version__
