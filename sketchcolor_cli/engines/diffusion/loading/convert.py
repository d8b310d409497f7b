"""The converted folder: what `sketchcolor convert CKPT OUT_DIR` writes, and its fast loader.

Layout (diffusers-style subfolders, safetensors, configs)::

    OUT_DIR/switch_config.json               the architecture and the prediction type
    OUT_DIR/unet/config.json                 + diffusion_pytorch_model.safetensors (LoRAs inside)
    OUT_DIR/vae/...  OUT_DIR/sketch_encoder/...  OUT_DIR/threshold_embedder/...
    OUT_DIR/cluster_transformer/...          (switch only)
    OUT_DIR/scheduler/scheduler_config.json
    OUT_DIR/image_encoder/                   optional: the CLIP vision tower (transformers format)

Loading builds the parts on the meta device and assigns the saved tensors (strictly): no
conversion, no random initialisation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .configs import SwitchConfig, prediction_from_name
from .single_file import CheckpointKeyError, build_components, load_switch_components

CONFIG_NAME = "switch_config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def is_converted_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def save_converted(
    checkpoint: str | Path,
    out_dir: str | Path,
    config: SwitchConfig | None = None,
    clip: str | Path | None = None,
    prediction_type: str | None = None,
) -> Path:
    """Convert a single-file checkpoint into `out_dir` (created); returns the folder."""
    from safetensors.torch import save_file

    checkpoint, out = Path(checkpoint), Path(out_dir)
    config = config or SwitchConfig.for_checkpoint(checkpoint)
    parts = load_switch_components(checkpoint, config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    resolved = replace(config, prediction_type=prediction_type or config.prediction_type or prediction_from_name(checkpoint.name))
    for name, module in parts.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        module.save_config(folder)
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / WEIGHTS_NAME),
                  metadata={"format": "pt", "source": checkpoint.name})
    scheduler = out / "scheduler"
    scheduler.mkdir(exist_ok=True)
    from diffusers import DPMSolverMultistepScheduler

    DPMSolverMultistepScheduler.from_config({**config.scheduler, "prediction_type": resolved.prediction_type}).save_config(scheduler)
    if clip is not None:
        from ..models.reference_encoder import load_clip_vision

        load_clip_vision(clip).save_pretrained(out / "image_encoder", safe_serialization=True)
    resolved.save(out / CONFIG_NAME)
    return out


def load_part_folders(folder: Path, parts: dict[str, Any], dtype: torch.dtype = torch.float32,
                      error: type[CheckpointKeyError] = CheckpointKeyError) -> None:
    """Fill each part (built on the meta device) from ``folder/<part>/`` strictly: a missing,
    unexpected or differently shaped key is refused with the keys named."""
    from safetensors.torch import load_file

    for name, module in parts.items():
        weights = folder / name / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"converted model {folder}: {name}/{WEIGHTS_NAME} is missing; convert again")
        state = {k: v.to(dtype) for k, v in load_file(str(weights)).items()}
        expected = module.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        mismatched = [f"{k} {tuple(state[k].shape)} (model: {tuple(expected[k].shape)})"
                      for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
        if missing or unexpected or mismatched:
            raise error(weights, [f"{name}.{k}" for k in missing], [f"{name}.{k}" for k in unexpected], mismatched)
        module.load_state_dict(state, strict=True, assign=True)
        module.eval().requires_grad_(False)


def load_converted(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[dict[str, Any], SwitchConfig]:
    folder = Path(folder)
    config = SwitchConfig.from_file(folder / CONFIG_NAME)
    parts = build_components(config, device="meta")
    load_part_folders(folder, parts, dtype)
    return parts, config
