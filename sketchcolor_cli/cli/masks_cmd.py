"""`sketchcolor masks`: compute a cut's masks once, for artists to inspect and `run` to use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sketchcolor_cli.cli.common import console_err, overrides_from, print_json
from sketchcolor_cli.errors import EXIT_FRAMES_FAILED, EXIT_OK


def masks(
    cut: Annotated[Path, typer.Argument(help="Cut folder (with cut.yaml) or manifest file.")],
    frames: Annotated[Optional[str], typer.Option("--frames", "-f", help="Frames to do: 1-24,30 (default: the cut).")] = None,
    sketch_model: Annotated[
        Optional[Path], typer.Option(help="ISNet sketch-mask model, .onnx or .safetensors (masks.sketch_model).")
    ] = None,
    reference_model: Annotated[
        Optional[Path],
        typer.Option(help="Reference-mask model: ISNet, or an RMBG-2.0/BiRefNet .onnx (masks.reference_model)."),
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda (masks.device).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Preset name or YAML path (see `presets list`).")] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override any setting: --set masks.threshold=0.1 (repeatable).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Redo computed masks that exist (never the artists' masks).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Compute the foreground mask of every frame (ISNet, the published sketch-mask method) and,
    with a reference model, the masks of the characters' reference sheets.

    Masks are written as white-on-black images where the manifest's `masks.auto` points (default
    masks/auto/####.png beside the frames), so artists can inspect and correct them; existing files
    are kept unless --overwrite, and the artists' own masks (characters[].masks, background.masks)
    are never written. `sketchcolor run` then uses each character's own masks first and the computed
    ones for characters without, and logs which (inputs.mask_sources in logs/frames.jsonl).
    Model files are local paths (manifest `masks:`, a preset, or these options); nothing is downloaded.

    Examples:

      sketchcolor masks shots/c004 --sketch-model models/sketch-segment.onnx

      sketchcolor masks shots/c004 --reference-model models/rmbg-2.0.onnx --frames 1-24 --overwrite
    """
    from sketchcolor_cli.frames.spec import parse_frame_spec
    from sketchcolor_cli.manifest.resolve import load_cut
    from sketchcolor_cli.runner.automasks import compute_masks
    from sketchcolor_cli.runner.progress import make_reporter

    overrides = overrides_from(settings=set_)
    # Paths on the command line are relative to where the command runs, unlike manifest paths.
    if sketch_model is not None:
        overrides["masks.sketch_model"] = str(sketch_model.expanduser().resolve())
    if reference_model is not None:
        overrides["masks.reference_model"] = str(reference_model.expanduser().resolve())
    if device is not None:
        overrides["masks.device"] = device
    resolved = load_cut(cut, preset=preset, overrides=overrides)
    selection = parse_frame_spec(frames) if frames else None
    reporter = make_reporter(quiet=quiet or json_out and not console_err.is_terminal)
    summary = compute_masks(resolved, reporter, selection=selection, overwrite=overwrite)
    if json_out:
        print_json(summary.to_dict())
    else:
        text = (f"{summary.cut}: {len(summary.written)} mask(s) written, {len(summary.skipped)} kept, "
                f"{len(summary.failed)} failed ({summary.sketch_model})")  # fmt: skip
        if summary.reference_model:
            text += (f"; references: {len(summary.references_written)} written, "
                     f"{len(summary.references_skipped)} kept ({summary.reference_model})")  # fmt: skip
        console_err.print(text, highlight=False)
        for frame, reason in sorted(summary.failed.items()):
            console_err.print(f"  frame {frame}: {reason}", highlight=False)
        for label, reason in sorted(summary.references_failed.items()):
            console_err.print(f"  reference {label}: {reason}", highlight=False)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FRAMES_FAILED)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(masks)
