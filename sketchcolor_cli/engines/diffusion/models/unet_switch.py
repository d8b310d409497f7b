"""The switch model's denoising UNet: a diffusers `UNet2DConditionModel` (SD2.1 architecture,
built from its config) whose forward adds the sketch encoder's features.

Where the features go matters. The published model (upstream ``DualCondUNet``) adds feature ``i``
to the hidden states right after UNet input block 0 (``conv_in``) and after input blocks 3, 6, 9
and 11, i.e. after each down block's last layer (its downsampler, or its last resnet for the last
level), BEFORE the skip is stored: the sum flows forward into the next block AND into the skip
connection. Neither of diffusers' hooks does exactly that: ``down_block_additional_residuals``
(ControlNet) adds to the skips only, and ``down_intrablock_additional_residuals`` (T2I-Adapter)
adds inside cross-attention down blocks before their downsampler and never after ``conv_in``.
So this subclass keeps diffusers' blocks and weights and replaces only the forward loop.
"""

from __future__ import annotations

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from .split_attention import SplitAttention


class SwitchUNet2DConditionModel(UNet2DConditionModel):
    """``forward(sample, timestep, encoder_hidden_states, sketch_features, split)`` -> prediction."""

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        sketch_features: list[torch.Tensor] | None = None,
        split: SplitAttention | None = None,
    ) -> torch.Tensor:
        if sketch_features is not None and len(sketch_features) != len(self.down_blocks) + 1:
            raise ValueError(
                f"the sketch encoder gave {len(sketch_features)} feature maps; this UNet takes "
                f"{len(self.down_blocks) + 1} (after conv_in and after each of its {len(self.down_blocks)} down blocks)"
            )
        attention_kwargs = {"split": split}
        t_emb = self.get_time_embed(sample=sample, timestep=timestep)
        emb = self.time_embedding(t_emb)

        sample = self.conv_in(sample)
        if sketch_features is not None:
            sample = sample + sketch_features[0]
        skips: tuple[torch.Tensor, ...] = (sample,)
        for index, block in enumerate(self.down_blocks):
            if getattr(block, "has_cross_attention", False):
                sample, block_skips = block(
                    hidden_states=sample,
                    temb=emb,
                    encoder_hidden_states=encoder_hidden_states,
                    cross_attention_kwargs=attention_kwargs,
                )
            else:
                sample, block_skips = block(hidden_states=sample, temb=emb)
            if sketch_features is not None:
                # Added after the block's last layer; the skip stored for it is the sum.
                sample = sample + sketch_features[index + 1]
                block_skips = block_skips[:-1] + (sample,)
            skips += block_skips

        sample = self.mid_block(
            sample, emb, encoder_hidden_states=encoder_hidden_states, cross_attention_kwargs=attention_kwargs
        )

        for index, block in enumerate(self.up_blocks):
            block_skips = skips[-len(block.resnets) :]
            skips = skips[: -len(block.resnets)]
            # Upsample to the next skip's size (the same as 2x nearest when sizes are even).
            upsample_size = skips[-1].shape[2:] if index < len(self.up_blocks) - 1 else None
            if getattr(block, "has_cross_attention", False):
                sample = block(
                    hidden_states=sample,
                    temb=emb,
                    res_hidden_states_tuple=block_skips,
                    encoder_hidden_states=encoder_hidden_states,
                    cross_attention_kwargs=attention_kwargs,
                    upsample_size=upsample_size,
                )
            else:
                sample = block(
                    hidden_states=sample, temb=emb, res_hidden_states_tuple=block_skips, upsample_size=upsample_size
                )

        sample = self.conv_act(self.conv_norm_out(sample))
        return self.conv_out(sample)
