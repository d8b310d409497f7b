"""onnxruntime sessions for the auxiliary models (masks, tagger): CUDA when onnxruntime offers
it, the CPU otherwise, and errors that name the setting and the file when a model is missing or
does not take what sketchcolor feeds it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sketchcolor_cli.errors import SketchcolorError

Device = Literal["auto", "cpu", "cuda"]


class AuxModelError(SketchcolorError):
    """An auxiliary model file is missing, unreadable, or does not fit its use."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]  # ints where fixed, names or None where dynamic
    type: str  # "tensor(float)", ...


def providers_for(device: Device) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not cuda:
        raise AuxModelError(
            "device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu), or use device auto/cpu"
        )
    if device in ("auto", "cuda") and cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel:
    """One ONNX file in an onnxruntime session. `field` names where the file was set (a manifest
    field or an option), for messages."""

    def __init__(self, path: str | Path, *, field: str, device: Device = "auto", threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path).expanduser()
        self.field = field
        if not self.path.is_file():
            raise AuxModelError(f"{field}: the model file {self.path} does not exist; name a local .onnx file "
                                "(`sketchcolor convert --to onnx` makes one from .safetensors)")  # fmt: skip
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers_for(device))
        except AuxModelError:
            raise
        except Exception as error:  # onnxruntime raises several private exception types
            raise AuxModelError(f"{field}: onnxruntime cannot load {self.path}: {error}") from None
        self.inputs = [TensorInfo(i.name, tuple(i.shape), i.type) for i in self.session.get_inputs()]
        self.outputs = [TensorInfo(o.name, tuple(o.shape), o.type) for o in self.session.get_outputs()]

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def describe(self) -> str:
        shapes = ", ".join(f"{i.name}{list(i.shape)}" for i in self.inputs)
        return f"{self.path.name} ({shapes}; {self.provider})"

    def image_input(self, channels: int = 3) -> tuple[TensorInfo, tuple[int, int] | None]:
        """The single N x C x H x W float input, and its (H, W) when the file fixes them."""
        if len(self.inputs) != 1:
            names = ", ".join(i.name for i in self.inputs)
            raise AuxModelError(f"{self.field}: {self.path} takes {len(self.inputs)} inputs ({names}); "
                                "an image model takes one N x 3 x H x W image")  # fmt: skip
        info = self.inputs[0]
        if len(info.shape) != 4 or (isinstance(info.shape[1], int) and info.shape[1] != channels):
            raise AuxModelError(f"{self.field}: {self.path} input {info.name!r} is {list(info.shape)}; "
                                f"an image model takes N x {channels} x H x W")  # fmt: skip
        if info.type not in ("tensor(float)", "tensor(float16)"):
            raise AuxModelError(f"{self.field}: {self.path} input {info.name!r} is {info.type}, not float")
        height, width = info.shape[2], info.shape[3]
        fixed = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        return info, fixed

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        converted: dict[str, Any] = {}
        for info in self.inputs:
            if info.name not in feeds:
                raise AuxModelError(f"{self.field}: {self.path} needs input {info.name!r}")
            value = feeds[info.name]
            converted[info.name] = value.astype(np.float16 if info.type == "tensor(float16)" else np.float32, copy=False)
        try:
            return [np.asarray(out, dtype=np.float32) for out in self.session.run(None, converted)]
        except Exception as error:
            shapes = {name: list(value.shape) for name, value in converted.items()}
            raise AuxModelError(f"{self.field}: {self.path} failed on inputs {shapes}: {error}") from None
