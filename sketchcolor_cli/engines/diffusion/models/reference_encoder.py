"""The reference encoder: OpenCLIP ViT-H/14's vision tower, loaded from local files in the
transformers format of laion CLIP-ViT-H-14 (``CLIPVisionModelWithProjection``).

Upstream (``FrozenOpenCLIPImageEmbedder.encode(x, "full")``) resizes the reference (in [-1, 1]) to
224 x 224 (bicubic, ``align_corners=True``, antialiased: non-square references are stretched),
maps it to [0, 1], normalises with OpenAI CLIP's mean and std, runs the tower, applies ``ln_post``
to ALL 257 tokens and the projection, and the switch model drops the CLS token. transformers'
``CLIPVisionModel`` applies ``post_layernorm`` to the pooled CLS token only, so this module applies
``vision_model.post_layernorm`` and ``visual_projection`` to ``last_hidden_state`` itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_clip_vision(path: str | Path, dtype: torch.dtype = torch.float32):
    """A `CLIPVisionModelWithProjection` from a local folder (config.json + safetensors); no hub."""
    from transformers import CLIPVisionModelWithProjection
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"reference encoder {folder}: no config.json there; give the local folder of laion "
            "CLIP-ViT-H-14 in transformers format (config.json + model.safetensors)"
        )
    model = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True, dtype=dtype,
                                                          use_safetensors=True)
    return model.eval().requires_grad_(False)


def preprocess_reference(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> CLIP pixel values [B, 3, size, size]."""
    x = F.interpolate(images, (size, size), mode="bicubic", align_corners=True, antialias=True)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def reference_tokens(clip, images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, N, proj] local tokens (CLS dropped), post-LN and projected."""
    size = clip.config.image_size
    pixels = preprocess_reference(images.to(clip.dtype), size)
    hidden = clip.vision_model(pixel_values=pixels).last_hidden_state
    tokens = clip.visual_projection(clip.vision_model.post_layernorm(hidden))
    return tokens[:, 1:]
