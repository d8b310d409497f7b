"""`sketchcolor run`: colour one or more cuts from their manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sketchcolor_cli.cli.common import console_err, overrides_from, print_json
from sketchcolor_cli.errors import EXIT_FRAMES_FAILED, EXIT_OK
from sketchcolor_cli.frames.spec import format_frame_spec


def run(
    cuts: Annotated[list[Path], typer.Argument(help="Cut folders (with cut.yaml) or manifest files.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (overrides outputs.folder).")] = None,
    engine: Annotated[Optional[str], typer.Option(help="Engine (overrides engine.name), e.g. flat.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Preset name or YAML path (see `presets list`).")] = None,
    frames: Annotated[
        Optional[str], typer.Option("--frames", "-f", help="Frames to colour: 1-24,30,40-60x2 (farm syntax).")
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override any setting: --set outputs.bit_depth=16 (repeatable)."),
    ] = None,
    model: Annotated[
        Optional[Path], typer.Option(help="Diffusion model file or converted folder (engine.diffusion.model).")
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Diffusion denoising steps (engine.diffusion.steps).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Redo frames whose outputs already exist.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be done; write nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Colour every frame of a cut, writing each frame's layers, logs and a contact sheet.

    Frames whose outputs exist are skipped, so a killed run picks up where it stopped.
    Exit codes: 0 all frames done, 1 some frames failed, 2 bad usage or manifest.

    Examples:

      sketchcolor run examples/walk

      sketchcolor run shots/c004 --frames 1-24 --preset tv1080 --out /render/c004

      sketchcolor run shots/c004 --set engine.flat.gap_close_px=6 --overwrite --json

      sketchcolor run shots/c004 --engine diffusion --model models/switch-eps --steps 30
    """
    from sketchcolor_cli.runner.cut import RunRequest, plan_cut, run_cut
    from sketchcolor_cli.runner.progress import make_reporter

    overrides = overrides_from(engine=engine, out=out, settings=set_)
    if model is not None:  # relative to where the command runs, unlike manifest paths
        overrides["engine.diffusion.model"] = str(model.expanduser().resolve())
    if steps is not None:
        overrides["engine.diffusion.steps"] = steps
    requests = [RunRequest(cut, preset, overrides, frames, overwrite) for cut in cuts]
    plans = [plan_cut(request) for request in requests]  # every manifest checked before any work

    if dry_run:
        report = [_plan_report(plan) for plan in plans]
        if json_out:
            print_json(report if len(report) > 1 else report[0])
        else:
            for item in report:
                _print_plan(item)
        raise typer.Exit(EXIT_OK)

    reporter = make_reporter(quiet=quiet or json_out and not console_err.is_terminal)
    summaries = [run_cut(plan, reporter) for plan in plans]
    if json_out:
        data = [s.to_dict() for s in summaries]
        print_json(data if len(data) > 1 else data[0])
    else:
        for summary in summaries:
            failed = summary.frames_failed
            console_err.print(
                f"{summary.cut}: {len(summary.frames_done)} done, {len(summary.frames_skipped)} skipped, "
                f"{len(failed)} failed -> {summary.output_dir}",
                highlight=False,
            )
            for frame, reason in sorted(failed.items()):
                console_err.print(f"  frame {frame}: {reason}", highlight=False)
    raise typer.Exit(EXIT_FRAMES_FAILED if any(not s.ok for s in summaries) else EXIT_OK)


def _plan_report(plan) -> dict:
    todo = plan.todo
    return {
        "cut": plan.cut.name,
        "manifest": str(plan.cut.manifest_path),
        "engine": plan.cut.manifest.engine.name,
        "output_dir": str(plan.cut.output_dir),
        "layers": plan.layers,
        "to_colour": [u.frame for u in todo],
        "added_as_dependencies": [u.frame for u in todo if not u.requested],
        "skipped_done": [u.frame for u in plan.skipped],
        "no_line_art": [u.frame for u in todo if u.line_path is None],
        "outputs": {str(u.frame): [str(p) for p in u.output_files] for u in todo},
    }


def _print_plan(report: dict) -> None:
    def spec(frames: list[int]) -> str:
        return format_frame_spec(frames) if frames else "none"

    console_err.print(f"[bold]{report['cut']}[/bold] ({report['engine']}) -> {report['output_dir']}", highlight=False)
    console_err.print(f"  to colour: {spec(report['to_colour'])}", highlight=False)
    if report["added_as_dependencies"]:
        console_err.print(
            f"  of which added because later frames carry their colours: {spec(report['added_as_dependencies'])}",
            highlight=False,
        )
    console_err.print(f"  already done (skipped): {spec(report['skipped_done'])}", highlight=False)
    if report["no_line_art"]:
        console_err.print(f"  [red]no line art[/red]: {spec(report['no_line_art'])}", highlight=False)
    console_err.print(f"  layers: {', '.join(report['layers'])}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(run)
