"""The switch pipeline: sketch + reference(s) (+ sketch mask, background) -> colour image.

One `__call__`, in the order of the paper's inference:

1. reference tokens (CLIP ViT-H/14, 256 local tokens per reference); with background enhance, the
   context is ``[fg tokens + emb(sketch threshold), ClusterTransformer(bg tokens + emb(reference
   threshold))]`` where the bg tokens come from the references with their foreground painted white
   (or from a separate background image, which skips the ClusterTransformer);
2. sketch features (sketch encoder on the inverted sketch, and on a blank all -1 sketch for the
   sketch-free branch), times the sketch strength;
3. the denoising loop with a diffusers scheduler; the conditional and unconditional branches of
   dual classifier-free guidance go through the UNet in ONE batched call:
   ``0.5 * [(u_ref + s_ref (c - u_ref)) + (u_sketch + s_sketch (c - u_sketch))]`` when both scales
   are > 1 (u_ref: zero reference context; u_sketch: blank sketch), the single-guidance formula when
   one is, no guidance when neither; outside the guidance window every branch's context is zero;
4. VAE decode (tiled for large frames).

Noise comes from one `torch.Generator` per batch item, so a frame gives the same result whatever
else is in its batch.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    UniPCMultistepScheduler,
)

from ..models.reference_encoder import reference_tokens
from ..models.split_attention import SplitAttention

SAMPLERS = {
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    # The xl default (k-diffusion's DPM++ 3M SDE, "exponential" schedule, eta 1).
    "dpmpp_3m_sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 3,
                                                   "use_exponential_sigmas": True}),
    "ddim": (DDIMScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def make_scheduler(sampler: str, config: dict[str, Any], prediction_type: str):
    try:
        cls, extra = SAMPLERS[sampler]
    except KeyError:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}") from None
    accepted = set(inspect.signature(cls.__init__).parameters)
    settings = {k: v for k, v in config.items() if k in accepted}  # e.g. clip_sample is DDIM's only
    return cls.from_config({**settings, **extra, "prediction_type": prediction_type})


class SwitchPipeline(DiffusionPipeline):
    """Reference-based sketch colorization with the switch (or mult) model."""

    def __init__(self, unet, vae, sketch_encoder, image_encoder, scheduler, threshold_embedder=None,
                 cluster_transformer=None):
        super().__init__()
        self.register_modules(
            unet=unet,
            vae=vae,
            sketch_encoder=sketch_encoder,
            image_encoder=image_encoder,
            scheduler=scheduler,
            threshold_embedder=threshold_embedder,
            cluster_transformer=cluster_transformer,
        )
        self.offload_device: torch.device | None = None  # set by enable_simple_offload

    # -- placement ---------------------------------------------------------------------------

    def enable_simple_offload(self, device: str | torch.device) -> None:
        """Keep every part on the CPU and move each to `device` only while it runs."""
        self.offload_device = torch.device(device)
        for module in self._parts():
            module.to("cpu")

    def _parts(self) -> list[torch.nn.Module]:
        names = ("unet", "vae", "sketch_encoder", "image_encoder", "threshold_embedder", "cluster_transformer")
        return [m for m in (getattr(self, n, None) for n in names) if isinstance(m, torch.nn.Module)]

    @property
    def run_device(self) -> torch.device:
        return self.offload_device or self.unet.device

    @contextmanager
    def _placed(self, *modules: torch.nn.Module | None) -> Iterator[None]:
        present = [m for m in modules if m is not None]
        if self.offload_device is not None:
            for m in present:
                m.to(self.offload_device)
        try:
            yield
        finally:
            if self.offload_device is not None:
                for m in present:
                    m.to("cpu")

    # -- conditions --------------------------------------------------------------------------

    def _tokens(self, images: list[list[torch.Tensor]]) -> torch.Tensor:
        """Per item a list of R references [3, h, w] -> [B, R * N, D] tokens (R equal for all
        items): each reference is encoded on its own and the tokens are concatenated."""
        device, dtype = self.run_device, self.image_encoder.dtype
        per_item = [
            torch.cat([reference_tokens(self.image_encoder, r[None].to(device, dtype))[0] for r in refs])
            for refs in images
        ]
        return torch.stack(per_item)

    def encode_context(
        self,
        references: list[list[torch.Tensor]],
        reference_masks: list[list[torch.Tensor]] | None,
        background: list[torch.Tensor] | None,
        *,
        background_enhance: bool,
        foreground_enhance: bool,
        sketch_mask_threshold: float,
        reference_mask_threshold: float,
    ) -> tuple[torch.Tensor, list[int]]:
        """The cross-attention context of the conditional branch and its segments."""
        with self._placed(self.image_encoder, self.threshold_embedder, self.cluster_transformer):
            fg = self._tokens(references)
            if not background_enhance and not foreground_enhance:
                return fg, [fg.shape[1]]
            if not background_enhance:  # foreground enhance alone: each pass sees the tokens
                return torch.cat([fg, fg], 1), [fg.shape[1], fg.shape[1]]
            switch = self.threshold_embedder is not None and self.cluster_transformer is not None
            if background is not None:
                bg = self._tokens([[b] for b in background])
            else:
                if reference_masks is None:
                    raise ValueError("background enhance needs reference masks or a background image")
                whitened = [
                    [torch.where(m < reference_mask_threshold, r, torch.ones_like(r)) for r, m in zip(refs, masks)]
                    for refs, masks in zip(references, reference_masks)
                ]
                bg = self._tokens(whitened)
            if switch:
                values = torch.tensor([reference_mask_threshold, sketch_mask_threshold], device=self.run_device)
                ref_emb, sketch_emb = self.threshold_embedder(values).to(fg.dtype).chunk(2)
                bg = bg + ref_emb
                if background is None:
                    bg = self.cluster_transformer(bg.to(self.cluster_transformer.dtype)).to(fg.dtype)
                fg = fg + sketch_emb
            context = torch.cat([fg, bg], 1)
            if foreground_enhance:  # both enhances: upstream repeats the context, each pass sees [fg, bg]
                return torch.cat([context, context], 1), [context.shape[1], context.shape[1]]
            return context, [fg.shape[1], bg.shape[1]]

    # -- the call ----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        sketch: torch.Tensor,
        references: list[list[torch.Tensor]],
        *,
        sketch_mask: torch.Tensor | None = None,
        reference_masks: list[list[torch.Tensor]] | None = None,
        background: list[torch.Tensor] | None = None,
        num_inference_steps: int = 20,
        reference_guidance: float = 4.0,
        sketch_guidance: float = 1.0,
        reference_strength: float | list[float] = 1.0,
        sketch_strength: float = 1.0,
        fg_strength: float = 1.0,
        bg_strength: float = 1.0,
        merge_scale: float = 0.0,
        sketch_mask_threshold: float = 0.05,
        reference_mask_threshold: float = 0.5,
        background_enhance: bool = True,
        foreground_enhance: bool = False,
        guidance_start: float = 0.0,
        guidance_end: float = 1.0,
        generator: list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Colour a batch.

        sketch: [B, 3, H, W] in [-1, 1], inverted (paper -1, lines +1), H and W multiples of 64.
        references: per item a list of R references [3, h, w] in [-1, 1] (the same R for every item).
        sketch_mask: [B, 1, H, W] in [0, 1] (foreground 1); needed for either enhance.
        reference_masks: per item R masks [1, h, w] in [0, 1] (needed for background enhance
        unless a background is given); background: per item [3, h', w'] in [-1, 1], or None.
        Returns [B, 3, H, W] in [0, 1], float32.
        """
        batch, _, height, width = sketch.shape
        if height % 64 or width % 64:
            raise ValueError(f"sketch size {width}x{height}: width and height must be multiples of 64")
        conditions = self.prepare_conditions(
            sketch, references, sketch_mask=sketch_mask, reference_masks=reference_masks, background=background,
            reference_guidance=reference_guidance, sketch_guidance=sketch_guidance,
            reference_strength=reference_strength, sketch_strength=sketch_strength, fg_strength=fg_strength,
            bg_strength=bg_strength, merge_scale=merge_scale, sketch_mask_threshold=sketch_mask_threshold,
            reference_mask_threshold=reference_mask_threshold, background_enhance=background_enhance,
            foreground_enhance=foreground_enhance,
        )

        latent_shape = (self.unet.config.in_channels, height // 8, width // 8)
        if latents is None:
            generators = generator or [torch.Generator("cpu").manual_seed(torch.seed()) for _ in range(batch)]
            latents = torch.stack([torch.randn(latent_shape, generator=g, dtype=torch.float32) for g in generators])
        else:
            generators = generator
        return self.denoise_and_decode(conditions, latents, generators, num_inference_steps=num_inference_steps,
                                       reference_guidance=reference_guidance, sketch_guidance=sketch_guidance,
                                       guidance_start=guidance_start, guidance_end=guidance_end)

    def denoise_and_decode(self, conditions: Any, latents: torch.Tensor, generators: list[torch.Generator] | None, *,
                           num_inference_steps: int, reference_guidance: float, sketch_guidance: float,
                           guidance_start: float, guidance_end: float) -> torch.Tensor:
        """Denoise `latents` under the prepared conditions (dual guidance inside the window) and
        decode: [B, 3, H, W] in [0, 1], float32. Every family's pipeline ends here."""
        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps, device=self.run_device)
        latents = latents.to(self.run_device, torch.float32) * scheduler.init_noise_sigma
        train_steps = scheduler.config.num_train_timesteps
        with self._placed(self.unet):
            for t in scheduler.timesteps:
                progress = 1 - float(t) / (train_steps - 1)
                in_window = guidance_start <= progress <= guidance_end
                branches = self.evaluate(conditions, scheduler.scale_model_input(latents, t), t, in_window)
                prediction = self.combine(branches, conditions, reference_guidance, sketch_guidance)
                latents = scheduler.step(prediction, t, latents, generator=_step_generator(generators)).prev_sample
        with self._placed(self.vae):
            decoded = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype)).sample
        return ((decoded.float().clamp(-1, 1) + 1) / 2).cpu()

    def prepare_conditions(
        self,
        sketch: torch.Tensor,
        references: list[list[torch.Tensor]],
        *,
        sketch_mask: torch.Tensor | None,
        reference_masks: list[list[torch.Tensor]] | None,
        background: list[torch.Tensor] | None,
        reference_guidance: float,
        sketch_guidance: float,
        reference_strength: float | list[float],
        sketch_strength: float,
        fg_strength: float,
        bg_strength: float,
        merge_scale: float,
        sketch_mask_threshold: float,
        reference_mask_threshold: float,
        background_enhance: bool,
        foreground_enhance: bool,
        encoded_context: tuple[torch.Tensor, list[int]] | None = None,
    ) -> "Conditions":
        """Everything the UNet needs besides the latents and the timestep, for all guidance
        branches at once (upstream's ``prepare_conditions``). `encoded_context`: what
        `encode_context` gave for these references, when already known (the hi-res tiles share it)."""
        device, dtype = self.run_device, self.unet.dtype
        mask_guided = background_enhance or foreground_enhance
        if mask_guided and sketch_mask is None:
            raise ValueError("background/foreground enhance needs a sketch mask")
        context, segments = encoded_context or self.encode_context(
            references, reference_masks, background,
            background_enhance=background_enhance, foreground_enhance=foreground_enhance,
            sketch_mask_threshold=sketch_mask_threshold, reference_mask_threshold=reference_mask_threshold,
        )
        context = context.to(device, dtype)

        with self._placed(self.sketch_encoder):
            sketch = sketch.to(device, self.sketch_encoder.dtype)
            both = self.sketch_encoder(torch.cat([sketch, -torch.ones_like(sketch)]))
            features = [(f * sketch_strength).to(dtype).chunk(2) for f in both]

        latent_mask = None
        if mask_guided:
            # Upstream hands the UNet the mask at latent size: bicubic 1/8, no antialias, no clamp.
            latent_mask = F.interpolate(sketch_mask.to(device, torch.float32), scale_factor=0.125, mode="bicubic")
            latent_mask = latent_mask.to(dtype)

        use_reference_cfg = reference_guidance > 1
        use_sketch_cfg = sketch_guidance > 1
        # Branches, in upstream's order: conditional, reference-free, sketch-free.
        contexts = [context]
        sketch_features = [[c for c, _ in features]]
        if use_reference_cfg:
            contexts.append(torch.zeros_like(context))
            sketch_features.append([c for c, _ in features])
        if use_sketch_cfg:
            contexts.append(context)
            sketch_features.append([u for _, u in features])
        branches = len(contexts)
        split = SplitAttention(
            mask=None if latent_mask is None else latent_mask.repeat(branches, 1, 1, 1),
            segments=segments,
            reference_strength=reference_strength,
            fg_strength=fg_strength,
            bg_strength=bg_strength,
            merge_scale=merge_scale,
            mask_threshold=sketch_mask_threshold,
            use_fg_lora=foreground_enhance,
            use_bg_lora=background_enhance,
        )
        return Conditions(
            context=torch.cat(contexts),
            sketch_features=[torch.cat(level) for level in zip(*sketch_features)],
            split=split,
            branches=branches,
            reference_cfg=use_reference_cfg,
            sketch_cfg=use_sketch_cfg,
        )

    def tile_predictor(
        self,
        sketch: torch.Tensor,
        references: list[list[torch.Tensor]],
        *,
        sketch_mask: torch.Tensor | None = None,
        reference_masks: list[list[torch.Tensor]] | None = None,
        background: list[torch.Tensor] | None = None,
        reference_guidance: float = 4.0,
        sketch_guidance: float = 1.0,
        guidance_start: float = 0.0,
        guidance_end: float = 1.0,
        **condition_settings: Any,
    ) -> Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]:
        """For the hi-res pass (`..hires`): a function (latent box, latents of that tile, t) ->
        the guided model output there. `sketch` and `sketch_mask` are at the delivery canvas's
        size; the references' context is encoded once, each tile's sketch features and mask once
        (on first use) and kept for the following steps. `condition_settings`: the other
        `prepare_conditions` settings (strengths, thresholds, enhances)."""
        settings = dict(condition_settings)
        encoded = self.encode_context(
            references, reference_masks, background,
            background_enhance=settings["background_enhance"], foreground_enhance=settings["foreground_enhance"],
            sketch_mask_threshold=settings["sketch_mask_threshold"],
            reference_mask_threshold=settings["reference_mask_threshold"],
        )
        per_tile: dict[Any, Conditions] = {}
        train_steps = self.scheduler.config.num_train_timesteps

        def predict(box: Any, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if box not in per_tile:
                rows, cols = box.pixels
                per_tile[box] = self.prepare_conditions(
                    sketch[:, :, rows, cols], references,
                    sketch_mask=None if sketch_mask is None else sketch_mask[:, :, rows, cols],
                    reference_masks=reference_masks, background=background,
                    reference_guidance=reference_guidance, sketch_guidance=sketch_guidance,
                    encoded_context=encoded, **settings,
                )
            progress = 1 - float(t) / (train_steps - 1)
            in_window = guidance_start <= progress <= guidance_end
            with self._placed(self.unet):
                branches = self.evaluate(per_tile[box], latents, t, in_window)
            return self.combine(branches, per_tile[box], reference_guidance, sketch_guidance)

        return predict

    def evaluate(self, conditions: "Conditions", latents: torch.Tensor, t: torch.Tensor | int,
                 in_window: bool = True) -> tuple[torch.Tensor, ...]:
        """One batched UNet evaluation of every guidance branch (upstream's ``apply_model``);
        outside the guidance window every branch gets a zero context."""
        context = conditions.context if in_window else torch.zeros_like(conditions.context)
        model_in = latents.to(self.unet.dtype).repeat(conditions.branches, 1, 1, 1)
        out = self.unet(model_in, t, context, conditions.sketch_features, conditions.split)
        return out.float().chunk(conditions.branches)

    @staticmethod
    def combine(out: tuple[torch.Tensor, ...], conditions: "Conditions", reference_guidance: float,
                sketch_guidance: float) -> torch.Tensor:
        """Upstream's (dual) classifier-free guidance on the branch outputs."""
        use_reference_cfg, use_sketch_cfg = conditions.reference_cfg, conditions.sketch_cfg
        if use_reference_cfg and use_sketch_cfg:
            cond, no_ref, no_sketch = out
            return 0.5 * ((no_ref + reference_guidance * (cond - no_ref)) + (no_sketch + sketch_guidance * (cond - no_sketch)))
        if use_reference_cfg or use_sketch_cfg:
            cond, uncond = out
            scale = reference_guidance if use_reference_cfg else sketch_guidance
            return uncond + (cond - uncond) * scale
        return out[0]


@dataclass
class Conditions:
    context: torch.Tensor  # [branches * B, tokens, D]
    sketch_features: list[torch.Tensor]  # per injection point, [branches * B, C, h, w]
    split: SplitAttention
    branches: int
    reference_cfg: bool
    sketch_cfg: bool


def _step_generator(generators: list[torch.Generator] | None):
    # Ancestral samplers draw noise per step; a list gives each item its own stream.
    if not generators:
        return None
    return list(generators) if len(generators) > 1 else generators[0]
