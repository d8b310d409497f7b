"""A tiny configuration of the switch architecture (same parts and wiring, a few channels), for
tests and quick checks. Not a model anyone colours with."""

from __future__ import annotations

from .configs import SwitchConfig, sd21_vae_config

TINY_CONTEXT = 32


def tiny_switch_config(family: str = "switch") -> SwitchConfig:
    config = SwitchConfig(
        family=family,  # type: ignore[arg-type]
        unet={
            "sample_size": 8,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [32, 64],
            "layers_per_block": 1,
            "attention_head_dim": [2, 4],
            "cross_attention_dim": TINY_CONTEXT,
            "use_linear_projection": False,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
            "norm_num_groups": 32,
        },
        # The SD2.1 VAE with fewer channels and one layer per block.
        vae={**sd21_vae_config(), "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "sample_size": 64},
        sketch_encoder={"in_channels": 3, "model_channels": 32, "channel_mult": [1, 2]},
        threshold_embedder={"embed_dim": 16, "out_dim": TINY_CONTEXT},
        cluster_transformer={"dim": TINY_CONTEXT, "token_length": 16, "num_layers": 2, "head_dim": 16, "mlp_ratio": 2},
    )
    if family == "mult":
        config.lora_fg_rank = config.lora_bg_rank = None
    return config


def tiny_clip_config():
    """A CLIPVisionConfig of the ViT-H/14 shape in miniature (56 px, 14 px patches: 16 local tokens)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=56,
        patch_size=14,
        projection_dim=TINY_CONTEXT,
        hidden_act="gelu",
    )


TINY_XL_CONTEXT = 32
TINY_TAGGER = {"img_size": 64, "patch_size": 4, "embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [2, 2, 4, 4],
               "window_size": 4, "num_classes": 7}


def tiny_xl_config(family: str = "xl"):
    """The xl/xlv2 wiring in miniature: three UNet levels (no attention at the first, depth 1 and
    2 after), a 4-map sketch encoder, a 4-token ClusterConcat on a tiny CLIP (17 tokens) and a
    tiny tagger (2 x 2 x 128 features); xlv2 adds the ReferenceNet and a rank-4 background LoRA."""
    from .xl_configs import XLConfig

    embed = 16  # sinusoid width per value of y
    unet = {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 2,
        "transformer_layers_per_block": [1, 1, 2],
        "attention_head_dim": [1, 2, 2],
        "cross_attention_dim": TINY_XL_CONTEXT,
        "use_linear_projection": True,
        "class_embed_type": "projection",
        "projection_class_embeddings_input_dim": 2 * embed,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "norm_num_groups": 32,
    }
    config = XLConfig(
        family=family,  # type: ignore[arg-type]
        unet=unet,
        vae={**sd21_vae_config(), "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "sample_size": 64,
             "scaling_factor": 0.13025},
        sketch_encoder={"in_channels": 3, "model_channels": 32, "channel_mult": [1, 2, 2], "head_dim": 32},
        proj={"input_dim": TINY_XL_CONTEXT, "c_dim": 128, "output_dim": TINY_XL_CONTEXT, "head_dim": 16, "token_length": 4},
        scalar_embed_dim=embed,
        tagger=dict(TINY_TAGGER),
    )
    if family == "xlv2":
        config.reference_net = {**unet, "in_channels": 6, "projection_class_embeddings_input_dim": 4 * embed}
        config.background_lora_rank = 4
    return config


def tiny_xl_clip_config():
    """A CLIPVisionConfig in miniature whose projection width is the tiny ClusterConcat's input."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                            image_size=56, patch_size=14, projection_dim=TINY_XL_CONTEXT, hidden_act="gelu")
