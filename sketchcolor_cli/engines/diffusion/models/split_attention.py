"""Split cross-attention of the switch model, as diffusers attention processors.

Each UNet cross-attention (``attn2``) sees a context made of consecutive token segments: one or more
foreground segments (the reference's tokens) and a last background segment (the background tokens).
With a sketch mask, the processor runs one attention pass per segment:

* the background pass uses the background LoRA on ``to_q``, ``to_k`` and ``to_v`` (when
  ``use_bg_lora``), times ``bg_strength``;
* each foreground pass uses the foreground LoRA (when ``use_fg_lora``), times ``fg_strength``;
* ``fg = fg * (1 - merge_scale) + bg * merge_scale``, and each query takes ``fg`` where the sketch
  mask, resized bicubically (no antialias, no clamp) to this UNet level, is ``> mask_threshold``
  (strictly), else ``bg``.

The reference strength multiplies the attention output before ``to_out`` (the bias is not scaled).
Without a mask it is plain cross-attention over the whole context, no LoRA (upstream's behaviour
when neither foreground nor background enhance is on). LoRAs are ``W x + up(down(x))`` with no
alpha or rank scaling, as published. Attention is ``torch.nn.functional.scaled_dot_product_attention``.

The per-call inputs travel in one `SplitAttention` object through the UNet's
``cross_attention_kwargs={"split": ...}``; processors are set by name with ``set_attn_processor``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn


@dataclass
class SplitAttention:
    """What one UNet evaluation's cross-attentions need (all batch items share the layout)."""

    # Sketch mask at latent size, [B, G, h, w] (one channel per foreground segment), or None for
    # plain cross-attention over the whole context.
    mask: torch.Tensor | None = None
    # Token counts of the context's segments: G foreground segments, then the background one.
    segments: list[int] = field(default_factory=list)
    reference_strength: float | list[float] = 1.0  # one value, or one per cross-attention in UNet order
    fg_strength: float = 1.0
    bg_strength: float = 1.0
    merge_scale: float = 0.0
    mask_threshold: float = 0.05
    use_fg_lora: bool = False
    use_bg_lora: bool = True


class SplitLoRA(nn.Module):
    """Foreground and background low-rank updates of one projection (keys as upstream names them)."""

    def __init__(self, in_features: int, out_features: int, fg_rank: int, bg_rank: int):
        super().__init__()
        self.lora_down_fg = nn.Linear(in_features, fg_rank, bias=False)
        self.lora_up_fg = nn.Linear(fg_rank, out_features, bias=False)
        self.lora_down_bg = nn.Linear(in_features, bg_rank, bias=False)
        self.lora_up_bg = nn.Linear(bg_rank, out_features, bias=False)
        nn.init.zeros_(self.lora_up_fg.weight)
        nn.init.zeros_(self.lora_up_bg.weight)

    def delta(self, x: torch.Tensor, which: str) -> torch.Tensor:
        if which == "fg":
            return self.lora_up_fg(self.lora_down_fg(x))
        return self.lora_up_bg(self.lora_down_bg(x))


def lora_ranks(in_features: int, out_features: int, fg_rank: int | float, bg_rank: int | float) -> tuple[int, int]:
    """Upstream's rule: a float rank is that share of min(in, out) features, an int is a rank."""
    smallest = min(in_features, out_features)
    fg = int(fg_rank * smallest) if isinstance(fg_rank, float) else int(fg_rank)
    bg = int(bg_rank * smallest) if isinstance(bg_rank, float) else int(bg_rank)
    return fg, bg


def _attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    b = q.shape[0]
    head_dim = k.shape[-1] // attn.heads
    q, k, v = (t.view(b, -1, attn.heads, head_dim).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim)


class SelfAttnProcessor(AttnProcessor2_0):
    """Diffusers' SDPA processor for ``attn1``; accepts (and ignores) the ``split`` argument that
    the transformer blocks pass to both of their attentions."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, split=None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class SplitCrossAttnProcessor(nn.Module):
    """Processor for one ``attn2``; owns that layer's LoRA weights (``to_q``, ``to_k``, ``to_v``)."""

    def __init__(self, query_dim: int, context_dim: int, inner_dim: int, fg_rank: int | float | None,
                 bg_rank: int | float | None, index: int = 0):
        super().__init__()
        self.index = index  # position among the UNet's cross-attentions (for per-layer strengths)
        self.has_lora = fg_rank is not None and bg_rank is not None  # the `mult` models have none
        if self.has_lora:
            self.to_q = SplitLoRA(query_dim, inner_dim, *lora_ranks(query_dim, inner_dim, fg_rank, bg_rank))
            self.to_k = SplitLoRA(context_dim, inner_dim, *lora_ranks(context_dim, inner_dim, fg_rank, bg_rank))
            self.to_v = SplitLoRA(context_dim, inner_dim, *lora_ranks(context_dim, inner_dim, fg_rank, bg_rank))

    def _project(self, attn: Attention, x: torch.Tensor, context: torch.Tensor, lora: str | None):
        q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
        if lora is not None and self.has_lora:
            q = q + self.to_q.delta(x, lora)
            k = k + self.to_k.delta(context, lora)
            v = v + self.to_v.delta(context, lora)
        return q, k, v

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        split: SplitAttention | None = None,
    ) -> torch.Tensor:
        x = hidden_states
        context = x if encoder_hidden_states is None else encoder_hidden_states
        strength = 1.0
        if split is not None:
            strength = split.reference_strength
            if isinstance(strength, (list, tuple)):
                strength = strength[self.index]
        if split is None or split.mask is None:
            out = _attend(attn, *self._project(attn, x, context, None)) * strength
        else:
            out = self._split(attn, x, context, split, strength)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    def _split(self, attn: Attention, x: torch.Tensor, context: torch.Tensor, split: SplitAttention,
               strength: float) -> torch.Tensor:
        mask = split.mask
        b, tokens, _ = x.shape
        latent_h, latent_w = mask.shape[-2:]
        # This level's size relative to the latent (1, 1/2, 1/4, 1/8): the mask is resized with the
        # same scale factor upstream uses, so the bicubic weights are the same.
        scale = 2.0 ** round(math.log2(math.sqrt(tokens / (latent_h * latent_w))))
        level_mask = F.interpolate(mask.to(x.dtype), scale_factor=scale, mode="bicubic")
        level_mask = level_mask.flatten(2).transpose(1, 2)  # [B, tokens, G]
        pieces = torch.split(context, split.segments, dim=1)
        fg_contexts, bg_context = pieces[:-1], pieces[-1]

        bg = _attend(attn, *self._project(attn, x, bg_context, "bg" if split.use_bg_lora else None))
        bg = bg * strength * split.bg_strength
        out = bg
        for group, fg_context in enumerate(fg_contexts):
            fg = _attend(attn, *self._project(attn, x, fg_context, "fg" if split.use_fg_lora else None))
            fg = fg * strength * split.fg_strength
            fg = fg * (1 - split.merge_scale) + bg * split.merge_scale
            out = torch.where(level_mask[:, :, group : group + 1] > split.mask_threshold, fg, out)
        return out


def install_split_attention(unet, fg_rank: int | float | None = 4, bg_rank: int | float | None = 0.5) -> None:
    """Set, by name, SDPA processors on every ``attn1`` and split processors (with fresh LoRA
    weights, zero ``up``) on every ``attn2`` of a diffusers UNet."""
    processors = {}
    modules = dict(unet.named_modules())
    cross_index = 0
    # Number the cross-attentions as upstream does: encoder, middle, decoder.
    part_order = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    names = sorted(unet.attn_processors, key=lambda n: part_order.get(n.split(".")[0], 3))
    for name in names:
        module = modules[name.removesuffix(".processor")]
        if name.endswith("attn2.processor"):
            processors[name] = SplitCrossAttnProcessor(
                query_dim=module.to_q.in_features,
                context_dim=module.to_k.in_features,
                inner_dim=module.to_q.out_features,
                fg_rank=fg_rank,
                bg_rank=bg_rank,
                index=cross_index,
            )
            cross_index += 1
        else:
            processors[name] = SelfAttnProcessor()
    unet.set_attn_processor(processors)
