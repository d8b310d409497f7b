"""`sketchcolor convert`: a single-file diffusion checkpoint -> a converted folder that loads fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sketchcolor_cli.cli.common import console_err
from sketchcolor_cli.errors import SketchcolorError


def convert(
    checkpoint: Annotated[Path, typer.Argument(help="Single-file checkpoint (.safetensors, LDM layout), e.g. switch-eps.safetensors, sdxl-*.safetensors, xlv2-*.safetensors.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write (diffusers-style subfolders, safetensors, configs).")],
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
) -> None:
    """Convert a released checkpoint (switch-eps, mult-*, sdxl-*, xlv2-*) into a folder the diffusion engine loads fast.

    Every key of the checkpoint is mapped onto the engine's modules; a checkpoint with missing or
    unexpected keys is refused with the keys named.

    Example:

      sketchcolor convert models/switch-eps.safetensors models/switch-eps --clip models/CLIP-ViT-H-14

      sketchcolor convert models/xlv2-v.safetensors models/xlv2 --clip models/CLIP-ViT-bigG-14 --tagger models/wd-swinv2/model.safetensors
    """
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
            console_err.print(f"converted {checkpoint} -> {folder}", highlight=False)
            return

        architecture = SwitchConfig.from_file(config) if config else None
        folder = save_converted(checkpoint, out_dir, architecture, clip=clip, prediction_type=prediction)
    except (CheckpointKeyError, FileNotFoundError, ValueError) as error:
        raise SketchcolorError(str(error)) from None
    console_err.print(f"converted {checkpoint} -> {folder}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(convert)
