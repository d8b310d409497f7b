"""The sketch encoder of the switch model (upstream ``refnet/modules/encoder.py: MultiEncoder``).

A stride-8 convolutional stem brings the sketch (3 x H x W, inverted: paper -1, lines towards +1)
to latent size and ``model_channels`` channels; then one block per UNet level (stride 2 except the
last). The stem and every block end in a zero-initialised 1x1 convolution whose output is ADDED to
the UNet's hidden states after ``conv_in`` and after each down block (see `unet_switch`).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# The stem's fixed widths (upstream hard-codes them): three stride-2 convolutions, 16 -> 256 channels.
STEM_WIDTHS = (16, 16, 32, 32, 96, 96, 256)
STEM_STRIDES = (1, 1, 2, 1, 2, 1, 2)


class SketchEncoder(ModelMixin, ConfigMixin):
    """Sketch -> ``1 + len(channel_mult)`` feature maps, one per UNet injection point."""

    @register_to_config
    def __init__(self, in_channels: int = 3, model_channels: int = 320, channel_mult: tuple[int, ...] = (1, 2, 4, 4)):
        super().__init__()
        widths = [model_channels * m for m in channel_mult]
        stem: list[nn.Module] = []
        previous = in_channels
        for width, stride in zip(STEM_WIDTHS, STEM_STRIDES):
            stem += [nn.Conv2d(previous, width, 3, stride=stride, padding=1), nn.SiLU()]
            previous = width
        stem.append(nn.Conv2d(previous, widths[0], 3, padding=1))
        self.stem = nn.Sequential(*stem)  # indices match upstream's `model.N`
        self.stem_zero_conv = nn.Conv2d(widths[0], widths[0], 1)
        self.blocks = nn.ModuleList()
        self.zero_convs = nn.ModuleList()
        previous = widths[0]
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            self.blocks.append(
                nn.Sequential(
                    nn.SiLU(),
                    nn.Conv2d(previous, width, 3, stride=1 if last else 2, padding=1),
                    nn.SiLU(),
                    nn.Conv2d(width, width, 3, padding=1),
                )
            )
            self.zero_convs.append(nn.Conv2d(width, width, 1))
            previous = width

    def forward(self, sketch: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(sketch)
        features = [self.stem_zero_conv(h)]
        for block, zero_conv in zip(self.blocks, self.zero_convs):
            h = block(h)
            features.append(zero_conv(h))
        return features
