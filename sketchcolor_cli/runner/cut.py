"""One cut from manifest to finished outputs: resolve, plan, run, then the cut's review files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sketchcolor_cli.engines.base import engine_class
from sketchcolor_cli.frames.spec import parse_frame_spec, shard_frames
from sketchcolor_cli.manifest.resolve import load_cut
from sketchcolor_cli.plan import Plan, build_plan
from sketchcolor_cli.runner.logs import SUMMARY, RunSummary, log_file, write_json_atomic
from sketchcolor_cli.runner.progress import Reporter
from sketchcolor_cli.runner.scheduler import RunOptions, run_plans


@dataclass
class RunRequest:
    """What the command line asked for one cut."""

    target: Path
    preset: str | None = None
    overrides: dict[str, Any] | None = None
    frames: str | None = None
    overwrite: bool = False
    shard: tuple[int, int] | None = None  # (K, N): this task's share of the selected frames
    chunk_range: tuple[int, int] | None = None  # (first, last): only the selected frames in this span


def plan_cut(request: RunRequest) -> Plan:
    cut = load_cut(request.target, preset=request.preset, overrides=request.overrides)
    selection = parse_frame_spec(request.frames) if request.frames else None
    dependency = engine_class(cut.manifest.engine.name).dependency_for(cut.engine_settings)
    if request.shard is not None or request.chunk_range is not None:
        from sketchcolor_cli.frames.sequence import find_sequence
        from sketchcolor_cli.plan import cut_frames

        if selection is None:
            selection = cut_frames(cut, find_sequence(cut.manifest.frames.source, cut.cut_dir))
        if request.chunk_range is not None:
            first, last = request.chunk_range
            selection = [frame for frame in selection if first <= frame <= last]
        if request.shard is not None:
            selection = shard_frames(selection, *request.shard)
    return build_plan(cut, frame_dependency=dependency, selection=selection, overwrite=request.overwrite)


def run_cut(plan: Plan, reporter: Reporter, options: RunOptions | None = None) -> RunSummary:
    """One cut end to end: its frames, then the contact sheet and flip-book."""
    (summary,) = run_cuts([plan], reporter, options)
    return summary


def run_cuts(plans: list[Plan], reporter: Reporter, options: RunOptions | None = None) -> list[RunSummary]:
    """Several cuts in one call: cuts with equal engine settings share the loaded workers. Each cut's
    contact sheet and flip-book are made as its frames are written (`outputs.review`) and finished
    after its last frame. A farm task (a log tag) leaves them to `sketchcolor preview`, run once at
    the end."""
    from sketchcolor_cli.outputs.review import CutReview

    options = options or RunOptions()
    reviews = [None if options.log_tag is not None else CutReview(plan) for plan in plans]
    try:
        summaries = run_plans(plans, reporter, options, reviews=reviews)
    except BaseException:
        for review in reviews:
            if review is not None:
                review.abort()
        raise
    for plan, summary, review in zip(plans, summaries, reviews):
        if review is None:
            continue
        if summary.frames_done or summary.frames_skipped:
            extras = review.finish()
            summary.extras.update({name: str(path) for name, path in extras.items()})
            write_json_atomic(log_file(plan.cut.output_dir, SUMMARY, summary.log_tag), summary.to_dict())
        else:
            review.abort()
    return summaries
