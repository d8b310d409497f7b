"""Tiny random-weight switch models written in the published single-file layout, for tests."""

from __future__ import annotations

from pathlib import Path

import torch


def write_tiny_model(folder: Path, seed: int = 0, family: str = "switch") -> dict[str, Path]:
    """switch-eps-tiny.safetensors (LDM keys), switch_config.json and clip/ in `folder`."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionModelWithProjection

    from sketchcolor_cli.engines.diffusion.loading.single_file import build_components, to_ldm_state_dict
    from sketchcolor_cli.engines.diffusion.loading.tiny import tiny_clip_config, tiny_switch_config

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_switch_config(family)
    parts = build_components(config)
    for module in parts.values():
        for name, tensor in module.named_parameters():
            # Zero-initialised layers (LoRA up, zero convs) get weights too, so every path counts;
            # the cross-attention values a little more, so that the reference visibly matters.
            tensor.data.normal_(0.0, 0.3 if "attn2.to_v" in name or "attn2.to_out" in name else 0.05)
    checkpoint = folder / f"{family}-eps-tiny.safetensors"
    state = to_ldm_state_dict(parts, config)
    state["betas"] = torch.linspace(0.00085, 0.012, 1000)  # a schedule buffer, ignored by the loader
    save_file(state, str(checkpoint))
    config.save(folder / "switch_config.json")
    clip = CLIPVisionModelWithProjection(tiny_clip_config())
    clip.save_pretrained(folder / "clip")
    return {"checkpoint": checkpoint, "config": folder / "switch_config.json", "clip": folder / "clip"}
