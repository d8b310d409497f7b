"""One cut from manifest to finished outputs: resolve, plan, run, then the cut's review files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sketchcolor_cli.engines.base import engine_class
from sketchcolor_cli.frames.spec import parse_frame_spec, shard_frames
from sketchcolor_cli.manifest.resolve import ResolvedCut, load_cut
from sketchcolor_cli.plan import Plan, build_plan
from sketchcolor_cli.runner.logs import SUMMARY, RunSummary, log_file, write_json_atomic
from sketchcolor_cli.runner.progress import Reporter
from sketchcolor_cli.runner.scheduler import RunOptions, run_plans

CONTACT_SHEET = "contact_sheet.png"
FLIPBOOK = "flipbook.mp4"


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
    """Several cuts in one call: cuts with equal engine settings share the loaded workers. A farm
    task (a log tag) leaves the cut's review files to `sketchcolor preview`, run once at the end."""
    summaries = run_plans(plans, reporter, options)
    for plan, summary in zip(plans, summaries):
        if summary.log_tag is None and (summary.frames_done or summary.frames_skipped):
            extras = write_cut_review(plan)
            summary.extras.update({name: str(path) for name, path in extras.items()})
            write_json_atomic(log_file(plan.cut.output_dir, SUMMARY, summary.log_tag), summary.to_dict())
    return summaries


def write_cut_review(plan: Plan, *, contact_sheet: bool | None = None, flipbook: bool | None = None) -> dict[str, Path]:
    """The contact sheet and the flip-book, from the outputs on disk (so a resumed run shows all).
    The two are made side by side in threads: reading, scaling and encoding release the GIL.
    (Made while the frames are, they slowed the engine as much as they saved: both cores are busy.)"""
    from concurrent.futures import ThreadPoolExecutor

    from sketchcolor_cli.outputs.contact_sheet import write_contact_sheet

    from sketchcolor_cli.frames.images import remove_stale_temps

    cut: ResolvedCut = plan.cut
    outputs = cut.manifest.outputs
    # a killed earlier run may have left a half-written sheet or movie beside these
    remove_stale_temps([cut.output_dir / CONTACT_SHEET, cut.output_dir / FLIPBOOK])
    jobs: dict[str, Callable[[], Path]] = {}
    shown = [layer for layer in ("color", "review") if layer in plan.layers]
    line_cells = {unit.frame: (unit.line_path, "") for unit in plan.units}
    if contact_sheet if contact_sheet is not None else outputs.contact_sheet:
        rows = [
            (unit.frame, [line_cells[unit.frame]] + [(unit.outputs[layer], layer) for layer in shown])
            for unit in plan.units
        ]
        references = [cut.path(sheet.image) for c in cut.manifest.characters for sheet in c.references]
        jobs["contact_sheet"] = lambda: write_contact_sheet(
            rows, ["line"] + shown, references, cut.output_dir / CONTACT_SHEET,
            title=f"{cut.name}  ({cut.manifest.engine.name})",
        )
    if (flipbook if flipbook is not None else outputs.flipbook) and shown:
        from sketchcolor_cli.outputs.flipbook import write_flipbook

        extra: dict = {}
        if outputs.flipbook_side_by_side:
            beside = [layer for layer in shown[1:]]
            extra = {
                "side_by_side": [[(u.frame, u.line_path) for u in plan.units]]
                + [[(u.frame, u.outputs[layer]) for u in plan.units] for layer in beside],
                "side_by_side_layers": [None] + beside,
            }
        jobs["flipbook"] = lambda: write_flipbook(
            [(unit.frame, unit.outputs[shown[0]]) for unit in plan.units],
            cut.output_dir / FLIPBOOK,
            fps=cut.manifest.fps,
            label=cut.name,
            layer=shown[0],
            **extra,
        )
    if len(jobs) < 2:
        return {name: job() for name, job in jobs.items()}
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="sketchcolor-review") as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}
