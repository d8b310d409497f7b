"""The xl reference projection (upstream ``refnet/modules/proj.py: ClusterConcat``): CLIP tokens
and WD-tagger tokens -> the UNet's cross-attention context.

Self-attention over the 257 CLIP tokens (no residual, no norm before it, heads of `head_dim`),
keep the first `token_length` (196: the CLS token and the first 195 patches), LayerNorm, concatenate
channel-wise with the tagger's 196 tokens (1280 + 1024 = 2304), then Linear-SiLU-Linear-LayerNorm
to 2048: a 196 x 2048 context per reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class TokenSelfAttention(nn.Module):
    """q, k, v without bias, output with bias; plain softmax attention."""

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        self.heads = dim // head_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, dim = x.shape
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in (self.to_q(x), self.to_k(x), self.to_v(x)))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, dim)
        return self.to_out(out)


class ClusterConcat(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, input_dim: int = 1280, c_dim: int = 1024, output_dim: int = 2048, head_dim: int = 128,
                 token_length: int = 196):
        super().__init__()
        self.attn = TokenSelfAttention(input_dim, head_dim)
        self.norm = nn.LayerNorm(input_dim)
        self.proj = nn.Sequential(
            nn.Linear(input_dim + c_dim, output_dim), nn.SiLU(), nn.Linear(output_dim, output_dim), nn.LayerNorm(output_dim)
        )

    def forward(self, clip_tokens: torch.Tensor, tagger_tokens: torch.Tensor) -> torch.Tensor:
        """[B, 257, input_dim] and [B, token_length, c_dim] -> [B, token_length, output_dim]."""
        x = self.attn(clip_tokens)[:, : self.config.token_length]
        return self.proj(torch.cat([self.norm(x), tagger_tokens.to(x.dtype)], dim=2))
