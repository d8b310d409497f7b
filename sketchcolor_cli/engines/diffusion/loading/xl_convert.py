"""The converted folder of an xl/xlv2 checkpoint (what `sketchcolor convert` writes), and its
fast loader.

Layout::

    OUT_DIR/xl_config.json                   the architecture, family and prediction type
    OUT_DIR/unet/ vae/ sketch_encoder/ proj/ config.json + diffusion_pytorch_model.safetensors
    OUT_DIR/reference_net/                   xlv2 only
    OUT_DIR/background_lora.safetensors      xlv2 only: the LoRA factors (``<unet key>.down/.up``)
    OUT_DIR/scheduler/scheduler_config.json
    OUT_DIR/image_encoder/                   optional: CLIP ViT-bigG vision (transformers format)
    OUT_DIR/tagger/model.safetensors         optional: the WD tagger (+ tagger_config.json)

The UNet is stored without the LoRA; both loaders merge it the same way, so a converted folder
gives the same pixels as its single file.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .configs import prediction_from_name
from .convert import WEIGHTS_NAME, load_part_folders
from .xl_configs import CONFIG_NAME, XLConfig, family_from_name
from .xl_single_file import XLKeyError, build_xl_components, load_xl_components

LORA_NAME = "background_lora.safetensors"


def is_xl_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def save_xl_converted(checkpoint: str | Path, out_dir: str | Path, config: XLConfig | None = None,
                      clip: str | Path | None = None, tagger: str | Path | None = None,
                      prediction_type: str | None = None) -> Path:
    from safetensors.torch import save_file

    checkpoint, out = Path(checkpoint), Path(out_dir)
    config = config or XLConfig.for_family(family_from_name(checkpoint.name))  # type: ignore[arg-type]
    parts, factors = load_xl_components(checkpoint, config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    resolved = replace(config, prediction_type=prediction_type or config.prediction_type or prediction_from_name(checkpoint.name))
    for name, module in parts.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        module.save_config(folder)
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / WEIGHTS_NAME),
                  metadata={"format": "pt", "source": checkpoint.name})
    if factors:
        flat = {}
        for key, (down, up) in factors.items():
            flat[f"{key}.down"], flat[f"{key}.up"] = down.contiguous(), up.contiguous()
        save_file(flat, str(out / LORA_NAME), metadata={"source": checkpoint.name})
    from diffusers import DPMSolverMultistepScheduler

    (out / "scheduler").mkdir(exist_ok=True)
    DPMSolverMultistepScheduler.from_config({**config.scheduler, "prediction_type": resolved.prediction_type}).save_config(out / "scheduler")
    if clip is not None:
        from ..models.reference_encoder import load_clip_vision

        load_clip_vision(clip).save_pretrained(out / "image_encoder", safe_serialization=True)
    if tagger is not None:
        from ..models.wd_tagger import load_wd_tagger

        model = load_wd_tagger(tagger, config=config.tagger or None)
        (out / "tagger").mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "tagger" / "model.safetensors"))
        if config.tagger:
            (out / "tagger" / "tagger_config.json").write_text(json.dumps(config.tagger), encoding="utf-8")
    resolved.save(out / CONFIG_NAME)
    return out


def load_xl_converted(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[dict[str, Any], dict, XLConfig]:
    from safetensors.torch import load_file

    folder = Path(folder)
    config = XLConfig.from_file(folder / CONFIG_NAME)
    parts = build_xl_components(config, device="meta")
    load_part_folders(folder, parts, dtype, error=XLKeyError)
    factors: dict = {}
    if config.background_lora_rank:
        lora_file = folder / LORA_NAME
        if not lora_file.is_file():
            raise FileNotFoundError(f"converted model {folder}: {LORA_NAME} is missing; convert again")
        flat = load_file(str(lora_file))
        factors = {key[: -len(".down")]: (flat[key], flat[key[: -len(".down")] + ".up"]) for key in flat if key.endswith(".down")}
    return parts, factors, config
