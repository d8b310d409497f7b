"""The attention of the xl/xlv2 UNets as diffusers attention processors (paper "Towards
High-resolution and Disentangled Reference-based Sketch Colorization").

Cross-attention (every ``attn2``) sees the context ``[fg tokens, bg tokens]`` (two halves of the
same length) when the split is on, and the sketch mask, at latent size, resized bicubically
(no antialias, no clamp) to this UNet level, routes each query:

* ``"bias"`` (xl, merge scale 0): ONE attention call over the whole context with an additive bias
  that hides the bg half from queries whose mask value is ``> threshold`` and the fg half from the
  others; the output times the reference strength. fg/bg strengths do not apply (as published).
* ``"two_pass"`` (xl, merge scale > 0): a bg pass and a fg pass, times the bg/fg strengths,
  ``fg = fg (1 - merge) + bg merge``, ``where(mask < threshold, bg, fg)`` (ties go to fg, unlike the
  bias path: upstream's two paths differ there).
* ``"soft"`` (xlv2): the same two passes blended softly, ``fg m + bg (1 - m)``, no threshold.

Reference attention (xlv2's background plugin): the ReferenceNet's decoder self-attentions store
their input (``norm1(x)``) in a bank (`BankWriterProcessor`); the matching decoder self-attention of
the denoising UNet attends over ``cat(x, bank)`` with the same bias at a fixed threshold of 0.05,
so foreground queries see the frame itself and background queries see only the bank
(`ReferenceSelfAttnProcessor`). With no bank it is plain self-attention.

Everything per call travels in one `XLAttention` object through
``cross_attention_kwargs={"split": ...}``. Attention is ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

BANK_THRESHOLD = 0.05  # upstream's self-attention bias threshold, never changed by its UI

SplitMode = Literal["bias", "two_pass", "soft"]


@dataclass
class XLAttention:
    """What one UNet evaluation's attention layers need (shared by all batch items)."""

    # Sketch mask at latent size [B, 1, h, w] in [0, 1], or None: plain attention over the context.
    mask: torch.Tensor | None = None
    mode: SplitMode = "bias"
    reference_strength: float | list[float] = 1.0  # one value, or one per transformer block (70 in SDXL)
    fg_strength: float = 1.0
    bg_strength: float = 1.0
    merge_scale: float = 0.0
    mask_threshold: float = 0.05
    # ReferenceNet banks, one per decoder transformer block, [B, N, C] each (None: no plugin).
    banks: list[torch.Tensor] | None = None
    # Where a writer stores its bank (the ReferenceNet's pass fills it).
    bank_store: dict[int, torch.Tensor] = field(default_factory=dict)


def level_mask(mask: torch.Tensor, tokens: int, dtype: torch.dtype) -> torch.Tensor:
    """The latent-size mask [B, 1, h, w] at this level's size as [B, tokens, 1]: bicubic with the
    level's scale factor (0.5, 0.25, ...), no antialias, no clamp, as upstream resizes it."""
    h, w = mask.shape[-2:]
    scale = 2.0 ** round(math.log2(math.sqrt(tokens / (h * w))))
    resized = mask if scale == 1.0 else F.interpolate(mask.float(), scale_factor=scale, mode="bicubic")
    resized = resized.flatten(2).transpose(1, 2)
    if resized.shape[1] != tokens:
        raise ValueError(f"sketch mask {h}x{w} does not match an attention level of {tokens} tokens")
    return resized.to(dtype)


def split_bias(mask_values: torch.Tensor, threshold: float, first: int, second: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive bias [B, 1, Nq, first + second]: queries with mask > threshold see only the first
    `first` keys, the others only the last `second` keys (-inf hides)."""
    inside = mask_values > threshold  # [B, Nq, 1]
    hidden = torch.tensor(float("-inf"), dtype=dtype, device=mask_values.device)
    zero = torch.zeros((), dtype=dtype, device=mask_values.device)
    fg_part = torch.where(inside, zero, hidden).expand(-1, -1, first)
    bg_part = torch.where(inside, hidden, zero).expand(-1, -1, second)
    return torch.cat([fg_part, bg_part], dim=2)[:, None]


def attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over heads; [B, N, heads * d] in and out."""
    b = q.shape[0]
    head_dim = q.shape[-1] // attn.heads
    q, k, v = (t.view(b, -1, attn.heads, head_dim).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim)


def _strength(split: XLAttention | None, index: int) -> float:
    if split is None:
        return 1.0
    value = split.reference_strength
    return float(value[index]) if isinstance(value, (list, tuple)) else float(value)


def _out(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    return attn.to_out[1](attn.to_out[0](x))


class MaskBiasCrossAttnProcessor:
    """Processor of one ``attn2`` of the xl/xlv2 UNet. `index`: the transformer block's position in
    the UNet (encoder, middle, decoder order), for per-block reference strengths."""

    def __init__(self, index: int = 0):
        self.index = index

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 split: XLAttention | None = None) -> torch.Tensor:
        x = hidden_states
        context = x if encoder_hidden_states is None else encoder_hidden_states
        strength = _strength(split, self.index)
        if split is None or split.mask is None:
            out = attend(attn, attn.to_q(x), attn.to_k(context), attn.to_v(context)) * strength
            return _out(attn, out)
        half = context.shape[1] // 2
        if context.shape[1] != 2 * half:
            raise ValueError(f"split cross-attention needs a context of two equal halves, got {context.shape[1]} tokens")
        m = level_mask(split.mask, x.shape[1], x.dtype)
        if split.mode == "bias":
            bias = split_bias(m, split.mask_threshold, half, half, x.dtype)
            out = attend(attn, attn.to_q(x), attn.to_k(context), attn.to_v(context), bias) * strength
            return _out(attn, out)
        q = attn.to_q(x)
        fg_context, bg_context = context[:, :half], context[:, half:]
        bg = attend(attn, q, attn.to_k(bg_context), attn.to_v(bg_context)) * strength * split.bg_strength
        fg = attend(attn, q, attn.to_k(fg_context), attn.to_v(fg_context)) * strength * split.fg_strength
        fg = fg * (1 - split.merge_scale) + bg * split.merge_scale
        if split.mode == "two_pass":
            out = torch.where(m < split.mask_threshold, bg, fg)
        else:
            out = fg * m + bg * (1 - m)
        return _out(attn, out)


class ReferenceSelfAttnProcessor:
    """Processor of one decoder ``attn1`` of the xlv2 denoising UNet: self-attention, or with a
    bank, attention over ``cat(x, bank)`` routed by the sketch mask (background queries see only
    the bank). `bank_index`: the block's position among the decoder transformer blocks."""

    def __init__(self, bank_index: int):
        self.bank_index = bank_index

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 split: XLAttention | None = None) -> torch.Tensor:
        x = hidden_states
        bank = None if split is None or split.banks is None else split.banks[self.bank_index]
        if bank is None:
            return _out(attn, attend(attn, attn.to_q(x), attn.to_k(x), attn.to_v(x)))
        if bank.shape[0] != x.shape[0]:  # one bank per frame, the same for every guidance branch
            bank = bank.repeat(x.shape[0] // bank.shape[0], 1, 1)
        context = torch.cat([x, bank.to(x.dtype)], dim=1)
        bias = None
        if split.mask is not None:
            m = level_mask(split.mask, x.shape[1], x.dtype)
            bias = split_bias(m, BANK_THRESHOLD, x.shape[1], bank.shape[1], x.dtype)
        return _out(attn, attend(attn, attn.to_q(x), attn.to_k(context), attn.to_v(context), bias))


class BankWriterProcessor:
    """Processor of one decoder ``attn1`` of the ReferenceNet: plain self-attention that also
    stores its input (the block's ``norm1(x)``) as bank `bank_index` in ``split.bank_store``."""

    def __init__(self, bank_index: int):
        self.bank_index = bank_index

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 split: XLAttention | None = None) -> torch.Tensor:
        x = hidden_states
        if split is not None:
            split.bank_store[self.bank_index] = x
        return _out(attn, attend(attn, attn.to_q(x), attn.to_k(x), attn.to_v(x)))


class PlainSelfAttnProcessor:
    """``attn1`` outside the decoder: plain self-attention (accepts the ``split`` argument)."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 split: XLAttention | None = None) -> torch.Tensor:
        x = hidden_states
        return _out(attn, attend(attn, attn.to_q(x), attn.to_k(x), attn.to_v(x)))


def transformer_block_names(unet) -> list[str]:
    """The UNet's transformer blocks in upstream's order (encoder, middle, decoder)."""
    order = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    names = [n for n, m in unet.named_modules() if type(m).__name__ == "BasicTransformerBlock"]
    return sorted(names, key=lambda n: order.get(n.split(".")[0], 3))  # stable: module order within each part


def install_xl_attention(unet, reference_bank: bool) -> None:
    """Set the processors, by name, on a diffusers SDXL-shaped UNet: split cross-attention on every
    ``attn2``; on the decoder's ``attn1`` the reference-attention processor when `reference_bank`."""
    processors = {}
    decoder_index = 0
    for index, name in enumerate(transformer_block_names(unet)):
        block = unet.get_submodule(name)
        in_decoder = name.startswith("up_blocks")
        if in_decoder and reference_bank:
            processors[f"{name}.attn1.processor"] = ReferenceSelfAttnProcessor(decoder_index)
        else:
            processors[f"{name}.attn1.processor"] = PlainSelfAttnProcessor()
        if in_decoder:
            decoder_index += 1
        if block.attn2 is not None:
            processors[f"{name}.attn2.processor"] = MaskBiasCrossAttnProcessor(index)
    unet.set_attn_processor(processors)


def install_bank_writers(reference_net) -> int:
    """Bank writers on the ReferenceNet's decoder ``attn1``; plain self-attention elsewhere.
    Returns the number of banks it writes."""
    processors = {}
    decoder_index = 0
    for name in transformer_block_names(reference_net):
        if name.startswith("up_blocks"):
            processors[f"{name}.attn1.processor"] = BankWriterProcessor(decoder_index)
            decoder_index += 1
        else:
            processors[f"{name}.attn1.processor"] = PlainSelfAttnProcessor()
    reference_net.set_attn_processor(processors)
    return decoder_index
