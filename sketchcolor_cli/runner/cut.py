"""One cut from manifest to finished outputs: resolve, plan, run, then the cut's review files."""

from __future__ import annotations

import threading
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
    task (a log tag) leaves the cut's review files to `sketchcolor preview`, run once at the end.

    A cut's review files are made while its frames are: they read each frame as soon as this run
    has written it (in frame order), so little of that work is left when the last frame is done."""
    farm_task = options is not None and options.log_tag is not None
    names = [plan.cut.name for plan in plans]
    reviews = {
        plan.cut.name: _ReviewAlongside(plan)
        for plan in plans
        if not farm_task and names.count(plan.cut.name) == 1 and (plan.todo or plan.skipped)
    }
    try:
        summaries = run_plans(plans, _ReviewGates(reporter, reviews), options)
    except BaseException:
        for review in reviews.values():
            review.cancel()
        raise
    for plan, summary in zip(plans, summaries):
        review = reviews.get(plan.cut.name)
        if summary.log_tag is None and (summary.frames_done or summary.frames_skipped):
            extras = review.result() if review is not None else write_cut_review(plan)
            summary.extras.update({name: str(path) for name, path in extras.items()})
            write_json_atomic(log_file(plan.cut.output_dir, SUMMARY, summary.log_tag), summary.to_dict())
        elif review is not None:
            review.cancel()  # nothing was made: no review files either
    return summaries


class _ReviewCancelled(Exception):
    """The run stopped before its frames were made: the review files are not written."""


class _FrameGate:
    """Holds a reader of a frame until this run has finished with that frame (done or failed)."""

    def __init__(self, pending: set[int]) -> None:
        self._pending = set(pending)
        self._all_released = False
        self._cancelled = False
        self._changed = threading.Condition()

    def finished(self, frame: int) -> None:
        with self._changed:
            self._pending.discard(frame)
            self._changed.notify_all()

    def release_all(self) -> None:
        with self._changed:
            self._all_released = True
            self._changed.notify_all()

    def cancel(self) -> None:
        with self._changed:
            self._cancelled = True
            self._changed.notify_all()

    def wait(self, frame: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._cancelled or self._all_released or frame not in self._pending)
            if self._cancelled:
                raise _ReviewCancelled()


class _ReviewAlongside:
    """A cut's review files made in a background thread, frame by frame as the run writes them."""

    def __init__(self, plan: Plan) -> None:
        self.gate = _FrameGate({unit.frame for unit in plan.todo})
        self._extras: dict[str, Path] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._make, args=(plan,), name="sketchcolor-review", daemon=True)
        self._thread.start()

    def _make(self, plan: Plan) -> None:
        try:
            self._extras = write_cut_review(plan, wait=self.gate.wait)
        except _ReviewCancelled:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the caller in result()
            self._error = error

    def result(self) -> dict[str, Path]:
        self.gate.release_all()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._extras

    def cancel(self) -> None:
        self.gate.cancel()
        self._thread.join()


class _ReviewGates(Reporter):
    """The run's reporter, also telling each cut's review which frames are finished."""

    def __init__(self, inner: Reporter, reviews: dict[str, _ReviewAlongside]) -> None:
        self.inner = inner
        self.reviews = reviews

    def start(self, cut: str, total: int) -> None:
        self.inner.start(cut, total)

    def frame(self, frame: int, status: str, detail: str = "", *, cut: str | None = None) -> None:
        self.inner.frame(frame, status, detail, cut=cut)
        review = self.reviews.get(cut) if cut is not None else None
        if review is not None and status in ("done", "failed"):
            review.gate.finished(frame)

    def message(self, text: str) -> None:
        self.inner.message(text)

    def finish(self) -> None:
        self.inner.finish()


def write_cut_review(
    plan: Plan,
    *,
    contact_sheet: bool | None = None,
    flipbook: bool | None = None,
    wait: Callable[[int], None] | None = None,
) -> dict[str, Path]:
    """The contact sheet and the flip-book, from the outputs on disk (so a resumed run shows all).
    The two are made side by side in threads: reading, scaling and encoding release the GIL.
    `wait(frame)` holds them before reading a frame that a run is still making."""
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
            title=f"{cut.name}  ({cut.manifest.engine.name})", wait=wait,
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
            wait=wait,
            **extra,
        )
    if len(jobs) < 2:
        return {name: job() for name, job in jobs.items()}
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="sketchcolor-review") as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}
