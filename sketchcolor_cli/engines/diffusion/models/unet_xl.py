"""The xl denoising UNet and xlv2's ReferenceNet background encoder, as diffusers
`UNet2DConditionModel`s of the SDXL shape (upstream ``DualCondUNetXL`` and ``ReferenceNet``).

`XLUNet2DConditionModel`: diffusers' blocks and weights; only the forward loop is replaced so the
sketch encoder's four feature maps are ADDED right after upstream's input blocks 0, 3, 6 and 8
(``conv_in``, the first and second downsamplers, the last layer of the third level), before the
skip is stored. The class embedding (``class_embed_type="projection"``) is upstream's
``label_emb``: it takes ``y`` directly (xl: the sinusoidal embeddings of ``[sqrt(H*W), 7.0]``, 512
values).

`ReferenceNetXL`: the same shape without cross-attention, 6 input channels (background latent,
sketch mask, reference mask), ``y`` = the embeddings of the crop ``(top, left, h, w)``, run once at
t = 0; its decoder keeps only what upstream keeps (the first block of the last level, no output
head). Only its decoder self-attention inputs matter: they are the banks (`xl_attention`).
"""

from __future__ import annotations

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from .xl_attention import XLAttention

# Upstream input-block indices after which the sketch features are added (SDXL layout).
HINT_INPUT_BLOCKS = (0, 3, 6, 8)


def _input_block_outputs(unet: UNet2DConditionModel, sample, emb, context, kwargs, features):
    """Run conv_in and the down blocks, adding `features` after upstream input blocks 0, 3, 6, 8;
    returns the last hidden states and all skips. Upstream counts conv_in as block 0, then each
    resnet(+transformer) and each downsampler as one block."""
    sample = unet.conv_in(sample)
    block_index = 0
    feature_iter = iter(features or ())
    if features is not None:
        sample = sample + next(feature_iter)
    skips = [sample]
    for down in unet.down_blocks:
        attentions = getattr(down, "attentions", None)
        for j, resnet in enumerate(down.resnets):
            sample = resnet(sample, emb)
            if attentions is not None and len(attentions) > j:
                sample = attentions[j](sample, encoder_hidden_states=context, cross_attention_kwargs=kwargs,
                                       return_dict=False)[0]
            block_index += 1
            if features is not None and block_index in HINT_INPUT_BLOCKS:
                sample = sample + next(feature_iter)
            skips.append(sample)
        for downsampler in down.downsamplers or ():
            sample = downsampler(sample)
            block_index += 1
            if features is not None and block_index in HINT_INPUT_BLOCKS:
                sample = sample + next(feature_iter)
            skips.append(sample)
    return sample, skips


def _embedding(unet: UNet2DConditionModel, sample, timestep, y):
    t_emb = unet.get_time_embed(sample=sample, timestep=timestep)
    emb = unet.time_embedding(t_emb)
    return emb + unet.class_embedding(y.to(emb.dtype))


class XLUNet2DConditionModel(UNet2DConditionModel):
    """``forward(sample, timestep, context, y, sketch_features, split)`` -> prediction."""

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        y: torch.Tensor,
        sketch_features: list[torch.Tensor] | None = None,
        split: XLAttention | None = None,
    ) -> torch.Tensor:
        if sketch_features is not None and len(sketch_features) != len(HINT_INPUT_BLOCKS):
            raise ValueError(f"the xl sketch encoder gives {len(HINT_INPUT_BLOCKS)} feature maps, got {len(sketch_features)}")
        kwargs = {"split": split}
        emb = _embedding(self, sample, timestep, y)
        sample, skips = _input_block_outputs(self, sample, emb, encoder_hidden_states, kwargs, sketch_features)
        sample = self.mid_block(sample, emb, encoder_hidden_states=encoder_hidden_states, cross_attention_kwargs=kwargs)
        for index, block in enumerate(self.up_blocks):
            block_skips = tuple(skips[-len(block.resnets):])
            skips = skips[: -len(block.resnets)]
            upsample_size = skips[-1].shape[2:] if index < len(self.up_blocks) - 1 else None
            if getattr(block, "has_cross_attention", False):
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=block_skips,
                               encoder_hidden_states=encoder_hidden_states, cross_attention_kwargs=kwargs,
                               upsample_size=upsample_size)
            else:
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=block_skips,
                               upsample_size=upsample_size)
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))


class ReferenceNetXL(UNet2DConditionModel):
    """The background encoder; built with `from_config` (which removes what upstream lacks)."""

    @classmethod
    def from_config(cls, config=None, **kwargs):  # type: ignore[override]
        model = super().from_config(config, **kwargs)
        model._strip_to_reference_net()
        return model

    def _strip_to_reference_net(self) -> None:
        for module in self.modules():
            if type(module).__name__ == "BasicTransformerBlock":
                module.attn2 = None  # upstream: disable_cross_attentions
                module.norm2 = None
        last = self.up_blocks[-1]
        last.resnets = last.resnets[:1]  # upstream stops its decoder after this block
        self.conv_norm_out = None
        self.conv_act = None
        self.conv_out = None

    @torch.no_grad()
    def forward(self, sample: torch.Tensor, y: torch.Tensor, split: XLAttention) -> dict[int, torch.Tensor]:  # type: ignore[override]
        """One pass at t = 0; returns the banks (decoder index -> ``norm1(x)``) in ``split.bank_store``."""
        kwargs = {"split": split}
        timestep = torch.zeros(sample.shape[0], dtype=torch.long, device=sample.device)
        emb = _embedding(self, sample, timestep, y)
        sample, skips = _input_block_outputs(self, sample, emb, None, kwargs, None)
        sample = self.mid_block(sample, emb, encoder_hidden_states=None, cross_attention_kwargs=kwargs)
        # Only the decoder levels with attention write banks; the last level's single resnet
        # (kept for the weights) changes no bank, so it is not run.
        for index, block in enumerate(self.up_blocks):
            if not getattr(block, "has_cross_attention", False):
                break
            block_skips = tuple(skips[-len(block.resnets):])
            skips = skips[: -len(block.resnets)]
            upsample_size = skips[-1].shape[2:]
            sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=block_skips,
                           encoder_hidden_states=None, cross_attention_kwargs=kwargs, upsample_size=upsample_size)
        return split.bank_store
