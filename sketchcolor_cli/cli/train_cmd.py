"""`sketchcolor train CONFIG.yaml`: fine-tune a diffusion model on a training set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from sketchcolor_cli.cli.common import console_err
from sketchcolor_cli.errors import SketchcolorError


def train(
    recipe: Annotated[Path, typer.Argument(help="Training recipe (YAML); start from examples/train-switch.yaml.")],
    settings: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a recipe value, e.g. --set schedule.steps=2000 (repeatable).")] = None,
    stop_after: Annotated[Optional[int], typer.Option(
        help="Stop right after this optimizer step, as if killed (no output file; run again to resume).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fine-tune the diffusion model on a training set (`sketchcolor dataset build`).

    The recipe names the local base model files, the dataset, what trains (switch: the fg/bg LoRAs,
    threshold embedder and ClusterTransformer; lora: new adapters only; full: UNet + sketch encoder,
    and for xl/xlv2 the reference projection, as published),
    the schedule and the loss weights (Gram regularization from a given step). Runs on the CPU or
    one GPU as is, on several GPUs or machines under `accelerate launch -m sketchcolor_cli train ...`.
    A run in a log folder that holds checkpoints resumes from the latest one, exactly.

    Example:

      sketchcolor train examples/train-switch.yaml --set dataset=datasets/sc01

      sketchcolor train examples/train-xl.yaml
    """
    from sketchcolor_cli.manifest.resolve import parse_override
    from sketchcolor_cli.training.recipe import load_recipe

    overrides = dict(parse_override(item) for item in settings or [])
    loaded = load_recipe(recipe, overrides)
    try:
        from sketchcolor_cli.training.loop import train as run_training
    except ImportError as error:
        raise SketchcolorError(f"training needs torch, diffusers and accelerate ({error}); "
                               "install with: pip install 'sketchcolor-cli[diffusion,train]'") from None
    from sketchcolor_cli.training.dataset import DatasetError
    from sketchcolor_cli.training.lora import TrainedFileMismatch

    try:
        result = run_training(loaded, stop_after=stop_after, progress=not quiet)
    except (DatasetError, FileNotFoundError, TrainedFileMismatch, ValueError) as error:
        raise SketchcolorError(str(error)) from None
    summary = {"output": str(result.output) if result.output else None, "steps": result.steps,
               "resumed_from": result.resumed_from, "final_loss": result.final_loss, "log_dir": str(result.log_dir)}
    if json_out:
        print(json.dumps(summary, indent=2))
    elif result.output is None:
        console_err.print(f"stopped after step {result.steps}; run the same command again to resume", highlight=False)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(train)
