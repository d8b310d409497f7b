"""`sketchcolor convert`: a single-file diffusion checkpoint -> a converted folder that loads fast;
with ``--to onnx``, an auxiliary model (ISNet masks, the WD tagger) -> an ONNX file checked against torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sketchcolor_cli.cli.common import console_err
from sketchcolor_cli.errors import SketchcolorError


def convert(
    checkpoint: Annotated[Path, typer.Argument(help="Single-file checkpoint (.safetensors, LDM layout), e.g. switch-eps.safetensors, sdxl-*.safetensors, xlv2-*.safetensors; with --to onnx, an auxiliary model.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write (diffusers-style subfolders, safetensors, configs); with --to onnx, the .onnx file.")],
    config: Annotated[
        Optional[Path], typer.Option(help="Architecture config (switch_config.json or xl_config.json); default: the published one, by file name.")
    ] = None,
    clip: Annotated[
        Optional[Path], typer.Option(help="CLIP folder (transformers format: ViT-H-14 for switch/mult, ViT-bigG-14 for xl/xlv2) to copy in as image_encoder/.")
    ] = None,
    tagger: Annotated[
        Optional[Path], typer.Option(help="xl/xlv2: the WD tagger's model.safetensors (or its folder) to copy in as tagger/.")
    ] = None,
    prediction: Annotated[
        Optional[str], typer.Option(help="epsilon or v_prediction; default: eps if the file name says so, else v.")
    ] = None,
    to: Annotated[str, typer.Option("--to", help="folder: a converted diffusion model; onnx: an auxiliary model as ONNX.")] = "folder",
    kind: Annotated[
        Optional[str], typer.Option(help="With --to onnx: isnet (mask models) or tagger (the xl engine's WD tagger).")
    ] = None,
    size: Annotated[
        Optional[int], typer.Option(min=32, help="With --to onnx: the square input side (default: the published one, 1024 isnet, 448 tagger).")
    ] = None,
    lora: Annotated[
        Optional[Path], typer.Option(help="A file written by `sketchcolor train` (LoRA or trained weights) to merge into the folder.")
    ] = None,
    lora_strength: Annotated[float, typer.Option(help="How much of the LoRA to merge (1: all of it).")] = 1.0,
) -> None:
    """Convert a released checkpoint (switch-eps, mult-*, sdxl-*, xlv2-*) into a folder the diffusion engine loads fast.

    Every key of the checkpoint is mapped onto the engine's modules; a checkpoint with missing or
    unexpected keys is refused with the keys named.

    Example:

      sketchcolor convert models/switch-eps.safetensors models/switch-eps --clip models/CLIP-ViT-H-14

      sketchcolor convert models/xlv2-v.safetensors models/xlv2 --clip models/CLIP-ViT-bigG-14 --tagger models/wd-swinv2/model.safetensors

      sketchcolor convert models/sketch-segment.safetensors models/sketch-segment.onnx --to onnx --kind isnet

    With --to onnx the torch model (strictly loaded from the .safetensors) is exported and both are
    run on the same input; an export that differs by 1e-3 or more is refused and removed.

    With --lora, the file `sketchcolor train` wrote is merged in (the folder then needs no `lora:` setting):

      sketchcolor convert models/switch-eps.safetensors models/switch-sc01 --lora runs/sc01/sc01.safetensors
    """
    if to not in ("folder", "onnx"):
        raise SketchcolorError(f"--to must be folder or onnx, not {to!r}")
    if to == "onnx":
        _to_onnx(checkpoint, out_dir, kind, size)
        return
    if kind is not None or size is not None:
        raise SketchcolorError("--kind and --size go with --to onnx")
    if to == "onnx" and lora is not None:
        raise SketchcolorError("--lora goes with --to folder")
    if prediction not in (None, "epsilon", "v_prediction"):
        raise SketchcolorError(f"--prediction must be epsilon or v_prediction, not {prediction!r}")
    from sketchcolor_cli.engines.diffusion.loading import CheckpointKeyError, SwitchConfig, save_converted
    from sketchcolor_cli.engines.diffusion.loading.xl_configs import XLConfig, family_from_name, is_xl_config_file

    xl = is_xl_config_file(config) if config else family_from_name(checkpoint.name) in ("xl", "xlv2")
    if tagger is not None and not xl:
        raise SketchcolorError("--tagger is for the xl/xlv2 models only")
    try:
        if xl:
            from sketchcolor_cli.engines.diffusion.loading.xl_convert import save_xl_converted

            xl_config = XLConfig.from_file(config) if config else None
            folder = save_xl_converted(checkpoint, out_dir, xl_config, clip=clip, tagger=tagger, prediction_type=prediction)
        else:
            architecture = SwitchConfig.from_file(config) if config else None
            folder = save_converted(checkpoint, out_dir, architecture, clip=clip, prediction_type=prediction)
    except (CheckpointKeyError, FileNotFoundError, ValueError) as error:
        raise SketchcolorError(str(error)) from None
    console_err.print(f"converted {checkpoint} -> {folder}", highlight=False)
    if lora is not None:
        from sketchcolor_cli.training.lora import merge_into_folder

        try:
            merged = merge_into_folder(folder, lora, lora_strength)
        except (FileNotFoundError, ValueError) as error:
            raise SketchcolorError(str(error)) from None
        console_err.print(f"merged {lora} ({merged['kind']}, strength {lora_strength}) into {folder}", highlight=False)


def _to_onnx(checkpoint: Path, out: Path, kind: str | None, size: int | None) -> None:
    from sketchcolor_cli.engines.diffusion.auxiliary.export import AUX_KINDS, convert_to_onnx

    if kind is None:
        raise SketchcolorError(f"--to onnx needs --kind ({', '.join(sorted(AUX_KINDS))})")
    if out.suffix.lower() != ".onnx":
        raise SketchcolorError(f"{out}: with --to onnx, name the output file, ending in .onnx")
    path, worst = convert_to_onnx(kind, checkpoint, out, size=size)
    console_err.print(f"converted {checkpoint} -> {path} ({kind}; ONNX and torch agree to {worst:.2g})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(convert)
