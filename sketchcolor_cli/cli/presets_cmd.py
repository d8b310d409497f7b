"""`sketchcolor presets list|show`."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml
from rich.table import Table

from sketchcolor_cli.cli.common import console

app = typer.Typer(
    help="List and show presets (shared settings a manifest names with `preset:`).",
    no_args_is_help=True,
)


@app.command("list")
def list_presets() -> None:
    """List the presets sketchcolor can find (SKETCHCOLOR_PRESET_PATH, then built-in).

    Example:

      sketchcolor presets list
    """
    from sketchcolor_cli.manifest.presets import available_presets

    table = Table("name", "description", "file")
    for name, path in available_presets().items():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        table.add_row(name, str(data.get("description", "")), str(path))
    console.print(table)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="Preset name or YAML path.")]) -> None:
    """Print a preset's YAML.

    Example:

      sketchcolor presets show tv1080
    """
    from sketchcolor_cli.manifest.presets import find_preset

    path = find_preset(name)
    console.print(f"# {path}", highlight=False, markup=False)
    console.print(path.read_text(encoding="utf-8"), end="", highlight=False, markup=False)
