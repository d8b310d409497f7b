"""`sketchcolor eval` (paint-bucket metrics) and `sketchcolor preview` (contact sheet, flip-book)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sketchcolor_cli.cli.common import console, print_json


def evaluate(
    pred: Annotated[Path, typer.Argument(help="Coloured result: a file or a folder of frames.")],
    truth: Annotated[Path, typer.Argument(help="Final paint to compare with: a file or a folder of frames.")],
    labels: Annotated[
        Optional[Path], typer.Option(help="Segment label maps (file or folder); else segments come from --line.")
    ] = None,
    line: Annotated[Optional[Path], typer.Option(help="Line art (file or folder) to take segments from.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Score coloured frames against final paint with the paint-bucket metrics (BasicPBC's).

    Segment accuracy, accuracy over segments > 10 px without background, pixel accuracy,
    foreground pixel accuracy and background IoU; frames are matched by their frame number.

    Example:

      sketchcolor eval out/fill truth/fill --labels truth/labels
    """
    from sketchcolor_cli.evaluation.metrics import evaluate_paths, scores_table, scores_to_dict

    scores = evaluate_paths(pred, truth, labels=labels, line=line)
    if json_out:
        print_json(scores_to_dict(scores))
    else:
        console.print(scores_table(scores))


def preview(
    cut: Annotated[Path, typer.Argument(help="A cut folder (with cut.yaml) or a manifest file.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The output folder the run wrote to.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="The preset the run used.")] = None,
) -> None:
    """Make the cut's contact sheet and flip-book again from its outputs, without recolouring.

    Example:

      sketchcolor preview examples/walk
    """
    from sketchcolor_cli.cli.common import overrides_from
    from sketchcolor_cli.outputs.review import write_cut_review
    from sketchcolor_cli.runner.cut import RunRequest, plan_cut

    plan = plan_cut(RunRequest(cut, preset, overrides_from(out=out)))
    for name, path in write_cut_review(plan, contact_sheet=True, flipbook=True).items():
        console.print(f"{name}: {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(evaluate)
    app.command(no_args_is_help=True)(preview)
