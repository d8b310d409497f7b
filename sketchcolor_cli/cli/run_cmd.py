"""`sketchcolor run`: colour one or more cuts from their manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sketchcolor_cli.cli.common import console_err, overrides_from, print_json
from sketchcolor_cli.errors import EXIT_FRAMES_FAILED, EXIT_OK, ManifestError, Problem
from sketchcolor_cli.frames.spec import format_frame_spec


def run(
    cuts: Annotated[
        list[Path],
        typer.Argument(help="Cut folders (with cut.yaml) or manifest files; @list.txt reads one cut per line."),
    ],
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
    workers: Annotated[
        Optional[int], typer.Option("--workers", "-w", min=1, help="CPU worker processes (default: what the engine can use).")
    ] = None,
    gpus: Annotated[
        Optional[str], typer.Option("--gpus", help="'all' or GPU ids (0,1,3): one worker per GPU; exit 3 if none.")
    ] = None,
    backend: Annotated[str, typer.Option(help="local (this machine) or ray (actors on a Ray cluster).")] = "local",
    address: Annotated[
        Optional[str], typer.Option(help="Ray cluster address (auto, HOST:PORT); default: start a local Ray.")
    ] = None,
    frame_timeout: Annotated[
        Optional[float],
        typer.Option("--frame-timeout", min=0.001, help="Seconds before a frame is failed and its worker restarted."),
    ] = None,
    shard: Annotated[
        Optional[str], typer.Option(help="K/N: only the K-th of N equal blocks of the frames (farm tasks).")
    ] = None,
    chunk_range: Annotated[
        Optional[str], typer.Option("--chunk-range", help="FIRST-LAST: only the selected frames in this span (Deadline <STARTFRAME>-<ENDFRAME>).")
    ] = None,
    log_tag: Annotated[
        Optional[str], typer.Option("--log-tag", help="Name this task's logs frames.TAG.jsonl, run.TAG.log, summary.TAG.json.")
    ] = None,
) -> None:
    """Colour every frame of a cut, writing each frame's layers, logs and a contact sheet.

    Frames whose outputs exist are skipped, so a killed run picks up where it stopped.
    Exit codes: 0 all frames done, 1 some frames failed, 2 bad usage or manifest, 3 no GPU for --gpus.

    Examples:

      sketchcolor run examples/walk

      sketchcolor run shots/c004 --frames 1-24 --preset tv1080 --out /render/c004

      sketchcolor run shots/c004 --set engine.flat.gap_close_px=6 --overwrite --json

      sketchcolor run shots/c004 --engine diffusion --model models/switch-eps --steps 30

      sketchcolor run shots/c004 shots/c005 --workers 2          # two CPU worker processes, shared

      sketchcolor run @tonight.txt --gpus all --frame-timeout 120  # one worker per GPU

      sketchcolor run shots/c004 --shard 2/4                      # the second quarter (farm task)

      sketchcolor run shots/c004 --frames=#FRAMESPEC# --log-tag #FRAME_START#-#FRAME_END#   # OpenCue

      sketchcolor run shots/c004 --frames 1-100 --chunk-range <STARTFRAME>-<ENDFRAME>        # Deadline

      sketchcolor run shots/c004 --backend ray --address auto     # Ray actors, shared filesystem
    """
    import os

    from sketchcolor_cli.farm.tokens import chunk_range as parse_chunk_range
    from sketchcolor_cli.farm.tokens import resolve_frames
    from sketchcolor_cli.frames.spec import parse_shard
    from sketchcolor_cli.runner.cut import RunRequest, plan_cut, run_cuts
    from sketchcolor_cli.runner.progress import make_reporter
    from sketchcolor_cli.runner.scheduler import RunOptions

    if backend not in ("local", "ray"):
        raise ManifestError([Problem(f"--backend {backend!r}: write local or ray", field="--backend")])
    if workers is not None and gpus is not None:
        raise ManifestError([Problem("--workers and --gpus exclude each other: --workers is for CPU workers",
                                     field="--workers")])
    targets = expand_cut_list(cuts)
    frames, from_farm = resolve_frames(frames, os.environ)
    shard_of = parse_shard(shard) if shard else None
    span = parse_chunk_range(chunk_range) if chunk_range else None
    if log_tag is not None and ("#" in log_tag or "<" in log_tag):
        log_tag = None  # a farm token the farm did not replace: name the logs after the frames
    if log_tag is None:
        if shard_of:
            log_tag = f"shard{shard_of[0]}of{shard_of[1]}"
        elif span:
            log_tag = f"{span[0]}-{span[1]}"
        elif from_farm and frames:
            numbers = [int(f) for f in frames.split(",")]
            log_tag = f"{numbers[0]}-{numbers[-1]}"
    gpu_ids = None
    if gpus is not None:
        from sketchcolor_cli.runner.devices import resolve_gpus

        gpu_ids = resolve_gpus(gpus)  # exit 3 when there is none
    options = RunOptions(workers=workers, gpus=gpu_ids, backend=backend, address=address,
                         frame_timeout_s=frame_timeout, log_tag=log_tag)  # fmt: skip

    overrides = overrides_from(engine=engine, out=out, settings=set_)
    if model is not None:  # relative to where the command runs, unlike manifest paths
        overrides["engine.diffusion.model"] = str(model.expanduser().resolve())
    if steps is not None:
        overrides["engine.diffusion.steps"] = steps
    requests = [RunRequest(cut, preset, overrides, frames, overwrite, shard_of, span) for cut in targets]
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
    summaries = run_cuts(plans, reporter, options)
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
            if summary.engine_idle_share is not None:
                console_err.print(
                    f"  {len(summary.workers)} worker(s), engine idle {100 * summary.engine_idle_share:.0f}% of the time"
                    + (f", {len(summary.frames_retried)} frame(s) retried" if summary.frames_retried else "")
                    + (f", {len(summary.workers_lost)} worker(s) replaced" if summary.workers_lost else ""),
                    highlight=False,
                )
    raise typer.Exit(EXIT_FRAMES_FAILED if any(not s.ok for s in summaries) else EXIT_OK)


def expand_cut_list(cuts: list[Path]) -> list[Path]:
    """Cut arguments, with each `@list.txt` replaced by its lines (one cut per line; blank lines and
    `#` comments skipped; relative paths are relative to the list file's folder)."""
    targets: list[Path] = []
    for cut in cuts:
        text = str(cut)
        if not text.startswith("@"):
            targets.append(cut)
            continue
        listing = Path(text[1:]).expanduser()
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ManifestError([Problem(f"cannot read the cut list: {error.strerror}", file=listing)]) from None
        for line in lines:
            entry = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
            if entry:
                path = Path(entry).expanduser()
                targets.append(path if path.is_absolute() else listing.parent / path)
    if not targets:
        raise ManifestError([Problem("no cut to run: the cut list is empty", field="CUTS")])
    return targets


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
