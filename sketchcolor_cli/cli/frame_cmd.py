"""`sketchcolor frame`: colour one drawing from a reference, no manifest needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sketchcolor_cli.cli.common import console, console_err
from sketchcolor_cli.errors import EXIT_FRAMES_FAILED, EXIT_USAGE, FrameError, ManifestError, Problem


def frame(
    sketch: Annotated[Path, typer.Argument(help="The line art to colour.")],
    ref: Annotated[list[Path], typer.Option("--ref", "-r", help="Coloured reference (repeatable).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write (png, tif, tga, dpx, exr).")],
    ref_line: Annotated[
        Optional[list[Path]], typer.Option("--ref-line", help="Line art of each --ref, in the same order.")
    ] = None,
    mask: Annotated[Optional[Path], typer.Option(help="Foreground mask of the sketch (white = character).")] = None,
    engine: Annotated[str, typer.Option(help="Engine name.")] = "flat",
    layer: Annotated[str, typer.Option(help="Layer to write: color, fill, line, review or shade.")] = "color",
    bit_depth: Annotated[str, typer.Option(help="8 or 16 (half/float for EXR).")] = "8",
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Engine setting: name=value.")] = None,
    seed: Annotated[int, typer.Option(help="Seed (diffusion engines).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Colour one line-art drawing from one or more coloured references.

    Examples:

      sketchcolor frame sketch.png --ref hero_sheet.png --ref-line hero_sheet_line.png -o hero.png

      sketchcolor frame sketch.png --ref hero_sheet.png --layer fill --bit-depth 16 -o hero_fill.png
    """
    from pydantic import ValidationError

    from sketchcolor_cli.engines.base import Reference, WorkItem, engine_class
    from sketchcolor_cli.frames.images import ImageError, read_rgba16
    from sketchcolor_cli.manifest.resolve import parse_override
    from sketchcolor_cli.outputs.writers import write_frame_layers
    from sketchcolor_cli.runner.inputs import read_mask

    if layer not in ("color", "fill", "line", "review", "shade"):
        raise ManifestError([Problem(f"unknown layer {layer!r}", field="--layer", hint="color, fill, line, review or shade")])
    if ref_line and len(ref_line) != len(ref):
        raise ManifestError([Problem("give one --ref-line per --ref, in the same order", field="--ref-line")])
    if output.exists() and not overwrite:
        console_err.print(f"[red]error[/red] {output} exists; pass --overwrite to replace it", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    depth: int | str = int(bit_depth) if bit_depth.isdigit() else bit_depth
    try:
        engine_cls = engine_class(engine)
    except KeyError as error:
        raise ManifestError([Problem(str(error.args[0]), field="--engine")]) from None
    try:
        settings = engine_cls.settings_model.model_validate(dict(parse_override(s) for s in set_ or []))
    except ValidationError as error:
        raise ManifestError(
            [Problem(e["msg"], field="--set " + ".".join(map(str, e["loc"]))) for e in error.errors()]
        ) from None
    try:
        line_art = read_rgba16(sketch)
        references = tuple(
            Reference(
                character="reference",
                image=read_rgba16(path),
                line=read_rgba16(ref_line[i]) if ref_line else None,
                source=str(path),
            )
            for i, path in enumerate(ref)
        )
        masks = {"reference": read_mask(mask, line_art.shape[:2], "mask")} if mask else {}
    except (ImageError, FrameError) as error:
        console_err.print(f"[red]error[/red] {error}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    item = WorkItem(frame=0, line_art=line_art, references=references, seed=seed, masks=masks)
    result = engine_cls.load(settings).colorize([item])[0]
    try:
        write_frame_layers(
            result, {layer: output}, bit_depth=depth, compression=None,
            metadata={"sketchcolor:source": str(sketch), "sketchcolor:engine": engine},
        )  # fmt: skip
    except (ImageError, ValueError) as error:
        console_err.print(f"[red]error[/red] cannot write {output}: {error}", highlight=False)
        raise typer.Exit(EXIT_FRAMES_FAILED) from None
    console.print(f"wrote {output} ({layer}; {result.stats})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(frame)
