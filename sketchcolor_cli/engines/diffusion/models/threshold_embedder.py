"""The threshold embedder (upstream ``ScalarEmbedder``): a mask threshold in [0, 1] -> one token.

The scalar gets the UNet's sinusoidal embedding (cos first, max period 10000, the raw value, not
scaled to timesteps), then Linear-SiLU-Linear. The switch model adds the sketch-mask threshold's
token to every foreground reference token and the reference-mask threshold's token to every
background token, so one model serves any threshold.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[N] -> [N, dim]: cos then sin of value * max_period^(-i/half), in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    args = values.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class ThresholdEmbedder(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, embed_dim: int = 256, out_dim: int = 1024):
        super().__init__()
        self.embed_layer = nn.Sequential(nn.Linear(embed_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, thresholds: torch.Tensor) -> torch.Tensor:
        """[N] thresholds -> [N, 1, out_dim] tokens."""
        embedding = sinusoidal_embedding(thresholds, self.config.embed_dim)[:, None, :]
        return self.embed_layer(embedding.to(self.embed_layer[0].weight.dtype))
