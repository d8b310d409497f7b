"""The background token resampler of the switch model (upstream ``ClusterTransformer``).

``token_length`` learned queries attend to the background reference tokens, layer by layer:
``x += attn(LN(x), tokens)`` (the tokens are not normalised), then ``x += MLP(LN(x))`` with a
Linear-SiLU-Linear MLP; no final norm. Attention is plain softmax(q k^T / sqrt(d)) v through
``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class CrossAttention(nn.Module):
    """q from the queries, k and v from the context; no bias on q/k/v, bias on the output."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q, k, v = (
            t.view(b, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2)
            for t in (self.to_q(x), self.to_k(context), self.to_v(context))
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[3]))


class ClusterLayer(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, context_dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.SiLU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm_attn(x), tokens) + x
        return self.mlp(self.norm_mlp(x)) + x


class ClusterTransformer(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, dim: int = 1024, token_length: int = 256, num_layers: int = 6, head_dim: int = 64, mlp_ratio: int = 4):
        super().__init__()
        self.layers = nn.ModuleList([ClusterLayer(dim, dim, dim // head_dim, mlp_ratio) for _ in range(num_layers)])
        self.queries = nn.Parameter(torch.randn(token_length, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, N, dim] background tokens -> [B, token_length, dim]."""
        x = self.queries.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        for layer in self.layers:
            x = layer(x, tokens)
        return x
