"""Torch auxiliary models to ONNX, and the check that both give the same numbers.

`export_onnx` takes any ``nn.Module`` and example inputs, so a model added later (the WD tagger
of the xl engine, whose forward returns the final-norm features) exports the same way; the
kinds that `sketchcolor convert --to onnx` knows are in `AUX_KINDS`.

With torch 2.13 the default (dynamo) exporter needs the ``onnxscript`` package, which sketchcolor
does not depend on; the TorchScript exporter (``dynamo=False``) needs nothing more and handles
these convolutional and transformer models, so it is the one used.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_runtime import AuxModelError, OnnxModel

OPSET = 17
AGREEMENT_TOLERANCE = 1e-3


def export_onnx(
    module: Any,
    example_inputs: Sequence[Any],
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    opset: int = OPSET,
) -> Path:
    """Export `module` (eval mode, no gradients) traced on `example_inputs` to `path`, atomically
    (a temp file beside it, renamed when complete and checked by onnx)."""
    import onnx
    import torch

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    module = module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                module, tuple(example_inputs), str(temp), dynamo=False, opset_version=opset,
                input_names=list(input_names), output_names=list(output_names), dynamic_axes=dynamic_axes or {},
                do_constant_folding=True,
            )  # fmt: skip
        onnx.checker.check_model(str(temp))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def onnx_agreement(module: Any, path: str | Path, inputs: Sequence[Any], *, field: str = "onnx") -> float:
    """The largest absolute difference between the module's outputs and the ONNX file's outputs
    (run with onnxruntime on the CPU) on the same inputs."""
    import torch

    model = OnnxModel(path, field=field, device="cpu")
    with torch.no_grad():
        expected = module.eval()(*inputs)
    expected_list = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    feeds = {info.name: value.detach().cpu().numpy() for info, value in zip(model.inputs, inputs)}
    got = model.run(feeds)
    if len(got) != len(expected_list):
        raise AuxModelError(f"{field}: {path} gives {len(got)} outputs, the torch module {len(expected_list)}")
    worst = 0.0
    for ours, theirs in zip(expected_list, got):
        ours_np = ours.detach().float().cpu().numpy()
        if ours_np.shape != theirs.shape:
            raise AuxModelError(f"{field}: {path} output is {list(theirs.shape)}, the torch module's {list(ours_np.shape)}")
        worst = max(worst, float(np.abs(ours_np - theirs).max()))
    return worst


def check_agreement(module: Any, path: str | Path, inputs: Sequence[Any], tolerance: float = AGREEMENT_TOLERANCE) -> float:
    """`onnx_agreement`, raising `AuxModelError` when the difference reaches `tolerance`."""
    worst = onnx_agreement(module, path, inputs)
    if not worst < tolerance:
        raise AuxModelError(f"{path}: the ONNX export differs from the torch model by {worst:.3g} (limit {tolerance:g})")
    return worst


@dataclass(frozen=True)
class AuxKind:
    """A kind of auxiliary model that `sketchcolor convert --to onnx --kind NAME` exports."""

    name: str
    description: str
    # "module:function" (imported when used) or a function; called as loader(path, field=...) -> nn.Module.
    loader: str | Callable[..., Any]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    size: int  # the square input side the published pre-processing feeds
    dynamic_axes: dict[str, dict[int, str]]

    def load(self, path: Path, field: str = "checkpoint") -> Any:
        if callable(self.loader):
            return self.loader(path, field=field)
        module_name, _, function = self.loader.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise AuxModelError(f"--kind {self.name}: its torch model is not part of this sketchcolor ({error})") from None
        load: Callable[..., Any] = getattr(module, function)
        return load(path, field=field)

    def example_inputs(self, module: Any, size: int | None = None) -> tuple[Any, ...]:
        import torch

        side = size or self.size
        generator = torch.Generator().manual_seed(0)
        channels = getattr(getattr(module, "config", None), "in_channels", 3)
        return (torch.rand(1, channels, side, side, generator=generator) * 2 - 1,)


AUX_KINDS: dict[str, AuxKind] = {
    # Input and output names as anime-segmentation's own export, so either ONNX file serves.
    "isnet": AuxKind(
        "isnet", "ISNet anime segmentation (isnetis, sketch-segment): image -> foreground probability",
        "sketchcolor_cli.engines.diffusion.auxiliary.isnet:load_isnet", ("img",), ("mask",), 1024,
        {"img": {0: "batch"}, "mask": {0: "batch"}},
    ),
    # The xl engine's WD tagger (SwinV2 at 448 px): its ONNX gives the final-norm features
    # (N x 196 x 1024) that the reference encoder uses, not the published tag probabilities.
    "tagger": AuxKind(
        "tagger", "WD tagger (swinv2, 448 px): BGR image in [-1, 1] -> final-norm features N x 196 x 1024",
        "sketchcolor_cli.engines.diffusion.models.wd_tagger:load_tagger_features", ("image",), ("features",), 448,
        {"image": {0: "batch"}, "features": {0: "batch"}},
    ),
}


def register_aux_kind(kind: AuxKind) -> None:
    """Add or replace a kind (a later model, or a test's stand-in)."""
    AUX_KINDS[kind.name] = kind


def convert_to_onnx(kind_name: str, checkpoint: str | Path, out: str | Path, *, size: int | None = None,
                    tolerance: float = AGREEMENT_TOLERANCE) -> tuple[Path, float]:  # fmt: skip
    """Load a safetensors checkpoint of `kind_name`, export it, and check the export against torch
    on a seeded random input; returns the file and the largest difference found."""
    if kind_name not in AUX_KINDS:
        raise AuxModelError(f"--kind {kind_name!r}: known kinds are {', '.join(sorted(AUX_KINDS))}")
    kind = AUX_KINDS[kind_name]
    checkpoint = Path(checkpoint).expanduser()
    if not checkpoint.is_file():
        raise AuxModelError(f"checkpoint {checkpoint} does not exist")
    module = kind.load(checkpoint, field="checkpoint")
    inputs = kind.example_inputs(module, size)
    path = export_onnx(module, inputs, out, input_names=kind.input_names, output_names=kind.output_names,
                       dynamic_axes=kind.dynamic_axes)  # fmt: skip
    try:
        worst = check_agreement(module, path, inputs, tolerance)
    except AuxModelError:
        path.unlink(missing_ok=True)  # never leave an export that does not match its model
        raise
    return path, worst
