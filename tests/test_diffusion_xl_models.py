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


# -- split and reference attention --------------------------------------------------------------

DIM, CONTEXT, HEADS = 32, 24, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The test machine is shared: one thread avoids OpenMP contention (and does not change results).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _attention(processor, cross=True):
    attn = Attention(query_dim=DIM, cross_attention_dim=CONTEXT if cross else None, heads=HEADS, dim_head=DIM // HEADS,
                     out_bias=True)
    attn.set_processor(processor)
    return _randomised(attn).eval()


def naive(attn, x, context, strength=1.0):
    """softmax(q k^T / sqrt(d)) v written out, times strength, then to_out."""
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
    b, n, _ = q.shape
    d = DIM // HEADS
    q, k, v = (t.view(b, -1, HEADS, d).permute(0, 2, 1, 3) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return attn.to_out[0]((weights @ v).permute(0, 2, 1, 3).reshape(b, n, DIM) * strength)


def _inputs(mask_value, tokens=8 * 8):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, tokens, DIM, generator=g)
    fg, bg = torch.randn(2, 6, CONTEXT, generator=g), torch.randn(2, 6, CONTEXT, generator=g)
    mask = torch.full((2, 1, 8, 8), float(mask_value))
    return x, fg, bg, mask


@pytest.mark.parametrize("mode", ["bias", "two_pass", "soft"])
def test_all_foreground_mask_is_attention_on_the_foreground_context_alone(mode):
    attn = _attention(MaskBiasCrossAttnProcessor())
    x, fg, bg, mask = _inputs(1.0)
    split = XLAttention(mask=mask, mode=mode, reference_strength=0.8)
    with torch.no_grad():
        out = attn(x, encoder_hidden_states=torch.cat([fg, bg], 1), split=split)
        expected = naive(attn, x, fg, 0.8)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["bias", "two_pass", "soft"])
def test_all_background_mask_is_attention_on_the_background_context_alone(mode):
    attn = _attention(MaskBiasCrossAttnProcessor())
    x, fg, bg, mask = _inputs(0.0)
    split = XLAttention(mask=mask, mode=mode, reference_strength=0.7)
    with torch.no_grad():
        out = attn(x, encoder_hidden_states=torch.cat([fg, bg], 1), split=split)
        expected = naive(attn, x, bg, 0.7)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_bias_routes_each_query_by_its_mask_value_at_a_coarser_level():
    """A half-foreground latent mask seen at a level of 1/2 size: each query takes the fg or bg
    attention as the bicubic-resized mask says (> threshold: fg)."""
    import torch.nn.functional as F

    attn = _attention(MaskBiasCrossAttnProcessor())
    x, fg, bg, _ = _inputs(0.0, tokens=4 * 4)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, :, :4] = 1.0
    split = XLAttention(mask=mask, mode="bias", mask_threshold=0.05)
    with torch.no_grad():
        out = attn(x, encoder_hidden_states=torch.cat([fg, bg], 1), split=split)
        level = F.interpolate(mask, scale_factor=0.5, mode="bicubic").flatten(2).transpose(1, 2)
        expected = torch.where(level > 0.05, naive(attn, x, fg), naive(attn, x, bg))
    assert 0 < (level > 0.05).float().mean() < 1
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_two_pass_merge_and_strengths_and_soft_blend():
    attn = _attention(MaskBiasCrossAttnProcessor())
    x, fg, bg, _ = _inputs(0.0)
    mask = torch.full((2, 1, 8, 8), 0.3)
    context = torch.cat([fg, bg], 1)
    with torch.no_grad():
        f, b = naive(attn, x, fg) - attn.to_out[0].bias, naive(attn, x, bg) - attn.to_out[0].bias  # bias-free parts
        merged = attn(x, encoder_hidden_states=context, split=XLAttention(
            mask=mask, mode="two_pass", fg_strength=0.5, bg_strength=2.0, merge_scale=0.25))
        soft = attn(x, encoder_hidden_states=context, split=XLAttention(mask=mask, mode="soft"))
    bias = attn.to_out[0].bias
    torch.testing.assert_close(merged, (f * 0.5 * 0.75 + b * 2.0 * 0.25) + bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(soft, f * 0.3 + b * 0.7 + bias, rtol=1e-5, atol=1e-5)


def test_empty_bank_is_plain_self_attention_and_a_bank_routes_background_queries_to_it():
    attn = _attention(ReferenceSelfAttnProcessor(0), cross=False)
    g = torch.Generator().manual_seed(2)
    x, bank = torch.randn(2, 64, DIM, generator=g), torch.randn(2, 64, DIM, generator=g)
    with torch.no_grad():
        plain = naive(attn, x, x)
        torch.testing.assert_close(attn(x, split=XLAttention(banks=None)), plain, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(attn(x), plain, rtol=1e-5, atol=1e-5)  # no call object at all
        half = torch.zeros(2, 1, 8, 8)
        half[:, :, :4] = 1.0
        routed = attn(x, split=XLAttention(mask=half, banks=[bank]))
        inside = half.flatten(2).transpose(1, 2) > 0.05
        expected = torch.where(inside, plain, naive(attn, x, bank))  # fg: the frame itself; bg: the bank alone
    torch.testing.assert_close(routed, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(routed, plain)


def test_reference_padding_and_crop_fractions():
    from sketchcolor_cli.engines.diffusion.pipelines.xl import crop_fractions, pad_reference

    image = torch.zeros(3, 10, 20)
    padded = pad_reference(image, 1.5, 1.0)
    assert padded.shape == (3, 10, 30) and padded[:, :, :5].eq(1).all() and padded[:, :, 5:25].eq(0).all()
    assert pad_reference(image, 1.0, 1.0) is image
    # A square frame from a tall background covers 2/3 of its height; a wide frame half of a square.
    assert crop_fractions(1024, 1024, 600, 400) == (pytest.approx(2 / 3), 1.0)
    assert crop_fractions(512, 1024, 600, 600) == (pytest.approx(0.5), 1.0)


# -- sketch encoder and UNet ----------------------------------------------------------------------

def test_sketch_encoder_gives_maps_at_one_eighth_to_one_thirty_second_and_is_block_causal():
    from sketchcolor_cli.engines.diffusion.models.xl_sketch_encoder import MultiScaleAttentionEncoder

    encoder = _randomised(MultiScaleAttentionEncoder(model_channels=32, channel_mult=(1, 2, 2), head_dim=32), std=0.1).eval()
    sketch = torch.randn(1, 3, 128, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = encoder(sketch)
        assert [tuple(m.shape[1:]) for m in maps] == [(32, 16, 12), (32, 8, 6), (64, 4, 3), (64, 4, 3)]
        # Block-causal: the coarsest map (attending to the global token and itself) does not move
        # when only the finest scale's tokens change; the finest map does.
        hook = encoder.proj_ins[0].register_forward_hook(lambda m, i, o: o + 1.0)
        changed = encoder(sketch)
        hook.remove()
    torch.testing.assert_close(changed[3], maps[3])
    torch.testing.assert_close(changed[2], maps[2])
    assert not torch.allclose(changed[0], maps[0])


def test_fresh_sketch_encoder_outputs_are_zero():
    from sketchcolor_cli.engines.diffusion.models.xl_sketch_encoder import MultiScaleAttentionEncoder

    encoder = MultiScaleAttentionEncoder(model_channels=32, channel_mult=(1, 2, 2), head_dim=32)
    with torch.no_grad():
        assert all(float(m.abs().max()) == 0.0 for m in encoder(torch.randn(1, 3, 64, 64)))


def test_rope_2d_rotates_pairs_by_row_then_column_angles():
    from sketchcolor_cli.engines.diffusion.models.xl_sketch_encoder import rope_2d

    d = 8  # 4 pairs: 2 with the row, 2 with the column
    x = torch.zeros(1, 2 * 3, 1, d)
    x[..., 0::2] = 1.0  # every pair = (1, 0)
    out = rope_2d(x, 2, 3)
    freqs = [1.0, 1.0 / 10000 ** (2 / 4)]
    for row in range(2):
        for col in range(3):
            token = out[0, row * 3 + col, 0]
            angles = [row * f for f in freqs] + [col * f for f in freqs]
            expected = torch.tensor([v for a in angles for v in (math.cos(a), math.sin(a))])
            torch.testing.assert_close(token, expected, rtol=1e-6, atol=1e-6)


def test_unet_adds_sketch_features_after_input_blocks_0_3_6_8():
    """Each of the four maps lands where upstream adds it (after conv_in, the two downsamplers and
    the last layer of the third level, before the skip): our forward with the map equals our forward
    with zero maps and a hook adding the map to that module's output."""
    from sketchcolor_cli.engines.diffusion.loading.tiny import tiny_xl_config
    from sketchcolor_cli.engines.diffusion.loading.xl_single_file import build_xl_components

    config = tiny_xl_config("xl")
    unet = _randomised(build_xl_components(config)["unet"], std=0.05).eval()
    g = torch.Generator().manual_seed(4)
    sample = torch.randn(1, 4, 16, 16, generator=g)
    context = torch.randn(1, 4, 32, generator=g)
    y = torch.randn(1, 32, generator=g)
    shapes = [(32, 16, 16), (32, 8, 8), (64, 4, 4), (64, 4, 4)]
    seen = []
    # The input-block outputs (upstream numbering) in diffusers: conv_in, then per down block its
    # resnets/attentions and its downsampler.
    targets = [unet.conv_in, unet.down_blocks[0].downsamplers[0], unet.down_blocks[1].downsamplers[0],
               unet.down_blocks[2].attentions[1]]
    with torch.no_grad():
        zero = [torch.zeros(1, *s) for s in shapes]
        base = unet(sample, 10, context, y, zero)
        for level in range(4):
            features = [torch.zeros(1, *s) for s in shapes]
            features[level] = torch.randn(1, *shapes[level], generator=g)

            def add(module, inputs, output, f=features[level]):
                return (output[0] + f,) + tuple(output[1:]) if isinstance(output, tuple) else output + f

            hook = targets[level].register_forward_hook(add)
            by_hand = unet(sample, 10, context, y, zero)
            hook.remove()
            ours = unet(sample, 10, context, y, features)
            torch.testing.assert_close(ours, by_hand, rtol=1e-5, atol=1e-5)
            seen.append(not torch.allclose(ours, base))
    assert all(seen)


def test_y_is_cos_first_sinusoids_of_size_and_aesthetic_score():
    from sketchcolor_cli.engines.diffusion.pipelines.xl import scalar_embedding

    y = scalar_embedding([1024.0, 7.0], 8)
    freqs = [10000 ** (-i / 4) for i in range(4)]
    expected = [math.cos(1024 * f) for f in freqs] + [math.sin(1024 * f) for f in freqs]
    expected += [math.cos(7 * f) for f in freqs] + [math.sin(7 * f) for f in freqs]
    torch.testing.assert_close(y[0], torch.tensor(expected), rtol=1e-5, atol=1e-5)


# -- the published architecture's facts and the key maps -------------------------------------------

def test_full_size_architecture_has_the_published_key_counts():
    from sketchcolor_cli.engines.diffusion.loading.xl_configs import XLConfig
    from sketchcolor_cli.engines.diffusion.loading.xl_single_file import build_xl_components, lora_targets, xl_key_map
    from sketchcolor_cli.engines.diffusion.models.xl_attention import transformer_block_names

    config = XLConfig.for_family("xlv2")
    parts = build_xl_components(config, device="meta")
    mapping = xl_key_map(config)
    counts: dict[str, int] = {}
    for part, module in parts.items():
        for key in module.state_dict():
            ldm, _ = mapping.to_ldm(part, key)
            assert mapping.to_ours(ldm)[:2] == (part, key)
            top = "model.diffusion_model" if ldm.startswith("model.") else ldm.split(".")[0]
            counts[top] = counts.get(top, 0) + 1
    # Upstream's checkpoints: 1680 UNet keys, 248 VAE, 47 sketch encoder, 13 proj, 1162 bg_encoder;
    # 420 background-LoRA keys; 70 transformer blocks, 36 of them in the decoder.
    assert counts == {"model.diffusion_model": 1680, "first_stage_model": 248, "control_encoder": 47, "proj": 13,
                      "bg_encoder": 1162}
    assert 2 * len(lora_targets(parts["unet"])) == 420
    names = transformer_block_names(parts["unet"])
    assert len(names) == 70 and sum(n.startswith("up_blocks") for n in names) == 36
    assert sum(n.startswith("up_blocks") for n in transformer_block_names(parts["reference_net"])) == 36
    assert parts["vae"].config.scaling_factor == 0.13025


def test_xlv2_reference_strength_skips_the_middle_and_the_finest_decoder_level():
    from sketchcolor_cli.engines.diffusion.loading.xl_configs import XLConfig
    from sketchcolor_cli.engines.diffusion.loading.xl_single_file import build_xl_components
    from sketchcolor_cli.engines.diffusion.pipelines.xl import xlv2_reference_strengths

    unet = build_xl_components(XLConfig.for_family("xl"), device="meta")["unet"]
    strengths = xlv2_reference_strengths(unet, 0.5)
    kept = [i for i, s in enumerate(strengths) if s == 1.0]
    assert kept == list(range(24, 34)) + list(range(64, 70))  # upstream's indices


def test_family_and_prediction_follow_the_file_name():
    from sketchcolor_cli.engines.diffusion.loading.configs import prediction_from_name
    from sketchcolor_cli.engines.diffusion.loading.xl_configs import family_from_name

    assert family_from_name("models/sdxl-v1.safetensors") == "xl"
    assert family_from_name("xlv2-eps.safetensors") == "xlv2"
    assert family_from_name("switch-eps.safetensors") == "switch"
    assert prediction_from_name("sdxl-v1.safetensors") == "v_prediction"
    assert prediction_from_name("xlv2-eps.safetensors") == "epsilon"


def test_autofit_is_about_a_megapixel_at_the_frame_aspect_in_steps_of_32():
    from sketchcolor_cli.engines.diffusion.imaging import Canvas, autofit_size

    assert autofit_size((1080, 1920)) == (768, 1376)
    assert autofit_size((1000, 1000)) == (1024, 1024)
    assert autofit_size((3000, 500)) == (1536, 768)  # clamped at both ends
    canvas = Canvas.within((1080, 1920), *autofit_size((1080, 1920)))
    assert (canvas.height, canvas.width) == (768, 1376) and canvas.inner_w == 1365 and canvas.left == 5
