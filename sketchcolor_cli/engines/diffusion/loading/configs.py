"""The switch model's architecture as configs (upstream ``configs/inference/switch.yaml``), and
how the prediction type is picked.

`SwitchConfig` holds one diffusers-style config per part. The default is the published model;
tests build tiny ones of the same architecture. A config is written as ``switch_config.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Prediction = Literal["epsilon", "v_prediction"]


def sd21_unet_config() -> dict[str, Any]:
    """SD2.1's UNet, with 1x1-conv projections in the transformers as in the switch checkpoint."""
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "attention_head_dim": [5, 10, 20, 20],  # diffusers' name for the head count of SD2.x (64-d heads)
        "cross_attention_dim": 1024,
        "use_linear_projection": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
    }


def sd21_vae_config() -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def sd21_scheduler_config() -> dict[str, Any]:
    """Upstream's diffusers scheduler settings (``configs/scheduler_cfgs/dpm.yaml``)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "clip_sample": False,
    }


Family = Literal["switch", "mult"]


@dataclass
class SwitchConfig:
    # "switch": split attention with fg/bg LoRAs, threshold embedder and ClusterTransformer;
    # "mult" (v1): the same UNet and encoders, split attention without those three parts.
    family: Family = "switch"
    unet: dict[str, Any] = field(default_factory=sd21_unet_config)
    vae: dict[str, Any] = field(default_factory=sd21_vae_config)
    sketch_encoder: dict[str, Any] = field(
        default_factory=lambda: {"in_channels": 3, "model_channels": 320, "channel_mult": [1, 2, 4, 4]}
    )
    threshold_embedder: dict[str, Any] = field(default_factory=lambda: {"embed_dim": 256, "out_dim": 1024})
    cluster_transformer: dict[str, Any] = field(
        default_factory=lambda: {"dim": 1024, "token_length": 256, "num_layers": 6, "head_dim": 64, "mlp_ratio": 4}
    )
    # LoRA ranks: an int is a rank, a float a share of min(in, out) features (upstream's rule).
    lora_fg_rank: int | float | None = 4
    lora_bg_rank: int | float | None = 0.5
    scheduler: dict[str, Any] = field(default_factory=sd21_scheduler_config)
    prediction_type: Prediction | None = None  # None: from the checkpoint's file name

    @classmethod
    def for_checkpoint(cls, path: str | Path) -> "SwitchConfig":
        """The published architecture for a checkpoint file, picked by its name as upstream does
        (the file name's prefix names the family)."""
        if Path(path).name.startswith("mult"):
            return cls(family="mult", lora_fg_rank=None, lora_bg_rank=None)
        return cls()

    @property
    def has_switch_parts(self) -> bool:
        return self.family == "switch"

    @classmethod
    def from_file(cls, path: str | Path) -> "SwitchConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read the model config {path}: {error}") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model config {path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def prediction_from_name(name: str) -> Prediction:
    """Upstream's rule (``backend/appfunc.py``): eps when the file name contains "eps", else v."""
    return "epsilon" if "eps" in Path(name).name else "v_prediction"
