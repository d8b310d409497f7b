"""The diffusion engine's runtime for the xl/xlv2 models: loads them once (device, dtype,
compile, offload, the background LoRA) and turns work items into `XLPipeline` calls and its
outputs into layers, as `runtime.SwitchRuntime` does for part 1's models: the same delivery
(`runtime.hires_colour` for the hi-res pass, `runtime.deliver_layers` for ``palette: snap`` and the
shade layer)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..base import WorkItem
from . import DiffusionSettings
from .hires import HIRES_SEED_OFFSET
from .imaging import Canvas, autofit_size
from .loading.configs import prediction_from_name
from .loading.xl_configs import XLConfig, family_from_name, is_xl_config_file
from .loading.xl_convert import is_xl_folder, load_xl_converted
from .loading.xl_single_file import load_xl_components, merge_background_lora
from .models.reference_encoder import load_clip_vision
from .models.wd_tagger import load_wd_tagger
from .pipelines.switch import make_scheduler
from .pipelines.xl import XLPipeline, describe_split
from .runtime import DiffusionRuntime, apply_lora_setting, pick_device, pick_dtype, place_pipeline

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


class XLRuntime(DiffusionRuntime):
    default_sampler = XL_DEFAULT_SAMPLER
    reference_dilation = REFERENCE_MASK_DILATION

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
        place_pipeline(pipeline, settings, device, dtype)
        return runtime

    def set_background_lora(self, on: bool) -> None:
        """xlv2's background LoRA is in the weights exactly when low-level injection is on (as
        upstream merges it); switching it off subtracts it again (one rounding step in fp16)."""
        if not self.lora or on == self.lora_merged:
            return
        merge_background_lora(self.pipeline.unet, self.lora, 1.0 if on else -1.0)
        self.lora_merged = on

    def canvas_for(self, shape: tuple[int, int], settings: DiffusionSettings) -> Canvas:
        return xl_canvas(shape, settings.resolution)

    def before_batch(self, s: DiffusionSettings) -> None:
        self.set_background_lora(s.background_enhance)

    def model_conditions(self, s: DiffusionSettings) -> dict[str, Any]:
        return dict(
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

    def frame_stats(self, s: DiffusionSettings) -> dict[str, Any]:
        return {"attention": describe_split(s, self.pipeline.is_xlv2)}

    def hires_extras(self, item: WorkItem, s: DiffusionSettings) -> tuple[dict[str, Any], dict[str, Any]]:
        conditions = {"bank_seed": (int(item.seed) + HIRES_SEED_OFFSET) % (2**63)}
        if s.background_enhance and self.pipeline.is_xlv2:
            # Each tile reads its own bank: see `XLPipeline.tile_predictor`.
            return conditions, {"bank": "per tile (ReferenceNet on the tile's crop of the background)"}
        return conditions, {}
