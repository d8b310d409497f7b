"""The training recipe (``sketchcolor train CONFIG.yaml``): versioned, validated, every unknown key
refused with its line. Paths are relative to the recipe file. No torch here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sketchcolor_cli.errors import ManifestError, Problem

RECIPE_SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _path(description: str, default: Any = ...) -> Any:
    return Field(default, description=description, json_schema_extra={"path": True})


class ModelFiles(_Strict):
    family: Literal["switch", "xl", "xlv2"] = Field(
        "switch", description="The architecture: switch (SD2.1, paper a), xl or xlv2 (SDXL, paper b; xlv2 trains "
        "its base UNet with the background parts frozen).")
    checkpoint: str = _path("The base model: a local single-file checkpoint (switch-eps.safetensors) or a folder "
                            "written by `sketchcolor convert`.")
    config: str | None = _path("Architecture config (switch_config.json) for a checkpoint of another shape.", None)
    clip: str | None = _path("The reference encoder's local folder (CLIP-ViT-H-14, transformers format); "
                             "not needed when the converted folder holds image_encoder/.", None)
    tagger: str | None = _path("xl/xlv2: the WD tagger's model.safetensors (or its folder); not needed when the "
                               "converted folder holds tagger/.", None)
    prediction: Literal["auto", "epsilon", "v_prediction"] = Field(
        "auto", description="What the UNet predicts; auto: eps when the file name says so, else v (as upstream).")


class LoRASettings(_Strict):
    rank: int = Field(16, ge=1, le=1024, description="Rank of each adapter (train: lora).")
    alpha: float | None = Field(None, gt=0, description="Scale numerator: updates are times alpha/rank (default: rank).")
    attentions: list[Literal["attn1", "attn2"]] = Field(
        default_factory=lambda: ["attn1", "attn2"], description="Which attentions get adapters on to_q/k/v/out.")


class Schedule(_Strict):
    steps: int = Field(ge=1, description="Optimizer steps to train.")
    batch_size: int = Field(4, ge=1, description="Samples per process per micro-batch (one bucket size per batch).")
    gradient_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(1e-5, gt=0, description="AdamW learning rate (upstream: 1e-5 xl, 1e-6 switch).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (upstream: plain AdamW, 0.01 default).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up (upstream: none).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm; null: none.")
    seed: int = Field(0, description="Seeds data order, noise, timesteps, thresholds and dropout.")


class Losses(_Strict):
    gram_weight: float = Field(1.0, ge=0, description="Weight of the Gram regularization (published: 1.0).")
    gram_start_step: int | None = Field(
        None, ge=0, description="Optimizer step from which the mismatched branch and the Gram term run "
        "(published: from epoch 2); null: never (plain diffusion loss, as the switch paper trains).")
    gram_blocks: Literal["auto", "published"] | list[str] = Field(
        "auto", description="Hooked transformer blocks: published (the 23rd and 63rd, SDXL-shaped UNets), auto "
        "(the published rule at the lowest-resolution attention level; equal to published on SDXL), or module paths.")
    reference_dropout: float = Field(0.0, ge=0, le=1, description="Share of samples trained with an all-zero "
                                     "reference context (for reference guidance; upstream xl: 0.2).")
    sketch_dropout: float = Field(0.0, ge=0, le=1, description="Share of samples trained with a blank sketch "
                                  "(for sketch guidance; upstream xl: 0.1).")
    threshold_min: float = Field(0.05, ge=0, le=1, description="Mask thresholds are drawn uniformly per sample from "
                                 "[threshold_min, threshold_max] (switch, published 0.05-0.95).")
    threshold_max: float = Field(0.95, ge=0, le=1)
    xl_split: bool = Field(False, description="xl/xlv2: train with the split cross-attention (context [fg, bg], "
                           "routed by the sketch mask as at inference with background_enhance); the published "
                           "base training (stage 0) runs without it.")

    @model_validator(mode="after")
    def _range(self) -> "Losses":
        if self.threshold_min > self.threshold_max:
            raise ValueError(f"threshold_min {self.threshold_min} is above threshold_max {self.threshold_max}")
        return self


class EMASettings(_Strict):
    enabled: bool = Field(True, description="Keep an exponential moving average of the trained weights.")
    decay: float = Field(0.999, gt=0, lt=1, description="EMA decay (diffusers EMAModel, with its warm-up).")
    for_output: bool = Field(True, description="Write the EMA weights (not the raw ones) to the output and use "
                             "them for validation images.")


class Checkpoints(_Strict):
    every: int = Field(500, ge=1, description="Save a resumable checkpoint every N optimizer steps.")
    keep: int = Field(3, ge=1, description="Checkpoints kept (oldest removed).")


class Validation(_Strict):
    every: int = Field(500, ge=1, description="Validation images and loss every N optimizer steps (and at the end).")
    samples: int = Field(2, ge=0, description="Held-out samples shown (the dataset's first ones; fixed).")
    steps: int = Field(20, ge=1, description="Denoising steps of the validation images.")
    sampler: Literal["dpmpp_2m", "ddim", "euler_a", "unipc"] = "dpmpp_2m"
    reference_guidance: float = Field(4.0, ge=0, description="As the engine's reference_guidance.")
    seed: int = Field(0, description="Noise seed of the validation images (the same every time).")


class Recipe(_Strict):
    """What `sketchcolor train` reads."""

    schema_version: Literal[1] = Field(description="Recipe schema version; this sketchcolor reads 1.")
    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$", description="Run name (file names).")
    model: ModelFiles
    dataset: str = _path("Dataset folder written by `sketchcolor dataset build`.")
    train: Literal["switch", "lora", "full"] = Field(
        "switch", description="switch: the fg/bg LoRAs, threshold embedder and ClusterTransformer (paper a); lora: "
        "new low-rank adapters on the UNet's attentions only (cheap); full: the whole UNet and sketch encoder "
        "(+ the switch parts), as paper b trains.")
    lora: LoRASettings = Field(default_factory=LoRASettings)
    schedule: Schedule
    loss: Losses = Field(default_factory=Losses)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Mixed precision; auto: bf16 on CUDA, fp32 on the CPU.")
    gradient_checkpointing: bool = Field(True, description="Recompute UNet activations in backward (less memory).")
    ema: EMASettings = Field(default_factory=EMASettings)
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    validation: Validation = Field(default_factory=Validation)
    workers: int = Field(2, ge=0, description="DataLoader worker processes per GPU.")
    log_dir: str = _path("Folder for checkpoints, metrics.jsonl, validation images (and TensorBoard when installed).")
    output: str | None = _path("The trained file (.safetensors); default: LOG_DIR/NAME.safetensors.", None)

    def resolved(self, base: Path) -> "Recipe":
        """Paths made absolute against `base` (the recipe's folder)."""
        def fix(value: str | None) -> str | None:
            if not value:
                return value
            path = Path(value).expanduser()
            return str(path if path.is_absolute() else (base / path).resolve())

        model = self.model.model_copy(update={k: fix(getattr(self.model, k)) for k in ("checkpoint", "config", "clip", "tagger")})
        output = fix(self.output) or str(Path(fix(self.log_dir)) / f"{self.name}.safetensors")
        return self.model_copy(update={"model": model, "dataset": fix(self.dataset), "log_dir": fix(self.log_dir),
                                       "output": output})


def load_recipe(path: Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read, validate (problems with their lines) and resolve a recipe file."""
    from sketchcolor_cli.manifest.resolve import _nest
    from sketchcolor_cli.manifest.yamlfile import load_yaml

    path = Path(path)
    if not path.is_file():
        raise ManifestError([Problem("no such recipe file", file=path, hint="give the path of a training recipe "
                                     "(YAML); start from examples/train-switch.yaml")])
    document = load_yaml(path, what="recipe")
    data = document.data if isinstance(document.data, dict) else {}
    if overrides:
        data = _deep_merge(data, _nest(overrides))
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            loc = tuple(item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            hint = None
            if item["type"] == "extra_forbidden":
                message, hint = f"unknown setting {loc[-1]!r}", "check its spelling"
            elif item["type"] == "missing":
                hint = "add it"
            problems.append(Problem(message, file=path, line=document.line_of(loc) or document.line_of(loc[:-1]),
                                    field=".".join(str(p) for p in loc), hint=hint))
        raise ManifestError(problems) from None
    return recipe.resolved(path.parent.resolve())


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged
