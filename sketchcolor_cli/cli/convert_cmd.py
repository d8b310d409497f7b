"""`sketchcolor convert`: a single-file diffusion checkpoint -> a converted folder that loads fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sketchcolor_cli.cli.common import console_err
from sketchcolor_cli.errors import SketchcolorError


def convert(
    checkpoint: Annotated[Path, typer.Argument(help="Single-file checkpoint (.safetensors, LDM layout), e.g. switch-eps.safetensors.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write (diffusers-style subfolders, safetensors, configs).")],
    config: Annotated[
        Optional[Path], typer.Option(help="Architecture config (switch_config.json); default: the published one, by file name.")
    ] = None,
    clip: Annotated[
        Optional[Path], typer.Option(help="CLIP-ViT-H-14 folder (transformers format) to copy in as image_encoder/.")
    ] = None,
    prediction: Annotated[
        Optional[str], typer.Option(help="epsilon or v_prediction; default: eps if the file name says so, else v.")
    ] = None,
    lora: Annotated[
        Optional[Path], typer.Option(help="A file written by `sketchcolor train` (LoRA or trained weights) to merge into the folder.")
    ] = None,
    lora_strength: Annotated[float, typer.Option(help="How much of the LoRA to merge (1: all of it).")] = 1.0,
) -> None:
    """Convert a released checkpoint (switch-eps, mult-*) into a folder the diffusion engine loads fast.

    Every key of the checkpoint is mapped onto the engine's modules; a checkpoint with missing or
    unexpected keys is refused with the keys named.

    Example:

      sketchcolor convert models/switch-eps.safetensors models/switch-eps --clip models/CLIP-ViT-H-14

    With --lora, the file `sketchcolor train` wrote is merged in (the folder then needs no `lora:` setting):

      sketchcolor convert models/switch-eps.safetensors models/switch-sc01 --lora runs/sc01/sc01.safetensors
    """
    if prediction not in (None, "epsilon", "v_prediction"):
        raise SketchcolorError(f"--prediction must be epsilon or v_prediction, not {prediction!r}")
    from sketchcolor_cli.engines.diffusion.loading import CheckpointKeyError, SwitchConfig, save_converted

    try:
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


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(convert)
