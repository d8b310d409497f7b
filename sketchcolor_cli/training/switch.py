"""The switch model's training step (paper a, ``refnet/models/trainer/mask.py: DualMaskTrainer``),
with the dual-branch Gram regularization of paper b available on top.

Per sample, two mask thresholds are drawn uniformly from [0.05, 0.95]: the reference threshold
(the reference's foreground at or above it is painted white for the background tokens, whose
threshold embedding is added before the ClusterTransformer) and the sketch threshold (the split
cross-attention's foreground/background switch, its embedding added to the foreground tokens as
the engine does at inference). The loss is the plain MSE of the prediction (eps or v). The VAE,
the reference encoder and (unless ``train: full``) the sketch encoder stay frozen.

`SwitchTraining` is one `nn.Module` whose forward returns the losses, so that ``accelerate``
(DDP) sees one forward per step; the random draws come in from the loop (its own generator),
which keeps the module deterministic and a resumed run exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sketchcolor_cli.engines.diffusion.models.reference_encoder import reference_tokens
from sketchcolor_cli.engines.diffusion.models.split_attention import SplitAttention, SplitCrossAttnProcessor

from .gram import split_branch_loss
from .lora import LoRALinear
from .step import DiffusionTraining, Draws


def load_base(model: Any) -> tuple[dict[str, nn.Module], Any, str, nn.Module]:
    """The base model's parts, its SwitchConfig, prediction type and the CLIP vision tower."""
    from sketchcolor_cli.engines.diffusion.loading import (SwitchConfig, is_converted_folder, load_converted,
                                                            load_switch_components, prediction_from_name)
    from sketchcolor_cli.engines.diffusion.models.reference_encoder import load_clip_vision

    checkpoint = Path(model.checkpoint)
    clip_path = Path(model.clip) if model.clip else None
    if checkpoint.is_dir():
        if not is_converted_folder(checkpoint):
            raise ValueError(f"model.checkpoint: {checkpoint} is a folder but not one written by `sketchcolor convert`")
        parts, config = load_converted(checkpoint)
        if clip_path is None and (checkpoint / "image_encoder" / "config.json").is_file():
            clip_path = checkpoint / "image_encoder"
    else:
        config = SwitchConfig.from_file(model.config) if model.config else SwitchConfig.for_checkpoint(checkpoint)
        parts = load_switch_components(checkpoint, config)
    if clip_path is None:
        raise ValueError("model.clip is not set: name the local CLIP-ViT-H-14 folder (transformers format)")
    prediction = model.prediction if model.prediction != "auto" else (
        config.prediction_type or prediction_from_name(checkpoint.name))
    return parts, config, prediction, load_clip_vision(clip_path)


class SwitchTraining(DiffusionTraining):
    def __init__(self, parts: dict[str, nn.Module], config: Any, prediction: str, clip: nn.Module, *,
                 train: str, lora_rank: int = 16, lora_alpha: float | None = None,
                 lora_attentions: tuple[str, ...] = ("attn1", "attn2"), gram_blocks: Any = None,
                 gradient_checkpointing: bool = False):
        super().__init__()
        from diffusers import DDPMScheduler

        if not config.has_switch_parts and train == "switch":
            raise ValueError("train: switch needs a switch model (fg/bg LoRAs, threshold embedder, ClusterTransformer); "
                             "this is a mult model: use train: lora or full")
        self.unet = parts["unet"]
        self.vae = parts["vae"]
        self.sketch_encoder = parts["sketch_encoder"]
        self.threshold_embedder = parts.get("threshold_embedder")
        self.cluster_transformer = parts.get("cluster_transformer")
        self.clip = clip
        self.config = config
        self.prediction = prediction
        self.train_mode = train
        self.noise_scheduler = DDPMScheduler.from_config({**config.scheduler, "prediction_type": prediction})
        self._prepare_training(train, lora_rank, lora_alpha, lora_attentions, gram_blocks, gradient_checkpointing)

    @property
    def reference_size(self) -> int:
        """Side of the square the data loader stretches references to (the encoder's input)."""
        return int(self.clip.config.image_size)

    # -- parts and parameters ------------------------------------------------------------

    def _parts(self) -> dict[str, nn.Module]:
        parts = {"unet": self.unet, "vae": self.vae, "sketch_encoder": self.sketch_encoder, "clip": self.clip}
        if self.threshold_embedder is not None:
            parts["threshold_embedder"] = self.threshold_embedder
            parts["cluster_transformer"] = self.cluster_transformer
        return parts

    def trainable_named(self) -> dict[str, nn.Parameter]:
        """File key -> parameter of what this mode trains (file keys are PART.KEY)."""
        named: dict[str, nn.Parameter] = {}
        if self.train_mode == "lora":
            for name, module in self.unet.named_modules():
                if isinstance(module, LoRALinear):
                    named[f"unet.{name}.lora_down.weight"] = module.lora_down.weight
                    named[f"unet.{name}.lora_up.weight"] = module.lora_up.weight
            return named
        if self.train_mode == "switch":
            for name, module in self.unet.named_modules():
                if isinstance(module, SplitCrossAttnProcessor) and module.has_lora:
                    for key, parameter in module.named_parameters():
                        named[f"unet.{name}.{key}"] = parameter
        else:  # full: the UNet (its LoRAs included) and the sketch encoder, as paper b trains
            named.update({f"unet.{k}": p for k, p in self.unet.named_parameters()})
            named.update({f"sketch_encoder.{k}": p for k, p in self.sketch_encoder.named_parameters()})
        for part in ("threshold_embedder", "cluster_transformer"):
            module = getattr(self, part)
            if module is not None:
                named.update({f"{part}.{k}": p for k, p in module.named_parameters()})
        return named

    def context(self, reference: torch.Tensor, reference_mask: torch.Tensor, draws: Draws) -> tuple[torch.Tensor, list[int]]:
        """[fg tokens + emb(sketch threshold), ClusterTransformer(bg tokens + emb(reference threshold))]."""
        ref = reference.to(self.clip.dtype) * 2 - 1
        fg = reference_tokens(self.clip, ref)
        if self.threshold_embedder is None:  # mult: no background tokens
            return fg, [fg.shape[1]]
        # The reference's foreground at or above its threshold is painted white (upstream: where(mask < t, ref, 1)).
        whitened = torch.where(reference_mask < draws.reference_threshold.view(-1, 1, 1, 1), ref, torch.ones_like(ref))
        bg = reference_tokens(self.clip, whitened)
        embedded = self.threshold_embedder(torch.cat([draws.reference_threshold, draws.sketch_threshold]))
        ref_emb, sketch_emb = embedded.chunk(2)
        bg = self.cluster_transformer(bg.to(ref_emb.dtype) + ref_emb)
        fg = fg.to(sketch_emb.dtype) + sketch_emb
        return torch.cat([fg, bg], 1), [fg.shape[1], bg.shape[1]]

    def forward(self, batch: dict[str, torch.Tensor], draws: Draws, use_gram: bool = False) -> dict[str, torch.Tensor]:
        line, color, mask = batch["line"], batch["color"], batch["mask"]
        size = line.shape[0]
        latents = self.encode_latents(color, draws.latent_noise)
        sketch = 1.0 - 2.0 * line  # inverted: paper -1, ink +1, as at inference
        sketch = torch.where(draws.drop_sketch.view(-1, 1, 1, 1), -torch.ones_like(sketch), sketch)
        if self.train_mode == "full":
            features = self.sketch_encoder(sketch.to(self.sketch_encoder.dtype))
        else:
            with torch.no_grad():
                features = self.sketch_encoder(sketch.to(self.sketch_encoder.dtype))
        context, segments = self.context(batch["reference"], batch["reference_mask"], draws)
        context = torch.where(draws.drop_reference.view(-1, 1, 1), torch.zeros_like(context), context)
        latent_mask = F.interpolate(mask.float(), scale_factor=0.125, mode="bicubic")
        noisy = self.noise_scheduler.add_noise(latents, draws.noise, draws.timesteps)
        if self.prediction == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, draws.noise, draws.timesteps)
        else:
            target = draws.noise
        threshold = draws.sketch_threshold.view(-1, 1, 1)
        timesteps = draws.timesteps
        if use_gram:
            # Mismatched branch: the same noisy latent, timestep, sketch and mask; each sample takes
            # its neighbour's reference context (roll by one over the batch).
            noisy = torch.cat([noisy, noisy])
            timesteps = torch.cat([timesteps, timesteps])
            context = torch.cat([context, torch.roll(context, 1, dims=0)])
            features = [torch.cat([f, f]) for f in features]
            latent_mask = torch.cat([latent_mask, latent_mask])
            threshold = torch.cat([threshold, threshold])
        split = None
        if self.threshold_embedder is not None:
            split = SplitAttention(mask=latent_mask, segments=segments, mask_threshold=threshold,  # type: ignore[arg-type]
                                   use_fg_lora=True, use_bg_lora=True)
        if use_gram and self.gram_hooks is None:
            raise RuntimeError("the Gram term is on but no Gram blocks are hooked")
        if use_gram:
            with self.gram_hooks.recording() as outputs:  # type: ignore[union-attr]
                prediction = self.unet(noisy, timesteps, context, features, split)
            gram = split_branch_loss(outputs, self.gram_paths, size)
            outputs.clear()
        else:
            prediction = self.unet(noisy, timesteps, context, features, split)
            gram = torch.zeros((), device=prediction.device)
        diffusion = F.mse_loss(prediction[:size].float(), target.float())
        return {"diffusion_loss": diffusion, "gram_loss": gram}

    # -- validation ---------------------------------------------------------------------

    @torch.no_grad()
    def sample_images(self, batch: dict[str, torch.Tensor], *, steps: int, sampler: str, reference_guidance: float,
                      seed: int) -> torch.Tensor:
        """Colour held-out samples with the engine's own pipeline: [B, 3, H, W] in [0, 1]."""
        from sketchcolor_cli.engines.diffusion.pipelines.switch import SwitchPipeline, make_scheduler

        pipeline = SwitchPipeline(
            unet=self.unet, vae=self.vae, sketch_encoder=self.sketch_encoder, image_encoder=self.clip,
            scheduler=make_scheduler(sampler, self.config.scheduler, self.prediction),
            threshold_embedder=self.threshold_embedder, cluster_transformer=self.cluster_transformer)
        pipeline.set_progress_bar_config(disable=True)
        device = next(self.unet.parameters()).device
        line = batch["line"].to(device)
        references = [[r.to(device) * 2 - 1] for r in batch["reference"]]
        reference_masks = [[m.to(device)] for m in batch["reference_mask"]]
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(line.shape[0])]
        switch = self.threshold_embedder is not None
        return pipeline(1.0 - 2.0 * line, references, sketch_mask=batch["mask"].to(device),
                        reference_masks=reference_masks, num_inference_steps=steps,
                        reference_guidance=reference_guidance, background_enhance=switch, generator=generators)
