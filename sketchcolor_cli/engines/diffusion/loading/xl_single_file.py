"""Key maps and the strict loader of the released xl (``sdxl-*``) and xlv2 (``xlv2-*``)
single-file checkpoints (safetensors, LDM key layout).

Parts and their top-level prefixes: ``model.diffusion_model.`` -> ``unet`` (the SDXL UNet;
``label_emb.0.0/2`` -> ``class_embedding.linear_1/2``), ``first_stage_model.`` -> ``vae`` (SDXL
VAE, scale 0.13025), ``control_encoder.`` -> ``sketch_encoder`` (``model.`` -> ``stem.``,
``attn_layer.`` -> ``attention.``), ``proj.`` -> ``proj`` (ClusterConcat), and for xlv2
``bg_encoder.`` -> ``reference_net`` (the same UNet rules under another prefix).

xlv2's background LoRA (``...attn2.to_{q,k,v}.lora_{down,up}_background.weight``, rank 4) is
returned beside the parts as ``{unet weight key: (down, up)}`` and merged into the weights by
`merge_background_lora` (``W + up @ down``, no scaling, as upstream merges it).

Accepted and ignored: the 12 noise-schedule buffers, and xlv2's ``model.diffusion_model.conv_fg.*``
(the input conv of upstream's foreground-encoder path, which xlv2 has no encoder for: its
inference never uses it). Anything else that maps onto nothing, any missing weight and any shape
mismatch refuses the load with the keys named.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .keymaps import SCHEDULE_BUFFERS, KeyMap, Rule, unet_rules, vae_rules
from .single_file import SHOWN, CheckpointKeyError
from .xl_configs import XLConfig

UNET_TOP = "model.diffusion_model."
PREFIXES = {
    "unet": UNET_TOP,
    "vae": "first_stage_model.",
    "sketch_encoder": "control_encoder.",
    "proj": "proj.",
    "reference_net": "bg_encoder.",
}
IGNORED_PREFIXES = (UNET_TOP + "conv_fg.",)
LORA_MARK = ".lora_"


class XLKeyError(CheckpointKeyError):
    def __init__(self, path, missing, unexpected, mismatched):
        super().__init__(path, missing, unexpected, mismatched)
        self.args = (str(self.args[0]).replace("Is it a switch or mult checkpoint", "Is it an sdxl-* or xlv2-* checkpoint"),)


class RuleMap(KeyMap):
    """A `KeyMap` from a list of rules (both directions, longest prefix first)."""

    def __init__(self, rules: list[Rule]):  # noqa: D107 - KeyMap's builder is not used
        self.by_ldm = sorted(rules, key=lambda r: -len(r.ldm))
        self.by_ours = sorted(rules, key=lambda r: -len(r.ours))


def _sdxl_unet_rules(config: dict, part: str, top: str) -> list[Rule]:
    rules = []
    for rule in unet_rules(config):
        # Part 1's attention renames move LoRA keys into its processors; here the LoRA stays out.
        rules.append(replace(rule, part=part, ldm=top + rule.ldm[len(UNET_TOP):], renames=tuple(
            r for r in rule.renames if ".lora_" not in r[0])))
    rules.append(Rule(part, top + "label_emb.0.0.", "class_embedding.linear_1."))
    rules.append(Rule(part, top + "label_emb.0.2.", "class_embedding.linear_2."))
    return rules


def xl_key_map(config: XLConfig) -> RuleMap:
    rules = _sdxl_unet_rules(config.unet, "unet", UNET_TOP) + vae_rules(config.vae)
    s = PREFIXES["sketch_encoder"]
    rules += [
        Rule("sketch_encoder", s, ""),
        Rule("sketch_encoder", s + "model.", "stem."),
        Rule("sketch_encoder", s + "attn_layer.", "attention."),
        Rule("proj", PREFIXES["proj"], ""),
    ]
    if config.reference_net is not None:
        rules += _sdxl_unet_rules(config.reference_net, "reference_net", PREFIXES["reference_net"])
    return RuleMap(rules)


def build_xl_components(config: XLConfig, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's parts, built from their configs (random weights), processors installed."""
    from diffusers import AutoencoderKL

    from ..models.cluster_concat import ClusterConcat
    from ..models.unet_xl import ReferenceNetXL, XLUNet2DConditionModel
    from ..models.xl_attention import install_bank_writers, install_xl_attention
    from ..models.xl_sketch_encoder import MultiScaleAttentionEncoder

    with torch.device(device):
        unet = XLUNet2DConditionModel.from_config(config.unet)
        install_xl_attention(unet, reference_bank=config.reference_net is not None)
        parts: dict[str, Any] = {
            "unet": unet,
            "vae": AutoencoderKL.from_config(config.vae),
            "sketch_encoder": MultiScaleAttentionEncoder.from_config(config.sketch_encoder),
            "proj": ClusterConcat.from_config(config.proj),
        }
        if config.reference_net is not None:
            reference_net = ReferenceNetXL.from_config(config.reference_net)
            install_bank_writers(reference_net)
            parts["reference_net"] = reference_net
    return parts


def lora_targets(unet) -> list[str]:
    """The weights the background LoRA adapts: every attn2 to_q/to_k/to_v of the UNet."""
    return sorted(f"{name}.{p}.weight" for name, module in unet.named_modules() if name.endswith("attn2")
                  for p in ("to_q", "to_k", "to_v"))


def load_xl_components(
    path: str | Path, config: XLConfig, dtype: torch.dtype = torch.float32
) -> tuple[dict[str, Any], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Parts filled from the checkpoint (meta-built, assigned, strict), and the background LoRA
    factors (empty for xl)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; give the local path of a .safetensors file")
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint {path}: only .safetensors files are loaded (never pickles)")
    parts = build_xl_components(config, device="meta")
    expected = {name: dict(module.state_dict()) for name, module in parts.items()}
    mapping = xl_key_map(config)
    targets = set(lora_targets(parts["unet"])) if config.background_lora_rank else set()
    states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in parts}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            if key in SCHEDULE_BUFFERS or key.startswith(IGNORED_PREFIXES):
                continue
            found = mapping.to_ours(key)
            if found is None or found[0] not in parts:
                unexpected.append(key)
                continue
            part, ours, rule = found
            if LORA_MARK in ours and part == "unet":
                # "...attn2.to_q.lora_down_background.weight" -> target "...attn2.to_q.weight"
                target, _, kind = ours.rpartition(LORA_MARK)
                kind = kind.split("_", 1)[0]  # "down" / "up"
                if target + ".weight" not in targets or not key.endswith("_background.weight"):
                    unexpected.append(key)
                    continue
                lora.setdefault(target + ".weight", {})[kind] = handle.get_tensor(key).to(torch.float32)
                continue
            if ours not in expected[part]:
                unexpected.append(key)
                continue
            tensor = handle.get_tensor(key)
            if rule.conv_to_linear and tensor.ndim == 4:
                tensor = tensor[:, :, 0, 0]
            target = expected[part][ours]
            if tuple(tensor.shape) != tuple(target.shape):
                mismatched.append(f"{key} {tuple(tensor.shape)} (model: {tuple(target.shape)})")
                continue
            states[part][ours] = tensor.to(dtype).contiguous()
    missing = []
    for part, keys in expected.items():
        for ours in keys:
            if ours not in states[part]:
                back = mapping.to_ldm(part, ours)
                missing.append(back[0] if back else f"{PREFIXES.get(part, part)}{ours}")
    for target in sorted(targets):
        for kind in ("down", "up"):
            if kind not in lora.get(target, {}):
                back = mapping.to_ldm("unet", target)
                name = back[0] if back else target
                missing.append(name.removesuffix(".weight") + f".lora_{kind}_background.weight")
    if missing or unexpected or mismatched:
        raise XLKeyError(path, sorted(missing), sorted(unexpected), mismatched)
    for part, module in parts.items():
        module.load_state_dict(states[part], strict=True, assign=True)
        module.eval().requires_grad_(False)
    factors = {target: (pair["down"], pair["up"]) for target, pair in lora.items()}
    return parts, factors


@torch.no_grad()
def merge_background_lora(unet, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], sign: float = 1.0) -> None:
    """``W += sign * up @ down`` for each adapted weight (computed in float32)."""
    unet = getattr(unet, "_orig_mod", unet)  # a torch.compile'd UNet holds the module here
    for key, (down, up) in factors.items():
        weight = unet.get_parameter(key)
        delta = (up.to(weight.device, torch.float32) @ down.to(weight.device, torch.float32)) * sign
        weight.copy_((weight.float() + delta).to(weight.dtype))


def xl_to_ldm_state_dict(parts: dict[str, Any], config: XLConfig,
                         factors: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """Our parts' weights (and LoRA factors) under the published checkpoint's keys."""
    mapping = xl_key_map(config)
    out: dict[str, torch.Tensor] = {}
    for part, module in parts.items():
        for key, tensor in module.state_dict().items():
            found = mapping.to_ldm(part, key)
            if found is None:
                raise KeyError(f"no published key for {part}.{key}")
            ldm_key, rule = found
            if rule.conv_to_linear and tensor.ndim == 2:
                tensor = tensor[:, :, None, None]
            out[ldm_key] = tensor.detach().contiguous()
    for target, (down, up) in (factors or {}).items():
        ldm = mapping.to_ldm("unet", target)[0].removesuffix(".weight")
        out[f"{ldm}.lora_down_background.weight"] = down.contiguous()
        out[f"{ldm}.lora_up_background.weight"] = up.contiguous()
    return out


def random_background_lora(unet, rank: int, generator: torch.Generator, std: float = 0.05) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random LoRA factors of the published shape (tests, benchmarks)."""
    factors = {}
    for key in lora_targets(unet):
        out_features, in_features = unet.get_parameter(key).shape
        factors[key] = (torch.randn(rank, in_features, generator=generator) * std,
                        torch.randn(out_features, rank, generator=generator) * std)
    return factors


__all__ = [
    "SHOWN",
    "XLKeyError",
    "build_xl_components",
    "load_xl_components",
    "merge_background_lora",
    "random_background_lora",
    "xl_key_map",
    "xl_to_ldm_state_dict",
]
