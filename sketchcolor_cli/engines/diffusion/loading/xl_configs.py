"""The xl and xlv2 architectures as configs (upstream ``configs/inference/sdxl.yaml`` and
``xlv2.yaml``), and how a checkpoint file picks its family.

`XLConfig` holds one diffusers-style config per part; the default is the published model, tests
build tiny ones of the same wiring (`tiny.py`). Written as ``xl_config.json`` in a converted folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .configs import Prediction, sd21_scheduler_config, sd21_vae_config

XLFamily = Literal["xl", "xlv2"]
CONFIG_NAME = "xl_config.json"


def sdxl_unet_config() -> dict[str, Any]:
    """SDXL's UNet as upstream configures it: no attention at the first level, transformer depth
    2 and 10, 64-d heads, context 2048, linear projections, and a 512-d ``y`` (class embedding of
    type "projection" = upstream's ``label_emb``)."""
    return {
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [320, 640, 1280],
        "layers_per_block": 2,
        "transformer_layers_per_block": [1, 2, 10],
        "attention_head_dim": [5, 10, 20],  # diffusers' name for the head count (64-d heads)
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "class_embed_type": "projection",
        "projection_class_embeddings_input_dim": 512,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
    }


def reference_net_config() -> dict[str, Any]:
    """xlv2's ``bg_encoder``: the SDXL shape, 6 input channels, a 1024-d ``y`` (crop embeddings);
    its cross-attention is removed when built (`ReferenceNetXL`)."""
    return {**sdxl_unet_config(), "in_channels": 6, "projection_class_embeddings_input_dim": 1024}


def sdxl_vae_config() -> dict[str, Any]:
    return {**sd21_vae_config(), "sample_size": 1024, "scaling_factor": 0.13025}


@dataclass
class XLConfig:
    family: XLFamily = "xl"
    unet: dict[str, Any] = field(default_factory=sdxl_unet_config)
    vae: dict[str, Any] = field(default_factory=sdxl_vae_config)
    sketch_encoder: dict[str, Any] = field(
        default_factory=lambda: {"in_channels": 3, "model_channels": 320, "channel_mult": [1, 2, 4], "head_dim": 128}
    )
    proj: dict[str, Any] = field(
        default_factory=lambda: {"input_dim": 1280, "c_dim": 1024, "output_dim": 2048, "head_dim": 128, "token_length": 196}
    )
    reference_net: dict[str, Any] | None = None  # xlv2 only
    background_lora_rank: int | None = None  # xlv2: rank-4 LoRA on every attn2 to_q/k/v
    scalar_embed_dim: int = 256  # sinusoid width of each value of y (upstream's TimestepEmbedding)
    aesthetic_score: float = 7.0  # the second value of y, fixed upstream
    scheduler: dict[str, Any] = field(default_factory=sd21_scheduler_config)
    prediction_type: Prediction | None = None  # None: from the checkpoint's file name
    tagger: dict[str, Any] = field(default_factory=dict)  # WDTagger arguments ({}: the published one)

    @classmethod
    def for_family(cls, family: XLFamily) -> "XLConfig":
        if family == "xlv2":
            return cls(family="xlv2", reference_net=reference_net_config(), background_lora_rank=4)
        return cls()

    @classmethod
    def from_file(cls, path: str | Path) -> "XLConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read the model config {path}: {error}") from None
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"model config {path}: unknown keys {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(cls.__dataclass_fields__))}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def family_from_name(name: str) -> str:
    """Upstream's rule (``backend/appfunc.py``): the file name's prefix names the model type
    (``sdxl`` -> xl, ``xlv2`` -> xlv2); ``mult`` and anything else are part 1's SD2.1 models."""
    base = Path(name).name
    if base.startswith("xlv2"):
        return "xlv2"
    if base.startswith("sdxl"):
        return "xl"
    return "mult" if base.startswith("mult") else "switch"


def is_xl_config_file(path: str | Path) -> bool:
    """Whether a model config json describes an xl/xlv2 model (it holds the xl-only keys)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return data.get("family") in ("xl", "xlv2")
