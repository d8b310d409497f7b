"""Running a plan on one local worker: load the engine once, colour frames in batches, write each
frame's layers atomically, and log every frame. A failed frame is recorded and the run goes on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import numpy as np

from sketchcolor_cli import __version__
from sketchcolor_cli.engines.base import Engine, PreviousResult, WorkItem, engine_class
from sketchcolor_cli.errors import FrameError, ManifestError, Problem
from sketchcolor_cli.frames.images import ImageError, read_rgba16
from sketchcolor_cli.outputs.writers import read_fill_layer, write_frame_layers
from sketchcolor_cli.plan import FrameUnit, Plan
from sketchcolor_cli.runner.inputs import CutInputs
from sketchcolor_cli.runner.logs import FrameRecord, RunLog, RunSummary
from sketchcolor_cli.runner.progress import Reporter


def load_engine(plan: Plan) -> Engine:
    cut = plan.cut
    return engine_class(cut.manifest.engine.name).load(cut.engine_settings)


def _batches(units: list[FrameUnit], size: int) -> Iterator[list[FrameUnit]]:
    """Consecutive units, cut wherever a unit depends on one in the same batch."""
    batch: list[FrameUnit] = []
    for unit in units:
        if len(batch) >= size or (unit.depends_on is not None and any(u.frame == unit.depends_on for u in batch)):
            yield batch
            batch = []
        batch.append(unit)
    if batch:
        yield batch


class _Carry:
    """Finished frames' results that later frames carry colours from: the fill is always read
    back from disk (so a resumed run sees exactly what an uninterrupted one does); the line art
    of the frame just coloured is kept rather than decoded again."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.failed: set[int] = set()
        self.last_line_art: tuple[int, np.ndarray] | None = None

    def previous_for(self, unit: FrameUnit) -> tuple[PreviousResult | None, str | None]:
        if unit.depends_on is None:
            return None, None
        source = self.plan.unit(unit.depends_on)
        if source.frame in self.failed or source.line_path is None:
            return None, f"frame {source.frame} failed; coloured from the references alone"
        fill_path = source.outputs["fill"]
        if not fill_path.is_file():
            return None, f"frame {source.frame} has no fill layer; coloured from the references alone"
        try:
            fill = read_fill_layer(fill_path)
            if self.last_line_art is not None and self.last_line_art[0] == source.frame:
                line_art = self.last_line_art[1]
            else:
                line_art = read_rgba16(source.line_path)
        except (ImageError, KeyError) as error:
            return None, f"cannot read frame {source.frame}'s result back ({error}); coloured from the references"
        return PreviousResult(frame=source.frame, line_art=line_art, fill=fill), None


def run_plan(plan: Plan, *, reporter: Reporter, engine: Engine | None = None) -> RunSummary:
    cut = plan.cut
    manifest = cut.manifest
    output_dir = cut.output_dir
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    digest = cut.settings_digest()
    summary = RunSummary(
        cut=cut.name,
        manifest=str(cut.manifest_path),
        output_dir=str(output_dir),
        engine=manifest.engine.name,
        settings_digest=digest,
        run_id=run_id,
        started=time.time(),
    )
    log = RunLog(output_dir, run_id)
    todo = plan.todo
    for unit in plan.skipped:
        summary.frames_skipped.append(unit.frame)
        log.frame(FrameRecord(frame=unit.frame, status="skipped", notes=["outputs exist; --overwrite redoes them"]))

    inputs = CutInputs(cut)
    try:
        if todo:
            inputs.references  # noqa: B018 - read the shared references once, before any frame
            engine = engine or load_engine(plan)
    except (ImageError, FrameError) as error:
        log.close()
        raise ManifestError([Problem(str(error), file=cut.manifest_path, field="characters")]) from None

    reporter.start(cut.name, len(todo))
    if not any(unit.mask_paths for unit in todo) and todo:
        log.text("no masks given: every character's references apply to the whole frame")
    carry = _Carry(plan)
    metadata_base = {
        "sketchcolor:version": __version__,
        "sketchcolor:cut": cut.name,
        "sketchcolor:engine": engine.describe() if engine else manifest.engine.name,
        "sketchcolor:settings_digest": digest,
    }
    try:
        for batch in _batches(todo, manifest.run.batch_size):
            _run_batch(batch, plan, engine, inputs, carry, log, reporter, summary, metadata_base)
    finally:
        summary.finished = time.time()
        log.summary(summary)
        log.text(
            f"finished: {len(summary.frames_done)} done, {len(summary.frames_skipped)} skipped, "
            f"{len(summary.frames_failed)} failed"
        )
        log.close()
        reporter.finish()
    return summary


def _run_batch(
    batch: list[FrameUnit],
    plan: Plan,
    engine: Engine,
    inputs: CutInputs,
    carry: _Carry,
    log: RunLog,
    reporter: Reporter,
    summary: RunSummary,
    metadata_base: dict,
) -> None:
    cut = plan.cut
    started = time.perf_counter()
    items: list[tuple[FrameUnit, WorkItem, list[str]]] = []
    for unit in batch:
        previous, note = carry.previous_for(unit)
        try:
            item = inputs.work_item(unit, previous)
            items.append((unit, item, [note] if note else []))
            carry.last_line_art = (unit.frame, item.line_art)
        except FrameError as error:
            _failed(unit, str(error), carry, log, reporter, summary)
    if not items:
        return
    try:
        results = engine.colorize([item for _, item, _ in items])
    except (FrameError, ValueError) as error:
        for unit, _, _ in items:
            _failed(unit, f"engine: {error}", carry, log, reporter, summary)
        return
    seconds = (time.perf_counter() - started) / len(items)
    outputs = cut.manifest.outputs
    for (unit, item, notes), layers in zip(items, results):
        metadata = dict(
            metadata_base,
            **{
                "sketchcolor:frame": unit.frame,
                "sketchcolor:source": str(unit.line_path),
                "sketchcolor:seed": unit.seed,
            },
        )
        try:
            write_frame_layers(
                layers, unit.outputs, bit_depth=outputs.bit_depth, compression=outputs.compression, metadata=metadata
            )
        except (OSError, ImageError, ValueError) as error:
            _failed(unit, f"cannot write outputs: {error}", carry, log, reporter, summary)
            continue
        if not unit.requested:
            notes.append("coloured because a requested frame carries its colours")
        summary.frames_done.append(unit.frame)
        log.frame(
            FrameRecord(
                frame=unit.frame,
                status="done",
                seconds=round(seconds, 4),
                inputs=_inputs_of(unit, item),
                outputs=[str(p) for p in unit.output_files],
                engine=cut.manifest.engine.name,
                settings_digest=summary.settings_digest,
                seed=unit.seed,
                notes=notes,
                stats=layers.stats,
            )
        )
        reporter.frame(unit.frame, "done", f"{seconds:.2f} s")


def _inputs_of(unit: FrameUnit, item: WorkItem) -> dict:
    return {
        "line": str(unit.line_path),
        "references": [r.source for r in item.references],
        "masks": {name: str(path) for name, path in unit.mask_paths.items()},
        "previous": item.previous.frame if item.previous else None,
    }


def _failed(
    unit: FrameUnit, reason: str, carry: _Carry, log: RunLog, reporter: Reporter, summary: RunSummary
) -> None:
    carry.failed.add(unit.frame)
    summary.frames_failed[unit.frame] = reason
    log.frame(FrameRecord(frame=unit.frame, status="failed", error=reason, seed=unit.seed,
                          inputs={"line": str(unit.line_path) if unit.line_path else None}))
    reporter.frame(unit.frame, "failed", reason)

