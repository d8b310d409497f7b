"""The WD tagger's image tower (SmilingWolf ``wd-v1-4-swinv2-tagger-v2``): a Swin Transformer V2
whose state-dict keys are timm's ``swinv2_base_window8_256`` built with ``num_classes=9083,
img_size=448, window_size=14``, so the tagger's published ``model.safetensors`` loads strictly
without timm (which cannot be imported beside this project's torch).

The architecture, as timm builds it: a 4x4 stride-4 patch conv + LayerNorm; four stages (dims
128/256/512/1024, depths 2/2/18/2, heads 4/8/16/32), stages 1-3 starting with patch merging
(2x2 neighbours concatenated in (h0w0, h1w0, h0w1, h1w1) order, a bias-free linear to 2x the
width, then LayerNorm); blocks with POST-norm residuals ``x + norm1(attn(x))``,
``x + norm2(mlp(x))``; window attention with cosine similarity times ``exp(min(logit_scale,
log 100))``, a continuous position bias ``16 sigmoid(MLP(log-spaced relative coords))`` and
shifted windows (shift = window / 2 on odd blocks, none where the map is no larger than the
window, -100 between regions); a final LayerNorm; a linear head of 9083 tags.

The xl reference encoder uses the final-norm features: 14 x 14 x 1024 at 448 px -> 196 tokens.
Upstream feeds the reference resized straight to 448 x 448 (bicubic, align_corners, antialias),
in [-1, 1], flipped to BGR (`preprocess_tagger`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# Buffers timm recomputes; older exports may hold them: accepted and ignored when loading.
RECOMPUTED_BUFFERS = ("relative_position_index", "relative_coords_table", "attn_mask", "k_bias")


def relative_coords_table(window: tuple[int, int]) -> torch.Tensor:
    """[(2Wh-1) * (2Ww-1), 2] log-spaced relative coordinates, normalised to [-8, 8] first."""
    h = torch.arange(-(window[0] - 1), window[0], dtype=torch.float32)
    w = torch.arange(-(window[1] - 1), window[1], dtype=torch.float32)
    table = torch.stack(torch.meshgrid(h, w, indexing="ij"), dim=-1)
    table[..., 0] /= max(window[0] - 1, 1)
    table[..., 1] /= max(window[1] - 1, 1)
    table = table * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.reshape(-1, 2)


def relative_position_index(window: tuple[int, int]) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    relative[:, :, 0] += window[0] - 1
    relative[:, :, 1] += window[1] - 1
    relative[:, :, 0] *= 2 * window[1] - 1
    return relative.sum(-1)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: tuple[int, int], heads: int):
        super().__init__()
        self.heads = heads
        self.window = window
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, heads, bias=False))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("coords_table", relative_coords_table(window), persistent=False)
        self.register_buffer("position_index", relative_position_index(window).reshape(-1), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        q, k, v = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        table = self.cpb_mlp(self.coords_table.to(x.dtype))
        position_bias = table[self.position_index].view(n, n, -1).permute(2, 0, 1)
        attn = attn + 16 * torch.sigmoid(position_bias)[None]
        if mask is not None:
            windows = mask.shape[0]
            attn = (attn.view(-1, windows, self.heads, n, n) + mask[None, :, None]).view(-1, self.heads, n, n)
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // window[0], window[0], w // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], h: int, w: int) -> torch.Tensor:
    c = windows.shape[-1]
    x = windows.view(-1, h // window[0], w // window[1], window[0], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class SwinV2Block(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, shifted: bool, mlp_ratio: float = 4.0):
        super().__init__()
        self._resolution = resolution
        # As timm: a map no larger than the window is one window, unshifted.
        self.window = tuple(r if r <= window else window for r in resolution)
        self.shift = tuple(0 if r <= window else (window // 2 if shifted else 0) for r in resolution)
        self.attn = WindowAttention(dim, self.window, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)
        self.register_buffer("shift_mask", self._shift_mask(resolution), persistent=False)

    def _shift_mask(self, resolution: tuple[int, int]) -> torch.Tensor | None:
        if not any(self.shift):
            return None
        regions = torch.zeros(1, *resolution, 1)
        label = 0
        for hs in ((0, -self.window[0]), (-self.window[0], -self.shift[0]), (-self.shift[0], None)):
            for ws in ((0, -self.window[1]), (-self.window[1], -self.shift[1]), (-self.shift[1], None)):
                regions[:, hs[0] : hs[1], ws[0] : ws[1], :] = label
                label += 1
        windows = window_partition(regions, self.window).squeeze(-1)
        difference = windows[:, None, :] - windows[:, :, None]
        return torch.where(difference != 0, torch.tensor(-100.0), torch.tensor(0.0))

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if any(self.shift):
            x = torch.roll(x, shifts=(-self.shift[0], -self.shift[1]), dims=(1, 2))
        pad_h = (self.window[0] - h % self.window[0]) % self.window[0]
        pad_w = (self.window[1] - w % self.window[1]) % self.window[1]
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        mask = None if self.shift_mask is None else self.shift_mask.to(x.dtype)
        windows = self.attn(window_partition(x, self.window), mask)
        x = window_reverse(windows, self.window, h + pad_h, w + pad_w)[:, :h, :w].contiguous()
        if any(self.shift):
            x = torch.roll(x, shifts=self.shift, dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x + self.norm1(self._attention(x))
        x = x.reshape(b, -1, c)
        x = x + self.norm2(self.mlp(x))
        return x.reshape(b, h, w, c)


class PatchMerging(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        _, h, w, _ = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.norm(self.reduction(x))


class Stage(nn.Module):
    def __init__(self, dim: int, out_dim: int, resolution: tuple[int, int], depth: int, heads: int, window: int,
                 downsample: bool):
        super().__init__()
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        resolution = tuple(r // 2 for r in resolution) if downsample else resolution
        self.blocks = nn.ModuleList(
            [SwinV2Block(out_dim, resolution, heads, window, shifted=i % 2 == 1) for i in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ClassifierHead(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)


class WDTagger(ModelMixin, ConfigMixin):
    """``features(pixels [B, 3, S, S]) -> [B, S/32, S/32, C]`` (after the final norm)."""

    @register_to_config
    def __init__(self, img_size: int = 448, patch_size: int = 4, in_channels: int = 3, embed_dim: int = 128,
                 depths: tuple[int, ...] = (2, 2, 18, 2), num_heads: tuple[int, ...] = (4, 8, 16, 32),
                 window_size: int = 14, num_classes: int = 9083):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim)
        grid = img_size // patch_size
        dims = [embed_dim * 2**i for i in range(len(depths))]
        layers, previous = [], dims[0]
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            # As timm: stage i > 0 starts with patch merging, so its input is at grid / 2^(i-1).
            side = grid // 2 ** max(i - 1, 0)
            layers.append(Stage(previous, dims[i], (side, side), depth, heads, window_size, downsample=i > 0))
            previous = dims[i]
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = ClassifierHead(dims[-1], num_classes)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layers(self.patch_embed(pixels)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tag logits [B, num_classes] (average-pooled features through the head)."""
        return self.head.fc(self.features(pixels).mean(dim=(1, 2)))


def preprocess_tagger(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, H, W] RGB in [-1, 1] -> the tagger's input as upstream builds it: resized straight to
    size x size (bicubic, align_corners, antialias), BGR, still in [-1, 1]."""
    x = F.interpolate(images, (size, size), mode="bicubic", align_corners=True, antialias=True)
    return x[:, [2, 1, 0]]


def tagger_tokens(tagger: WDTagger, images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB in [-1, 1] -> [B, (S/32)^2, C] final-norm feature tokens."""
    pixels = preprocess_tagger(images.to(tagger.dtype), tagger.config.img_size)
    return tagger.features(pixels).flatten(1, 2)


def load_wd_tagger(path: str | Path, dtype: torch.dtype = torch.float32, config: dict | None = None) -> WDTagger:
    """The tagger from its published ``model.safetensors`` (a file, or a folder holding it;
    a ``tagger_config.json`` of `WDTagger`'s arguments beside it gives other shapes). Strict: the
    keys must be timm's, missing or unexpected keys are named."""
    import json

    from safetensors.torch import load_file

    path = Path(path).expanduser()
    weights = path / "model.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"WD tagger {path}: no model.safetensors; give the local file of "
                                "SmilingWolf/wd-v1-4-swinv2-tagger-v2 (model.safetensors)")
    shape_file = (path if path.is_dir() else path.parent) / "tagger_config.json"
    if config is None and shape_file.is_file():
        config = json.loads(shape_file.read_text(encoding="utf-8"))
    with torch.device("meta"):
        model = WDTagger(**(config or {}))
    state = {k: v for k, v in load_file(str(weights)).items() if not k.endswith(RECOMPUTED_BUFFERS)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} (model: {tuple(expected[k].shape)})"
             for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        from ..loading.single_file import CheckpointKeyError

        raise CheckpointKeyError(weights, missing, unexpected, wrong)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    # Non-persistent buffers were built on the meta device: build them again for real.
    for module in model.modules():
        if isinstance(module, WindowAttention):
            module.coords_table = relative_coords_table(module.window)
            module.position_index = relative_position_index(module.window).reshape(-1)
        elif isinstance(module, SwinV2Block):
            module.shift_mask = module._shift_mask(module._resolution)
    return model.eval().requires_grad_(False)


class TaggerFeatures(nn.Module):
    """The tagger as its ONNX export runs it: BGR pixels in [-1, 1] at its size -> [B, tokens, C]
    final-norm features (what the xl reference encoder takes; the published ONNX gives tags)."""

    def __init__(self, tagger: WDTagger):
        super().__init__()
        self.tagger = tagger
        self.config = tagger.config

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tagger.features(pixels).flatten(1, 2)


def load_tagger_features(path: str | Path, field: str = "tagger") -> TaggerFeatures:
    """`sketchcolor convert --to onnx --kind tagger`: the torch tagger, strictly loaded."""
    from ..auxiliary.onnx_runtime import AuxModelError

    try:
        return TaggerFeatures(load_wd_tagger(path))
    except (FileNotFoundError, ValueError) as error:
        raise AuxModelError(f"{field}: {error}") from None
