"""`sketchcolor validate` and `sketchcolor init`: check a cut, or start one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sketchcolor_cli.cli.common import console, console_err, print_json, print_problems
from sketchcolor_cli.errors import EXIT_OK, EXIT_USAGE, ManifestError


def validate(
    cut: Annotated[Path, typer.Argument(help="A cut folder (with cut.yaml) or a manifest file.")],
    preset: Annotated[str | None, typer.Option(help="Check with this preset applied.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the problems as JSON.")] = False,
) -> None:
    """Check a manifest and every file it names; print every problem at once.

    Checks the fields (with line numbers), that frames, references, palettes and masks exist,
    that sizes agree between frames and masks, and that frame ranges lie within the frames found.
    Exit 0 when valid (warnings allowed), 2 otherwise.

    Example:

      sketchcolor validate shots/sc01_c004
    """
    from sketchcolor_cli.manifest.checks import check_cut
    from sketchcolor_cli.manifest.resolve import load_cut

    try:
        problems = check_cut(load_cut(cut, preset=preset))
    except ManifestError as error:
        problems = error.problems
    errors = [p for p in problems if not p.warning]
    if json_out:
        print_json({"valid": not errors, "problems": [p.to_dict() for p in problems]})
    else:
        print_problems(problems)
        if not errors:
            console.print(f"[green]valid[/green]: {cut}", highlight=False)
    raise typer.Exit(EXIT_USAGE if errors else EXIT_OK)


def init(
    cut: Annotated[Path, typer.Argument(help="The cut folder to write cut.yaml into.")],
    force: Annotated[bool, typer.Option(help="Replace an existing cut.yaml.")] = False,
) -> None:
    """Write a starter cut.yaml from what the folder holds (line art, key frames, sheets, masks).

    Finds image sequences in any naming (line/####.png, %04d, @@@@, $F4, name.1-24#.png), reports
    missing frames, and takes refs/<name>_sheet.png (+ _line) as each character's reference.

    Example:

      sketchcolor init shots/sc01_c004 && sketchcolor validate shots/sc01_c004
    """
    from sketchcolor_cli.manifest.resolve import MANIFEST_NAME
    from sketchcolor_cli.manifest.starter import starter_manifest
    from sketchcolor_cli.runner.logs import write_text_atomic

    if not cut.is_dir():
        console_err.print(f"[red]error[/red] {cut}: not a folder", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    target = cut / MANIFEST_NAME
    if target.exists() and not force:
        console_err.print(f"[red]error[/red] {target} exists; pass --force to replace it", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    try:
        text, notes = starter_manifest(cut)
    except FileNotFoundError as error:
        console_err.print(f"[red]error[/red] {error}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    write_text_atomic(target, text)
    for note in notes:
        console_err.print(f"  {note}", highlight=False)
    console.print(f"wrote {target}; check it with `sketchcolor validate {cut}`", highlight=False)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(validate)
    app.command(no_args_is_help=True)(init)
