"""The high-resolution pass (``hires``): generated detail at the delivery size.

After the base generation at the model's resolution, the colour is upscaled to the delivery size
(1920x1080, 2K, 4K), encoded by the VAE tile by tile, noised to ``strength`` and denoised again at
that size in overlapping latent tiles (MultiDiffusion, Bar-Tal et al. 2023): at every step every
tile is denoised and the predictions are blended with weights that fall off linearly across the
overlaps and sum to one at every latent pixel, then one scheduler step is taken on the whole
latent. Blending the model outputs (not per-tile scheduler steps) is the same for one-step
samplers, since a step is linear in the model output, and keeps multistep samplers (DPM-Solver++,
UniPC) and ancestral noise whole. The result is decoded tile by tile. Memory: one tile through the
UNet, one VAE tile, and the full latent (a 4K latent is 4 x 270 x 480 floats), so a 24 GB card
suffices at 4K.

What a pipeline provides (`HiresPipeline`): its ``vae`` (a diffusers ``AutoencoderKL``), its
``scheduler``, ``run_device``, a ``_placed(*modules)`` context manager (offload), and a
`TilePredictor` built from its own conditions at the delivery size: a function ``(box, latents,
t) -> guided model output`` for one tile (classifier-free guidance already combined). The switch
pipeline's is `SwitchPipeline.tile_predictor`; the xl pipeline gives its own.

Deterministic for a seed: the noise comes from a CPU generator seeded from the frame's seed.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Protocol

import cv2
import numpy as np
import torch

from .delivery import HiresSettings, parse_delivery_size
from .imaging import Canvas

LATENT_SCALE = 8  # pixels per latent pixel (every SD-family VAE)
# The pass's noise stream differs from the base generation's (same frame seed).
HIRES_SEED_OFFSET = 0x5EED
# Smallest blending weight at a tile's outer edge (never 0, so that every pixel has weight).
EDGE_WEIGHT = 1e-3


@dataclass(frozen=True)
class LatentBox:
    """A tile of the latent: rows top:top+height, columns left:left+width (latent pixels)."""

    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    @property
    def pixels(self) -> tuple[slice, slice]:
        """The same box in image pixels."""
        return (slice(self.top * LATENT_SCALE, (self.top + self.height) * LATENT_SCALE),
                slice(self.left * LATENT_SCALE, (self.left + self.width) * LATENT_SCALE))  # fmt: skip


TilePredictor = Callable[[LatentBox, torch.Tensor, torch.Tensor], torch.Tensor]


class HiresPipeline(Protocol):
    """What the hi-res pass needs from a diffusion pipeline (see the module docstring)."""

    vae: Any
    scheduler: Any

    @property
    def run_device(self) -> torch.device: ...

    def _placed(self, *modules: Any) -> ContextManager[None]: ...


# ---- tiles and weights ----------------------------------------------------------------------------


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Starts of tiles of `tile` covering 0..length with at least `overlap` shared between
    neighbours, spread evenly, each a multiple of `align`; one tile when it covers everything."""
    if tile >= length:
        return [0]
    count = -(-(length - overlap) // (tile - overlap))
    last = length - tile
    starts = sorted({min(last, int(round(i * last / (count - 1) / align)) * align) for i in range(count)})
    starts[-1] = last  # the last tile ends at the edge
    return starts


def latent_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> list[LatentBox]:
    """Tiles of a height x width latent (all sizes in latent pixels)."""
    th, tw = min(tile, height), min(tile, width)
    return [
        LatentBox(top, left, th, tw)
        for top in tile_starts(height, th, overlap, align)
        for left in tile_starts(width, tw, overlap, align)
    ]


def _ramp(length: int, before: bool, after: bool, overlap: int) -> np.ndarray:
    """1-D weights: rising over `overlap` at an inner start, falling at an inner end, 1 elsewhere."""
    ramp = np.ones(length, dtype=np.float64)
    position = np.arange(length) + 0.5
    if before and overlap > 0:
        ramp = np.minimum(ramp, position / overlap)
    if after and overlap > 0:
        ramp = np.minimum(ramp, (length - position) / overlap)
    return np.maximum(ramp, EDGE_WEIGHT)


def blend_weights(boxes: list[LatentBox], height: int, width: int, overlap: int) -> list[torch.Tensor]:
    """Per tile its weights (tile-sized, float32), normalised so that they sum to one at every
    latent pixel. Tile edges on the latent's border are not faded (nothing to blend with there)."""
    raw = []
    total = np.zeros((height, width), dtype=np.float64)
    for box in boxes:
        rows = _ramp(box.height, box.top > 0, box.top + box.height < height, overlap)
        cols = _ramp(box.width, box.left > 0, box.left + box.width < width, overlap)
        weight = rows[:, None] * cols[None, :]
        raw.append(weight)
        total[box.slices] += weight
    if (total <= 0).any():
        raise ValueError("hires tiles leave part of the frame uncovered")  # a bug, not a setting
    return [torch.from_numpy((w / total[b.slices]).astype(np.float32)) for w, b in zip(raw, boxes)]


def blended_prediction(
    predict: TilePredictor, latents: torch.Tensor, t: torch.Tensor, boxes: list[LatentBox], weights: list[torch.Tensor]
) -> torch.Tensor:
    """Every tile's prediction, blended with its weights into a full-latent prediction."""
    out = torch.zeros_like(latents, dtype=torch.float32)
    for box, weight in zip(boxes, weights):
        rows, cols = box.slices
        tile = predict(box, latents[:, :, rows, cols], t).float()
        out[:, :, rows, cols] += tile * weight.to(out.device)
    return out


# ---- the denoising at the delivery size -----------------------------------------------------------


def partial_timesteps(scheduler: Any, steps: int, strength: float, device: torch.device) -> torch.Tensor:
    """The last `strength` share of a `steps` schedule (as diffusers' img2img pipelines cut it)."""
    scheduler.set_timesteps(steps, device=device)
    run = min(max(int(round(steps * strength)), 1), steps)
    begin = (steps - run) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:]


def refine_latents(
    scheduler: Any,
    predict: TilePredictor,
    init: torch.Tensor,
    *,
    steps: int,
    strength: float,
    tile: int,
    overlap: int,
    generator: torch.Generator,
    align: int = 1,
) -> torch.Tensor:
    """Noise `init` (scaled latents [B, C, h, w]) to `strength` and denoise it in blended tiles
    (`tile`, `overlap` and `align` in latent pixels)."""
    device = init.device
    timesteps = partial_timesteps(scheduler, steps, strength, device)
    noise = torch.randn(init.shape, generator=generator, dtype=torch.float32).to(device)
    latents = scheduler.add_noise(init.float(), noise, timesteps[:1].repeat(init.shape[0]))
    height, width = init.shape[-2:]
    boxes = latent_tiles(height, width, tile, overlap, align)
    weights = blend_weights(boxes, height, width, overlap)
    for t in timesteps:
        model_in = scheduler.scale_model_input(latents, t)
        prediction = blended_prediction(predict, model_in, t, boxes, weights)
        latents = scheduler.step(prediction, t, latents, generator=generator).prev_sample
    return latents


# ---- tiled VAE --------------------------------------------------------------------------------------


class _VaeTiles:
    """Sets the VAE's tile size for one encode or decode, and restores it after."""

    def __init__(self, vae: Any, tile_px: int):
        self.vae, self.tile_px = vae, tile_px

    def __enter__(self) -> None:
        vae = self.vae
        self.saved = (vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size)
        vae.use_tiling = True
        vae.tile_sample_min_size = self.tile_px
        vae.tile_latent_min_size = self.tile_px // LATENT_SCALE

    def __exit__(self, *exc: object) -> None:
        self.vae.use_tiling, self.vae.tile_sample_min_size, self.vae.tile_latent_min_size = self.saved


def encode_tiled(vae: Any, image: torch.Tensor, tile_px: int) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> scaled latents (the posterior's mean: no noise in the encode)."""
    with _VaeTiles(vae, tile_px):
        posterior = vae.encode((image * 2 - 1).to(vae.device, vae.dtype)).latent_dist
    return posterior.mean.float() * vae.config.scaling_factor


def decode_tiled(vae: Any, latents: torch.Tensor, tile_px: int) -> torch.Tensor:
    """Scaled latents -> [B, 3, H, W] in [0, 1], float32 on the CPU."""
    with _VaeTiles(vae, tile_px):
        decoded = vae.decode((latents / vae.config.scaling_factor).to(vae.device, vae.dtype)).sample
    return ((decoded.float().clamp(-1, 1) + 1) / 2).cpu()


# ---- one frame --------------------------------------------------------------------------------------


def delivery_canvas(shape: tuple[int, int], settings: HiresSettings) -> Canvas:
    """Where a frame of `shape` (H, W) sits at the delivery size (multiples of 64, aspect kept)."""
    size = parse_delivery_size(settings.size)
    height, width = shape
    if size == "auto":
        long_side = max(height, width)
    elif size == "off":
        raise ValueError("the hi-res pass is off")
    else:
        box_w, box_h = size
        long_side = round(max(height, width) * min(box_w / width, box_h / height))
    return Canvas.fit(shape, long_side)


def upscale(colour: np.ndarray, canvas: Canvas, method: str) -> np.ndarray:
    """The frame's colour (h x w x 3 in [0, 1]) placed on the delivery canvas (paper white around)."""
    interpolation = cv2.INTER_LANCZOS4 if method == "lanczos" else cv2.INTER_CUBIC
    return np.clip(canvas.place(colour.astype(np.float32), 1.0, interpolation=interpolation), 0.0, 1.0)


def refine_frame(
    pipeline: HiresPipeline,
    predict: TilePredictor,
    colour: np.ndarray,
    canvas: Canvas,
    settings: HiresSettings,
    *,
    steps: int,
    seed: int,
) -> np.ndarray:
    """The hi-res pass on one frame: `colour` (the base result, h x w x 3 in [0, 1], any size) ->
    the refined colour on the delivery canvas (canvas-sized, H x W x 3 in [0, 1])."""
    image = torch.from_numpy(np.transpose(upscale(colour, canvas, settings.upscale), (2, 0, 1)).copy())[None]
    vae = pipeline.vae
    placed = getattr(pipeline, "_placed", None)
    with placed(vae) if placed else nullcontext():
        init = encode_tiled(vae, image, settings.vae_tile).to(pipeline.run_device)
    generator = torch.Generator("cpu").manual_seed((int(seed) + HIRES_SEED_OFFSET) % (2**63))
    latents = refine_latents(
        pipeline.scheduler, predict, init, steps=steps, strength=settings.strength,
        tile=settings.tile // LATENT_SCALE, overlap=settings.overlap // LATENT_SCALE, generator=generator,
    )
    with placed(vae) if placed else nullcontext():
        decoded = decode_tiled(vae, latents, settings.vae_tile)
    return np.transpose(decoded[0].numpy(), (1, 2, 0))


__all__ = [
    "HiresPipeline",
    "LatentBox",
    "TilePredictor",
    "blend_weights",
    "blended_prediction",
    "decode_tiled",
    "delivery_canvas",
    "encode_tiled",
    "latent_tiles",
    "refine_frame",
    "refine_latents",
    "tile_starts",
]
