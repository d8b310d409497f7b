"""The ``diffusion`` engine: the reference-based latent-diffusion colorizer of the seed paper
"Image Referenced Sketch Colorization Based on Animation Creation Workflow" (the SD2.1 "switch"
model; its "mult" predecessor loads too).

Each frame is coloured on its own: the line art is the sketch, the characters' references give
the colours, the characters' masks route each UNet level's cross-attention between the
foreground (reference) and background tokens. The model is generated at ``resolution`` on the long
side (multiples of 64, aspect kept by padding) and the colour is resized back to the line art's
size; the original line pixels are kept exactly (layers as the flat engine delivers them).

This module imports no torch: the settings model is read for ``--help``, ``config`` and manifest
checks; torch, diffusers and transformers load in `DiffusionEngine.load`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..base import Engine, EngineSettings, Layers, WorkItem
from .delivery import HiresSettings, SnapSettings

# Bump when the same inputs and settings would give different pixels.
ENGINE_VERSION = "1"


def _path(description: str) -> Any:
    return Field(None, description=description, json_schema_extra={"path": True})


class DiffusionSettings(EngineSettings):
    """Settings of the diffusion engine (defaults: the published model's UI)."""

    model: str | None = _path(
        "The model: a single-file checkpoint (switch-eps.safetensors, mult-*.safetensors; the SDXL models "
        "sdxl-*.safetensors and xlv2-*.safetensors) or a folder written by `sketchcolor convert`. The file "
        "name picks the architecture as upstream does. Relative paths are relative to the cut folder."
    )
    clip: str | None = _path(
        "The reference encoder: a local folder of laion CLIP-ViT-H-14 (switch/mult) or CLIP-ViT-bigG-14 "
        "(xl/xlv2) in transformers format (CLIPVisionModelWithProjection: config.json + model.safetensors). "
        "Not needed when the converted model folder holds image_encoder/."
    )
    tagger: str | None = _path(
        "xl/xlv2 only: the WD tagger's weights (SmilingWolf wd-v1-4-swinv2-tagger-v2 model.safetensors, the "
        "timm file, or its folder). Not needed when the converted model folder holds tagger/."
    )
    config: str | None = _path(
        "Architecture config (switch_config.json) for a single-file checkpoint of another shape; default: "
        "the published architecture, picked by the file name (mult* or switch)."
    )
    lora: str | None = _path(
        "A file written by `sketchcolor train` (LoRA or trained weights of a switch or xl/xlv2 model, .safetensors) applied to the model "
        "when it loads; it must fit the base model it was trained on."
    )
    lora_strength: float = Field(1.0, ge=-2.0, le=2.0, description="How much of the trained change the LoRA file applies (1: all of it, 0: none).")
    prediction: Literal["auto", "epsilon", "v_prediction"] = Field(
        "auto", description="What the UNet predicts; auto: as upstream, eps if the file name contains 'eps', else v."
    )
    sampler: Literal["auto", "dpmpp_2m", "dpmpp_3m_sde", "ddim", "euler_a", "unipc"] = Field(
        "auto", description="auto: upstream's default for the model (switch/mult: dpmpp_2m; xl/xlv2: "
        "dpmpp_3m_sde); dpmpp_2m: DPM-Solver++ multistep; dpmpp_3m_sde: DPM++ 3M SDE with the exponential "
        "schedule; ddim; euler_a: Euler ancestral; unipc: UniPC multistep."
    )
    steps: int = Field(20, ge=1, le=200, description="Denoising steps.")
    resolution: Annotated[int, Field(ge=256, le=2048, multiple_of=32)] | Literal["auto"] = Field(
        "auto",
        description="Long side of the generated image, in pixels (multiple of 32), or auto: switch/mult 512 "
        "(trained at 512, upstream allows 512-1536); xl/xlv2 the published autofit, about 1024x1024 in area at "
        "the frame's aspect, 768-1536 in steps of 32. The colour is resized back to the line art's own size.",
    )
    reference_guidance: float = Field(4.0, ge=0.0, le=30.0, description="Classifier-free guidance scale on the reference (> 1 turns it on).")
    sketch_guidance: float = Field(1.0, ge=0.0, le=30.0, description="Classifier-free guidance scale on the sketch (> 1 turns it on).")
    reference_strength: float = Field(1.0, ge=0.0, le=2.0, description="Scales every cross-attention output (how much the reference counts).")
    sketch_strength: float = Field(1.0, ge=0.0, le=3.0, description="Scales the sketch encoder's features.")
    sketch_level_strengths: list[Annotated[float, Field(ge=0.0, le=3.0)]] | None = Field(
        None, min_length=4, max_length=4,
        description="xl/xlv2: one more factor per sketch injection point (1/8, 1/16, 1/32, 1/32; the UI's "
        "'Sketch strength 1-4'), times sketch_strength.",
    )
    reference_padding: float = Field(
        1.0, ge=1.0, le=2.0, description="xl/xlv2: the reference is centred on white paper this many times as "
        "wide before it is encoded (the UI's 'reference padding scale').")
    background_enhance: bool = Field(
        True, description="Mask-guided split cross-attention with the background LoRA (the switch model's point): "
        "queries inside the characters' masks attend to the reference, the rest to background tokens. For "
        "xl/xlv2 this is the UI's 'low-level injection' (off there by default): the split, and for xlv2 the "
        "ReferenceNet background bank and the merged background LoRA."
    )
    foreground_enhance: bool = Field(False, description="Use the foreground LoRA too (upstream: of little use with the released weights).")
    fg_strength: float = Field(1.0, ge=0.0, le=2.0, description="Scales the foreground attention output (split attention).")
    bg_strength: float = Field(1.0, ge=0.0, le=2.0, description="Scales the background attention output (split attention).")
    merge_scale: float = Field(0.0, ge=0.0, le=1.0, description="Share of the background pass blended into the foreground (1: background everywhere).")
    sketch_mask_threshold: float = Field(0.05, ge=0.0, le=1.0, description="Mask value above which a pixel is foreground.")
    reference_mask_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Reference mask value from which the reference is foreground (painted white for the background tokens).")
    guidance_start: float = Field(0.0, ge=0.0, le=1.0, description="Share of the denoising (0 = start) from which the reference is used.")
    guidance_end: float = Field(1.0, ge=0.0, le=1.0, description="Share of the denoising after which the reference is no longer used.")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description="auto: float16 on CUDA, float32 on the CPU.")
    batch_frames: int = Field(
        1, ge=1, description="Frames per UNet call. 1 (default) gives every frame the same bytes however the run "
        "is split or resumed; more is faster on a GPU, but a frame may then differ in the last bit from the "
        "same frame coloured in another batch (floating-point sums depend on the batch shape).",
    )
    vae_tiling: Literal["auto", "on", "off"] = Field("auto", description="Tiled VAE decode; auto: on above 1024 px.")
    compile: bool = Field(False, description="torch.compile the UNet (slow first frame, faster after; CUDA).")
    cpu_offload: bool = Field(False, description="Keep the parts on the CPU and move each to the GPU only while it runs.")
    palette: Literal["model", "snap"] = Field(
        "model", description="model: the fill is the generated colour; snap: each region of the line art (the flat "
        "engine's regions) takes the character-palette colour the generated colour votes for, the fill is "
        "palette-exact, the generated colour goes to the shade layer and weak votes to the review layer.",
    )
    snap: SnapSettings = Field(default_factory=SnapSettings, description="How palette: snap votes (see its fields).")
    hires: HiresSettings = Field(
        default_factory=HiresSettings, description="High-resolution pass at the delivery size (tiled, MultiDiffusion)."
    )

    @model_validator(mode="after")
    def _window(self) -> "DiffusionSettings":
        if self.guidance_start > self.guidance_end:
            raise ValueError(f"guidance_start {self.guidance_start} is after guidance_end {self.guidance_end}")
        return self


# Settings used when the model loads; they cannot change per character.
LOAD_TIME_SETTINGS = frozenset({"model", "clip", "tagger", "config", "prediction", "device", "dtype", "compile",
                                "cpu_offload", "lora", "lora_strength"})


class DiffusionEngine(Engine):
    name: ClassVar[str] = "diffusion"
    settings_model: ClassVar[type[EngineSettings]] = DiffusionSettings
    frame_dependency: ClassVar[Literal["none", "previous"]] = "none"
    uses_gpu: ClassVar[bool] = True  # one worker per GPU when there are GPUs; the CPU otherwise

    def __init__(self, settings: DiffusionSettings, runtime: Any):
        self.settings = settings
        self.runtime = runtime

    @classmethod
    def load(cls, settings: EngineSettings) -> "DiffusionEngine":
        if not isinstance(settings, DiffusionSettings):
            settings = DiffusionSettings.model_validate(settings.model_dump())
        from .runtime_xl import XLRuntime, is_xl_model

        if is_xl_model(settings):
            return cls(settings, XLRuntime.load(settings))
        from .runtime import SwitchRuntime

        return cls(settings, SwitchRuntime.load(settings))

    def describe(self) -> str:
        s = self.settings
        return (
            f"diffusion {ENGINE_VERSION} ({self.runtime.describe()}, sampler={s.sampler}, steps={s.steps}, "
            f"resolution={s.resolution}, guidance={s.reference_guidance}/{s.sketch_guidance})"
        )

    def settings_for(self, item: WorkItem) -> DiffusionSettings:
        """The cut's settings with the overrides of the characters in this frame (manifest order;
        when two characters set the same key, the later one wins)."""
        overrides: dict[str, Any] = {}
        for character, values in item.character_settings.items():
            fixed = sorted(set(values) & LOAD_TIME_SETTINGS)
            if fixed:
                raise ValueError(f"character {character}: {', '.join(fixed)} cannot differ per character "
                                 "(the model is loaded once per run); set them for the cut")
            overrides.update(values)
        if not overrides:
            return self.settings
        return DiffusionSettings.model_validate({**self.settings.model_dump(), **overrides})

    def colorize(self, batch: list[WorkItem]) -> list[Layers]:
        # Frames with different effective settings go to the model separately.
        groups: dict[str, tuple[DiffusionSettings, list[int]]] = {}
        for index, item in enumerate(batch):
            settings = self.settings_for(item)
            groups.setdefault(settings.model_dump_json(), (settings, []))[1].append(index)
        results: dict[int, Layers] = {}
        for settings, indices in groups.values():
            for index, layers in zip(indices, self.runtime.colorize([batch[i] for i in indices], settings)):
                results[index] = layers
        return [results[i] for i in range(len(batch))]


__all__ = ["DiffusionEngine", "DiffusionSettings"]
