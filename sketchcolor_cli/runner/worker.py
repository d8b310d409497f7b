"""One worker: loads an engine once and colours the batches the scheduler sends it.

The same loop runs in a thread of the calling process (one local worker), in a spawned process
(several local workers, or any run with a frame time limit) and in a Ray actor. Inside, three
stages overlap so the engine waits as little as possible:

* the reader thread takes batches from the inbox and reads their inputs (line art, masks, key
  frames, and the previous frame's fill read back from disk);
* the calling thread runs ``engine.colorize`` on one prepared batch at a time. A frame whose
  previous frame this worker coloured just before takes that result from memory (the fill exactly
  as it will read back from disk), so along a chain the next frame is read while this one is
  coloured and written while the next one is coloured;
* the writer thread writes each frame's layers atomically and reports it, with the frame's share
  of the cut's review (thumbnails, a flip-book picture) made while its layers are in memory.

Every message to the scheduler is a tuple whose first item names it (see ``Msg``). The worker
knows files and engines but no scheduling: which frames, in which batches, on which worker, and
what happens after a failure are the scheduler's decisions.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sketchcolor_cli import __version__
from sketchcolor_cli.engines.base import Engine, PreviousResult, WorkItem, is_out_of_memory, register_engine
from sketchcolor_cli.errors import FrameError
from sketchcolor_cli.manifest.resolve import ResolvedCut
from sketchcolor_cli.plan import FrameUnit

# Message kinds, worker -> scheduler.
READY = "ready"  # (READY, worker_id, pid)
LOADED = "loaded"  # (LOADED, worker_id, seconds): an engine finished loading (time limits start now)
FRAME = "frame"  # (FRAME, worker_id, batch_id, cut_key, frame, outcome: dict)
OOM = "oom"  # (OOM, worker_id, batch_id, cut_key, frames, error text)
BATCH_END = "batch_end"  # (BATCH_END, worker_id, batch_id, WorkerStats as dict)
FATAL = "fatal"  # (FATAL, worker_id, error text): the worker cannot go on (engine did not load)
STOPPED = "stopped"  # (STOPPED, worker_id, WorkerStats as dict)

# Message kinds, scheduler -> worker.
CUT = "cut"  # (CUT, cut_key, ResolvedCut)
BATCH = "batch"  # (BATCH, batch_id, cut_key, [Assignment, ...])
STOP = "stop"  # (STOP,)

_LINE_ART_CACHE = 4  # recently read line art kept for the next frame's "previous" (per worker)
_RESULT_CACHE = 4  # results kept for frames pipelined after them (per worker; each taken once)
DEFERRED = "deferred"  # a frame outcome: not coloured, its in-memory previous result is missing


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs before its first message; picklable (spawned processes, Ray)."""

    worker_id: int
    # CUDA_VISIBLE_DEVICES for this worker: "0" (one GPU), "" (hide every GPU), None (leave as is).
    visible_devices: str | None = None
    engines: dict[str, str] = field(default_factory=dict)  # extra engine registry entries
    # CPU threads the engine's libraries may use (OpenCV, OpenMP): the cores shared out between
    # CPU workers, so that N workers do not each start a thread per core. None: no limit.
    threads: int | None = None


@dataclass(frozen=True)
class Assignment:
    """One frame to colour, with the frame its colours come from (if any)."""

    unit: FrameUnit
    dependency: FrameUnit | None = None  # the unit named by unit.depends_on, when it is in the plan
    dependency_failed: bool = False
    # The dependency was sent to this worker before this frame and is not written yet: take its
    # result from memory. If the engine failed on it, this frame is handed back ("deferred").
    previous_in_memory: bool = False
    keep_result: bool = False  # a later frame carries this frame's colours: keep its fill in memory
    # What to make for the cut's review from the layers in memory ("sheet", "movie"; outputs.review).
    preview: tuple[str, ...] = ()


@dataclass
class WorkerStats:
    """How busy the engine was: the idle share is 1 - engine_seconds / active_seconds."""

    frames: int = 0
    engine_seconds: float = 0.0  # inside engine.colorize
    active_seconds: float = 0.0  # from the engine's first load to the last batch finished
    load_seconds: float = 0.0  # engine loading (not counted as active)

    def as_dict(self) -> dict[str, float]:
        return {
            "frames": self.frames,
            "engine_seconds": round(self.engine_seconds, 4),
            "active_seconds": round(self.active_seconds, 4),
            "load_seconds": round(self.load_seconds, 4),
        }


def engine_key(cut: ResolvedCut) -> str:
    """Cuts with the same key share a loaded engine (same engine, same settings)."""
    import json

    settings = cut.engine_settings.model_dump(mode="json")
    return json.dumps([cut.manifest.engine.name, settings], sort_keys=True)


class _CutState:
    """A cut's inputs and output metadata, kept by the worker while its frames come."""

    def __init__(self, cut: ResolvedCut):
        from sketchcolor_cli.runner.inputs import CutInputs

        self.cut = cut
        self.inputs = CutInputs(cut)
        self.engine_key = engine_key(cut)
        self.digest = cut.settings_digest()
        self.review_layouts: dict[tuple[str, ...], Any] = {}  # layers written -> outputs.review.ReviewLayout

    def review_layout(self, layers: tuple[str, ...]) -> Any:
        if layers not in self.review_layouts:
            from sketchcolor_cli.outputs.review import ReviewLayout

            self.review_layouts[layers] = ReviewLayout.of(self.cut, layers)
        return self.review_layouts[layers]


def run_worker(config: WorkerConfig, receive: Callable[[], Any], send: Callable[[tuple], None]) -> None:
    """The worker loop: returns after a STOP message (or a fatal error, which it reports)."""
    from sketchcolor_cli.runner.allocator import keep_frame_buffers

    for name, target in config.engines.items():
        register_engine(name, target)
    keep_frame_buffers()
    if config.threads:
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(config.threads)
        import cv2

        cv2.setNumThreads(config.threads)
    Worker(config, receive, send).run()


class Worker:
    def __init__(self, config: WorkerConfig, receive: Callable[[], Any], send: Callable[[tuple], None]):
        self.id = config.worker_id
        self.receive = receive
        self.send = send
        self.cuts: dict[str, _CutState] = {}
        self.engine: Engine | None = None
        self.engine_key: str | None = None
        self.engine_description = ""
        self.stats = WorkerStats()
        self.active_since: float | None = None
        self.line_art: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._line_art_lock = threading.Lock()
        # (cut_key, frame) -> PreviousResult of frames coloured here that a later frame carries from
        self.results: OrderedDict[tuple[str, int], PreviousResult] = OrderedDict()
        self._prepare_with: tuple[str, Engine] | None = None  # (engine key, engine) for the reader's `prepare`
        # Bounded, so the reader is one batch ahead of the engine and the writer one behind.
        self.prepared: queue.Queue = queue.Queue(maxsize=1)
        self.to_write: queue.Queue = queue.Queue(maxsize=2)

    # -- the three stages --

    def run(self) -> None:
        self.send((READY, self.id, os.getpid()))
        reader = threading.Thread(target=self._read_loop, name=f"sketchcolor-reader-{self.id}", daemon=True)
        writer = threading.Thread(target=self._write_loop, name=f"sketchcolor-writer-{self.id}", daemon=True)
        reader.start()
        writer.start()
        try:
            self._compute_loop()
        finally:
            self.to_write.put((STOP,))
            writer.join()

    def _read_loop(self) -> None:
        while True:
            message = self.receive()
            try:
                if not self._read(message):
                    return
            except Exception as error:  # noqa: BLE001 - a reader that dies silently would hang the run
                text = f"worker error: {type(error).__name__}: {error}"
                if message[0] == BATCH:
                    _, batch_id, cut_key, assignments = message
                    self.prepared.put((BATCH, batch_id, cut_key, [], [(a.unit, text) for a in assignments]))
                else:
                    self.send((FATAL, self.id, text))

    def _read(self, message: tuple) -> bool:
        """Handle one message from the scheduler; False after STOP."""
        kind = message[0]
        if kind == STOP:
            self.prepared.put(message)
            return False
        if kind == CUT:
            _, cut_key, cut = message
            self.cuts[cut_key] = _CutState(cut)
            self.prepared.put(message)  # the engine loads now, not when the first batch is ready
            return True
        _, batch_id, cut_key, assignments = message
        state = self.cuts[cut_key]
        items, failures = [], []
        for assignment in assignments:
            try:
                item, notes = self._work_item(state, cut_key, assignment)
                items.append((assignment, item, notes))
            except FrameError as error:
                failures.append((assignment.unit, str(error)))
            except Exception as error:  # noqa: BLE001 - one bad frame must not stop the others
                failures.append((assignment.unit, f"cannot read inputs: {type(error).__name__}: {error}"))
        self.prepared.put((BATCH, batch_id, cut_key, items, failures))
        return True

    def _compute_loop(self) -> None:
        while True:
            message = self.prepared.get()
            if message[0] == STOP:
                return
            if message[0] == CUT:
                if not self._engine_for(self.cuts[message[1]]):
                    return
                continue
            _, batch_id, cut_key, prepared, failures = message
            items, deferred = self._with_previous_results(cut_key, prepared)
            results, error, seconds = None, None, 0.0
            if items:
                started = time.perf_counter()
                try:
                    results = self.engine.colorize([item for _, item, _ in items])  # type: ignore[union-attr]
                    if len(results) != len(items):
                        raise RuntimeError(f"engine returned {len(results)} results for {len(items)} frames")
                except Exception as caught:  # noqa: BLE001 - reported per frame, the worker goes on
                    error = caught
                seconds = time.perf_counter() - started
                self.stats.engine_seconds += seconds
                if results is not None:
                    self._keep_results(cut_key, items, results)
            self.to_write.put((batch_id, cut_key, items, failures, deferred, results, error, seconds))

    def _with_previous_results(self, cut_key: str, prepared: list) -> tuple[list, list]:
        """Give pipelined frames their previous frame's result from memory; a frame whose previous
        result is missing (the engine failed on it) is deferred, not coloured differently."""
        items, deferred = [], []
        for assignment, item, notes in prepared:
            if assignment.previous_in_memory:
                # taken once: a later retry of this frame finds its dependency written and reads the file
                previous = self.results.pop((cut_key, assignment.dependency.frame), None)
                if previous is None:
                    deferred.append(assignment.unit)
                    continue
                if previous.line_art.shape == item.line_art.shape:
                    item = replace(item, previous=previous)
            items.append((assignment, item, notes))
        return items, deferred

    def _keep_results(self, cut_key: str, items: list, results: list) -> None:
        from sketchcolor_cli.outputs.writers import carries_handoff, fill_as_read_back

        state = self.cuts[cut_key]
        outputs = state.cut.manifest.outputs
        for (assignment, item, _), layers in zip(items, results):
            unit = assignment.unit
            if not assignment.keep_result or "fill" not in unit.outputs:
                continue
            fill = fill_as_read_back(layers.fill, unit.outputs["fill"], bit_depth=outputs.bit_depth)
            if fill is None:
                continue  # not known exactly: the next frame reads it back from disk instead
            handoff = dict(layers.handoff) if carries_handoff(unit.outputs["fill"]) else {}
            self.results[(cut_key, unit.frame)] = PreviousResult(
                frame=unit.frame, line_art=item.line_art, fill=fill, handoff=handoff
            )
            self.results.move_to_end((cut_key, unit.frame))
            while len(self.results) > _RESULT_CACHE:
                self.results.popitem(last=False)

    def _write_loop(self) -> None:
        while True:
            message = self.to_write.get()
            if message[0] == STOP:  # active time ends with the last batch, not with the run's tail
                self.send((STOPPED, self.id, self.stats.as_dict()))
                return
            batch_id, cut_key, items, failures, deferred, results, error, seconds = message
            in_memory = {a.unit.frame for a, _, _ in items if a.previous_in_memory}
            previews = {a.unit.frame: a.preview for a, _, _ in items if a.preview}
            items = [(assignment.unit, item, notes) for assignment, item, notes in items]
            try:
                for unit in deferred:
                    self.send((FRAME, self.id, batch_id, cut_key, unit.frame, {"status": DEFERRED}))
                self._finish_batch(batch_id, cut_key, items, failures, results, error, seconds, in_memory, previews)
            except Exception as caught:  # noqa: BLE001 - report rather than die silently
                for unit, _, _ in items:
                    self._report_failed(batch_id, cut_key, unit, f"worker error: {type(caught).__name__}: {caught}")
            self._update_active()
            self.send((BATCH_END, self.id, batch_id, self.stats.as_dict()))

    # -- helpers --

    def _engine_for(self, state: _CutState) -> bool:
        if self.engine is not None and self.engine_key == state.engine_key:
            return True
        from sketchcolor_cli.engines.base import engine_class

        started = time.perf_counter()
        try:
            self._prepare_with = None
            self.engine = None  # free the previous model before loading the next
            cut = state.cut
            self.engine = engine_class(cut.manifest.engine.name).load(cut.engine_settings)
            self.engine_key = state.engine_key
            self._prepare_with = (self.engine_key, self.engine)  # one assignment: the reader sees both or neither
            self.engine_description = self.engine.describe()
        except Exception as error:  # noqa: BLE001 - the scheduler ends the run with this message
            text = "".join(traceback.format_exception_only(type(error), error)).strip()
            self.send((FATAL, self.id, f"engine {state.cut.manifest.engine.name!r} did not load: {text}"))
            return False
        seconds = time.perf_counter() - started
        self.stats.load_seconds += seconds
        if self.active_since is None:
            self.active_since = time.perf_counter()  # the engine is ready: idle time counts from here
        else:
            self.active_since += seconds  # loading another engine is not idle time
        self.send((LOADED, self.id, seconds))
        return True

    def _update_active(self) -> None:
        if self.active_since is not None:
            self.stats.active_seconds = time.perf_counter() - self.active_since

    def _cached_line_art(self, cut_key: str, frame: int):
        with self._line_art_lock:
            return self.line_art.get((cut_key, frame))

    def _remember_line_art(self, cut_key: str, frame: int, line_art) -> None:
        with self._line_art_lock:
            self.line_art[(cut_key, frame)] = line_art
            self.line_art.move_to_end((cut_key, frame))
            while len(self.line_art) > _LINE_ART_CACHE:
                self.line_art.popitem(last=False)

    def _work_item(self, state: _CutState, cut_key: str, assignment: Assignment) -> tuple[WorkItem, list[str]]:
        if assignment.previous_in_memory:  # filled in by the engine stage, once that result exists
            previous, note = None, None
        else:
            previous, note = self._previous(state, cut_key, assignment)
        item = state.inputs.work_item(assignment.unit, previous)
        self._remember_line_art(cut_key, assignment.unit.frame, item.line_art)
        loaded = self._prepare_with
        if loaded is not None and loaded[0] == state.engine_key:  # the engine stage loaded it for this cut
            try:
                item = loaded[1].prepare(item)
            except Exception:  # noqa: BLE001 - colorize meets the same problem and reports it per frame
                pass
        return item, [note] if note else []

    def _previous(self, state: _CutState, cut_key: str, assignment: Assignment) -> tuple[PreviousResult | None, str | None]:
        """The previous frame's result, its fill read back from disk (so a resumed run, or another
        worker, sees exactly what this one would)."""
        from sketchcolor_cli.frames.images import ImageError, read_rgba16
        from sketchcolor_cli.outputs.writers import read_fill_handoff, read_fill_layer

        source = assignment.dependency
        if assignment.unit.depends_on is None or source is None:
            return None, None
        if assignment.dependency_failed or source.line_path is None:
            return None, f"frame {source.frame} failed; coloured from the references alone"
        fill_path = source.outputs["fill"]
        if not fill_path.is_file():
            return None, f"frame {source.frame} has no fill layer; coloured from the references alone"
        try:
            fill = read_fill_layer(fill_path)
            handoff = read_fill_handoff(fill_path)
            line_art = self._cached_line_art(cut_key, source.frame)
            if line_art is None:
                line_art = read_rgba16(source.line_path)
        except (ImageError, KeyError) as error:
            return None, f"cannot read frame {source.frame}'s result back ({error}); coloured from the references"
        return PreviousResult(frame=source.frame, line_art=line_art, fill=fill, handoff=handoff), None

    def _finish_batch(
        self, batch_id, cut_key, items, failures, results, error, seconds, in_memory=frozenset(), previews=None,
    ) -> None:  # fmt: skip
        from sketchcolor_cli.frames.images import ImageError
        from sketchcolor_cli.outputs.writers import carries_handoff, write_frame_layers

        for unit, reason in failures:
            self._report_failed(batch_id, cut_key, unit, reason)
        if not items:
            return
        if error is not None:
            text = f"{type(error).__name__}: {error}"
            if is_out_of_memory(error):
                self.send((OOM, self.id, batch_id, cut_key, [unit.frame for unit, _, _ in items], text))
            else:
                for unit, _, _ in items:  # which frame of the batch is to blame is unknown
                    self._report_failed(batch_id, cut_key, unit, f"engine: {text}", batch_size=len(items))
            return
        state = self.cuts[cut_key]
        cut = state.cut
        outputs = cut.manifest.outputs
        per_frame = seconds / len(items)
        for (unit, item, notes), layers in zip(items, results):
            started = time.perf_counter()
            metadata = {
                "sketchcolor:version": __version__,
                "sketchcolor:cut": cut.name,
                "sketchcolor:engine": self.engine_description or cut.manifest.engine.name,
                "sketchcolor:settings_digest": state.digest,
                "sketchcolor:frame": unit.frame,
                "sketchcolor:source": str(unit.line_path),
                "sketchcolor:seed": unit.seed,
            }
            if "fill" in unit.outputs and carries_handoff(unit.outputs["fill"]):
                metadata.update(layers.handoff)
            try:
                write_frame_layers(
                    layers, unit.outputs, bit_depth=outputs.bit_depth, compression=outputs.compression,
                    metadata=metadata,
                )  # fmt: skip
            except (OSError, ImageError, ValueError) as caught:
                self._report_failed(batch_id, cut_key, unit, f"cannot write outputs: {caught}")
                continue
            self.stats.frames += 1
            outcome = {
                "status": "done",
                "engine_seconds": round(per_frame, 4),
                "write_seconds": round(time.perf_counter() - started, 4),
                "inputs": {
                    "line": str(unit.line_path),
                    "references": [r.source for r in item.references],
                    "masks": {name: str(path) for name, path in unit.mask_paths.items()},
                    "mask_sources": dict(unit.mask_sources),
                    "reference_masks": {r.source: state.inputs.reference_mask_files[r.source] for r in item.references
                                        if r.mask is not None and r.source in state.inputs.reference_mask_files},
                    "previous": item.previous.frame if item.previous else None,
                    # where the previous fill came from: this worker's memory, or its file
                    "previous_from": ("memory" if unit.frame in in_memory else "file") if item.previous else None,
                },
                "notes": notes,
                "stats": layers.stats,
            }
            if previews and unit.frame in previews:
                outcome["preview"] = self._preview(state, unit, item, layers, previews[unit.frame])
            self.send((FRAME, self.id, batch_id, cut_key, unit.frame, outcome))

    def _preview(self, state: _CutState, unit: FrameUnit, item: WorkItem, layers: Any, wants: tuple[str, ...]) -> dict:
        """The frame's share of the review; nothing if it cannot be made (the review reads the files)."""
        from sketchcolor_cli.outputs.review import frame_preview

        try:
            return frame_preview(state.review_layout(tuple(unit.outputs)), wants, unit.frame, item.line_art, layers)
        except Exception:  # noqa: BLE001 - the frame is written; its review is read back instead
            return {}

    def _report_failed(self, batch_id, cut_key: str, unit: FrameUnit, reason: str, batch_size: int = 1) -> None:
        outcome = {"status": "failed", "error": reason, "engine_batch": batch_size}
        self.send((FRAME, self.id, batch_id, cut_key, unit.frame, outcome))
