"""The xl/xlv2 model parts on tiny configs (CPU): the WD tagger against transformers' Swinv2 with
the same weights, the split and reference attention processors against attention written out by
hand, the sketch encoder's wiring, the xl UNet's feature placement, key maps and the strict loader."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers.models.attention_processor import Attention  # noqa: E402

from sketchcolor_cli.engines.diffusion.models.wd_tagger import WDTagger, preprocess_tagger  # noqa: E402
from sketchcolor_cli.engines.diffusion.models.xl_attention import (  # noqa: E402
    MaskBiasCrossAttnProcessor,
    ReferenceSelfAttnProcessor,
    XLAttention,
)

TINY_TAGGER = dict(img_size=64, patch_size=4, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4),
                   window_size=4, num_classes=7)


def _randomised(module, seed=0, std=0.2):
    generator = torch.Generator().manual_seed(seed)
    for tensor in module.parameters():
        tensor.data = torch.randn(tensor.shape, generator=generator) * std
    return module


def timm_to_transformers(state: dict, depths) -> dict:
    """timm swinv2 keys -> transformers Swinv2Model keys (an independent implementation)."""
    out = {}
    for key, value in state.items():
        if key.startswith("head."):
            continue
        if key.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("patch_embed.norm."):
            out["embeddings.norm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("norm."):
            out["layernorm." + key.rsplit(".", 1)[1]] = value
        elif ".downsample." in key:
            stage = int(key.split(".")[1])
            out[f"encoder.layers.{stage - 1}.downsample." + key.split(".downsample.")[1]] = value
        else:
            _, stage, _, block, rest = key.split(".", 4)
            prefix = f"encoder.layers.{stage}.blocks.{block}."
            if rest == "attn.qkv.weight":
                q, k, v = value.chunk(3)
                out[prefix + "attention.self.query.weight"] = q
                out[prefix + "attention.self.key.weight"] = k
                out[prefix + "attention.self.value.weight"] = v
                continue
            renames = {
                "attn.q_bias": "attention.self.query.bias",
                "attn.v_bias": "attention.self.value.bias",
                "attn.logit_scale": "attention.self.logit_scale",
                "attn.proj.weight": "attention.output.dense.weight",
                "attn.proj.bias": "attention.output.dense.bias",
                "norm1.weight": "layernorm_before.weight",
                "norm1.bias": "layernorm_before.bias",
                "norm2.weight": "layernorm_after.weight",
                "norm2.bias": "layernorm_after.bias",
                "mlp.fc1.weight": "intermediate.dense.weight",
                "mlp.fc1.bias": "intermediate.dense.bias",
                "mlp.fc2.weight": "output.dense.weight",
                "mlp.fc2.bias": "output.dense.bias",
            }
            if rest.startswith("attn.cpb_mlp."):
                out[prefix + "attention.self.continuous_position_bias_mlp." + rest[len("attn.cpb_mlp."):]] = value
            else:
                out[prefix + renames[rest]] = value
    return out


def test_tagger_matches_transformers_swinv2_with_the_same_weights():
    from transformers import Swinv2Config, Swinv2Model

    ours = _randomised(WDTagger(**TINY_TAGGER)).eval()
    with torch.no_grad():  # logit scales near their real values (log 10), so the clamp matters for some
        for block in (b for stage in ours.layers for b in stage.blocks):
            block.attn.logit_scale.data = torch.tensor([math.log(10.0), math.log(200.0)] * (block.attn.heads // 2)).view(-1, 1, 1)
    config = Swinv2Config(image_size=64, patch_size=4, embed_dim=16, depths=[2, 2, 2, 2], num_heads=[2, 2, 4, 4],
                          window_size=4, hidden_act="gelu", layer_norm_eps=1e-5)
    reference = Swinv2Model(config).eval()
    mapped = timm_to_transformers(ours.state_dict(), TINY_TAGGER["depths"])
    missing, unexpected = reference.load_state_dict(mapped, strict=False)
    assert not unexpected and all("relative" in k or "index" in k for k in missing), (missing, unexpected)
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(pixel_values=pixels).last_hidden_state  # [B, 4, 64] after the final norm
        got = ours.features(pixels)
    assert got.shape == (2, 2, 2, 128)
    torch.testing.assert_close(got.flatten(1, 2), expected, rtol=1e-4, atol=1e-4)


def test_tagger_input_is_bgr_in_minus_one_to_one_at_its_size():
    image = torch.zeros(1, 3, 10, 20)
    image[:, 0] = 1.0  # pure red
    pixels = preprocess_tagger(image, 32)
    assert pixels.shape == (1, 3, 32, 32)
    assert torch.allclose(pixels[:, 2], torch.ones(1, 32, 32)) and torch.allclose(pixels[:, 0], torch.zeros(1, 32, 32))
