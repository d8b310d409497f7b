"""The xl/xlv2 models' training step (paper "Towards High-resolution and Disentangled
Reference-based Sketch Colorization", upstream ``refnet/models/trainer/sdxl.py: GramTrainer``).

What trains (``train``): ``full``, as published (upstream stage 0): the whole UNet, the sketch
encoder and the ClusterConcat projection; ``lora``: new low-rank adapters on the UNet's attentions
only. CLIP ViT-bigG, the WD tagger and the VAE stay frozen; so do xlv2's background parts (the
ReferenceNet and its background LoRA, which upstream trains in a later stage): the UNet trains
without the bank, as upstream's stage 0 does, and the runtime merges the background LoRA on top of
the trained weights as it does on the released ones.

One step, as the engine conditions the UNet at inference (`pipelines.xl.prepare_xl_conditions`):
the reference context ``ClusterConcat(CLIP tokens, tagger tokens)`` (gradients reach the
projection; the encoders run without them), ``y`` = the sinusoidal embeddings of
``[sqrt(H * W), aesthetic score]``, the sketch (inverted: paper -1, ink +1) through the sketch
encoder, the colour's VAE posterior sample noised at a random timestep; loss = MSE of the
v-prediction (or eps, per the model). Reference dropout zeroes the context (the engine's
reference-free branch), sketch dropout blanks the sketch (its sketch-free branch).

The dual branch (from ``loss.gram_start_step``): the mismatched branch runs in the same UNet call
(the batch doubled) with the reference context rolled by one over the batch, the same noisy
latent, timestep, ``y`` and sketch features; forward hooks on the Gram blocks (`gram.py`, as
`SwitchTraining` uses them) give the Gram term. Upstream's stage 0 conditions the UNet with the
plain context; with ``loss.xl_split`` the context is ``[fg, bg]`` (bg: the reference with its
foreground, reference mask >= the drawn threshold, painted white) and the split cross-attention
routes each query by the sample's sketch mask, as at inference with ``background_enhance``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .gram import split_branch_loss
from .lora import LoRALinear
from .step import DiffusionTraining, Draws


def load_xl_base(model: Any) -> tuple[dict[str, nn.Module], Any, str, nn.Module, nn.Module]:
    """The base model's parts (xl: unet, vae, sketch_encoder, proj; xlv2 also reference_net), its
    XLConfig, prediction type, the CLIP vision tower and the WD tagger, from the recipe's files."""
    from sketchcolor_cli.engines.diffusion.loading.configs import prediction_from_name
    from sketchcolor_cli.engines.diffusion.loading.xl_configs import XLConfig
    from sketchcolor_cli.engines.diffusion.loading.xl_convert import is_xl_folder, load_xl_converted
    from sketchcolor_cli.engines.diffusion.loading.xl_single_file import load_xl_components
    from sketchcolor_cli.engines.diffusion.models.reference_encoder import load_clip_vision
    from sketchcolor_cli.engines.diffusion.models.wd_tagger import load_wd_tagger

    checkpoint = Path(model.checkpoint)
    clip_path = Path(model.clip) if model.clip else None
    tagger_path = Path(model.tagger) if model.tagger else None
    if checkpoint.is_dir():
        if not is_xl_folder(checkpoint):
            raise ValueError(f"model.checkpoint: {checkpoint} is a folder but not an xl model written by `sketchcolor convert`")
        parts, _, config = load_xl_converted(checkpoint)
        if clip_path is None and (checkpoint / "image_encoder" / "config.json").is_file():
            clip_path = checkpoint / "image_encoder"
        if tagger_path is None and (checkpoint / "tagger" / "model.safetensors").is_file():
            tagger_path = checkpoint / "tagger"
    else:
        config = XLConfig.from_file(model.config) if model.config else XLConfig.for_family(model.family)
        parts, _ = load_xl_components(checkpoint, config)  # xlv2's background LoRA stays out (frozen, unused)
    if config.family != model.family:
        raise ValueError(f"model.family is {model.family} but {model.config or checkpoint} is an {config.family} model; "
                         f"set model.family: {config.family}")
    if clip_path is None:
        raise ValueError("model.clip is not set: name the local CLIP-ViT-bigG-14 folder (transformers format)")
    if tagger_path is None:
        raise ValueError("model.tagger is not set: name the local WD tagger (wd-v1-4-swinv2-tagger-v2 model.safetensors)")
    prediction = model.prediction if model.prediction != "auto" else (
        config.prediction_type or prediction_from_name(checkpoint.name))
    tagger = load_wd_tagger(tagger_path, config=config.tagger or None)
    return parts, config, prediction, load_clip_vision(clip_path), tagger


class XLTraining(DiffusionTraining):
    def __init__(self, parts: dict[str, nn.Module], config: Any, prediction: str, clip: nn.Module, tagger: nn.Module, *,
                 train: str, lora_rank: int = 16, lora_alpha: float | None = None,
                 lora_attentions: tuple[str, ...] = ("attn1", "attn2"), gram_blocks: Any = None,
                 gradient_checkpointing: bool = False, split: bool = False):
        super().__init__()
        from diffusers import DDPMScheduler

        if train not in ("full", "lora"):
            raise ValueError(f"train: {train} is for the switch model; xl/xlv2 train full (the UNet, sketch encoder "
                             "and projection, as published) or lora (adapters on the UNet's attentions)")
        self.unet = parts["unet"]
        self.vae = parts["vae"]
        self.sketch_encoder = parts["sketch_encoder"]
        self.proj = parts["proj"]
        self.reference_net = parts.get("reference_net")  # xlv2: frozen, not run (no bank in training)
        self.clip = clip
        self.tagger = tagger
        self.config = config
        self.prediction = prediction
        self.train_mode = train
        self.split = split
        self.noise_scheduler = DDPMScheduler.from_config({**config.scheduler, "prediction_type": prediction})
        self._prepare_training(train, lora_rank, lora_alpha, lora_attentions, gram_blocks, gradient_checkpointing)

    @property
    def reference_size(self) -> int:
        """Side of the square the data loader stretches references to: the larger encoder input
        (each encoder resizes to its own, as at inference)."""
        return max(int(self.clip.config.image_size), int(self.tagger.config.img_size))

    # -- parts and parameters ------------------------------------------------------------

    def _parts(self) -> dict[str, nn.Module]:
        parts = {"unet": self.unet, "vae": self.vae, "sketch_encoder": self.sketch_encoder, "proj": self.proj,
                 "clip": self.clip, "tagger": self.tagger}
        if self.reference_net is not None:
            parts["reference_net"] = self.reference_net
        return parts

    def trainable_named(self) -> dict[str, nn.Parameter]:
        """File key -> parameter of what this mode trains (file keys are PART.KEY, the parts'
        names in the engine, so `apply_trained_file` finds them)."""
        named: dict[str, nn.Parameter] = {}
        if self.train_mode == "lora":
            for name, module in self.unet.named_modules():
                if isinstance(module, LoRALinear):
                    named[f"unet.{name}.lora_down.weight"] = module.lora_down.weight
                    named[f"unet.{name}.lora_up.weight"] = module.lora_up.weight
            return named
        for part in ("unet", "sketch_encoder", "proj"):
            named.update({f"{part}.{k}": p for k, p in getattr(self, part).named_parameters()})
        return named

    def reference_context(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] in [-1, 1] -> [B, tokens, D]; the frozen encoders without gradients, the
        projection with them (it trains in `full`)."""
        from sketchcolor_cli.engines.diffusion.models.wd_tagger import tagger_tokens
        from sketchcolor_cli.engines.diffusion.models.xl_reference_encoder import clip_all_tokens

        with torch.no_grad():
            clip_tokens = clip_all_tokens(self.clip, images)
            tags = tagger_tokens(self.tagger, images)
        return self.proj(clip_tokens.to(self.proj.dtype), tags.to(self.proj.dtype))

    def y(self, height: int, width: int, size: int, device: torch.device) -> torch.Tensor:
        """The engine's ``y``: embeddings of [sqrt(H * W), aesthetic score], per sample."""
        from sketchcolor_cli.engines.diffusion.pipelines.xl import scalar_embedding

        values = [float((height * width) ** 0.5), float(self.config.aesthetic_score)]
        return scalar_embedding(values, self.config.scalar_embed_dim).to(device).repeat(size, 1)

    def forward(self, batch: dict[str, torch.Tensor], draws: Draws, use_gram: bool = False) -> dict[str, torch.Tensor]:
        from sketchcolor_cli.engines.diffusion.models.xl_attention import XLAttention

        line, color, mask = batch["line"], batch["color"], batch["mask"]
        size, _, height, width = line.shape
        latents = self.encode_latents(color, draws.latent_noise)
        sketch = 1.0 - 2.0 * line  # inverted: paper -1, ink +1, as at inference
        sketch = torch.where(draws.drop_sketch.view(-1, 1, 1, 1), -torch.ones_like(sketch), sketch)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_mode == "full"):
            features = self.sketch_encoder(sketch.to(self.sketch_encoder.dtype))
        reference = batch["reference"] * 2 - 1
        context = self.reference_context(reference)
        latent_mask = None
        if self.split:
            # bg: the reference with its foreground (mask >= the drawn threshold) painted white.
            whitened = torch.where(batch["reference_mask"] < draws.reference_threshold.view(-1, 1, 1, 1),
                                   reference, torch.ones_like(reference))
            context = torch.cat([context, self.reference_context(whitened)], 1)
            latent_mask = F.interpolate(mask.float(), scale_factor=0.125)  # nearest, as the pipeline hands it over
        context = torch.where(draws.drop_reference.view(-1, 1, 1), torch.zeros_like(context), context)
        noisy = self.noise_scheduler.add_noise(latents, draws.noise, draws.timesteps)
        if self.prediction == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, draws.noise, draws.timesteps)
        else:
            target = draws.noise
        y = self.y(height, width, size, noisy.device)
        timesteps = draws.timesteps
        if use_gram:
            # Mismatched branch: same noisy latent, timestep, y, sketch and mask; each sample takes
            # its neighbour's reference context (roll by one over the batch).
            noisy, timesteps, y = torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]), torch.cat([y, y])
            context = torch.cat([context, torch.roll(context, 1, dims=0)])
            features = [torch.cat([f, f]) for f in features]
            if latent_mask is not None:
                latent_mask = torch.cat([latent_mask, latent_mask])
        split = None
        if latent_mask is not None:
            mode = "soft" if self.reference_net is not None else "bias"
            split = XLAttention(mask=latent_mask.to(noisy.dtype), mode=mode,  # type: ignore[arg-type]
                                mask_threshold=0.05)  # the engine's default sketch_mask_threshold
        if use_gram and self.gram_hooks is None:
            raise RuntimeError("the Gram term is on but no Gram blocks are hooked")
        if use_gram:
            with self.gram_hooks.recording() as outputs:  # type: ignore[union-attr]
                prediction = self.unet(noisy, timesteps, context, y, features, split)
            gram = split_branch_loss(outputs, self.gram_paths, size)
            outputs.clear()
        else:
            prediction = self.unet(noisy, timesteps, context, y, features, split)
            gram = torch.zeros((), device=prediction.device)
        diffusion = F.mse_loss(prediction[:size].float(), target.float())
        return {"diffusion_loss": diffusion, "gram_loss": gram}

    # -- validation ---------------------------------------------------------------------

    @torch.no_grad()
    def sample_images(self, batch: dict[str, torch.Tensor], *, steps: int, sampler: str, reference_guidance: float,
                      seed: int) -> torch.Tensor:
        """Colour held-out samples with the engine's own pipeline: [B, 3, H, W] in [0, 1]."""
        from sketchcolor_cli.engines.diffusion.pipelines.switch import make_scheduler
        from sketchcolor_cli.engines.diffusion.pipelines.xl import XLPipeline

        pipeline = XLPipeline(
            unet=self.unet, vae=self.vae, sketch_encoder=self.sketch_encoder, image_encoder=self.clip,
            tagger=self.tagger, proj=self.proj, scheduler=make_scheduler(sampler, self.config.scheduler, self.prediction),
            scalar_embed_dim=self.config.scalar_embed_dim, aesthetic_score=self.config.aesthetic_score)
        pipeline.set_progress_bar_config(disable=True)
        device = next(self.unet.parameters()).device
        line = batch["line"].to(device)
        references = [[r.to(device) * 2 - 1] for r in batch["reference"]]
        reference_masks = [[m.to(device)] for m in batch["reference_mask"]]
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(line.shape[0])]
        return pipeline(1.0 - 2.0 * line, references, sketch_mask=batch["mask"].to(device),
                        reference_masks=reference_masks, num_inference_steps=steps,
                        reference_guidance=reference_guidance, background_enhance=self.split, generator=generators)
