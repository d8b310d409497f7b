"""The diffusion engine's model parts: split attention, sketch feature placement, key maps, the
strict loader, the reference and threshold encoders (tiny random-weight configs, CPU)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers.models.attention_processor import Attention  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from sketchcolor_cli.engines.diffusion.loading import CheckpointKeyError, load_switch_components  # noqa: E402
from sketchcolor_cli.engines.diffusion.loading.single_file import build_components, to_ldm_state_dict  # noqa: E402
from sketchcolor_cli.engines.diffusion.loading.tiny import tiny_switch_config  # noqa: E402
from sketchcolor_cli.engines.diffusion.models import SplitAttention, SplitCrossAttnProcessor  # noqa: E402

from diffusion_tiny import write_tiny_model  # noqa: E402

DIM, CONTEXT, HEADS = 32, 24, 4


def _randomised(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for tensor in module.parameters():
        tensor.data = torch.randn(tensor.shape, generator=generator) * 0.2
    return module


@pytest.fixture
def attention():
    attn = Attention(query_dim=DIM, cross_attention_dim=CONTEXT, heads=HEADS, dim_head=DIM // HEADS, out_bias=True)
    attn.set_processor(SplitCrossAttnProcessor(DIM, CONTEXT, DIM, fg_rank=2, bg_rank=0.5))
    return _randomised(attn).eval()


def naive_pass(attn, x, context, lora, strength):
    """softmax(q k^T / sqrt(d)) v written out, with the LoRA added by hand, then to_out."""
    proc = attn.processor
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
    if lora:
        q = q + getattr(proc.to_q, f"lora_up_{lora}")(getattr(proc.to_q, f"lora_down_{lora}")(x))
        k = k + getattr(proc.to_k, f"lora_up_{lora}")(getattr(proc.to_k, f"lora_down_{lora}")(context))
        v = v + getattr(proc.to_v, f"lora_up_{lora}")(getattr(proc.to_v, f"lora_down_{lora}")(context))
    b, n, _ = q.shape
    d = DIM // HEADS
    q, k, v = (t.view(b, -1, HEADS, d).permute(0, 2, 1, 3) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = (weights @ v).permute(0, 2, 1, 3).reshape(b, n, DIM) * strength
    return attn.to_out[0](out)


def _inputs(mask_value):
    torch.manual_seed(1)
    x = torch.randn(2, 8 * 8, DIM)
    fg, bg = torch.randn(2, 5, CONTEXT), torch.randn(2, 7, CONTEXT)
    mask = torch.full((2, 1, 8, 8), float(mask_value))
    return x, fg, bg, mask


def _run(attn, x, fg, bg, mask, **settings):
    split = SplitAttention(mask=mask, segments=[fg.shape[1], bg.shape[1]], **settings)
    with torch.no_grad():
        return attn(x, encoder_hidden_states=torch.cat([fg, bg], 1), split=split)


def test_all_foreground_mask_is_the_foreground_pass(attention):
    x, fg, bg, mask = _inputs(1.0)
    out = _run(attention, x, fg, bg, mask, reference_strength=0.8, fg_strength=0.7, use_fg_lora=True)
    with torch.no_grad():
        expected = naive_pass(attention, x, fg, "fg", 0.8 * 0.7)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_all_background_mask_is_the_background_pass(attention):
    x, fg, bg, mask = _inputs(0.0)
    out = _run(attention, x, fg, bg, mask, bg_strength=0.6, use_bg_lora=True)
    with torch.no_grad():
        expected = naive_pass(attention, x, bg, "bg", 0.6)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_merge_scale_one_is_the_background_pass_everywhere(attention):
    x, fg, bg, _ = _inputs(0.0)
    mask = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    out = _run(attention, x, fg, bg, mask, merge_scale=1.0, use_bg_lora=True)
    with torch.no_grad():
        expected = naive_pass(attention, x, bg, "bg", 1.0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_mask_routes_per_query_with_a_strict_threshold(attention):
    x, fg, bg, _ = _inputs(0.0)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, :4] = 1.0
    mask[:, :, 6:] = 0.05  # exactly the threshold: background (upstream uses a strict >)
    out = _run(attention, x, fg, bg, mask, use_bg_lora=True)
    with torch.no_grad():
        fg_pass = naive_pass(attention, x, fg, None, 1.0)
        bg_pass = naive_pass(attention, x, bg, "bg", 1.0)
    rows = torch.arange(64) // 8
    torch.testing.assert_close(out[:, rows < 4], fg_pass[:, rows < 4], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, rows >= 4], bg_pass[:, rows >= 4], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fg_pass, bg_pass, atol=1e-3)


def test_without_mask_it_is_plain_cross_attention_times_the_reference_strength(attention):
    x, fg, _, _ = _inputs(0.0)
    with torch.no_grad():
        out = attention(x, encoder_hidden_states=fg, split=SplitAttention(reference_strength=0.5))
        expected = naive_pass(attention, x, fg, None, 0.5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_parts():
    config = tiny_switch_config()
    parts = build_components(config)
    for module in parts.values():
        _randomised(module, seed=5)
    return config, parts


def test_sketch_features_flow_forward_and_into_the_skip(tiny_parts):
    """Feature 0 is added after conv_in, feature 1 after the first down block (its downsampler):
    each sum is both the next block's input and the stored skip (upstream adds before storing the
    skip; diffusers' ControlNet residuals would reach the skip only)."""
    _, parts = tiny_parts
    unet = parts["unet"]
    torch.manual_seed(2)
    x, context = torch.randn(1, 4, 16, 16), torch.randn(1, 6, 32)
    features = [torch.randn(1, 32, 16, 16), torch.randn(1, 32, 8, 8), torch.randn(1, 64, 8, 8)]
    seen = {}

    def keep(name, field):
        return lambda module, args, kwargs: seen.__setitem__(name, kwargs[field])

    hooks = [
        unet.down_blocks[0].register_forward_pre_hook(keep("down0_in", "hidden_states"), with_kwargs=True),
        unet.down_blocks[1].register_forward_pre_hook(keep("down1_in", "hidden_states"), with_kwargs=True),
        unet.up_blocks[0].register_forward_pre_hook(keep("up0_skips", "res_hidden_states_tuple"), with_kwargs=True),
        unet.up_blocks[1].register_forward_pre_hook(keep("up1_skips", "res_hidden_states_tuple"), with_kwargs=True),
    ]
    with torch.no_grad():
        unet(x, 10, context, features)
        temb = unet.time_embedding(unet.get_time_embed(x, 10))
        stem = unet.conv_in(x) + features[0]
        block0 = unet.down_blocks[0](hidden_states=stem, temb=temb, encoder_hidden_states=context,
                                     cross_attention_kwargs={"split": None})[0]
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(seen["down0_in"], stem)
    torch.testing.assert_close(seen["up1_skips"][0], stem)
    torch.testing.assert_close(seen["down1_in"], block0 + features[1])
    torch.testing.assert_close(seen["up0_skips"][0], block0 + features[1])


def test_unet_without_sketch_features_matches_diffusers_forward(tiny_parts):
    config, parts = tiny_parts
    from diffusers import UNet2DConditionModel

    stock = UNet2DConditionModel.from_config(config.unet)
    stock.load_state_dict({k: v for k, v in parts["unet"].state_dict().items() if "processor" not in k})
    stock.eval()
    torch.manual_seed(4)
    x, context = torch.randn(2, 4, 16, 16), torch.randn(2, 6, 32)
    with torch.no_grad():
        ours = parts["unet"](x, torch.tensor([3, 700]), context)
        theirs = stock(x, torch.tensor([3, 700]), context).sample
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_key_map_agrees_with_diffusers_single_file_converters(tiny_parts):
    config, parts = tiny_parts
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    published = to_ldm_state_dict(parts, config)
    unet = convert_ldm_unet_checkpoint(dict(published), config.unet)
    ours = {k: v for k, v in parts["unet"].state_dict().items() if "processor" not in k}
    assert set(ours) <= set(unet)
    assert all(torch.equal(unet[k], ours[k]) for k in ours)
    vae = convert_ldm_vae_checkpoint(dict(published), config.vae)
    ours_vae = parts["vae"].state_dict()
    assert set(vae) == set(ours_vae)
    assert all(torch.equal(vae[k].reshape(ours_vae[k].shape), ours_vae[k]) for k in ours_vae)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_strict_loader_round_trip(tiny_files):
    parts = load_switch_components(tiny_files["checkpoint"], tiny_switch_config())
    source = load_file(str(tiny_files["checkpoint"]))
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.lora_down_bg.weight"
    loaded = parts["unet"].state_dict()["down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k.lora_down_bg.weight"]
    assert torch.equal(loaded, source[key])
    assert torch.equal(parts["cluster_transformer"].queries, source["transformer.embedding"])


def test_missing_and_unexpected_keys_are_named(tiny_files, tmp_path):
    state = load_file(str(tiny_files["checkpoint"]))
    missing = "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_v.lora_up_fg.weight"
    del state[missing]
    state["control_encoder.extra_block.weight"] = torch.zeros(3)
    broken = tmp_path / "switch-eps-broken.safetensors"
    save_file(state, str(broken))
    with pytest.raises(CheckpointKeyError) as error:
        load_switch_components(broken, tiny_switch_config())
    assert missing in str(error.value) and "control_encoder.extra_block.weight" in str(error.value)
    assert error.value.missing == [missing] and error.value.unexpected == ["control_encoder.extra_block.weight"]


def test_wrong_shape_is_refused(tiny_files, tmp_path):
    state = load_file(str(tiny_files["checkpoint"]))
    state["thresh_embedder.embed_layer.0.bias"] = torch.zeros(7)
    broken = tmp_path / "switch-eps-shape.safetensors"
    save_file(state, str(broken))
    with pytest.raises(CheckpointKeyError, match="thresh_embedder.embed_layer.0.bias"):
        load_switch_components(broken, tiny_switch_config())


def test_reference_tokens_take_post_layernorm_on_every_token(tiny_files):
    """The CLS token of our token path equals transformers' own image embedding (post-LN +
    projection of the pooled CLS), so the same LN and projection are applied to all 257 tokens."""
    from transformers import CLIPVisionModelWithProjection

    from sketchcolor_cli.engines.diffusion.models.reference_encoder import preprocess_reference, reference_tokens

    clip = CLIPVisionModelWithProjection.from_pretrained(tiny_files["clip"], local_files_only=True).eval()
    image = torch.rand(1, 3, 40, 70) * 2 - 1
    with torch.no_grad():
        pixels = preprocess_reference(image, clip.config.image_size)
        hidden = clip.vision_model(pixel_values=pixels).last_hidden_state
        cls = clip.visual_projection(clip.vision_model.post_layernorm(hidden))[:, 0]
        torch.testing.assert_close(cls, clip(pixel_values=pixels).image_embeds)
        tokens = reference_tokens(clip, image)
        without_norm = clip.visual_projection(hidden)[:, 1:]
    assert tokens.shape == (1, (clip.config.image_size // clip.config.patch_size) ** 2, 32)
    torch.testing.assert_close(tokens, clip.visual_projection(clip.vision_model.post_layernorm(hidden))[:, 1:])
    assert not torch.allclose(tokens, without_norm, atol=1e-3)


def test_threshold_embedding_is_the_cos_first_sinusoid():
    from diffusers.models.embeddings import get_timestep_embedding

    from sketchcolor_cli.engines.diffusion.models.threshold_embedder import sinusoidal_embedding

    values = torch.tensor([0.05, 0.5, 0.95])
    expected = get_timestep_embedding(values, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(sinusoidal_embedding(values, 256), expected)


def test_dual_guidance_batches_the_branches_and_combines_them_as_published(tiny_files):
    """Both scales > 1: three branches in one UNet call, in upstream's order (conditional,
    zero reference, blank sketch), and 0.5 * [(u0 + s_r (c - u0)) + (u1 + s_s (c - u1))]."""
    from sketchcolor_cli.engines.diffusion import DiffusionSettings
    from sketchcolor_cli.engines.diffusion.runtime import SwitchRuntime

    runtime = SwitchRuntime.load(DiffusionSettings(
        model=str(tiny_files["checkpoint"]), clip=str(tiny_files["clip"]), config=str(tiny_files["config"])))
    pipe = runtime.pipeline
    torch.manual_seed(0)
    sketch = torch.rand(1, 3, 64, 64) * 2 - 1
    refs = [[torch.rand(3, 40, 30) * 2 - 1]]
    masks = [[torch.ones(1, 40, 30)]]
    common = dict(sketch_mask=torch.ones(1, 1, 64, 64), reference_masks=masks, background=None,
                  reference_strength=1.0, sketch_strength=1.0, fg_strength=1.0, bg_strength=1.0, merge_scale=0.0,
                  sketch_mask_threshold=0.05, reference_mask_threshold=0.5, background_enhance=True,
                  foreground_enhance=False)
    calls = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    conditions = pipe.prepare_conditions(sketch, refs, reference_guidance=3.0, sketch_guidance=2.0, **common)
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        cond, no_ref, no_sketch = pipe.evaluate(conditions, latents, 500)
        single = pipe.prepare_conditions(sketch, refs, reference_guidance=1.0, sketch_guidance=1.0, **common)
        (alone,) = pipe.evaluate(single, latents, 500)
    hook.remove()
    assert calls == [3, 1]
    assert torch.count_nonzero(conditions.context[1]) == 0  # the reference-free branch
    torch.testing.assert_close(cond, alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(cond, no_ref) and not torch.allclose(cond, no_sketch)
    combined = pipe.combine((cond, no_ref, no_sketch), conditions, 3.0, 2.0)
    expected = 0.5 * ((no_ref + 3.0 * (cond - no_ref)) + (no_sketch + 2.0 * (cond - no_sketch)))
    torch.testing.assert_close(combined, expected)
