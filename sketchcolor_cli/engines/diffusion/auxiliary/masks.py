"""Automatic masks with the published pre- and post-processing (upstream xl, ``preprocessor/``).

Sketch mask (ISNet, the ``sketch-segment`` weights): the sketch on white paper in [-1, 1],
resized straight to 1024 x 1024 (bicubic), through the network (sigmoid inside), resized back
(bicubic) and clamped to [0, 1]; no dilation. Upstream runs it on the sketch already placed on the
generation canvas: with its autofit canvas (the sketch's aspect) that is the frame stretched to the
square (``fit="stretch"``, the default); with its default 1024 x 1024 canvas the frame is first
centred on square white paper (``fit="pad"``).

Reference mask, two families:

* ISNet (``isnetis``): the reference scaled so its long side is 1024 (bicubic) and centred on a
  canvas of -1, then ``1 - (x + 1) / 2`` (so the picture enters inverted in [0, 1], the padding as
  1), through the network, the reference's part cropped out, resized back (bicubic), clamped;
* RMBG-2.0 / BiRefNet / BiRefNet-HR, as ONNX exports only: the reference in [0, 1] resized to the
  model's square size (1024; 2048 for -HR) with antialiased bilinear, ImageNet mean/std, the last
  output through a sigmoid (unless the graph already ends in one), resized back;

then for both a max-pool dilation with kernel 21 and a threshold at 0.5 (strictly above is
foreground), as upstream's xl does before it uses the mask.

The maths runs in numpy (`resample` matches torch's resizes), so the onnxruntime path needs no
torch; a ``.safetensors`` ISNet runs in torch with the same pre- and post-processing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from ...base import FULL
from .onnx_runtime import AuxModelError, Device, OnnxModel
from .resample import max_pool, resize

SKETCH_SIZE = 1024
REFERENCE_SIZE = 1024
REFERENCE_DILATION = 21
REFERENCE_THRESHOLD = 0.5
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

ReferenceFamily = Literal["isnet", "rmbg"]
OutputKind = Literal["auto", "logits", "probabilities"]
SketchFit = Literal["stretch", "pad"]


class MaskNet(Protocol):
    """An image model: N x 3 x H x W float32 -> N x 1 x H x W foreground probabilities."""

    size: tuple[int, int] | None  # the input size the file fixes, if it does

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> str: ...


class TorchISNet:
    """An ISNet ``.safetensors`` run in torch (float32; CUDA when asked for or auto and present)."""

    size = None

    def __init__(self, path: Path, *, field: str, device: Device = "auto"):
        import torch

        from .isnet import load_isnet

        self.path = path
        self.model = load_isnet(path, field=field)
        wants_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if device == "cuda" and not torch.cuda.is_available():
            raise AuxModelError(f"{field}: device cuda asked for, but torch sees no CUDA device")
        self.device = torch.device("cuda" if wants_cuda else "cpu")
        self.model.to(self.device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device))
        return out.float().cpu().numpy()

    def describe(self) -> str:
        return f"{self.path.name} (torch, {self.device.type})"


# Operations that keep values in [0, 1] between a final sigmoid and the graph's output.
_RANGE_KEEPING_OPS = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Resize", "Slice", "Transpose",
                      "Flatten", "Upsample"}  # fmt: skip


def ends_in_sigmoid(path: Path, output_name: str) -> bool:
    """Whether the graph computes `output_name` with a sigmoid (probabilities) rather than leaving
    logits; read from the graph itself, never guessed from the values."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producers = {out: node for node in graph.node for out in node.output}
    name = output_name
    for _ in range(16):
        node = producers.get(name)
        if node is None:
            return False
        if node.op_type == "Sigmoid":
            return True
        if node.op_type not in _RANGE_KEEPING_OPS or not node.input:
            return False
        name = node.input[0]
    return False


class OnnxMaskNet:
    """An ONNX image-segmentation model; its last output is the mask (as upstream's ``[-1]``),
    through a sigmoid unless the graph already ends in one (``output`` can say which)."""

    def __init__(self, path: Path, *, field: str, device: Device = "auto", output: OutputKind = "auto"):
        self.model = OnnxModel(path, field=field, device=device)
        self.input, self.size = self.model.image_input()
        self.field = field
        if output == "auto":
            output = "probabilities" if ends_in_sigmoid(self.model.path, self.model.outputs[-1].name) else "logits"
        self.output = output

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        result = self.model.run({self.input.name: batch})[-1]
        if result.ndim == 3:
            result = result[:, None]
        if result.ndim != 4 or result.shape[1] != 1 or result.shape[2:] != batch.shape[2:]:
            raise AuxModelError(
                f"{self.field}: {self.model.path} gives {list(result.shape)} for a {list(batch.shape)} input; "
                "a mask model gives N x 1 x H x W at the input's size"
            )
        return result if self.output == "probabilities" else 1.0 / (1.0 + np.exp(-result))

    def describe(self) -> str:
        return f"{self.model.describe()}, {self.output}"


def open_mask_model(
    path: str | Path, *, field: str, family: ReferenceFamily = "isnet", device: Device = "auto",
    output: OutputKind = "auto",
) -> MaskNet:  # fmt: skip
    """A mask model from a local file: ``.onnx`` (onnxruntime) or an ISNet ``.safetensors`` (torch)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AuxModelError(f"{field}: the model file {path} does not exist; name a local .onnx or "
                            ".safetensors file (models are never downloaded)")  # fmt: skip
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxMaskNet(path, field=field, device=device, output=output)
    if suffix == ".safetensors":
        if family != "isnet":
            raise AuxModelError(f"{field}: RMBG-2.0 and BiRefNet run as ONNX exports only; {path} is .safetensors")
        return TorchISNet(path, field=field, device=device)
    raise AuxModelError(f"{field}: {path} is neither .onnx nor .safetensors")


def _unit_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 4 uint16 straight alpha -> H x W x 3 float32 in [0, 1] over white paper."""
    rgba = image.astype(np.float32) / FULL
    alpha = rgba[:, :, 3:4]
    return rgba[:, :, :3] * alpha + (1.0 - alpha)


def _batch(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(image, (2, 0, 1))[None], dtype=np.float32)


def _square(net: MaskNet, default: int) -> tuple[int, int]:
    return net.size if net.size is not None else (default, default)


def sketch_mask(net: MaskNet, line_art: np.ndarray, fit: SketchFit = "stretch") -> np.ndarray:
    """The soft foreground of a line-art frame (H x W x 4 uint16) as H x W float32 in [0, 1].

    fit "stretch": the frame resized straight to the square (upstream with its autofit canvas);
    "pad": first centred on a square of white paper (upstream's default square canvas)."""
    height, width = line_art.shape[:2]
    white_sketch = _unit_rgb(line_art) * 2.0 - 1.0
    top = left = 0
    if fit == "pad":
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        square = np.ones((side, side, 3), dtype=np.float32)  # white paper is +1
        square[top : top + height, left : left + width] = white_sketch
        white_sketch = square
    size = _square(net, SKETCH_SIZE)
    probability = net(_batch(resize(white_sketch, size, "bicubic")))[0, 0]
    back = resize(probability, white_sketch.shape[:2], "bicubic")[top : top + height, left : left + width]
    return np.clip(back, 0.0, 1.0)


def reference_mask(net: MaskNet, image: np.ndarray, family: ReferenceFamily = "rmbg") -> np.ndarray:
    """A reference's foreground (H x W x 4 uint16) as H x W bool: dilated by 21 px, above 0.5."""
    height, width = image.shape[:2]
    rgb = _unit_rgb(image)
    if family == "isnet":
        side = _square(net, REFERENCE_SIZE)[0]
        scale = side / max(height, width)
        inner_h, inner_w = max(1, int(height * scale)), max(1, int(width * scale))
        top, left = (side - inner_h) // 2, (side - inner_w) // 2
        canvas = np.full((side, side, 3), -1.0, dtype=np.float32)
        canvas[top : top + inner_h, left : left + inner_w] = resize(rgb * 2.0 - 1.0, (inner_h, inner_w), "bicubic")
        canvas = 1.0 - (canvas + 1.0) / 2.0  # as upstream's crop path: inverted, padding 1
        probability = net(_batch(canvas))[0, 0, top : top + inner_h, left : left + inner_w]
        soft = np.clip(resize(probability, (height, width), "bicubic"), 0.0, 1.0)
    else:
        size = _square(net, REFERENCE_SIZE)
        normalised = (resize(rgb, size, "bilinear", antialias=True) - IMAGENET_MEAN) / IMAGENET_STD
        probability = net(_batch(normalised))[0, 0]
        soft = resize(probability, (height, width), "bilinear", antialias=True)
    return max_pool(soft, REFERENCE_DILATION) > REFERENCE_THRESHOLD


def mask_to_image(mask: np.ndarray) -> np.ndarray:
    """A bool mask as the H x W uint16 image artists paint on (white = foreground)."""
    return np.where(mask, FULL, 0).astype(np.uint16)


def describe_net(net: Any) -> str:
    return net.describe() if hasattr(net, "describe") else type(net).__name__
