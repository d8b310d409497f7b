"""The xl reference encoder: CLIP ViT-bigG-14's vision tower (transformers
``CLIPVisionModelWithProjection``, laion CLIP-ViT-bigG-14-laion2B-39B-b160k) BESIDE the WD tagger,
fused by `ClusterConcat` into a 196 x 2048 context per reference.

CLIP: the reference in [-1, 1] resized to 224 (bicubic, align_corners, antialias), OpenAI CLIP
normalisation, ``post_layernorm`` and ``visual_projection`` applied to ALL 257 tokens (257 x 1280).
Tagger: see `wd_tagger` (196 x 1024).
"""

from __future__ import annotations

import torch

from .cluster_concat import ClusterConcat
from .reference_encoder import preprocess_reference
from .wd_tagger import WDTagger, tagger_tokens


@torch.no_grad()
def clip_all_tokens(clip, images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B, 257, proj] (CLS first), post-LN and projected."""
    pixels = preprocess_reference(images.to(clip.dtype), clip.config.image_size)
    hidden = clip.vision_model(pixel_values=pixels).last_hidden_state
    return clip.visual_projection(clip.vision_model.post_layernorm(hidden))


@torch.no_grad()
def xl_reference_context(clip, tagger: WDTagger, proj: ClusterConcat, images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] references in [-1, 1] -> [B, 196, 2048] cross-attention context."""
    clip_tokens = clip_all_tokens(clip, images)
    tags = tagger_tokens(tagger, images)
    return proj(clip_tokens.to(proj.dtype), tags.to(proj.dtype))
