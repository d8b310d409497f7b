"""The diffusion engine's runtime for the xl/xlv2 models: loads them once (device, dtype,
compile, offload, the background LoRA) and turns work items into `XLPipeline` calls and its
outputs into layers, as `runtime.SwitchRuntime` does for part 1's models: the same delivery
(`runtime.hires_colour` for the hi-res pass, `runtime.deliver_layers` for ``palette: snap`` and the
shade layer)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..base import Layers, WorkItem
from . import DiffusionSettings
from .hires import HIRES_SEED_OFFSET
from .imaging import Canvas, autofit_size, mask_input, reference_input, reference_mask, sketch_input
from .loading.configs import prediction_from_name
from .loading.xl_configs import XLConfig, family_from_name, is_xl_config_file
from .loading.xl_convert import is_xl_folder, load_xl_converted
from .loading.xl_single_file import load_xl_components, merge_background_lora
from .models.reference_encoder import load_clip_vision
from .models.wd_tagger import load_wd_tagger
from .pipelines.switch import make_scheduler
from .pipelines.xl import XLPipeline, describe_split
from .runtime import TILING_ABOVE_PX, apply_lora_setting, deliver_layers, hires_colour, pick_device, pick_dtype, sheets_of

log = logging.getLogger(__name__)
XL_DEFAULT_SAMPLER = "dpmpp_3m_sde"
REFERENCE_MASK_DILATION = 21  # upstream xl dilates the reference mask by max-pooling with kernel 21


def is_xl_model(settings: DiffusionSettings) -> bool:
    """Whether the settings name an xl/xlv2 model: a converted xl folder, an xl config file, or a
    single file named as upstream names them (``sdxl-*``, ``xlv2-*``)."""
    if not settings.model:
        return False
    model = Path(settings.model).expanduser()
    if model.is_dir():
        return is_xl_folder(model)
    if settings.config and is_xl_config_file(settings.config):
        return True
    return family_from_name(model.name) in ("xl", "xlv2")


def xl_canvas(shape: tuple[int, int], resolution: int | str) -> Canvas:
    """"auto": the published autofit (about 1024^2 at the frame's aspect, 768-1536 in steps of
    32); a number: that long side, the other side rounded up to a multiple of 32."""
    if resolution == "auto":
        return Canvas.within(shape, *autofit_size(shape))
    h, w = shape
    scale = int(resolution) / max(h, w)
    height, width = (max(32, -(-round(v * scale) // 32) * 32) for v in (h, w))
    return Canvas.within(shape, height, width)


def _load_tagger(path: Path, config: XLConfig, device: str):
    """The WD tagger: its published model.safetensors in torch, or a features export (.onnx, from
    `sketchcolor convert --to onnx --kind tagger`) on onnxruntime."""
    if path.suffix.lower() == ".onnx":
        from .auxiliary.tagger import onnx_tagger_module
        from .models.wd_tagger import WDTagger

        import inspect

        defaults = {k: v.default for k, v in inspect.signature(WDTagger.__init__).parameters.items() if k != "self"}
        shape = {**defaults, **(config.tagger or {})}  # the published shape, or the config's
        width = shape["embed_dim"] * 2 ** (len(shape["depths"]) - 1)
        where = "cuda" if device.startswith("cuda") else ("cpu" if device == "cpu" else "auto")
        return onnx_tagger_module(path, size=shape["img_size"], width=width, device=where)
    return load_wd_tagger(path, config=config.tagger or None)


class XLRuntime:
    def __init__(self, pipeline: XLPipeline, config: XLConfig, prediction: str, model_name: str,
                 lora: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        self.pipeline = pipeline
        self.config = config
        self.prediction = prediction
        self.model_name = model_name
        self.lora = lora
        self.lora_merged = False
        self._sampler: str | None = None

    @classmethod
    def load(cls, settings: DiffusionSettings) -> "XLRuntime":
        model = Path(settings.model).expanduser()  # type: ignore[arg-type]
        if not model.exists():
            raise FileNotFoundError(f"engine.diffusion.model: {model} does not exist")
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        clip_path = Path(settings.clip).expanduser() if settings.clip else None
        tagger_path = Path(settings.tagger).expanduser() if settings.tagger else None
        if model.is_dir():
            parts, lora, config = load_xl_converted(model)
            if clip_path is None and (model / "image_encoder" / "config.json").is_file():
                clip_path = model / "image_encoder"
            if tagger_path is None and (model / "tagger" / "model.safetensors").is_file():
                tagger_path = model / "tagger"
        else:
            if settings.config:
                config = XLConfig.from_file(settings.config)
            else:
                config = XLConfig.for_family(family_from_name(model.name))  # type: ignore[arg-type]
            parts, lora = load_xl_components(model, config)
        if settings.lora:
            # A file `sketchcolor train` wrote for this model, in float32 before any cast; xlv2's
            # background LoRA is merged on top of it below, as on the released weights.
            apply_lora_setting(parts, settings.lora, settings.lora_strength)
        if clip_path is None:
            raise ValueError("engine.diffusion.clip is not set: name the local CLIP-ViT-bigG-14 folder "
                             "(transformers format) the xl models use")
        if tagger_path is None:
            raise ValueError("engine.diffusion.tagger is not set: name the local WD tagger "
                             "(wd-v1-4-swinv2-tagger-v2 model.safetensors) the xl models use")
        prediction = settings.prediction if settings.prediction != "auto" else (
            config.prediction_type or prediction_from_name(model.name))
        sampler = XL_DEFAULT_SAMPLER if settings.sampler == "auto" else settings.sampler
        pipeline = XLPipeline(
            unet=parts["unet"], vae=parts["vae"], sketch_encoder=parts["sketch_encoder"],
            image_encoder=load_clip_vision(clip_path), tagger=_load_tagger(tagger_path, config, settings.device),
            proj=parts["proj"], scheduler=make_scheduler(sampler, config.scheduler, prediction),
            reference_net=parts.get("reference_net"), scalar_embed_dim=config.scalar_embed_dim,
            aesthetic_score=config.aesthetic_score,
        )
        runtime = cls(pipeline, config, prediction, model.name, lora)
        runtime._sampler = sampler
        runtime.set_background_lora(True)  # merged at load, in float32, before any cast
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
        return runtime

    def set_background_lora(self, on: bool) -> None:
        """xlv2's background LoRA is in the weights exactly when low-level injection is on (as
        upstream merges it); switching it off subtracts it again (one rounding step in fp16)."""
        if not self.lora or on == self.lora_merged:
            return
        merge_background_lora(self.pipeline.unet, self.lora, 1.0 if on else -1.0)
        self.lora_merged = on

    def describe(self) -> str:
        return f"{self.config.family} {self.model_name}, {self.prediction}"

    def colorize(self, batch: list[WorkItem], settings: DiffusionSettings) -> list[Layers]:
        sampler = XL_DEFAULT_SAMPLER if settings.sampler == "auto" else settings.sampler
        if sampler != self._sampler:
            self.pipeline.scheduler = make_scheduler(sampler, self.config.scheduler, self.prediction)
            self._sampler = sampler
        self.set_background_lora(settings.background_enhance)
        vae = self.pipeline.vae
        results: dict[int, Layers] = {}
        groups: dict[tuple, list[int]] = {}
        for index, item in enumerate(batch):
            if not sheets_of(item):
                raise ValueError(f"frame {item.frame}: no reference image; give the characters' model sheets")
            canvas = xl_canvas(item.line_art.shape[:2], settings.resolution)
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
        # A computed reference mask (`sketchcolor masks`: ISNet or RMBG/BiRefNet, already dilated) before the heuristic.
        reference_masks = [
            [torch.from_numpy(reference_mask(r.image, REFERENCE_MASK_DILATION) if r.mask is None
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
        condition_settings = dict(
            reference_strength=s.reference_strength,
            sketch_strength=s.sketch_strength,
            sketch_level_strengths=list(s.sketch_level_strengths) if s.sketch_level_strengths else None,
            fg_strength=s.fg_strength,
            bg_strength=s.bg_strength,
            merge_scale=s.merge_scale,
            sketch_mask_threshold=s.sketch_mask_threshold,
            reference_mask_threshold=s.reference_mask_threshold,
            background_enhance=s.background_enhance,
            reference_padding=s.reference_padding,
        )
        colour = self.pipeline(
            torch.from_numpy(np.stack(sketches)),
            references,
            sketch_mask=torch.from_numpy(np.stack(masks)),
            reference_masks=reference_masks,
            background=backgrounds,
            num_inference_steps=s.steps,
            generator=generators,
            **guidance,
            **condition_settings,
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
                "attention": describe_split(s, self.pipeline.is_xlv2),
            }
            if s.hires.enabled:
                conditions = dict(
                    references=references[index : index + 1],
                    reference_masks=reference_masks[index : index + 1],
                    background=None if backgrounds is None else backgrounds[index : index + 1],
                    bank_seed=(int(item.seed) + HIRES_SEED_OFFSET) % (2**63),
                    **guidance, **condition_settings,
                )
                full, stats["hires"] = hires_colour(self.pipeline, item, canvas, base, conditions, s)
                if s.background_enhance and self.pipeline.is_xlv2:
                    # Each tile reads its own bank: see `XLPipeline.tile_predictor`.
                    stats["hires"]["bank"] = "per tile (ReferenceNet on the tile's crop of the background)"
            else:
                full = canvas.take(base, item.line_art.shape[:2])
            out.append(deliver_layers(item, full, names, s, stats))
        return out
