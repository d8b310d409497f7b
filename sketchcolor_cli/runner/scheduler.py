"""The scheduler: hands a run's frames to workers in batches, in dependency order, and deals with
what goes wrong. It knows frames, dependencies and workers; never models.

* A frame is dispatched only when the frame it carries colours from is written (or failed: then
  it is coloured from the references alone, with a note). Chains that start at different key
  frames run side by side; independent frames spread over every worker. A frame whose
  dependency a worker has just written goes back to that worker when it can (its line art is
  still in memory).
* Each worker has a few batches queued, so reading, colouring and writing overlap inside it.
* A frame that fails is retried once (alone), then recorded failed. A worker that dies has its
  frames given to the others and is replaced. An out-of-memory error halves that worker's batch
  and retries the frames. A frame past the time limit fails and its worker is killed and replaced.
* Several cuts with equal engine settings share one set of workers. The scheduler keeps the logs;
  workers write the outputs.

Determinism: a frame's bytes depend only on its inputs, seed, settings and its dependency's
written fill, so any number of workers, any order and any retry give the same outputs.
"""

from __future__ import annotations

import heapq
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sketchcolor_cli.engines.base import engine_class, registered_engines
from sketchcolor_cli.errors import FrameError, ManifestError, Problem, WorkerError
from sketchcolor_cli.plan import FrameUnit, Plan
from sketchcolor_cli.runner import worker as protocol
from sketchcolor_cli.runner.devices import WorkerLayout, choose_layout
from sketchcolor_cli.runner.logs import FrameRecord, RunLog, RunSummary
from sketchcolor_cli.runner.pool import Pool, WorkerHandle
from sketchcolor_cli.runner.progress import Reporter
from sketchcolor_cli.runner.worker import Assignment, WorkerConfig, engine_key

WAITING, READY, RUNNING, DONE, FAILED = "waiting", "ready", "running", "done", "failed"


@dataclass
class RunOptions:
    """How to run: the command line's `--workers/--gpus/--backend/--frame-timeout/...`."""

    workers: int | None = None  # CPU workers (None: the default layout)
    gpus: list[str] | None = None  # one worker per GPU id
    backend: str = "local"  # "local" | "ray"
    address: str | None = None  # Ray cluster address ("auto", "host:port"); None starts a local Ray
    frame_timeout_s: float | None = None  # overrides every manifest's run.frame_timeout_s
    retries: int = 1  # a failed frame is tried this many more times
    log_tag: str | None = None  # name of this farm task's log files
    batches_per_worker: int = 3  # queued per worker: one reading, one colouring, one writing
    max_restarts: int | None = None  # worker replacements before giving up (None: 2 per worker + 2)


@dataclass(eq=False)
class _Frame:
    cut: "_Cut"
    unit: FrameUnit
    state: str = WAITING
    attempts: int = 0
    attempt_errors: list[str] = field(default_factory=list)
    oom_halvings: int = 0
    dependency_failed: bool = False
    alone: bool = False  # dispatch in a batch of its own (its batch failed in the engine)
    batch: "_Batch | None" = None
    pipelined: bool = False  # sent to its dependency's worker before that one was written

    @property
    def goes_alone(self) -> bool:
        return self.alone or self.attempts > 0

    @property
    def order(self) -> tuple[int, int]:
        return (self.cut.index, self.unit.frame)


@dataclass(eq=False)
class _Cut:
    index: int
    plan: Plan
    log: RunLog
    summary: RunSummary
    frames: dict[int, _Frame] = field(default_factory=dict)
    dependents: dict[int, list[_Frame]] = field(default_factory=dict)
    remaining: int = 0
    pipelines: bool = False  # a frame's result can be carried in memory (exactly as it reads back)
    review: Any = None  # the cut's CutReview (outputs.review), fed as frames finish; None: no review

    @property
    def key(self) -> str:
        return str(self.index)

    @property
    def batch_size(self) -> int:
        return self.plan.cut.manifest.run.batch_size


@dataclass(eq=False)
class _Batch:
    id: int
    cut: _Cut
    frames: list[_Frame]
    sent_at: float

    @property
    def pending(self) -> list[_Frame]:
        return [f for f in self.frames if f.batch is self]


@dataclass(eq=False)
class _Worker:
    id: int
    handle: WorkerHandle
    device: str | None
    alive: bool = True
    loaded_at: float | None = None  # the engine is ready: time limits count from here
    head_since: float = 0.0  # when the oldest queued batch started being the one worked on
    in_flight: deque = field(default_factory=deque)  # _Batch, oldest first
    cuts_sent: set = field(default_factory=set)
    oom_cap: int | None = None  # largest batch since the engine ran out of memory
    stats: dict[str, float] = field(default_factory=dict)
    stopped: bool = False
    lost: str | None = None

    @property
    def name(self) -> str:
        return f"w{self.id}"


def unit_parallelism(plans: list[Plan]) -> int:
    """How many units can run at once at the start: independent frames, or chain heads."""
    count = 0
    for plan in plans:
        todo = {u.frame for u in plan.todo}
        count += sum(1 for u in plan.todo if u.depends_on is None or u.depends_on not in todo)
    return count


class Scheduler:
    """Runs plans (of cuts with equal engine settings) on one set of workers."""

    def __init__(self, plans: list[Plan], reporter: Reporter, options: RunOptions | None = None,
                 reviews: list[Any] | None = None):
        keys = {engine_key(plan.cut) for plan in plans}
        if len(keys) > 1:
            raise ValueError("a scheduler runs cuts with equal engine settings only; use run_plans() to group them")
        self.plans = plans
        self.reviews = reviews or [None] * len(plans)
        self.reporter = reporter
        self.options = options or RunOptions()
        self.cuts: list[_Cut] = []
        self.workers: dict[int, _Worker] = {}
        self.ready: list[tuple[int, int, int, _Frame]] = []  # heap of (cut, frame, seq, frame)
        self.ready_count = 0
        self.affinity: dict[int, deque[_Frame]] = {}
        self.chained: dict[int, deque[_Frame]] = {}  # per worker: frames that may follow its frames in memory
        self.next_worker_id = 1
        self.next_batch_id = 1
        self._seq = 0
        self.restarts = 0
        self.lost_stats: list[dict[str, Any]] = []
        self.pool: Pool | None = None
        self.layout: WorkerLayout | None = None

    # -- set-up ------------------------------------------------------------------------------

    def _open_cut(self, index: int, plan: Plan, run_id: str) -> _Cut:
        cut = plan.cut
        summary = RunSummary(
            cut=cut.name,
            manifest=str(cut.manifest_path),
            output_dir=str(cut.output_dir),
            engine=cut.manifest.engine.name,
            settings_digest=cut.settings_digest(),
            run_id=run_id,
            started=time.time(),
            backend=self.options.backend,
            log_tag=self.options.log_tag,
            frame_timeout_s=self._timeout_of(plan),
        )
        log = RunLog(cut.output_dir, run_id, tag=self.options.log_tag)
        state = _Cut(index=index, plan=plan, log=log, summary=summary, review=self.reviews[index])
        for unit in plan.skipped:
            summary.frames_skipped.append(unit.frame)
            log.frame(FrameRecord(frame=unit.frame, status="skipped", notes=["outputs exist; --overwrite redoes them"]))
        todo = plan.todo
        from sketchcolor_cli.frames.images import remove_stale_temps

        # a killed earlier run may have left half-written temp files beside these outputs
        remove_stale_temps(path for unit in plan.units for path in unit.output_files)
        state.frames = {u.frame: _Frame(cut=state, unit=u) for u in todo}
        state.remaining = len(todo)
        if todo:
            from sketchcolor_cli.frames.images import ImageError
            from sketchcolor_cli.runner.inputs import CutInputs

            try:  # the shared references, checked once here: a bad one stops the run (exit 2)
                CutInputs(cut).references  # noqa: B018
            except (ImageError, FrameError) as error:
                log.close()
                raise ManifestError([Problem(str(error), file=cut.manifest_path, field="characters")]) from None
            if not any(unit.mask_paths for unit in todo):
                log.text("no masks given: every character's references apply to the whole frame")
            else:
                from sketchcolor_cli.plan import mask_sources_summary

                log.text(mask_sources_summary(todo))  # the artists' masks, computed ones, or none
        from sketchcolor_cli.outputs.writers import fill_read_back_is_exact

        fills = [u.outputs["fill"] for u in todo if "fill" in u.outputs]
        state.pipelines = bool(fills) and fill_read_back_is_exact(fills[0], cut.manifest.outputs.bit_depth)
        for frame in state.frames.values():
            depends = frame.unit.depends_on
            if depends is not None and depends in state.frames:
                state.dependents.setdefault(depends, []).append(frame)
            else:
                self._make_ready(frame)
        return state

    def _timeout_of(self, plan: Plan) -> float | None:
        return self.options.frame_timeout_s or plan.cut.manifest.run.frame_timeout_s

    def _make_pool(self, layout: WorkerLayout) -> Pool:
        from sketchcolor_cli.runner.pool import ProcessPool, ThreadPool

        if self.options.backend == "ray":
            from sketchcolor_cli.runner.ray_backend import RayPool

            return RayPool(address=self.options.address, uses_gpu=self._uses_gpu())
        needs_processes = (
            layout.count > 1
            or any(d is not None for d in layout.devices)
            or any(self._timeout_of(p) for p in self.plans)
        )
        return ProcessPool() if needs_processes else ThreadPool()

    def _uses_gpu(self) -> bool:
        return engine_class(self.plans[0].cut.manifest.engine.name).uses_gpu

    def _choose_layout(self) -> WorkerLayout:
        parallelism = unit_parallelism(self.plans)
        if self.options.backend == "ray" and self.options.workers is None and self.options.gpus is None:
            from sketchcolor_cli.runner.ray_backend import default_ray_workers

            count = default_ray_workers(self.options.address, self._uses_gpu(), parallelism)
            return WorkerLayout((None,) * count, "Ray cluster resources")
        return choose_layout(
            uses_gpu=self._uses_gpu(), parallelism=parallelism, workers=self.options.workers, gpus=self.options.gpus
        )

    def _start_worker(self, device: str | None) -> _Worker:
        assert self.pool is not None
        worker_id = self.next_worker_id
        self.next_worker_id += 1
        extra_engines = {k: v for k, v in registered_engines().items()}
        threads = None
        count = self.layout.count if self.layout else 1
        if count > 1 and not device and self.options.backend == "local":
            from sketchcolor_cli.runner.devices import cpu_cores

            threads = max(1, cpu_cores() // count)  # CPU workers share the cores
        config = WorkerConfig(worker_id=worker_id, visible_devices=device, engines=extra_engines, threads=threads)
        handle = self.pool.start_worker(config)
        worker = _Worker(id=worker_id, handle=handle, device=device, head_since=time.monotonic())
        self.workers[worker_id] = worker
        self.affinity[worker_id] = deque()
        return worker

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> list[RunSummary]:
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        opened: list[_Cut] = []
        try:
            for index, plan in enumerate(self.plans):
                opened.append(self._open_cut(index, plan, run_id))
        except BaseException:
            for cut in opened:
                cut.log.close()
            raise
        self.cuts = opened
        total = sum(cut.remaining for cut in self.cuts)
        label = self.cuts[0].summary.cut if len(self.cuts) == 1 else f"{len(self.cuts)} cuts"
        try:
            if total:
                self.layout = self._choose_layout()
                self.pool = self._make_pool(self.layout)
                from sketchcolor_cli.runner.pool import ThreadPool

                for cut in self.cuts:
                    if cut.review is not None:
                        cut.review.take_pictures(in_process=isinstance(self.pool, ThreadPool))
                for cut in self.cuts:
                    cut.log.text(
                        f"{self.layout.describe} ({self.layout.reason}), {self.pool.description}"
                        + (f", frame time limit {cut.summary.frame_timeout_s} s" if cut.summary.frame_timeout_s else "")
                    )
                self.reporter.start(label, total)
                for device in self.layout.devices:
                    self._start_worker(device)
                self._loop()
                self._stop_workers()
        finally:
            if self.pool is not None:
                self.pool.close()
            self._finish()
            if total:
                self.reporter.finish()
        return [cut.summary for cut in self.cuts]

    def _loop(self) -> None:
        assert self.pool is not None
        while any(cut.remaining for cut in self.cuts):
            self._dispatch()
            for message in self.pool.get(timeout=self._wait_time()):
                self._handle(message)
            self._check_workers()

    def _wait_time(self) -> float:
        """Sleep until a message comes, but wake for the next time limit and to notice deaths."""
        wait = 0.2
        now = time.monotonic()
        for worker in self.workers.values():
            deadline = self._deadline(worker)
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
        return wait

    # -- dispatch ----------------------------------------------------------------------------

    def _make_ready(self, frame: _Frame, affinity: int | None = None) -> None:
        frame.pipelined = False
        if not self._dependency_finished(frame):
            frame.state = WAITING  # handed back early (a pipelined frame): it waits for its dependency
            frame.batch = None
            return
        frame.state = READY
        frame.batch = None
        self._seq += 1
        heapq.heappush(self.ready, (frame.cut.index, frame.unit.frame, self._seq, frame))
        self.ready_count += 1
        if affinity is not None and affinity in self.affinity:
            self.affinity[affinity].append(frame)

    @staticmethod
    def _dependency_finished(frame: _Frame) -> bool:
        depends = frame.unit.depends_on
        dependency = frame.cut.frames.get(depends) if depends is not None else None
        return dependency is None or dependency.state in (DONE, FAILED)

    def _dispatch(self) -> None:
        self._dispatch_pipelined()
        depth = self.options.batches_per_worker
        while self.ready_count:
            open_workers = [w for w in self.workers.values() if w.alive and len(w.in_flight) < depth]
            if not open_workers:
                return
            free_slots = sum(depth - len(w.in_flight) for w in open_workers)
            # A worker whose chain has a ready frame first (its line art is in memory), then the
            # least busy one.
            worker = min(open_workers, key=lambda w: (not self._has_own_ready(w), len(w.in_flight), w.id))
            share = math.ceil(self.ready_count / free_slots)
            frames = self._take(worker, share)
            if not frames:
                return
            self._send_batch(worker, frames)

    def _dispatch_pipelined(self) -> None:
        """Along a chain, send the next frame to the worker colouring the previous one as soon as
        that one is sent (not written): the worker carries the result in memory, so reading,
        colouring and writing of consecutive frames overlap."""
        depth = self.options.batches_per_worker
        for worker in self.workers.values():
            chain = self.chained.get(worker.id)
            while chain and worker.alive and len(worker.in_flight) < depth:
                frame = chain.popleft()
                dependency = frame.cut.frames.get(frame.unit.depends_on)
                if frame.state != WAITING or dependency is None or dependency.state != RUNNING:
                    continue  # already handed out, or its dependency is done (then it is ready)
                if dependency.batch is None or dependency.batch not in worker.in_flight:
                    continue
                frame.pipelined = True
                self._send_batch(worker, [frame])

    def _has_own_ready(self, worker: _Worker) -> bool:
        own = self.affinity[worker.id]
        while own and own[0].state != READY:
            own.popleft()
        return bool(own)

    def _take(self, worker: _Worker, share: int) -> list[_Frame]:
        """Ready frames for one batch: the worker's own chains first, then in cut/frame order;
        one cut per batch; a retried frame goes alone (so a bad frame cannot fail others)."""
        batch: list[_Frame] = []
        limit = share

        def fits(frame: _Frame) -> bool:
            nonlocal limit
            if frame.state != READY:
                return False
            if batch and (frame.cut is not batch[0].cut or frame.goes_alone):
                return False
            if not batch:
                size = 1 if frame.goes_alone else frame.cut.batch_size
                limit = max(1, min(limit, size, worker.oom_cap or size))
            return True

        own = self.affinity[worker.id]
        skipped: list[_Frame] = []
        while own and len(batch) < limit:
            frame = own.popleft()
            if frame.state != READY:
                continue
            if fits(frame):
                batch.append(frame)
                if frame.goes_alone:
                    break
            else:
                skipped.append(frame)
        own.extendleft(reversed(skipped))
        put_back = []
        while self.ready and len(batch) < limit and not (batch and batch[0].goes_alone):
            entry = heapq.heappop(self.ready)
            frame = entry[3]
            if frame.state != READY or frame in batch:
                continue  # an old entry, or already taken from the worker's own chains
            if fits(frame):
                batch.append(frame)
            else:
                put_back.append(entry)
                break
        for entry in put_back:
            heapq.heappush(self.ready, entry)
        return batch

    def _send_batch(self, worker: _Worker, frames: list[_Frame]) -> None:
        cut = frames[0].cut
        if cut.key not in worker.cuts_sent:
            worker.handle.send((protocol.CUT, cut.key, cut.plan.cut))
            worker.cuts_sent.add(cut.key)
        batch = _Batch(id=self.next_batch_id, cut=cut, frames=frames, sent_at=time.monotonic())
        self.next_batch_id += 1
        assignments = []
        for frame in frames:
            if not frame.pipelined:
                self.ready_count -= 1
            frame.state = RUNNING
            frame.batch = batch
            frame.attempts += 1
            depends = frame.unit.depends_on
            dependency = cut.plan.unit(depends) if depends is not None and _in_plan(cut.plan, depends) else None
            followers = cut.dependents.get(frame.unit.frame, []) if cut.pipelines else []
            assignments.append(Assignment(
                frame.unit, dependency, frame.dependency_failed, previous_in_memory=frame.pipelined,
                keep_result=bool(followers), preview=cut.review.wants(frame.unit.frame) if cut.review else (),
            ))  # fmt: skip
            self.chained.setdefault(worker.id, deque()).extend(f for f in followers if f.state == WAITING)
        if not worker.in_flight:
            worker.head_since = time.monotonic()
        worker.in_flight.append(batch)
        worker.handle.send((protocol.BATCH, batch.id, cut.key, assignments))

    # -- messages ----------------------------------------------------------------------------

    def _handle(self, message: tuple) -> None:
        kind, worker_id = message[0], message[1]
        worker = self.workers.get(worker_id)
        if worker is None or not worker.alive:
            return  # from a worker already given up on; its frames were handed on
        if kind == protocol.READY:
            worker.handle.pid = message[2]
        elif kind == protocol.LOADED:
            worker.loaded_at = worker.head_since = time.monotonic()
        elif kind == protocol.FRAME:
            self._on_frame(worker, *message[2:])
        elif kind == protocol.OOM:
            self._on_oom(worker, *message[2:])
        elif kind == protocol.BATCH_END:
            worker.stats = message[3]
            self._on_batch_end(worker, message[2])
        elif kind == protocol.STOPPED:
            worker.stats = message[2]
            worker.stopped = True
        elif kind == protocol.FATAL:
            raise WorkerError(f"worker {worker.name}: {message[2]}")

    def _batch_of(self, worker: _Worker, batch_id: int) -> _Batch | None:
        return next((b for b in worker.in_flight if b.id == batch_id), None)

    def _on_frame(self, worker: _Worker, batch_id: int, cut_key: str, frame_number: int, outcome: dict) -> None:
        batch = self._batch_of(worker, batch_id)
        if batch is None:
            return
        frame = batch.cut.frames.get(frame_number)
        if frame is None or frame.batch is not batch:
            return
        frame.batch = None
        if worker.in_flight and worker.in_flight[0] is batch:
            worker.head_since = time.monotonic()  # the time limit is per frame
        if outcome["status"] == protocol.DEFERRED:
            frame.attempts -= 1  # not coloured: its previous result was not there (the engine failed on it)
            self._make_ready(frame)
        elif outcome["status"] == "done":
            self._finish_frame(frame, DONE, worker=worker, outcome=outcome, preview=outcome.pop("preview", None))
        elif outcome.get("engine_batch", 1) > 1 and not frame.alone:
            # The engine failed on a batch: try each of its frames alone before blaming any.
            frame.attempts -= 1
            frame.alone = True
            self._make_ready(frame)
        else:
            self._attempt_failed(frame, outcome["error"], worker)

    def _on_oom(self, worker: _Worker, batch_id: int, cut_key: str, frame_numbers: list[int], error: str) -> None:
        batch = self._batch_of(worker, batch_id)
        if batch is None:
            return
        frames = [f for f in batch.pending if f.unit.frame in frame_numbers]
        if len(frames) <= 1:
            for frame in frames:
                frame.batch = None
                self._attempt_failed(frame, f"out of memory with a batch of one frame: {error}", worker)
            return
        halved = max(1, len(frames) // 2)
        worker.oom_cap = min(worker.oom_cap or halved, halved)
        message = (f"worker {worker.name}: out of memory on a batch of {len(frames)}; "
                   f"its batches are now at most {worker.oom_cap} frame(s)")
        batch.cut.log.text(message)
        self.reporter.message(message)
        for frame in frames:
            frame.attempts -= 1  # not the frame's fault: no attempt used
            frame.oom_halvings += 1
            batch.cut.summary.oom_halvings += 1
            self._make_ready(frame, affinity=worker.id)

    def _on_batch_end(self, worker: _Worker, batch_id: int) -> None:
        batch = self._batch_of(worker, batch_id)
        if batch is None:
            return
        for frame in batch.pending:  # a frame the worker never reported: hand it out again
            frame.attempts -= 1
            self._make_ready(frame)
        worker.in_flight.remove(batch)
        worker.head_since = time.monotonic()

    # -- outcomes ----------------------------------------------------------------------------

    def _attempt_failed(self, frame: _Frame, reason: str, worker: _Worker | None) -> None:
        frame.attempt_errors.append(reason)
        if frame.attempts <= self.options.retries:
            frame.cut.log.text(f"frame {frame.unit.frame}: attempt {frame.attempts} failed ({reason}); retrying")
            self._make_ready(frame)
        else:
            self._finish_frame(frame, FAILED, worker=worker, error=reason)

    def _finish_frame(
        self, frame: _Frame, status: str, *, worker: _Worker | None, outcome: dict | None = None,
        error: str | None = None, preview: dict | None = None,
    ) -> None:  # fmt: skip
        cut = frame.cut
        unit = frame.unit
        frame.state = status
        frame.batch = None
        cut.remaining -= 1
        summary = cut.summary
        retried = frame.attempts > 1
        if retried:
            summary.frames_retried.append(unit.frame)
        common = dict(
            frame=unit.frame, seed=unit.seed, attempts=frame.attempts, worker=worker.name if worker else None,
            retried=retried, oom_halvings=frame.oom_halvings,
            attempt_errors=frame.attempt_errors[:-1] if status == FAILED else list(frame.attempt_errors),
        )  # fmt: skip
        if status == DONE:
            outcome = outcome or {}
            notes = list(outcome.get("notes", []))
            if not unit.requested:
                notes.append("coloured because a requested frame carries its colours")
            seconds = outcome.get("engine_seconds", 0.0) + outcome.get("write_seconds", 0.0)
            summary.frames_done.append(unit.frame)
            cut.log.frame(FrameRecord(
                status="done", seconds=round(seconds, 4), inputs=outcome.get("inputs", {}),
                outputs=[str(p) for p in unit.output_files], engine=cut.plan.cut.manifest.engine.name,
                settings_digest=summary.settings_digest, notes=notes, stats=outcome.get("stats", {}), **common,
            ))  # fmt: skip
            self.reporter.frame(unit.frame, "done", f"{seconds:.2f} s", cut=summary.cut)
        else:
            summary.frames_failed[unit.frame] = error or "failed"
            cut.log.frame(FrameRecord(
                status="failed", error=error, inputs={"line": str(unit.line_path) if unit.line_path else None},
                **common,
            ))  # fmt: skip
            self.reporter.frame(unit.frame, "failed", error or "", cut=summary.cut)
        if cut.review is not None:
            cut.review.frame_finished(unit.frame, preview)
        for dependent in cut.dependents.pop(unit.frame, []):
            dependent.dependency_failed = status == FAILED
            if dependent.state == RUNNING:
                continue  # pipelined: already colouring from this frame's result in memory
            self._make_ready(dependent, affinity=worker.id if worker and status == DONE else None)

    # -- faults ------------------------------------------------------------------------------

    def _deadline(self, worker: _Worker) -> float | None:
        if not worker.alive or worker.loaded_at is None or not worker.in_flight:
            return None
        head = worker.in_flight[0]
        timeout = self._timeout_of(head.cut.plan)
        pending = len(head.pending)
        if not timeout or not pending:
            return None
        return max(head.sent_at, worker.head_since) + timeout * pending

    def _check_workers(self) -> None:
        assert self.pool is not None
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if not worker.alive:
                continue
            reason = worker.handle.exit_reason()
            if reason is not None:
                for message in self.pool.get(timeout=0):  # what it said before it died counts
                    self._handle(message)
                if worker.alive:
                    self._lose_worker(worker, f"worker {worker.name} {reason}")
                continue
            deadline = self._deadline(worker)
            if deadline is not None and now > deadline:
                head = worker.in_flight[0]
                timeout = self._timeout_of(head.cut.plan)
                frames = ", ".join(str(f.unit.frame) for f in head.pending)
                worker.handle.kill()
                self._lose_worker(
                    worker, f"frame {frames} ran past the frame time limit of {timeout:g} s (worker {worker.name} killed)"
                )

    def _lose_worker(self, worker: _Worker, reason: str) -> None:
        worker.alive = False
        worker.lost = reason
        for cut in self.cuts:
            cut.summary.workers_lost.append(reason)
            cut.log.text(reason)
        self.reporter.message(reason)
        for position, batch in enumerate(list(worker.in_flight)):
            for frame in batch.pending:
                frame.batch = None
                self._remove_temp_files(frame.unit, worker.handle.pid)
                if position == 0:
                    self._attempt_failed(frame, reason, worker=None)  # the batch it was working on
                else:
                    frame.attempts -= 1  # only queued there: no attempt used
                    self._make_ready(frame)
        worker.in_flight.clear()
        self.chained.pop(worker.id, None)
        self.affinity.pop(worker.id, None)  # those frames are in the ready heap too: any worker takes them
        limit = self.options.max_restarts
        if limit is None:
            limit = 2 * (self.layout.count if self.layout else 1) + 2
        if any(cut.remaining for cut in self.cuts) and self.restarts < limit:
            self.restarts += 1
            replacement = self._start_worker(worker.device)
            text = f"worker {replacement.name} started in place of {worker.name}"
            for cut in self.cuts:
                cut.log.text(text)
        elif not any(w.alive for w in self.workers.values()):
            self._fail_everything(f"no worker left ({self.restarts} replaced): {reason}")

    def _fail_everything(self, reason: str) -> None:
        for cut in self.cuts:
            for frame in list(cut.frames.values()):
                if frame.state in (WAITING, READY, RUNNING):
                    if frame.state == READY:
                        self.ready_count -= 1
                    self._finish_frame(frame, FAILED, worker=None, error=reason)

    @staticmethod
    def _remove_temp_files(unit: FrameUnit, pid: int | None) -> None:
        """A killed worker may leave half-written temp files (`.name.tmp-PID-...`): remove them."""
        if pid is None:
            return
        for path in set(unit.outputs.values()):
            for temp in Path(path).parent.glob(f".{Path(path).name}.tmp-{pid}-*"):
                temp.unlink(missing_ok=True)

    # -- the end -----------------------------------------------------------------------------

    def _stop_workers(self) -> None:
        assert self.pool is not None
        alive = [w for w in self.workers.values() if w.alive]
        for worker in alive:
            worker.handle.send((protocol.STOP,))
        deadline = time.monotonic() + 30
        while any(not w.stopped and w.handle.exit_reason() is None for w in alive) and time.monotonic() < deadline:
            for message in self.pool.get(timeout=0.1):
                self._handle(message)
        for worker in alive:
            worker.handle.join(5)

    def _finish(self) -> None:
        workers = []
        busy = active = 0.0
        for worker in self.workers.values():
            stats = worker.stats or {}
            engine_seconds = float(stats.get("engine_seconds", 0.0))
            active_seconds = float(stats.get("active_seconds", 0.0))
            busy += engine_seconds
            active += active_seconds
            workers.append({
                "worker": worker.name, "device": worker.device, "pid": worker.handle.pid,
                "frames": int(stats.get("frames", 0)), "engine_seconds": round(engine_seconds, 4),
                "active_seconds": round(active_seconds, 4), "load_seconds": stats.get("load_seconds", 0.0),
                "engine_idle_share": round(1 - engine_seconds / active_seconds, 4) if active_seconds > 0 else None,
                "lost": worker.lost,
            })  # fmt: skip
        idle = round(1 - busy / active, 4) if active > 0 else None
        for cut in self.cuts:
            summary = cut.summary
            summary.workers = workers
            summary.engine_idle_share = idle
            summary.finished = time.time()
            cut.log.summary(summary)
            idle_text = f"; engine idle {100 * idle:.1f}% of the workers' time" if idle is not None else ""
            cut.log.text(
                f"finished: {len(summary.frames_done)} done, {len(summary.frames_skipped)} skipped, "
                f"{len(summary.frames_failed)} failed, {len(summary.frames_retried)} retried on "
                f"{len(workers)} worker(s){idle_text}"
            )
            cut.log.close()


def _in_plan(plan: Plan, frame: int) -> bool:
    try:
        plan.unit(frame)
    except KeyError:
        return False
    return True


def run_plans(
    plans: list[Plan], reporter: Reporter, options: RunOptions | None = None, reviews: list[Any] | None = None
) -> list[RunSummary]:
    """Run plans, one scheduler (one set of workers) per group of cuts with equal engine settings;
    summaries come back in the plans' order. `reviews` (one per plan, or None) are told of each
    finished frame and its review pieces."""
    groups: dict[str, list[int]] = {}
    for index, plan in enumerate(plans):
        groups.setdefault(engine_key(plan.cut), []).append(index)
    summaries: list[RunSummary | None] = [None] * len(plans)
    for indices in groups.values():
        group_reviews = [reviews[i] for i in indices] if reviews else None
        for index, summary in zip(indices, Scheduler([plans[i] for i in indices], reporter, options, group_reviews).run()):
            summaries[index] = summary
    return [s for s in summaries if s is not None]
