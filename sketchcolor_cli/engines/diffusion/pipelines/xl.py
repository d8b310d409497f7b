"""The xl/xlv2 pipeline: sketch + reference(s) (+ sketch mask, reference masks, background) ->
colour image, in the order of upstream's ``prepare_conditions`` and sampling.

1. Reference context: per reference, CLIP ViT-bigG tokens (257) and WD-tagger tokens (196) fused by
   ClusterConcat into 196 x 2048 (several references: their tokens concatenated). With the split
   (``background_enhance``, the UI's "low-level injection"), the context is ``[fg, bg]`` where bg
   is the same encoding of the references with their foreground (reference mask >= threshold)
   painted white, or of the background image.
2. ``y``: the sinusoidal embeddings (cos first) of ``[sqrt(H * W), 7.0]``.
3. Sketch features: the multi-scale attention encoder on the sketch and on a blank (all -1)
   sketch, times the sketch strength (and the per-level strengths).
4. xlv2 with the split: the ReferenceNet runs once at t = 0 on ``[VAE sample of the background at
   the generation size, sketch mask 1/8, reference mask 1/8]`` with ``y`` = embeddings of the crop
   ``(0, 0, ch, cw)`` (fractions); its decoder self-attention inputs are the banks the UNet's
   decoder self-attention reads. (The background LoRA is merged by the runtime.)
5. The denoising loop with dual classifier-free guidance as in part 1 (one batched UNet call per
   step: conditional, reference-free with a zero context, sketch-free with the blank sketch's
   features), then the VAE decode.

Split cross-attention: xl, merge 0 -> one call with the mask bias; xl, merge > 0 -> two passes;
xlv2 -> two passes blended softly (see `models.xl_attention`). The sketch mask reaches the UNet
reduced to 1/8 by nearest neighbour, as upstream hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline

from ..models.threshold_embedder import sinusoidal_embedding
from ..models.xl_attention import XLAttention, transformer_block_names
from ..models.xl_reference_encoder import xl_reference_context
from .switch import Conditions, SwitchPipeline


def scalar_embedding(values: list[float], dim: int) -> torch.Tensor:
    """Upstream's ``y``: [sinusoid(v) for v in values] concatenated (cos first, float32):
    [1, len(values) * dim]."""
    return sinusoidal_embedding(torch.tensor(values, dtype=torch.float32), dim).reshape(1, -1)


def pad_reference(image: torch.Tensor, scale: float, fill: float) -> torch.Tensor:
    """Upstream's "reference padding scale": the reference centred in a canvas `scale` times as
    wide, filled with `fill` (white paper for images, 0 for masks)."""
    if scale <= 1.0:
        return image
    c, h, w = image.shape
    width = int(w * scale)
    out = torch.full((c, h, width), fill, dtype=image.dtype)
    left = (width - w) // 2
    out[:, :, left : left + w] = image
    return out


def crop_fractions(height: int, width: int, bg_height: int, bg_width: int) -> tuple[float, float]:
    """Upstream's ``get_crop_scale``: the share of the background (rows, columns) the generation's
    aspect covers."""
    if width / height > bg_width / bg_height:
        return (height / width) * (bg_width / bg_height), 1.0
    return 1.0, (width / height) * (bg_height / bg_width)


def xlv2_reference_strengths(unet, strength: float) -> list[float]:
    """Upstream xlv2's per-block reference strengths with one UI value: the encoder and the
    lower-resolution decoder levels take it; the middle block and the decoder's highest-resolution
    attention level keep 1.0 (upstream skips "middle" and never sets those blocks)."""
    names = transformer_block_names(unet)
    attention_levels = [i for i, b in enumerate(unet.up_blocks) if getattr(b, "has_cross_attention", False)]
    finest = f"up_blocks.{attention_levels[-1]}." if attention_levels else None
    return [1.0 if n.startswith("mid_block") or (finest and n.startswith(finest)) else strength for n in names]


@dataclass
class XLReferences:
    """The references' encoding, shared by every hi-res tile of a frame."""

    context: torch.Tensor  # [B, tokens, D]: fg, or [fg, bg] with the split
    bank_sources: list[torch.Tensor] | None = None  # xlv2 with the split: per frame the ReferenceNet's image [3, h, w]
    bank_masks: list[torch.Tensor] | None = None  # and its mask [1, h, w]


@dataclass
class XLConditions(Conditions):
    y: torch.Tensor | None = None  # [branches * B, 2 * scalar_embed_dim]


class XLPipeline(SwitchPipeline):
    """Reference-based sketch colorization with the xl or xlv2 model."""

    def __init__(self, unet, vae, sketch_encoder, image_encoder, tagger, proj, scheduler, reference_net=None,
                 scalar_embed_dim: int = 256, aesthetic_score: float = 7.0):
        DiffusionPipeline.__init__(self)
        self.register_modules(unet=unet, vae=vae, sketch_encoder=sketch_encoder, image_encoder=image_encoder,
                              tagger=tagger, proj=proj, scheduler=scheduler, reference_net=reference_net)
        self.xlv2 = reference_net is not None  # the xlv2 attention (soft split, bank readers)
        self.scalar_embed_dim = scalar_embed_dim
        self.aesthetic_score = aesthetic_score
        self.offload_device: torch.device | None = None

    def _parts(self) -> list[torch.nn.Module]:
        names = ("unet", "vae", "sketch_encoder", "image_encoder", "tagger", "proj", "reference_net")
        return [m for m in (getattr(self, n, None) for n in names) if isinstance(m, torch.nn.Module)]

    @property
    def is_xlv2(self) -> bool:
        return self.xlv2

    # -- conditions --------------------------------------------------------------------------

    def embed_scalars(self, values: list[float]) -> torch.Tensor:
        return scalar_embedding(values, self.scalar_embed_dim).to(self.run_device)

    def _context(self, images: list[list[torch.Tensor]]) -> torch.Tensor:
        device = self.run_device
        with self._placed(self.image_encoder, self.tagger, self.proj):
            per_item = [
                torch.cat([xl_reference_context(self.image_encoder, self.tagger, self.proj,
                                                 r[None].to(device, torch.float32))[0] for r in refs])
                for refs in images
            ]
        return torch.stack(per_item)

    def _background_banks(self, backgrounds: list[torch.Tensor], sketch_mask: torch.Tensor,
                          background_masks: list[torch.Tensor], height: int, width: int,
                          generators: list[torch.Generator]) -> list[torch.Tensor]:
        """The ReferenceNet's banks, per decoder block [B, N, C] (one row per frame)."""
        latents = self.background_latents(backgrounds, height, width, generators)
        ys = [self.embed_scalars([0.0, 0.0, *crop_fractions(height, width, b.shape[1], b.shape[2])]) for b in backgrounds]
        return self.reference_net_banks(latents, sketch_mask, background_masks, torch.cat(ys))

    def background_latents(self, backgrounds: list[torch.Tensor], height: int, width: int,
                           generators: list[torch.Generator]) -> torch.Tensor:
        """Each background resized (bicubic) to the generation size and VAE-encoded: a posterior
        SAMPLE (not the mean), as upstream takes it, times the VAE scale. [B, 4, H/8, W/8]."""
        device = self.run_device
        images = [F.interpolate(b[None].to(device, torch.float32), size=(height, width), mode="bicubic")
                  for b in backgrounds]
        return self.vae_samples(images, generators)

    def vae_samples(self, images: list[torch.Tensor], generators: list[torch.Generator]) -> torch.Tensor:
        """Each [1, 3, h, w] image in [-1, 1] VAE-encoded: a posterior sample drawn with its
        generator, times the VAE's scaling factor (from its config: SDXL 0.13025). [B, 4, h/8, w/8]."""
        device = self.run_device
        latents = []
        with self._placed(self.vae):
            for image, generator in zip(images, generators):
                posterior = self.vae.encode(image.to(device, self.vae.dtype)).latent_dist
                noise = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32).to(device)
                sample = posterior.mean.float() + posterior.std.float() * noise
                latents.append(sample * self.vae.config.scaling_factor)
        return torch.cat(latents)

    def reference_net_banks(self, latents: torch.Tensor, sketch_mask: torch.Tensor,
                            background_masks: list[torch.Tensor], y: torch.Tensor) -> list[torch.Tensor]:
        """One ReferenceNet pass at t = 0 on [latent, sketch mask 1/8 (nearest), background mask
        resized bicubically to the generation size then 1/8 (nearest)]; returns its banks."""
        device = self.run_device
        height, width = sketch_mask.shape[-2:]
        masks = []
        for frame_mask, reference_mask in zip(sketch_mask, background_masks):
            s = F.interpolate(frame_mask[None].to(device, torch.float32), scale_factor=0.125)
            r = F.interpolate(reference_mask[None].to(device, torch.float32), size=(height, width), mode="bicubic")
            masks.append(torch.cat([s, F.interpolate(r, scale_factor=0.125)], 1))
        net = self.reference_net
        with self._placed(net):
            split = XLAttention()
            net(torch.cat([latents.to(device), torch.cat(masks)], 1).to(net.dtype), y.to(device, net.dtype), split)
        return [split.bank_store[i] for i in range(len(split.bank_store))]

    @torch.no_grad()
    def __call__(  # type: ignore[override]
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
        reference_strength: float = 1.0,
        sketch_strength: float = 1.0,
        sketch_level_strengths: list[float] | None = None,
        fg_strength: float = 1.0,
        bg_strength: float = 1.0,
        merge_scale: float = 0.0,
        sketch_mask_threshold: float = 0.05,
        reference_mask_threshold: float = 0.5,
        background_enhance: bool = False,
        reference_padding: float = 1.0,
        guidance_start: float = 0.0,
        guidance_end: float = 1.0,
        generator: list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Colour a batch.

        sketch: [B, 3, H, W] in [-1, 1], inverted (paper -1, lines +1), H and W multiples of 32.
        references: per item R references [3, h, w] in [-1, 1]; reference_masks: per item R masks
        [1, h, w] (binary; needed for the split unless a background is given); sketch_mask:
        [B, 1, H, W] in [0, 1]; background: per item [3, h', w'] or None.
        Returns [B, 3, H, W] in [0, 1], float32.
        """
        batch, _, height, width = sketch.shape
        if height % 32 or width % 32:
            raise ValueError(f"sketch size {width}x{height}: width and height must be multiples of 32")
        generators = generator or [torch.Generator("cpu").manual_seed(torch.seed()) for _ in range(batch)]
        latent_shape = (self.unet.config.in_channels, height // 8, width // 8)
        if latents is None:
            latents = torch.stack([torch.randn(latent_shape, generator=g, dtype=torch.float32) for g in generators])
        conditions = self.prepare_xl_conditions(
            sketch, references, sketch_mask=sketch_mask, reference_masks=reference_masks, background=background,
            reference_guidance=reference_guidance, sketch_guidance=sketch_guidance,
            reference_strength=reference_strength, sketch_strength=sketch_strength,
            sketch_level_strengths=sketch_level_strengths, fg_strength=fg_strength, bg_strength=bg_strength,
            merge_scale=merge_scale, sketch_mask_threshold=sketch_mask_threshold,
            reference_mask_threshold=reference_mask_threshold, background_enhance=background_enhance,
            reference_padding=reference_padding, generators=generators,
        )
        return self.denoise_and_decode(conditions, latents, generators, num_inference_steps=num_inference_steps,
                                       reference_guidance=reference_guidance, sketch_guidance=sketch_guidance,
                                       guidance_start=guidance_start, guidance_end=guidance_end)

    def encode_references(
        self,
        references: list[list[torch.Tensor]],
        reference_masks: list[list[torch.Tensor]] | None,
        background: list[torch.Tensor] | None,
        *,
        background_enhance: bool,
        reference_mask_threshold: float,
        reference_padding: float,
    ) -> XLReferences:
        """The conditional branch's context (``fg``, or ``[fg, bg]`` with the split) and, for xlv2
        with the split, what the ReferenceNet reads (one background and its mask per frame)."""
        references = [[pad_reference(r, reference_padding, 1.0) for r in refs] for refs in references]
        if reference_masks is not None:
            reference_masks = [[pad_reference(m, reference_padding, 0.0) for m in masks] for masks in reference_masks]
        context = self._context(references)
        if not background_enhance:
            return XLReferences(context)
        if background is not None:
            bg_images = [[b] for b in background]
            bank_sources = list(background)
            # Upstream hands the ReferenceNet the reference's mask even with a background image.
            bank_masks = ([masks[0] for masks in reference_masks] if reference_masks is not None
                          else [torch.zeros_like(b[:1]) for b in background])
        else:
            if reference_masks is None:
                raise ValueError("the split (background_enhance) needs reference masks or a background image")
            bg_images = [
                [torch.where(m < reference_mask_threshold, r, torch.ones_like(r)) for r, m in zip(refs, masks)]
                for refs, masks in zip(references, reference_masks)
            ]
            # The ReferenceNet reads one background per frame: the first reference's.
            bank_sources = [images[0] for images in bg_images]
            bank_masks = [masks[0] for masks in reference_masks]
        context = torch.cat([context, self._context(bg_images)], 1)
        if not self.is_xlv2:
            return XLReferences(context)
        return XLReferences(context, bank_sources, bank_masks)

    def prepare_xl_conditions(
        self,
        sketch: torch.Tensor,
        references: list[list[torch.Tensor]],
        *,
        sketch_mask: torch.Tensor | None,
        reference_masks: list[list[torch.Tensor]] | None,
        background: list[torch.Tensor] | None,
        reference_guidance: float,
        sketch_guidance: float,
        reference_strength: float,
        sketch_strength: float,
        sketch_level_strengths: list[float] | None,
        fg_strength: float,
        bg_strength: float,
        merge_scale: float,
        sketch_mask_threshold: float,
        reference_mask_threshold: float,
        background_enhance: bool,
        reference_padding: float,
        generators: list[torch.Generator] | None = None,
        encoded: XLReferences | None = None,
        banks: list[torch.Tensor] | None = None,
        size_value: float | None = None,
    ) -> XLConditions:
        """Everything the UNet needs besides the latents and the timestep, for all guidance
        branches. For the hi-res tiles (`tile_predictor`): `encoded`, the references' encoding
        when already known; `banks`, the tile's own ReferenceNet banks (None: computed here at the
        sketch's size when the references need them); `size_value`, the value ``y`` embeds in
        place of ``sqrt(H * W)`` of this sketch."""
        device, dtype = self.run_device, self.unet.dtype
        batch, _, height, width = sketch.shape
        if background_enhance and sketch_mask is None:
            raise ValueError("the split (background_enhance) needs a sketch mask")
        encoded = encoded or self.encode_references(
            references, reference_masks, background, background_enhance=background_enhance,
            reference_mask_threshold=reference_mask_threshold, reference_padding=reference_padding,
        )
        if banks is None and encoded.bank_sources is not None:
            if generators is None:
                raise ValueError("the ReferenceNet's background sample needs a generator per frame")
            banks = self._background_banks(encoded.bank_sources, sketch_mask, encoded.bank_masks,  # type: ignore[arg-type]
                                           height, width, generators)
        context = encoded.context.to(device, dtype)
        size = float((height * width) ** 0.5) if size_value is None else float(size_value)
        y = self.embed_scalars([size, self.aesthetic_score]).repeat(batch, 1)

        levels = sketch_level_strengths or [1.0] * 4
        with self._placed(self.sketch_encoder):
            sketch = sketch.to(device, self.sketch_encoder.dtype)
            both = self.sketch_encoder(torch.cat([sketch, -torch.ones_like(sketch)]))
            features = [(f * (sketch_strength * s)).to(dtype).chunk(2) for f, s in zip(both, levels)]

        latent_mask = None
        if background_enhance:
            latent_mask = F.interpolate(sketch_mask.to(device, torch.float32), scale_factor=0.125).to(dtype)

        use_reference_cfg, use_sketch_cfg = reference_guidance > 1, sketch_guidance > 1
        contexts, sketch_features = [context], [[c for c, _ in features]]
        if use_reference_cfg:
            contexts.append(torch.zeros_like(context))
            sketch_features.append([c for c, _ in features])
        if use_sketch_cfg:
            contexts.append(context)
            sketch_features.append([u for _, u in features])
        branches = len(contexts)
        if self.is_xlv2:
            mode, strength = "soft", xlv2_reference_strengths(self.unet, reference_strength)
        else:
            mode, strength = ("bias" if merge_scale == 0 else "two_pass"), reference_strength
        split = XLAttention(
            mask=None if latent_mask is None else latent_mask.repeat(branches, 1, 1, 1),
            mode=mode,  # type: ignore[arg-type]
            reference_strength=strength,
            fg_strength=fg_strength,
            bg_strength=bg_strength,
            merge_scale=merge_scale,
            mask_threshold=sketch_mask_threshold,
            # One bank per frame: the reference self-attention repeats it for every guidance branch.
            banks=None if banks is None else [b.to(dtype) for b in banks],
        )
        return XLConditions(
            context=torch.cat(contexts),
            sketch_features=[torch.cat(level) for level in zip(*sketch_features)],
            split=split,  # type: ignore[arg-type]
            branches=branches,
            reference_cfg=use_reference_cfg,
            sketch_cfg=use_sketch_cfg,
            y=y.repeat(branches, 1).to(dtype),
        )

    def tile_predictor(  # type: ignore[override]
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
        bank_seed: int = 0,
        **condition_settings: Any,
    ) -> Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]:
        """For the hi-res pass (`..hires`): a function (latent box, latents of that tile, t) -> the
        guided model output there, as `SwitchPipeline.tile_predictor`. `sketch` and `sketch_mask`
        are at the delivery canvas's size (one frame); `condition_settings`: the other
        `prepare_xl_conditions` settings (strengths, thresholds, background_enhance,
        reference_padding). The references are encoded once; each tile's sketch features, mask
        and (xlv2 with the split) ReferenceNet banks on first use, kept for the following steps.

        Global per frame, as MultiDiffusion keeps every condition that is not a picture of the
        frame: the reference context, and ``y``. ``y`` embeds sqrt(H * W) of the WHOLE delivery
        canvas for every tile: it is the size of the image the tile is a part of (SDXL's size
        conditioning means the source image's size, a crop of it being what the UNet sees), and
        one value keeps the tiles agreeing where they overlap; a per-tile value would tell every
        tile it is a small picture of its own.

        Per tile, as the pictures of the frame are cropped: the sketch, its mask, and the
        ReferenceNet's bank. The bank is computed at the base canvas for the base generation; its
        tokens are that canvas's background at that scale, which a tile at the delivery scale
        does not line up with. So each tile gets its own bank, exactly as upstream would compute
        it for a frame that is the tile: the background (and its mask) resized to the delivery
        canvas as the base resizes it to its canvas, cropped at the tile's box, VAE-encoded
        (a posterior sample, seeded from `bank_seed` and the box) and run through the ReferenceNet
        once at t = 0; its ``y`` (the crop fractions) is the whole canvas's, as above. Cost: one
        VAE encode and one ReferenceNet pass per tile, against (steps x guidance branches) UNet
        passes; memory: the tile banks are kept (about 60 MB per 768 px tile in float16)."""
        settings = dict(condition_settings)
        _, _, height, width = sketch.shape
        encoded = self.encode_references(
            references, reference_masks, background, background_enhance=settings.get("background_enhance", False),
            reference_mask_threshold=settings.get("reference_mask_threshold", 0.5),
            reference_padding=settings.get("reference_padding", 1.0),
        )
        size_value = float((height * width) ** 0.5)  # the whole delivery canvas (see above)
        bank_frame: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor] | None = None
        if encoded.bank_sources is not None and encoded.bank_masks is not None:
            if sketch_mask is None:
                raise ValueError("the split (background_enhance) needs a sketch mask")
            # Resized to the delivery canvas once (on the CPU), cropped per tile.
            images = [F.interpolate(b[None].float(), size=(height, width), mode="bicubic")
                      for b in encoded.bank_sources]
            masks = [F.interpolate(m[None].float(), size=(height, width), mode="bicubic") for m in encoded.bank_masks]
            y_bank = torch.cat([self.embed_scalars([0.0, 0.0, *crop_fractions(height, width, b.shape[1], b.shape[2])])
                                for b in encoded.bank_sources])
            bank_frame = (images, masks, y_bank)
        per_tile: dict[Any, XLConditions] = {}
        train_steps = self.scheduler.config.num_train_timesteps

        def tile_banks(box: Any, tile_mask: torch.Tensor) -> list[torch.Tensor]:
            images, masks, y_bank = bank_frame  # type: ignore[misc]
            rows, cols = box.pixels
            seed = (int(bank_seed) + 1_000_003 * box.top + box.left) % (2**63)
            generators = [torch.Generator("cpu").manual_seed(seed) for _ in images]
            latents = self.vae_samples([image[:, :, rows, cols] for image in images], generators)
            # The mask crops are already at the tile's size (the ReferenceNet's resize is then exact).
            return self.reference_net_banks(latents, tile_mask, [m[0, :, rows, cols] for m in masks], y_bank)

        def predict(box: Any, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if box not in per_tile:
                rows, cols = box.pixels
                tile_mask = None if sketch_mask is None else sketch_mask[:, :, rows, cols]
                banks = None if bank_frame is None else tile_banks(box, tile_mask)  # type: ignore[arg-type]
                per_tile[box] = self.prepare_xl_conditions(
                    sketch[:, :, rows, cols], references, sketch_mask=tile_mask, reference_masks=reference_masks,
                    background=background, reference_guidance=reference_guidance, sketch_guidance=sketch_guidance,
                    encoded=encoded, banks=banks, size_value=size_value, **settings,
                )
            progress = 1 - float(t) / (train_steps - 1)
            in_window = guidance_start <= progress <= guidance_end
            with self._placed(self.unet):
                branches = self.evaluate(per_tile[box], latents, t, in_window)
            return self.combine(branches, per_tile[box], reference_guidance, sketch_guidance)

        return predict

    def evaluate(self, conditions: XLConditions, latents: torch.Tensor, t: torch.Tensor | int,
                 in_window: bool = True) -> tuple[torch.Tensor, ...]:
        """One batched UNet evaluation of every guidance branch; outside the guidance window every
        branch gets a zero context (what upstream's single zero token gives: keys and values
        without bias make a zero attention output either way)."""
        context = conditions.context if in_window else torch.zeros_like(conditions.context)
        model_in = latents.to(self.unet.dtype).repeat(conditions.branches, 1, 1, 1)
        out = self.unet(model_in, t, context, conditions.y, conditions.sketch_features, conditions.split)
        return out.float().chunk(conditions.branches)


def describe_split(settings: Any, is_xlv2: bool) -> str:
    if not settings.background_enhance:
        return "plain cross-attention"
    if is_xlv2:
        return "split (soft) + ReferenceNet bank + background LoRA"
    return "split (mask bias)" if settings.merge_scale == 0 else "split (two passes, merged)"
