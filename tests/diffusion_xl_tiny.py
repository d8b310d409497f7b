"""Tiny random-weight xl/xlv2 models written in the published single-file layout, with tiny CLIP
and WD-tagger files, for tests."""

from __future__ import annotations

from pathlib import Path

import torch


def write_tiny_xl_model(folder: Path, family: str = "xl", seed: int = 0) -> dict[str, Path]:
    """sdxl-tiny.safetensors or xlv2-tiny.safetensors (LDM keys, LoRA keys for xlv2),
    xl_config.json, clip/ and tagger/ in `folder`."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionModelWithProjection

    from sketchcolor_cli.engines.diffusion.loading.tiny import tiny_xl_clip_config, tiny_xl_config
    from sketchcolor_cli.engines.diffusion.loading.xl_single_file import (
        build_xl_components,
        random_background_lora,
        xl_to_ldm_state_dict,
    )
    from sketchcolor_cli.engines.diffusion.models.wd_tagger import WDTagger

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_xl_config(family)
    parts = build_xl_components(config)
    for module in parts.values():
        for name, tensor in module.named_parameters():
            # Zero-initialised layers get weights too, so every path counts; norms keep a gain near
            # 1; the attention a little more, so the reference and the bank visibly matter.
            if tensor.ndim == 1 and "norm" in name and name.endswith("weight"):
                tensor.data = 1.0 + 0.1 * torch.randn_like(tensor)
            else:
                strong = any(k in name for k in ("attn2.to_", "attn1.to_v", "attn1.to_out", "attn.to_"))
                tensor.data.normal_(0.0, 0.3 if strong else 0.05)
    factors = None
    if config.background_lora_rank:
        factors = random_background_lora(parts["unet"], config.background_lora_rank, torch.Generator().manual_seed(seed + 1), 0.2)
    state = xl_to_ldm_state_dict(parts, config, factors)
    state["betas"] = torch.linspace(0.00085, 0.012, 1000)  # a schedule buffer, ignored by the loader
    if family == "xlv2":  # upstream's unused foreground input conv, accepted and ignored
        state["model.diffusion_model.conv_fg.weight"] = torch.zeros(32, 4, 3, 3)
        state["model.diffusion_model.conv_fg.bias"] = torch.zeros(32)
    name = "xlv2-tiny.safetensors" if family == "xlv2" else "sdxl-tiny.safetensors"
    save_file(state, str(folder / name))
    config.save(folder / "xl_config.json")
    CLIPVisionModelWithProjection(tiny_xl_clip_config()).save_pretrained(folder / "clip")
    tagger = WDTagger(**config.tagger)
    for tensor in tagger.parameters():
        tensor.data.normal_(0.0, 0.2)
    (folder / "tagger").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in tagger.state_dict().items()}, str(folder / "tagger" / "model.safetensors"))
    return {"checkpoint": folder / name, "config": folder / "xl_config.json", "clip": folder / "clip",
            "tagger": folder / "tagger" / "model.safetensors"}
