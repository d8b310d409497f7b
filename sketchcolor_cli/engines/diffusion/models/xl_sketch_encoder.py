"""The xl sketch encoder (upstream ``refnet/modules/encoder.py: MultiScaleAttentionEncoder``).

A stride-8 convolutional stem (ending in a zero-initialised conv) gives the 1/8 map; three
``SiLU -> conv`` steps give 1/16, 1/32 and 1/32 (channels ``model_channels * channel_mult``).
Every map, and a global token (the mean of the last map), is projected by a 1x1 conv to the
attention width (the last level's channels, 1280), flattened, and the tokens are concatenated
coarse to fine: ``[global, 1/32 (last), 1/32, 1/16, 1/8]``. ONE multi-scale attention layer with a
residual then runs over them: block-causal over scales (each scale's queries see its own and all
coarser scales' keys), RMSNorm over the full width on q and k, 2D rotary position embeddings per
scale (the global token has none), no norm before it. Each map's tokens go back through a
zero-initialised 1x1 conv to the level's channels; the four maps (1/8, 1/16, 1/32, 1/32) are
ADDED after UNet input blocks 0, 3, 6 and 8 (see `unet_xl`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .sketch_encoder import STEM_STRIDES, STEM_WIDTHS


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_2d(x: torch.Tensor, height: int, width: int, theta: float = 10000.0) -> torch.Tensor:
    """2D rotary embedding of [B, h*w, heads, d] tokens (row-major grid): the first half of each
    head's pairs rotate with the row, the second half with the column; in float64 as upstream."""
    b, n, heads, d = x.shape
    quarter = d // 4
    freqs = 1.0 / torch.pow(theta, torch.arange(0, d // 2, 2, dtype=torch.float64, device=x.device) / (d // 2))
    rows = torch.outer(torch.arange(height, dtype=torch.float64, device=x.device), freqs)  # [h, d/4]
    cols = torch.outer(torch.arange(width, dtype=torch.float64, device=x.device), freqs)  # [w, d/4]
    angles = torch.cat([rows[:, None, :].expand(height, width, quarter), cols[None, :, :].expand(height, width, quarter)], -1)
    rotation = torch.polar(torch.ones_like(angles), angles).reshape(1, n, 1, d // 2)
    pairs = torch.view_as_complex(x.float().reshape(b, n, heads, d // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(3).to(x.dtype)


class MultiScaleCausalAttention(nn.Module):
    """Self-attention over the concatenated scales, block-causal, QK-RMSNorm, 2D RoPE."""

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        self.heads = dim // head_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim))
        self.q_norm = RMSNorm(dim)
        self.k_norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
        """x: [B, 1 + sum(h*w), dim], the global token then each grid's tokens."""
        b, n, dim = x.shape
        shape = (b, n, self.heads, dim // self.heads)
        q = self.q_norm(self.to_q(x)).view(shape)
        k = self.k_norm(self.to_k(x)).view(shape)
        v = self.to_v(x).view(shape)
        q_parts, k_parts, start = [q[:, :1]], [k[:, :1]], 1
        for h, w in grids:
            q_parts.append(rope_2d(q[:, start : start + h * w], h, w))
            k_parts.append(rope_2d(k[:, start : start + h * w], h, w))
            start += h * w
        q, k = torch.cat(q_parts, 1), torch.cat(k_parts, 1)
        # Block-causal: the first block is the global token with the coarsest grid.
        outputs, start = [], 0
        for i, (h, w) in enumerate(grids):
            end = start + h * w + (1 if i == 0 else 0)
            qs, ks, vs = (t.transpose(1, 2) for t in (q[:, start:end], k[:, :end], v[:, :end]))
            outputs.append(F.scaled_dot_product_attention(qs, ks, vs).transpose(1, 2))
            start = end
        out = torch.cat(outputs, 1).reshape(b, n, dim)
        return self.to_out(out)


class MultiScaleAttentionEncoder(ModelMixin, ConfigMixin):
    """Sketch [B, 3, H, W] (inverted, in [-1, 1]) -> 4 feature maps for the xl UNet."""

    @register_to_config
    def __init__(self, in_channels: int = 3, model_channels: int = 320, channel_mult: tuple[int, ...] = (1, 2, 4),
                 head_dim: int = 128):
        super().__init__()
        widths = [model_channels * m for m in channel_mult]
        attention_width = widths[-1]
        stem: list[nn.Module] = []
        previous = in_channels
        for width, stride in zip(STEM_WIDTHS, STEM_STRIDES):
            stem += [nn.Conv2d(previous, width, 3, stride=stride, padding=1), nn.SiLU()]
            previous = width
        stem.append(nn.Conv2d(previous, widths[0], 3, padding=1))
        self.stem = nn.Sequential(*stem)  # indices match upstream's `model.N`
        self.proj_ins = nn.ModuleList([nn.Conv2d(widths[0], attention_width, 1)])
        self.proj_outs = nn.ModuleList([nn.Conv2d(attention_width, widths[0], 1)])
        self.downsample_layers = nn.ModuleList()
        previous = widths[0]
        for i, width in enumerate(widths):
            stride = 2 if i != len(widths) - 1 else 1
            self.downsample_layers.append(nn.Sequential(nn.SiLU(), nn.Conv2d(previous, width, 3, stride=stride, padding=1)))
            self.proj_ins.append(nn.Conv2d(width, attention_width, 1))
            self.proj_outs.append(nn.Conv2d(attention_width, width, 1))
            previous = width
        self.proj_ins.append(nn.Conv2d(attention_width, attention_width, 1))  # the global token
        self.attention = MultiScaleCausalAttention(attention_width, head_dim)
        for zero in [self.stem[-1], *self.proj_outs]:
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)

    def forward(self, sketch: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(sketch)
        maps = [h]
        for layer in self.downsample_layers:
            h = layer(h)
            maps.append(h)
        tokens = [proj(m).flatten(2).transpose(1, 2) for proj, m in zip(self.proj_ins, maps)]
        tokens.append(self.proj_ins[-1](h.mean(dim=(2, 3), keepdim=True)).flatten(2).transpose(1, 2))
        grids = [tuple(m.shape[2:]) for m in maps][::-1]
        x = torch.cat(tokens[::-1], 1)  # global, then coarse to fine
        x = self.attention(x, grids) + x
        features, start = [], 1
        for (gh, gw), proj in zip(grids, list(self.proj_outs)[::-1]):
            part = x[:, start : start + gh * gw].transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
            features.append(proj(part))
            start += gh * gw
        return features[::-1]
