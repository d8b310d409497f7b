"""The xl engine's WD tagger on onnxruntime: its final-norm features, fed as upstream feeds them.

Upstream xl (``refnet/modules/embedder.py``) runs timm's ``swinv2_base_window8_256`` built at
448 px with the published ``wd-v1-4-swinv2-tagger-v2`` weights, and takes the features after all
blocks and the final norm: 14 x 14 x 1024 = 196 tokens. The input is the RGB reference in
[-1, 1], resized straight to 448 x 448 (non-square references are stretched) with
``F.interpolate(bicubic, align_corners=True, antialias=True)``, then flipped to BGR.

The tagger's published ONNX file gives tag probabilities, not these features: make the features
file with ``sketchcolor convert --to onnx --kind tagger`` from the torch model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...base import FULL
from .onnx_runtime import AuxModelError, Device, OnnxModel
from .resample import resize

TAGGER_SIZE = 448
TAGGER_TOKENS = 196
TAGGER_WIDTH = 1024


def tagger_input(image: np.ndarray, size: int = TAGGER_SIZE) -> np.ndarray:
    """A reference (H x W x 4 uint16, straight alpha, over white) as 1 x 3 x size x size BGR in [-1, 1]."""
    rgba = image.astype(np.float32) / FULL
    rgb = rgba[:, :, :3] * rgba[:, :, 3:4] + (1.0 - rgba[:, :, 3:4])
    resized = resize(rgb * 2.0 - 1.0, (size, size), "bicubic", antialias=True, align_corners=True)
    return np.ascontiguousarray(np.transpose(resized[:, :, ::-1], (2, 0, 1))[None], dtype=np.float32)


class OnnxTagger:
    """A features export of the tagger: N x 3 x 448 x 448 -> N x 196 x 1024."""

    def __init__(self, path: str | Path, *, field: str, device: Device = "auto", size: int = TAGGER_SIZE,
                 width: int = TAGGER_WIDTH):  # fmt: skip
        """`size`, `width`: the input side and feature width expected (the published tagger's by default)."""
        self.model = OnnxModel(path, field=field, device=device)
        self.size, self.width = size, width
        self.input, fixed = self.model.image_input()
        if fixed is not None and fixed != (size, size):
            raise AuxModelError(f"{field}: {self.model.path} takes {fixed[0]}x{fixed[1]} images; the tagger takes "
                                f"{size}x{size}")  # fmt: skip
        output = self.model.outputs[0].shape
        out_width = output[-1] if output else None
        if len(output) != 3 or (isinstance(out_width, int) and out_width != width):
            raise AuxModelError(
                f"{field}: {self.model.path} outputs {list(output)}, not N x tokens x {width} features "
                "(the tagger's published ONNX gives tag probabilities); export the features with "
                "`sketchcolor convert --to onnx --kind tagger` from the torch model"
            )

    def features(self, image: np.ndarray) -> np.ndarray:
        """196 x 1024 features of one reference image."""
        (out, *_) = self.model.run({self.input.name: tagger_input(image, self.size)})
        tokens = (self.size // 32) ** 2
        if out.shape[1:] != (tokens, self.width):
            raise AuxModelError(f"{self.model.field}: {self.model.path} gave {list(out.shape)}, not "
                                f"N x {tokens} x {self.width}")  # fmt: skip
        return out[0]

    def describe(self) -> str:
        return self.model.describe()


def onnx_tagger_module(path: str | Path, *, size: int = TAGGER_SIZE, width: int = TAGGER_WIDTH,
                       field: str = "engine.diffusion.tagger", device: Device = "auto"):  # fmt: skip
    """The features export where the xl reference encoder takes the torch tagger: the same torch
    pre-processing, then onnxruntime (CUDA provider when present). A parameter-free torch module,
    so the pipeline places and casts it like its other parts (a no-op)."""
    from types import SimpleNamespace

    import torch
    from torch import nn

    onnx = OnnxTagger(path, field=field, device=device, size=size, width=width)

    class OnnxTaggerModule(nn.Module):
        config = SimpleNamespace(img_size=size)

        @property
        def dtype(self) -> torch.dtype:
            return torch.float32  # the export runs in float32

        def features(self, pixels: torch.Tensor) -> torch.Tensor:
            batch = np.ascontiguousarray(pixels.detach().to("cpu", torch.float32).numpy())
            (out, *_) = onnx.model.run({onnx.input.name: batch})
            side = int(round(out.shape[1] ** 0.5))
            return torch.from_numpy(out).reshape(out.shape[0], side, side, out.shape[2]).to(pixels.device)

    return OnnxTaggerModule()
