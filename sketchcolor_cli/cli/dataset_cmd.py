"""`sketchcolor dataset build|check`: finished cuts -> a training set, and its check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from sketchcolor_cli.cli.common import console, console_err, print_problems
from sketchcolor_cli.errors import EXIT_FRAMES_FAILED, SketchcolorError

app = typer.Typer(
    help="Training sets from finished cuts (line art + final colour), for `sketchcolor train`.",
    no_args_is_help=True,
)


def _size(value: str) -> tuple[int, int]:
    width, _, height = value.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: write a size as WIDTHxHEIGHT, e.g. 576x448") from None


@app.command("build")
def build(
    cuts: Annotated[list[Path], typer.Argument(help="Cut folders (or manifests) whose frames have a final colour version.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Dataset folder to write.")],
    color: Annotated[Optional[str], typer.Option(
        help="Pattern of the final colour frames, relative to each cut folder (default: the manifest's `keys.source`).")] = None,
    resolution: Annotated[int, typer.Option(help="Training size: buckets of about RESOLUTION^2 pixels (switch 512, xl 1024).")] = 512,
    step: Annotated[int, typer.Option(help="Bucket sides are multiples of this (64 for switch, 32 for xl).")] = 64,
    bucket: Annotated[Optional[list[str]], typer.Option(help="Explicit bucket WIDTHxHEIGHT (repeat); replaces --resolution/--step.")] = None,
    holdout: Annotated[int, typer.Option(help="Samples kept out of training for validation images.")] = 2,
    reference_gap: Annotated[int, typer.Option(help="Frames closer than this to a sample are not its references.")] = 4,
    max_references: Annotated[int, typer.Option(help="Reference images stored per sample.")] = 4,
    reference_size: Annotated[int, typer.Option(help="Long side of stored references, in pixels.")] = 512,
    shard_samples: Annotated[int, typer.Option(help="Samples per shard.")] = 256,
    masks: Annotated[str, typer.Option(
        help="manifest: the manifests' character masks (whole frame where none); auto: automatic masks "
        "(`sketchcolor masks`) where the manifest has none; none: whole frame.")] = "manifest",
    seed: Annotated[int, typer.Option(help="Seed of the held-out choice and the stored references.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset folder (only once the new one is whole).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Turn finished cuts into a sharded training set (WebDataset-style tar shards + dataset.json).

    Each frame with line art and a final colour becomes a sample at the nearest aspect bucket, with
    its characters' masks and a few valid references (model sheets of its characters, frames of the
    cut at least --reference-gap away; never the frame itself).

    Example:

      sketchcolor dataset build shots/sc01_c004 shots/sc01_c005 -o datasets/sc01 --color 'paint/####.png'
    """
    from sketchcolor_cli.training.dataset import BuildOptions, build_dataset

    if masks not in ("manifest", "auto", "none"):
        raise SketchcolorError(f"--masks must be manifest, auto or none, not {masks!r}")
    options = BuildOptions(
        resolution=resolution, step=step, buckets=[_size(b) for b in bucket] if bucket else None,
        shard_samples=shard_samples, holdout=holdout, reference_gap=reference_gap, max_references=max_references,
        reference_size=reference_size, masks=masks, seed=seed, color=color,
    )
    try:
        with console_err.status("building") as status:
            report = build_dataset(cuts, out, options, overwrite=overwrite,
                                   progress=lambda text: status.update(f"building {text}"))
    except (FileExistsError, ValueError) as error:
        raise SketchcolorError(str(error)) from None
    if report.problems:
        print_problems(report.problems)
    if report.samples == 0:
        console_err.print("no training samples: nothing written", highlight=False)
        raise typer.Exit(EXIT_FRAMES_FAILED)
    if json_out:
        print(json.dumps({"path": str(report.path), "train": report.samples, "holdout": report.holdout,
                          "buckets": report.buckets, "skipped": report.skipped,
                          "problems": [p.to_dict() for p in report.problems]}, indent=2))
    else:
        console.print(f"wrote {report.path}: {report.samples} training samples, {report.holdout} held out, "
                      f"{report.skipped} frames left out", highlight=False)
    if report.samples == 0:
        raise typer.Exit(EXIT_FRAMES_FAILED)


@app.command("check")
def check(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder written by `sketchcolor dataset build`.")],
    quick: Annotated[bool, typer.Option(help="Skip decoding every image (digests and members only).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a training set: shards whole and unaltered, every sample complete and of its stated size,
    references never the target. Prints counts (per split, bucket, cut, character), sizes and every
    problem with its file and what to do; exits 1 when there are problems.

    Example:

      sketchcolor dataset check datasets/sc01
    """
    from sketchcolor_cli.training.dataset import DatasetError, check_dataset

    try:
        report = check_dataset(dataset, decode=not quick)
    except DatasetError as error:
        raise SketchcolorError(str(error)) from None
    if json_out:
        print(json.dumps({"path": str(report.path), "samples": report.samples, "buckets": report.buckets,
                          "cuts": report.cuts, "characters": report.characters, "references": report.references,
                          "bytes": report.bytes, "ok": report.ok,
                          "problems": [p.to_dict() for p in report.problems]}, indent=2, sort_keys=True))
    else:
        table = Table("", "count", title=f"{report.path}")
        for split, count in sorted(report.samples.items()):
            table.add_row(f"{split} samples", str(count))
        for name, count in sorted(report.buckets.items()):
            table.add_row(f"bucket {name}", str(count))
        for name, count in sorted(report.cuts.items()):
            table.add_row(f"cut {name}", str(count))
        for name, count in sorted(report.characters.items()):
            table.add_row(f"character {name}", str(count))
        table.add_row("references per sample", f"{report.references['min']}-{report.references['max']}")
        table.add_row("size on disk", f"{report.bytes / 1e6:.1f} MB")
        console.print(table)
        if report.problems:
            print_problems(report.problems)
        else:
            console.print("no problems found")
    if not report.ok:
        raise typer.Exit(EXIT_FRAMES_FAILED)
