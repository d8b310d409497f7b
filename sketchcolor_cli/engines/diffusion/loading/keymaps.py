"""Key maps between the published single-file checkpoints (LDM layout) and our modules.

Each part of the checkpoint is listed as rules ``(ldm prefix, our prefix, inner renames)``, built
from the part's config, so the same tables map in both directions: `to_ours` for loading and
`to_ldm` for writing checkpoints in the published layout (tests, the equivalence benchmark).

Parts and their top-level prefixes: ``model.diffusion_model.`` -> ``unet`` (LoRA keys
``...attn2.to_q.lora_down_fg.weight`` -> ``...attn2.processor.to_q.lora_down_fg.weight``),
``first_stage_model.`` -> ``vae``, ``control_encoder.`` -> ``sketch_encoder``,
``thresh_embedder.`` -> ``threshold_embedder``, ``transformer.`` -> ``cluster_transformer``.
The 12 noise-schedule buffers are accepted and ignored (the scheduler recomputes them).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULE_BUFFERS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
    }
)

PART_PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "sketch_encoder": "control_encoder.",
    "threshold_embedder": "thresh_embedder.",
    "cluster_transformer": "transformer.",
}

RESNET = (
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
)
# The LoRA weights live in the attn2 processors; everything else of a transformer keeps its name.
ATTENTION = tuple(
    (f"transformer_blocks.{i}.attn2.{p}.lora_", f"transformer_blocks.{i}.attn2.processor.{p}.lora_")
    for i in range(16)
    for p in ("to_q", "to_k", "to_v")
)
VAE_RESNET = (("nin_shortcut.", "conv_shortcut."),)
VAE_ATTENTION = (("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0."))


@dataclass(frozen=True)
class Rule:
    part: str
    ldm: str  # prefix in the checkpoint, including the part's top-level prefix
    ours: str  # prefix in the part's state dict
    renames: tuple[tuple[str, str], ...] = ()
    conv_to_linear: bool = False  # VAE attention: 1x1 conv weights in the checkpoint, linear in diffusers


def unet_rules(config: dict) -> list[Rule]:
    top = PART_PREFIXES["unet"]
    levels = len(config["block_out_channels"])
    per_level = config["layers_per_block"]
    rules = [
        Rule("unet", top + "time_embed.0.", "time_embedding.linear_1."),
        Rule("unet", top + "time_embed.2.", "time_embedding.linear_2."),
        Rule("unet", top + "input_blocks.0.0.", "conv_in."),
        Rule("unet", top + "out.0.", "conv_norm_out."),
        Rule("unet", top + "out.2.", "conv_out."),
        Rule("unet", top + "middle_block.0.", "mid_block.resnets.0.", RESNET),
        Rule("unet", top + "middle_block.1.", "mid_block.attentions.0.", ATTENTION),
        Rule("unet", top + "middle_block.2.", "mid_block.resnets.1.", RESNET),
    ]
    index = 0
    for level in range(levels):
        attention = config["down_block_types"][level].startswith("CrossAttn")
        for j in range(per_level):
            index += 1
            rules.append(Rule("unet", f"{top}input_blocks.{index}.0.", f"down_blocks.{level}.resnets.{j}.", RESNET))
            if attention:
                rules.append(
                    Rule("unet", f"{top}input_blocks.{index}.1.", f"down_blocks.{level}.attentions.{j}.", ATTENTION)
                )
        if level != levels - 1:
            index += 1
            rules.append(Rule("unet", f"{top}input_blocks.{index}.0.op.", f"down_blocks.{level}.downsamplers.0.conv."))
    index = 0
    for up in range(levels):
        attention = config["up_block_types"][up].startswith("CrossAttn")
        for j in range(per_level + 1):
            rules.append(Rule("unet", f"{top}output_blocks.{index}.0.", f"up_blocks.{up}.resnets.{j}.", RESNET))
            if attention:
                rules.append(Rule("unet", f"{top}output_blocks.{index}.1.", f"up_blocks.{up}.attentions.{j}.", ATTENTION))
            if up != levels - 1 and j == per_level:
                position = 2 if attention else 1
                rules.append(
                    Rule("unet", f"{top}output_blocks.{index}.{position}.conv.", f"up_blocks.{up}.upsamplers.0.conv.")
                )
            index += 1
    return rules


def vae_rules(config: dict) -> list[Rule]:
    top = PART_PREFIXES["vae"]
    levels = len(config["block_out_channels"])
    per_level = config["layers_per_block"]
    rules = [Rule("vae", top + name + ".", name + ".") for name in ("quant_conv", "post_quant_conv")]
    for coder in ("encoder", "decoder"):
        c = f"{top}{coder}."
        rules += [
            Rule("vae", c + "conv_in.", f"{coder}.conv_in."),
            Rule("vae", c + "conv_out.", f"{coder}.conv_out."),
            Rule("vae", c + "norm_out.", f"{coder}.conv_norm_out."),
            Rule("vae", c + "mid.block_1.", f"{coder}.mid_block.resnets.0.", VAE_RESNET),
            Rule("vae", c + "mid.block_2.", f"{coder}.mid_block.resnets.1.", VAE_RESNET),
            Rule("vae", c + "mid.attn_1.", f"{coder}.mid_block.attentions.0.", VAE_ATTENTION, conv_to_linear=True),
        ]
    for level in range(levels):
        for j in range(per_level):
            rules.append(Rule("vae", f"{top}encoder.down.{level}.block.{j}.", f"encoder.down_blocks.{level}.resnets.{j}.", VAE_RESNET))
        if level != levels - 1:
            rules.append(Rule("vae", f"{top}encoder.down.{level}.downsample.conv.", f"encoder.down_blocks.{level}.downsamplers.0.conv."))
        up = levels - 1 - level  # the decoder's up.{level} runs in reverse order
        for j in range(per_level + 1):
            rules.append(Rule("vae", f"{top}decoder.up.{level}.block.{j}.", f"decoder.up_blocks.{up}.resnets.{j}.", VAE_RESNET))
        if level != 0:
            rules.append(Rule("vae", f"{top}decoder.up.{level}.upsample.conv.", f"decoder.up_blocks.{up}.upsamplers.0.conv."))
    return rules


def small_part_rules(config_sketch_levels: int, cluster_layers: int) -> list[Rule]:
    s = PART_PREFIXES["sketch_encoder"]
    rules = [
        Rule("sketch_encoder", s + "model.", "stem."),
        Rule("sketch_encoder", s + "zero_layer.0.", "stem_zero_conv."),
    ]
    for i in range(config_sketch_levels):
        rules.append(Rule("sketch_encoder", f"{s}output_blocks.{i}.", f"blocks.{i}."))
        rules.append(Rule("sketch_encoder", f"{s}zero_blocks.{i}.0.", f"zero_convs.{i}."))
    rules.append(Rule("threshold_embedder", PART_PREFIXES["threshold_embedder"] + "embed_layer.", "embed_layer."))
    t = PART_PREFIXES["cluster_transformer"]
    rules.append(Rule("cluster_transformer", t + "embedding", "queries"))
    for i in range(cluster_layers):
        for upstream, ours in (("0", "norm_attn"), ("1", "norm_mlp"), ("2", "attn"), ("3", "mlp")):
            rules.append(Rule("cluster_transformer", f"{t}layers.{i}.{upstream}.", f"layers.{i}.{ours}."))
    return rules


class KeyMap:
    """Both directions of the map for one model config."""

    def __init__(self, unet_config: dict, vae_config: dict, sketch_levels: int, cluster_layers: int):
        rules = unet_rules(unet_config) + vae_rules(vae_config) + small_part_rules(sketch_levels, cluster_layers)
        # Longest prefix first, so "input_blocks.1.1." never matches "input_blocks.1." rules.
        self.by_ldm = sorted(rules, key=lambda r: -len(r.ldm))
        self.by_ours = sorted(rules, key=lambda r: -len(r.ours))

    def to_ours(self, key: str) -> tuple[str, str, Rule] | None:
        """Checkpoint key -> (part, key in that part, rule), or None when no rule covers it."""
        for rule in self.by_ldm:
            if key.startswith(rule.ldm):
                rest = key[len(rule.ldm) :]
                for old, new in rule.renames:
                    if rest.startswith(old):
                        rest = new + rest[len(old) :]
                        break
                return rule.part, rule.ours + rest, rule
        return None

    def to_ldm(self, part: str, key: str) -> tuple[str, Rule] | None:
        for rule in self.by_ours:
            if rule.part == part and key.startswith(rule.ours):
                rest = key[len(rule.ours) :]
                for old, new in rule.renames:
                    if rest.startswith(new):
                        rest = old + rest[len(new) :]
                        break
                return rule.ldm + rest, rule
        return None
