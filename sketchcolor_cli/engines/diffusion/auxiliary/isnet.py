"""The ISNet anime-segmentation model (SkyTNT/anime-segmentation's ``ISNetDIS``) in torch.

Written from the published architecture, with its state-dict key names, so the weights studios
hold load strictly: ``isnetis`` (anime character segmentation, upstream's reference-mask ISNet)
and ``sketch-segment`` (upstream xl's sketch-mask ISNet). Both are the same network:

* a stride-2 3x3 stem ``conv_in`` (its ``pool_in`` is computed upstream but never used: stage 1
  reads the stem's output directly, so the first side output is at half resolution);
* six encoder stages of residual U-blocks (RSU7, RSU6, RSU5, RSU4, RSU4F, RSU4F) with 2x2
  ceil-mode max-pools between them, five decoder stages (``stage5d`` .. ``stage1d``) on the
  upsampled deeper map concatenated with the skip;
* six 3x3 side heads; inference uses only ``side1`` (on ``stage1d``), bilinearly upsampled to the
  input size, through a sigmoid. ``side2``-``side6`` stay in the module so the published files
  load strictly.

Each conv unit is ``conv_s1`` (3x3, padding = dilation) -> ``bn_s1`` (BatchNorm) -> ReLU. Channel
widths are read from the weights (`ISNetConfig.from_state_dict`), so a small test model with the
same layout loads the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .onnx_runtime import AuxModelError

# Published widths (in, mid, out) of each stage, and the RSU depth of each.
PUBLISHED_STAGES: dict[str, tuple[int, int, int]] = {
    "stage1": (64, 32, 64),
    "stage2": (64, 32, 128),
    "stage3": (128, 64, 256),
    "stage4": (256, 128, 512),
    "stage5": (512, 256, 512),
    "stage6": (512, 256, 512),
    "stage5d": (1024, 256, 512),
    "stage4d": (1024, 128, 256),
    "stage3d": (512, 64, 128),
    "stage2d": (256, 32, 64),
    "stage1d": (128, 16, 64),
}
# Encoder levels below the stage (RSU7 has 7 conv levels, ..., RSU4F is 4 levels without pooling).
RSU_DEPTH = {"stage1": 7, "stage2": 6, "stage3": 5, "stage4": 4, "stage5": 0, "stage6": 0,
             "stage5d": 0, "stage4d": 4, "stage3d": 5, "stage2d": 6, "stage1d": 7}  # fmt: skip
# Which stage each side head reads.
SIDE_SOURCES = {"side1": "stage1d", "side2": "stage2d", "side3": "stage3d", "side4": "stage4d",
                "side5": "stage5d", "side6": "stage6"}  # fmt: skip
# Prefixes of wrapped checkpoints: lightning's AnimeSegmentation (`net.`), DataParallel (`module.`).
_WRAPPER_PREFIXES = ("net.", "module.")


@dataclass(frozen=True)
class ISNetConfig:
    in_channels: int = 3
    stem_channels: int = 64
    stages: dict[str, tuple[int, int, int]] = field(default_factory=lambda: dict(PUBLISHED_STAGES))
    out_channels: int = 1

    @classmethod
    def tiny(cls, divisor: int = 16) -> "ISNetConfig":
        """The published layout with every width divided (at least 1 channel): for tests."""
        def cut(value: int) -> int:
            return max(1, value // divisor)

        stages = {}
        for name, (_, mid, out) in PUBLISHED_STAGES.items():
            stages[name] = (0, cut(mid), cut(out))
        config = cls(stem_channels=cut(64), stages=stages)
        return config.with_inputs_wired()

    def with_inputs_wired(self) -> "ISNetConfig":
        """Fill each stage's input width from the widths feeding it (encoder chain, decoder concat)."""
        s = {name: list(value) for name, value in self.stages.items()}
        out = {name: value[2] for name, value in s.items()}
        s["stage1"][0] = self.stem_channels
        for previous, name in zip(("stage1", "stage2", "stage3", "stage4", "stage5"),
                                  ("stage2", "stage3", "stage4", "stage5", "stage6")):  # fmt: skip
            s[name][0] = out[previous]
        s["stage5d"][0] = out["stage6"] + out["stage5"]
        s["stage4d"][0] = out["stage5d"] + out["stage4"]
        s["stage3d"][0] = out["stage4d"] + out["stage3"]
        s["stage2d"][0] = out["stage3d"] + out["stage2"]
        s["stage1d"][0] = out["stage2d"] + out["stage1"]
        return ISNetConfig(self.in_channels, self.stem_channels, {k: tuple(v) for k, v in s.items()}, self.out_channels)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "ISNetConfig":
        """The widths of the network these weights belong to (KeyError if a needed key is absent)."""
        stem = state["conv_in.weight"]
        stages = {}
        for name in PUBLISHED_STAGES:
            into = state[f"{name}.rebnconvin.conv_s1.weight"]  # [out, in, 3, 3]
            first = state[f"{name}.rebnconv1.conv_s1.weight"]  # [mid, out, 3, 3]
            stages[name] = (int(into.shape[1]), int(first.shape[0]), int(into.shape[0]))
        return cls(in_channels=int(stem.shape[1]), stem_channels=int(stem.shape[0]), stages=stages,
                   out_channels=int(state["side1.weight"].shape[0]))  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)


class ConvUnit(nn.Module):
    """3x3 conv (dilated), BatchNorm, ReLU: upstream's REBNCONV (keys conv_s1, bn_s1)."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)))


def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class ResidualUBlock(nn.Module):
    """RSU-L: an input conv, a small U-Net of `depth` levels on it (pooling between the first
    depth-1 levels, a dilation-2 conv at the bottom), and the input conv's output added back."""

    def __init__(self, depth: int, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.depth = depth
        self.rebnconvin = ConvUnit(in_ch, out_ch)
        self.rebnconv1 = ConvUnit(out_ch, mid_ch)
        for level in range(2, depth):
            setattr(self, f"rebnconv{level}", ConvUnit(mid_ch, mid_ch))
        setattr(self, f"rebnconv{depth}", ConvUnit(mid_ch, mid_ch, dilation=2))
        for level in range(depth - 1, 1, -1):
            setattr(self, f"rebnconv{level}d", ConvUnit(2 * mid_ch, mid_ch))
        self.rebnconv1d = ConvUnit(2 * mid_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = self.rebnconvin(x)
        skips = [self.rebnconv1(start)]
        for level in range(2, self.depth):
            skips.append(getattr(self, f"rebnconv{level}")(_pool(skips[-1])))
        up = getattr(self, f"rebnconv{self.depth}")(skips[-1])
        for level in range(self.depth - 1, 0, -1):
            up = getattr(self, f"rebnconv{level}d")(torch.cat((up, skips[level - 1]), 1))
            if level > 1:
                up = _resize_to(up, skips[level - 2])
        return up + start


class DilatedUBlock(nn.Module):
    """RSU-4F: four levels at full resolution with dilations 1, 2, 4, 8 instead of pooling."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.rebnconvin = ConvUnit(in_ch, out_ch)
        self.rebnconv1 = ConvUnit(out_ch, mid_ch)
        self.rebnconv2 = ConvUnit(mid_ch, mid_ch, dilation=2)
        self.rebnconv3 = ConvUnit(mid_ch, mid_ch, dilation=4)
        self.rebnconv4 = ConvUnit(mid_ch, mid_ch, dilation=8)
        self.rebnconv3d = ConvUnit(2 * mid_ch, mid_ch, dilation=4)
        self.rebnconv2d = ConvUnit(2 * mid_ch, mid_ch, dilation=2)
        self.rebnconv1d = ConvUnit(2 * mid_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = self.rebnconvin(x)
        h1 = self.rebnconv1(start)
        h2 = self.rebnconv2(h1)
        h3 = self.rebnconv3(h2)
        h4 = self.rebnconv4(h3)
        d3 = self.rebnconv3d(torch.cat((h4, h3), 1))
        d2 = self.rebnconv2d(torch.cat((d3, h2), 1))
        return self.rebnconv1d(torch.cat((d2, h1), 1)) + start


class ISNetDIS(nn.Module):
    """Image in, foreground probability out: [N, C, H, W] -> [N, 1, H, W] in [0, 1]."""

    def __init__(self, config: ISNetConfig | None = None):
        super().__init__()
        self.config = config = config or ISNetConfig()
        self.conv_in = nn.Conv2d(config.in_channels, config.stem_channels, 3, stride=2, padding=1)
        for name, (in_ch, mid, out) in config.stages.items():
            depth = RSU_DEPTH[name]
            block = DilatedUBlock(in_ch, mid, out) if depth == 0 else ResidualUBlock(depth, in_ch, mid, out)
            setattr(self, name, block)
        for side, source in SIDE_SOURCES.items():
            setattr(self, side, nn.Conv2d(config.stages[source][2], config.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Stage 1 reads the stem output itself (upstream pools it into a value it never uses).
        h1 = self.stage1(self.conv_in(x))
        h2 = self.stage2(_pool(h1))
        h3 = self.stage3(_pool(h2))
        h4 = self.stage4(_pool(h3))
        h5 = self.stage5(_pool(h4))
        h6 = self.stage6(_pool(h5))
        d5 = self.stage5d(torch.cat((_resize_to(h6, h5), h5), 1))
        d4 = self.stage4d(torch.cat((_resize_to(d5, h4), h4), 1))
        d3 = self.stage3d(torch.cat((_resize_to(d4, h3), h3), 1))
        d2 = self.stage2d(torch.cat((_resize_to(d3, h2), h2), 1))
        d1 = self.stage1d(torch.cat((_resize_to(d2, h1), h1), 1))
        return torch.sigmoid(_resize_to(self.side1(d1), x))


def strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a lightning (`net.`) or DataParallel (`module.`) save without their prefix."""
    for prefix in _WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            return {key[len(prefix):]: value for key, value in state.items()}
    return state


def load_isnet(path: str | Path, *, field: str = "model") -> ISNetDIS:
    """An ISNet from a safetensors file (strict: every key used, none missing), in eval mode, float32."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise AuxModelError(f"{field}: the ISNet weights {path} do not exist; name a local .safetensors or .onnx file")
    try:
        state = strip_wrapper_prefix(load_file(str(path)))
    except Exception as error:  # safetensors raises its own error types for a bad header
        raise AuxModelError(f"{field}: cannot read {path} as safetensors ({error})") from None
    try:
        config = ISNetConfig.from_state_dict(state)
    except KeyError as error:
        raise AuxModelError(f"{field}: {path} is not an ISNet (anime-segmentation) state dict: no key {error}") from None
    model = ISNetDIS(config)
    result = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:5]) or "none"
        unexpected = ", ".join(result.unexpected_keys[:5]) or "none"
        raise AuxModelError(
            f"{field}: {path} does not fit the ISNet architecture: {len(result.missing_keys)} missing keys "
            f"({missing}), {len(result.unexpected_keys)} unexpected keys ({unexpected})"
        )
    return model.eval()
