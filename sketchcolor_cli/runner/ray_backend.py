"""Workers as Ray actors: the same worker loop, on any machine of a Ray cluster.

Each actor runs `worker.run_worker` in a thread and keeps two queues: the scheduler `send`s it
messages and `drain`s what it said (each drain waits briefly, so messages flow without polling
hard). An actor asks for one GPU when the engine uses one (Ray then sets its
``CUDA_VISIBLE_DEVICES``), else one CPU. Outputs are written by the actors themselves, so the
output folder must be on a filesystem every node sees. A lost actor (node gone, process killed)
shows as an error on its next drain; the scheduler hands its frames to the others and starts a
replacement. This is the only module that imports ray.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import ray

from sketchcolor_cli.runner.pool import Pool, WorkerHandle, drain
from sketchcolor_cli.runner.worker import WorkerConfig, run_worker

_DRAIN_WAIT_S = 0.2


@ray.remote(max_concurrency=4)
class _WorkerActor:
    def __init__(self, config: WorkerConfig):
        import os

        self.pid = os.getpid()
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        # Calls to a threaded actor may run out of order: messages carry a number and are put in
        # the inbox in that order.
        self.order_lock = threading.Lock()
        self.next_number = 0
        self.early: dict[int, tuple] = {}
        self.thread = threading.Thread(target=run_worker, args=(config, self.inbox.get, self.outbox.put), daemon=True)
        self.thread.start()

    def send(self, number: int, message: tuple) -> None:
        with self.order_lock:
            self.early[number] = message
            while self.next_number in self.early:
                self.inbox.put(self.early.pop(self.next_number))
                self.next_number += 1

    def drain(self, wait_s: float) -> list[tuple]:
        return drain(self.outbox, wait_s)


def _connect(address: str | None) -> None:
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)


def default_ray_workers(address: str | None, uses_gpu: bool, parallelism: int) -> int:
    """One actor per GPU of the cluster for a GPU engine; else one per CPU, capped by the units
    that can run at once."""
    _connect(address)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if uses_gpu and gpus:
        return gpus
    return max(1, min(int(resources.get("CPU", 1)), parallelism))


class _RayWorker(WorkerHandle):
    def __init__(self, actor: Any, worker_id: int):
        self.actor = actor
        self.worker_id = worker_id
        self.pid = None
        self.dead: str | None = None
        self.drain_ref: Any = None
        self.sent = 0

    def send(self, message: tuple) -> None:
        if self.dead is None:
            self.actor.send.remote(self.sent, message)
            self.sent += 1

    def exit_reason(self) -> str | None:
        return self.dead

    def kill(self) -> None:
        ray.kill(self.actor, no_restart=True)
        self.dead = self.dead or "killed"

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.drain_ref is not None and time.monotonic() < deadline:
            ready, _ = ray.wait([self.drain_ref], timeout=0.1)
            if ready:
                break
        ray.kill(self.actor, no_restart=True)


class RayPool(Pool):
    description = "Ray actors"

    def __init__(self, address: str | None = None, uses_gpu: bool = False):
        _connect(address)
        self.use_gpus = uses_gpu and int(ray.cluster_resources().get("GPU", 0)) > 0
        self.workers: dict[Any, _RayWorker] = {}  # drain ref -> worker
        self.all: list[_RayWorker] = []

    def start_worker(self, config: WorkerConfig) -> WorkerHandle:
        options = {"num_gpus": 1} if self.use_gpus else {"num_cpus": 1}
        actor = _WorkerActor.options(**options).remote(WorkerConfig(config.worker_id, None, config.engines, threads=1 if not self.use_gpus else None))
        worker = _RayWorker(actor, config.worker_id)
        self.all.append(worker)
        self._drain(worker)
        return worker

    def _drain(self, worker: _RayWorker) -> None:
        worker.drain_ref = worker.actor.drain.remote(_DRAIN_WAIT_S)
        self.workers[worker.drain_ref] = worker

    def get(self, timeout: float) -> list[tuple]:
        if not self.workers:
            time.sleep(timeout)
            return []
        ready, _ = ray.wait(list(self.workers), num_returns=1, timeout=max(timeout, 0.001))
        if ready:
            more, _ = ray.wait(list(self.workers), num_returns=len(self.workers), timeout=0)
            ready = list(dict.fromkeys(ready + more))
        messages: list[tuple] = []
        for ref in ready:
            worker = self.workers.pop(ref)
            try:
                messages += ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as error:
                worker.dead = f"Ray actor lost ({type(error).__name__})"
                continue
            if worker.dead is None:
                self._drain(worker)
        return messages

    def close(self) -> None:
        for worker in self.all:
            try:
                ray.kill(worker.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers.clear()
        self.all.clear()
