"""The strict loader of the published single-file checkpoints (safetensors, LDM key layout).

Every key is mapped onto our modules (`keymaps`); the load refuses, naming the keys, when any
module parameter is missing from the file, when the file holds a key that maps onto nothing, or
when a shape differs. There is no partial load. Upstream itself loads with ``strict=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .configs import SwitchConfig
from .keymaps import PART_PREFIXES, SCHEDULE_BUFFERS, KeyMap

SHOWN = 12  # keys named per kind of problem in the message


class CheckpointKeyError(ValueError):
    """The checkpoint's keys do not match the model: missing, unexpected or wrong shape."""

    def __init__(self, path: str | Path, missing: list[str], unexpected: list[str], mismatched: list[str]):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                shown = ", ".join(keys[:SHOWN]) + (f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        super().__init__(
            f"checkpoint {path} does not match the model ({'; '.join(parts)}). Is it a switch or mult "
            "checkpoint, and does the model config (engine.diffusion.config) describe it?"
        )


def build_components(config: SwitchConfig, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The trainable parts, built from their configs (random weights)."""
    from diffusers import AutoencoderKL

    from ..models import ClusterTransformer, SketchEncoder, SwitchUNet2DConditionModel, ThresholdEmbedder
    from ..models.split_attention import install_split_attention

    with torch.device(device):
        unet = SwitchUNet2DConditionModel.from_config(config.unet)
        install_split_attention(unet, config.lora_fg_rank, config.lora_bg_rank)
        parts: dict[str, Any] = {
            "unet": unet,
            "vae": AutoencoderKL.from_config(config.vae),
            "sketch_encoder": SketchEncoder.from_config(config.sketch_encoder),
        }
        if config.has_switch_parts:
            parts["threshold_embedder"] = ThresholdEmbedder.from_config(config.threshold_embedder)
            parts["cluster_transformer"] = ClusterTransformer.from_config(config.cluster_transformer)
    return parts


def key_map(config: SwitchConfig) -> KeyMap:
    return KeyMap(
        config.unet,
        config.vae,
        len(config.sketch_encoder["channel_mult"]),
        config.cluster_transformer["num_layers"] if config.has_switch_parts else 0,
    )


def load_switch_components(
    path: str | Path, config: SwitchConfig | None = None, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Build the parts on the meta device and fill them from the single-file checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; give the local path of a .safetensors file")
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint {path}: only .safetensors files are loaded (never pickles)")
    config = config or SwitchConfig.for_checkpoint(path)
    parts = build_components(config, device="meta")
    expected = {name: dict(module.state_dict()) for name, module in parts.items()}
    mapping = key_map(config)

    states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in parts}
    unexpected: list[str] = []
    mismatched: list[str] = []
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            if key in SCHEDULE_BUFFERS:
                continue
            found = mapping.to_ours(key)
            if found is None or found[0] not in parts or found[1] not in expected[found[0]]:
                unexpected.append(key)
                continue
            part, ours, rule = found
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
                missing.append(back[0] if back else f"{PART_PREFIXES.get(part, part)}{ours}")
    if missing or unexpected or mismatched:
        raise CheckpointKeyError(path, sorted(missing), sorted(unexpected), mismatched)
    for part, module in parts.items():
        module.load_state_dict(states[part], strict=True, assign=True)
        module.eval().requires_grad_(False)
    return parts


def to_ldm_state_dict(parts: dict[str, Any], config: SwitchConfig) -> dict[str, torch.Tensor]:
    """Our parts' weights under the published checkpoint's keys (for tests and benchmarks)."""
    mapping = key_map(config)
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
    return out
