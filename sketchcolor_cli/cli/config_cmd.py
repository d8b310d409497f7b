"""`sketchcolor config` (the resolved settings of a cut) and `sketchcolor schema`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from sketchcolor_cli.cli.common import console, overrides_from, print_json


def config(
    cut: Annotated[Path, typer.Argument(help="A cut folder (with cut.yaml) or a manifest file.")],
    preset: Annotated[Optional[str], typer.Option(help="Apply this preset.")] = None,
    engine: Annotated[Optional[str], typer.Option(help="Override the engine.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting: key.path=value.")] = None,
    origins: Annotated[bool, typer.Option(help="Also show where each setting came from.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the fully resolved settings of a cut: defaults < preset < manifest < options.

    Example:

      sketchcolor config shots/c004 --preset tv1080 --set outputs.bit_depth=8 --origins
    """
    from sketchcolor_cli.manifest.resolve import load_cut

    cut_settings = load_cut(cut, preset=preset, overrides=overrides_from(engine=engine, settings=set_))
    data = cut_settings.settings_dict()
    if origins:
        data = {"settings": data, "origins": dict(sorted(cut_settings.origins.items()))}
    if json_out:
        print_json(data)
    else:
        console.print(yaml.safe_dump(data, sort_keys=False), end="", highlight=False, markup=False)


def schema(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Write the manifest's JSON Schema, for editors that complete and check YAML.

    Example (VS Code's YAML extension reads the comment line):

      sketchcolor schema -o cut.schema.json   # then: # yaml-language-server: $schema=cut.schema.json
    """
    from sketchcolor_cli.manifest.model import CutManifest

    text = json.dumps(CutManifest.model_json_schema(), indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        from sketchcolor_cli.runner.logs import write_text_atomic

        write_text_atomic(out, text)
        console.print(f"wrote {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(config)
    app.command()(schema)
