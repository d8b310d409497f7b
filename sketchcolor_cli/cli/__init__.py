"""The `sketchcolor` command line: parses, calls the layers below, reports. Nothing else."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from sketchcolor_cli import __version__
from sketchcolor_cli.cli import (
    config_cmd,
    convert_cmd,
    dataset_cmd,
    eval_cmd,
    farm_cmd,
    frame_cmd,
    inspect_cmd,
    masks_cmd,
    presets_cmd,
    run_cmd,
    train_cmd,
)
from sketchcolor_cli.cli.common import console_err, print_problems
from sketchcolor_cli.errors import EXIT_USAGE, ManifestError, SketchcolorError
from sketchcolor_cli.frames.spec import FrameSpecError

class _Commands(TyperGroup):
    """Turns the errors every command may raise into messages and exit codes, in one place."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ManifestError as error:
            print_problems(error.problems)
            raise typer.Exit(error.exit_code) from None
        except SketchcolorError as error:
            console_err.print(f"[red]error:[/red] {error}", highlight=False)
            raise typer.Exit(error.exit_code) from None
        except FrameSpecError as error:  # --frames, --shard, --chunk-range: bad usage
            console_err.print(f"[red]error:[/red] {error}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            console_err.print("interrupted; finished frames are kept, run again to go on")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Commands,
    name="sketchcolor",
    help=(
        "Colorize animation line art, cut by cut.\n\n"
        "A cut is a folder of line-art frames with a manifest (cut.yaml) naming the characters' "
        "reference sheets, masks, the engine and the outputs.\n\n"
        "Examples:\n\n"
        "  sketchcolor init shots/sc01_c004            # write a starter cut.yaml\n\n"
        "  sketchcolor validate shots/sc01_c004        # check it and every file it names\n\n"
        "  sketchcolor run shots/sc01_c004 --frames 1-24\n\n"
        "  sketchcolor frame sketch.png --ref sheet.png -o colour.png"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sketchcolor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
) -> None:
    """Colorize animation line art, cut by cut."""


for module in (run_cmd, frame_cmd, inspect_cmd, config_cmd, eval_cmd, convert_cmd, masks_cmd):
    module.register(app)
app.add_typer(presets_cmd.app, name="presets")
farm_cmd.register(app)
app.add_typer(dataset_cmd.app, name="dataset")
train_cmd.register(app)


def main() -> None:
    app()
