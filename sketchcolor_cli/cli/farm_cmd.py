"""`sketchcolor farm plan`: a cut as farm tasks (json, shell, OpenCue, Deadline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sketchcolor_cli.cli.common import console_err, overrides_from
from sketchcolor_cli.errors import ManifestError, Problem

app = typer.Typer(help="Render-farm job plans for a cut.", no_args_is_help=True, rich_markup_mode="markdown")


@app.command("plan", no_args_is_help=True)
def plan(
    cut: Annotated[Path, typer.Argument(help="A cut folder (with cut.yaml) or a manifest file.")],
    chunk: Annotated[int, typer.Option(min=1, help="Frames per task.")] = 10,
    fmt: Annotated[str, typer.Option("--format", help="json | shell | opencue | deadline | tractor.")] = "json",
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="File to write (deadline: a folder for its two files); default stdout.")
    ] = None,
    frames: Annotated[Optional[str], typer.Option("--frames", "-f", help="Frames to plan (default: the cut).")] = None,
    outputs: Annotated[Optional[Path], typer.Option(help="Where the tasks write (the run's --out).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Preset every task uses.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Setting every task uses (repeatable).")] = None,
    executable: Annotated[
        str, typer.Option(help="How tasks start sketchcolor, e.g. '/opt/venv/bin/sketchcolor' or 'python -m sketchcolor_cli'.")
    ] = "sketchcolor",
) -> None:
    """Write a cut's farm tasks: one `sketchcolor run` command per chunk of frames.

    Tasks skip frames already written, write atomically and keep their own logs, so a retried or
    repeated task is harmless. After the colour tasks, `sketchcolor preview` makes the contact
    sheet and flip-book once (json/shell: the last step; OpenCue: a dependent layer).

    Examples:

      sketchcolor farm plan shots/c004 --chunk 10                         # json task list

      sketchcolor farm plan shots/c004 --chunk 10 --format shell -o c004.sh && bash c004.sh

      sketchcolor farm plan shots/c004 --chunk 12 --format opencue -o c004.xml   # cjsl job spec

      sketchcolor farm plan shots/c004 --chunk 12 --format deadline -o c004_deadline/

      sketchcolor farm plan shots/c004 --chunk 12 --format tractor -o c004.alf   # tractor-spool c004.alf
      deadlinecommand c004_deadline/job_info.job c004_deadline/plugin_info.job
    """
    import os
    import shlex

    from sketchcolor_cli.engines.base import ENGINES_ENV
    from sketchcolor_cli.farm import FORMATS, build_farm_plan, render_plan
    from sketchcolor_cli.runner.cut import RunRequest, plan_cut

    if fmt not in FORMATS:
        raise ManifestError([Problem(f"--format {fmt!r}: one of {', '.join(FORMATS)}", field="--format")])
    target = cut.expanduser().resolve()
    overrides = overrides_from(out=outputs, settings=set_)
    cut_plan = plan_cut(RunRequest(target, preset, overrides, frames))
    run_options: list[str] = []
    if outputs is not None:
        run_options += ["--out", str(outputs.expanduser().resolve())]
    if preset:
        run_options += ["--preset", preset]
    for item in set_ or []:
        run_options += ["--set", item]
    environment = {ENGINES_ENV: os.environ[ENGINES_ENV]} if os.environ.get(ENGINES_ENV) else {}
    farm_plan = build_farm_plan(
        cut_plan, target, chunk=chunk, executable=shlex.split(executable), run_options=run_options,
        environment=environment,
    )  # fmt: skip
    files = render_plan(farm_plan, fmt)
    for warning in farm_plan.warnings:
        console_err.print(f"[yellow]note[/yellow] {warning}", highlight=False)
    if out is None:
        for name, text in files.items():
            if len(files) > 1:
                typer.echo(f"# --- {name} ---")
            typer.echo(text, nl=False)
        return
    if len(files) > 1:  # deadline: a folder
        out.mkdir(parents=True, exist_ok=True)
        written = [out / name for name in files]
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        written = [out]
    for path, text in zip(written, files.values()):
        path.write_text(text, encoding="utf-8")
        if fmt == "shell":
            path.chmod(0o755)
    console_err.print(
        f"{farm_plan.cut_name}: {len(farm_plan.tasks)} task(s) of up to {chunk} frame(s) -> "
        + ", ".join(str(p) for p in written),
        highlight=False,
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="farm")
