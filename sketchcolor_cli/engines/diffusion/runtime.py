"""The diffusion engine's runtime: loads the model once (device, dtype, compile, offload) and
turns work items into pipeline calls and pipeline outputs into layers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..base import Layers, WorkItem
from . import DiffusionSettings
from .hires import delivery_canvas, refine_frame
from .imaging import Canvas, layers_from_colour, mask_input, reference_input, reference_mask, sketch_input
from .loading import SwitchConfig, is_converted_folder, load_converted, load_switch_components, prediction_from_name
from .models.reference_encoder import load_clip_vision
from .pipelines.switch import SwitchPipeline, make_scheduler
from .snap import snap_layers

SWITCH_DEFAULT_SAMPLER = "dpmpp_2m"
SWITCH_DEFAULT_RESOLUTION = 512


def switch_sampler(settings: DiffusionSettings) -> str:
    return SWITCH_DEFAULT_SAMPLER if settings.sampler == "auto" else settings.sampler

log = logging.getLogger(__name__)
TILING_ABOVE_PX = 1024


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def place_pipeline(pipeline: Any, settings: DiffusionSettings, device: torch.device, dtype: torch.dtype) -> None:
    """Cast the pipeline's parts, put them on the device (or keep them on the CPU and move each
    while it runs, with `cpu_offload`), and compile the UNet if asked: the same for every family."""
    if dtype != torch.float32:
        for module in pipeline._parts():
            module.to(dtype=dtype)
    if settings.cpu_offload and device.type != "cpu":
        pipeline.enable_simple_offload(device)
    else:
        for module in pipeline._parts():
            module.to(device)
    if settings.compile:
        pipeline.unet = torch.compile(pipeline.unet)  # type: ignore[assignment]


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


class DiffusionRuntime:
    """What every model family's runtime shares once its model is loaded: the sampler, frames
    grouped by canvas into pipeline calls, VAE tiling, the pipeline's inputs from work items, the
    hi-res pass and the delivered layers. A family (`SwitchRuntime`, `runtime_xl.XLRuntime`) loads
    its model and gives its canvas, its model-specific conditions and its facts for the log."""

    default_sampler: ClassVar[str]
    reference_dilation: ClassVar[int] = 11  # px, the heuristic reference mask's dilation
    pipeline: Any
    config: Any
    prediction: str
    model_name: str
    _sampler: str | None

    def canvas_for(self, shape: tuple[int, int], settings: DiffusionSettings) -> Canvas:
        raise NotImplementedError

    def model_conditions(self, s: DiffusionSettings) -> dict[str, Any]:
        """The family's condition settings for its pipeline call (strengths, thresholds, ...)."""
        raise NotImplementedError

    def before_batch(self, s: DiffusionSettings) -> None:
        """Weights that follow a setting (xlv2's background LoRA)."""

    def frame_stats(self, s: DiffusionSettings) -> dict[str, Any]:
        return {}

    def hires_extras(self, item: WorkItem, s: DiffusionSettings) -> tuple[dict[str, Any], dict[str, Any]]:
        """(extra tile-predictor conditions, extra log facts) for the hi-res pass."""
        return {}, {}

    def describe(self) -> str:
        return f"{self.config.family} {self.model_name}, {self.prediction}"

    def colorize(self, batch: list[WorkItem], settings: DiffusionSettings) -> list[Layers]:
        """Each frame from its characters' model sheets (key frames of the cut, which the flat
        engine carries colours from, are not references the published models were trained on)."""
        sampler = self.default_sampler if settings.sampler == "auto" else settings.sampler
        if sampler != self._sampler:
            self.pipeline.scheduler = make_scheduler(sampler, self.config.scheduler, self.prediction)
            self._sampler = sampler
        self.before_batch(settings)
        vae = self.pipeline.vae
        results: dict[int, Layers] = {}
        # Items share a UNet call when their canvas and number of references agree.
        groups: dict[tuple, list[int]] = {}
        for index, item in enumerate(batch):
            if not sheets_of(item):
                raise ValueError(f"frame {item.frame}: no reference image; give the characters' model sheets")
            canvas = self.canvas_for(item.line_art.shape[:2], settings)
            groups.setdefault((canvas, len(sheets_of(item)), item.background is not None), []).append(index)
        for (canvas, _, _), indices in groups.items():
            tiled = settings.vae_tiling == "on" or (
                settings.vae_tiling == "auto" and max(canvas.height, canvas.width) > TILING_ABOVE_PX)
            vae.enable_tiling() if tiled else vae.disable_tiling()
            for start in range(0, len(indices), settings.batch_frames):
                chunk = indices[start : start + settings.batch_frames]
                for i, layers in zip(chunk, self._colorize_group([batch[i] for i in chunk], canvas, settings)):
                    results[i] = layers
        return [results[i] for i in range(len(batch))]

    def _colorize_group(self, items: list[WorkItem], canvas: Canvas, s: DiffusionSettings) -> list[Layers]:
        sketches, masks, mask_names = [], [], []
        for item in items:
            sketches.append(sketch_input(item.line_art, canvas))
            mask, names = mask_input(item.masks, item.line_art.shape[:2], canvas)
            masks.append(mask)
            mask_names.append(names)
        references = [[torch.from_numpy(reference_input(r.image)) for r in sheets_of(item)] for item in items]
        # A computed reference mask (`sketchcolor masks`: ISNet or RMBG/BiRefNet, dilated) before the heuristic.
        reference_masks = [
            [torch.from_numpy(reference_mask(r.image, self.reference_dilation) if r.mask is None
                              else r.mask.astype(np.float32)[None]) for r in sheets_of(item)]
            for item in items
        ]  # fmt: skip
        backgrounds = None
        if items[0].background is not None:
            backgrounds = [torch.from_numpy(reference_input(item.background)) for item in items]
        generators = [torch.Generator("cpu").manual_seed(int(item.seed) % (2**63)) for item in items]
        guidance = dict(
            reference_guidance=s.reference_guidance,
            sketch_guidance=s.sketch_guidance,
            guidance_start=s.guidance_start,
            guidance_end=s.guidance_end,
        )
        conditions = self.model_conditions(s)
        colour = self.pipeline(
            torch.from_numpy(np.stack(sketches)),
            references,
            sketch_mask=torch.from_numpy(np.stack(masks)),
            reference_masks=reference_masks,
            background=backgrounds,
            num_inference_steps=s.steps,
            generator=generators,
            **guidance,
            **conditions,
        )
        out = []
        for index, (item, image, names) in enumerate(zip(items, colour.numpy(), mask_names)):
            base = np.transpose(image, (1, 2, 0))
            stats: dict[str, Any] = {
                "seed": int(item.seed),
                "model_size": [canvas.width, canvas.height],
                "references": len(sheets_of(item)),
                "masks": names if names else "none: whole frame foreground",
                "background": "image" if item.background is not None else "from references",
                **self.frame_stats(s),
            }
            if s.hires.enabled:
                extra_conditions, extra_stats = self.hires_extras(item, s)
                tile_conditions = dict(
                    references=references[index : index + 1],
                    reference_masks=reference_masks[index : index + 1],
                    background=None if backgrounds is None else backgrounds[index : index + 1],
                    **extra_conditions, **guidance, **conditions,
                )
                full, stats["hires"] = hires_colour(self.pipeline, item, canvas, base, tile_conditions, s)
                stats["hires"].update(extra_stats)
            else:
                full = canvas.take(base, item.line_art.shape[:2])
            out.append(deliver_layers(item, full, names, s, stats))
        return out


class SwitchRuntime(DiffusionRuntime):
    default_sampler = SWITCH_DEFAULT_SAMPLER

    def __init__(self, pipeline: SwitchPipeline, config: SwitchConfig, prediction: str, model_name: str):
        self.pipeline = pipeline
        self.config = config
        self.prediction = prediction
        self.model_name = model_name
        self._sampler: str | None = None

    @classmethod
    def load(cls, settings: DiffusionSettings) -> "SwitchRuntime":
        if not settings.model:
            raise ValueError("engine.diffusion.model is not set: name a local switch/mult checkpoint "
                             "(.safetensors) or a folder written by `sketchcolor convert`")
        model = Path(settings.model).expanduser()
        if not model.exists():
            raise FileNotFoundError(f"engine.diffusion.model: {model} does not exist")
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        clip_path = Path(settings.clip).expanduser() if settings.clip else None
        if model.is_dir():
            if not is_converted_folder(model):
                raise ValueError(f"engine.diffusion.model: {model} is a folder but not one written by `sketchcolor convert`")
            parts, config = load_converted(model)
            if clip_path is None and (model / "image_encoder" / "config.json").is_file():
                clip_path = model / "image_encoder"
        else:
            config = SwitchConfig.from_file(settings.config) if settings.config else SwitchConfig.for_checkpoint(model)
            parts = load_switch_components(model, config)
        if clip_path is None:
            raise ValueError("engine.diffusion.clip is not set: name the local CLIP-ViT-H-14 folder (transformers format)")
        if settings.prediction != "auto":
            prediction = settings.prediction
        else:
            prediction = config.prediction_type or prediction_from_name(model.name)
        if settings.lora:
            apply_lora_setting(parts, settings.lora, settings.lora_strength)
        clip = load_clip_vision(clip_path)
        pipeline = SwitchPipeline(
            unet=parts["unet"],
            vae=parts["vae"],
            sketch_encoder=parts["sketch_encoder"],
            image_encoder=clip,
            scheduler=make_scheduler(switch_sampler(settings), config.scheduler, prediction),
            threshold_embedder=parts.get("threshold_embedder"),
            cluster_transformer=parts.get("cluster_transformer"),
        )
        place_pipeline(pipeline, settings, device, dtype)
        runtime = cls(pipeline, config, prediction, model.name)
        runtime._sampler = switch_sampler(settings)
        return runtime

    def canvas_for(self, shape: tuple[int, int], settings: DiffusionSettings) -> Canvas:
        long_side = SWITCH_DEFAULT_RESOLUTION if settings.resolution == "auto" else settings.resolution
        return Canvas.fit(shape, long_side)

    def model_conditions(self, s: DiffusionSettings) -> dict[str, Any]:
        return dict(
            reference_strength=s.reference_strength,
            sketch_strength=s.sketch_strength,
            fg_strength=s.fg_strength,
            bg_strength=s.bg_strength,
            merge_scale=s.merge_scale,
            sketch_mask_threshold=s.sketch_mask_threshold,
            reference_mask_threshold=s.reference_mask_threshold,
            background_enhance=s.background_enhance,
            foreground_enhance=s.foreground_enhance,
        )


def hires_colour(pipeline: Any, item: WorkItem, canvas: Canvas, base: np.ndarray, conditions: dict[str, Any],
                 s: DiffusionSettings) -> tuple[np.ndarray, dict[str, Any]]:
    """The hi-res pass on one frame, for any pipeline with a ``tile_predictor(sketch, *, sketch_mask,
    **conditions)`` (see `hires.HiresPipeline`): `base` is the generated canvas image (H x W x 3 in
    [0, 1]) placed by `canvas`; returns the colour at the line art's size and facts for the log."""
    shape = item.line_art.shape[:2]
    target = delivery_canvas(shape, s.hires)
    inner = base[canvas.top : canvas.top + canvas.inner_h, canvas.left : canvas.left + canvas.inner_w]
    mask, _ = mask_input(item.masks, shape, target)
    predict = pipeline.tile_predictor(
        torch.from_numpy(sketch_input(item.line_art, target)[None]),
        sketch_mask=torch.from_numpy(mask[None]),
        **conditions,
    )
    refined = refine_frame(pipeline, predict, inner, target, s.hires, steps=s.hires.steps or s.steps, seed=item.seed)
    facts = {"size": [target.width, target.height], "strength": s.hires.strength, "tile": s.hires.tile,
             "overlap": s.hires.overlap}
    return target.take(refined, shape), facts


def deliver_layers(item: WorkItem, full: np.ndarray, mask_names: list[str], s: DiffusionSettings,
                   stats: dict[str, Any]) -> Layers:
    """The frame's layers from the generated colour at the line art's size (H x W x 3 in [0, 1]):
    as generated (``palette: model``) or snapped to the palette (``palette: snap``); the generated
    colour without lines is the ``shade`` layer either way."""
    color, fill, line, review = layers_from_colour(full, item.line_art, mask_names)
    if s.palette != "snap":
        return Layers(color=color, fill=fill, line=line, review=review, stats=stats, shade=fill)
    snapped = snap_layers(item, full, s.snap)
    return Layers(color=snapped.color, fill=snapped.fill, line=snapped.line, review=snapped.review,
                  stats={**stats, **snapped.stats}, shade=fill)


def apply_lora_setting(parts: dict[str, Any], path: str, strength: float) -> None:
    """engine.diffusion.lora: a file written by `sketchcolor train`, applied before anything runs;
    one that does not fit the base model is refused with its keys and shapes named."""
    from sketchcolor_cli.training.lora import apply_trained_file

    lora = Path(path).expanduser()
    if not lora.is_file():
        raise FileNotFoundError(f"engine.diffusion.lora: {lora} does not exist; give the .safetensors file `sketchcolor train` wrote")
    try:
        applied = apply_trained_file(parts, lora, strength)
    except ValueError as error:
        raise ValueError(f"engine.diffusion.lora: {error}") from None
    log.info("applied %s (%s, %d tensors, strength %s)", lora.name, applied["kind"], applied["tensors"], strength)


def sheets_of(item: WorkItem) -> list:
    """The item's model sheets: its references that are not key frames of the cut."""
    return [r for r in item.references if r.frame is None]
