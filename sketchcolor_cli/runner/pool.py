"""Where workers run: a thread of this process, or spawned local processes (Ray: `ray_backend`).

A pool starts workers, carries messages to them and back, tells when one has died, and kills one
on request. It decides nothing: the scheduler does. Every worker runs `worker.run_worker`.

Local processes use the "spawn" start method (forking a process that has threads is unsafe). Each
worker has its own inbox queue and its own pipe back, so a worker killed mid-message can only
break its own channel, never another's. A worker sets ``CUDA_VISIBLE_DEVICES`` before it imports
any engine, and dies with the run (Linux: ``PR_SET_PDEATHSIG``; elsewhere it watches its parent).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
from abc import ABC, abstractmethod
from typing import Any

from sketchcolor_cli.runner.worker import WorkerConfig, run_worker


def drain(box: queue.Queue, timeout: float) -> list[tuple]:
    """Every message in `box`, waiting up to `timeout` seconds for the first one."""
    try:
        messages = [box.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            messages.append(box.get_nowait())
        except queue.Empty:
            return messages


class WorkerHandle(ABC):
    worker_id: int
    pid: int | None = None

    @abstractmethod
    def send(self, message: tuple) -> None:
        """Queue a message for the worker; never blocks the scheduler."""

    @abstractmethod
    def exit_reason(self) -> str | None:
        """None while the worker runs; else why it ended (exit code, signal)."""

    def can_kill(self) -> bool:
        return True

    @abstractmethod
    def kill(self) -> None:
        """End the worker at once (a frame ran past its time limit)."""

    def join(self, timeout: float) -> None:
        """Wait for the worker to end after a STOP message."""


class Pool(ABC):
    """Starts workers and collects their messages."""

    description = ""

    @abstractmethod
    def start_worker(self, config: WorkerConfig) -> WorkerHandle: ...

    @abstractmethod
    def get(self, timeout: float) -> list[tuple]:
        """Messages that arrived (waiting up to `timeout` seconds for the first)."""

    def close(self) -> None: ...


# -- in this process --------------------------------------------------------------------------


class _ThreadWorker(WorkerHandle):
    def __init__(self, config: WorkerConfig, outbox: queue.Queue):
        self.worker_id = config.worker_id
        self.pid = os.getpid()
        self.inbox: queue.Queue = queue.Queue()
        self.thread = threading.Thread(
            target=run_worker, args=(config, self.inbox.get, outbox.put), name=f"sketchcolor-worker-{self.worker_id}",
            daemon=True,
        )  # fmt: skip
        self.thread.start()

    def send(self, message: tuple) -> None:
        self.inbox.put(message)

    def exit_reason(self) -> str | None:
        return None if self.thread.is_alive() else "worker thread ended"

    def can_kill(self) -> bool:
        return False  # a thread cannot be killed; the scheduler uses processes when it must

    def kill(self) -> None:
        raise RuntimeError("an in-process worker cannot be killed; use worker processes for time limits")

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)


class ThreadPool(Pool):
    """One worker in a thread of this process: no start-up cost; what one local worker uses."""

    description = "in-process worker"

    def __init__(self) -> None:
        self.outbox: queue.Queue = queue.Queue()

    def start_worker(self, config: WorkerConfig) -> WorkerHandle:
        if config.visible_devices is not None:
            raise RuntimeError("an in-process worker cannot be given its own GPU; use worker processes")
        return _ThreadWorker(config, self.outbox)

    def get(self, timeout: float) -> list[tuple]:
        return drain(self.outbox, timeout)


# -- spawned processes --------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive a killed run (it would go on writing while the rerun writes)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="sketchcolor-parent-watch", daemon=True).start()


def _process_main(config: WorkerConfig, parent_pid: int, inbox: Any, outbox: Any) -> None:
    # Before anything imports an engine (and with it torch/CUDA): this worker's device only.
    if config.visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = config.visible_devices
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the scheduler's to handle
    lock = threading.Lock()

    def send(message: tuple) -> None:
        with lock:
            outbox.send(message)

    try:
        run_worker(config, inbox.get, send)
    finally:
        outbox.close()


class _ProcessWorker(WorkerHandle):
    def __init__(self, context: Any, config: WorkerConfig):
        self.worker_id = config.worker_id
        self.inbox = context.Queue()
        self.inbox.cancel_join_thread()  # a dead worker's unread messages must not hold up exit
        self.connection, child_end = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_process_main, args=(config, os.getpid(), self.inbox, child_end),
            name=f"sketchcolor-worker-{self.worker_id}", daemon=True,
        )  # fmt: skip
        self.process.start()
        child_end.close()  # so the pipe reports EOF when the worker dies
        self.pid = self.process.pid
        self.closed = False

    def send(self, message: tuple) -> None:
        self.inbox.put(message)

    def exit_reason(self) -> str | None:
        code = self.process.exitcode
        if code is None:
            return None
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)

    def join(self, timeout: float) -> None:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join(5)


class ProcessPool(Pool):
    """Local worker processes (spawned), one per GPU or per CPU worker asked for."""

    description = "local worker processes"

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_ProcessWorker] = []

    def start_worker(self, config: WorkerConfig) -> WorkerHandle:
        worker = _ProcessWorker(self.context, config)
        self.workers.append(worker)
        return worker

    def get(self, timeout: float) -> list[tuple]:
        from multiprocessing.connection import wait

        open_ends = {w.connection: w for w in self.workers if not w.closed}
        if not open_ends:
            threading.Event().wait(timeout)
            return []
        messages: list[tuple] = []
        for connection in wait(list(open_ends), timeout):
            worker = open_ends[connection]  # type: ignore[index]
            try:
                while connection.poll():
                    messages.append(connection.recv())
            except (EOFError, OSError):
                worker.closed = True  # the worker ended; `exit_reason` says how
                connection.close()
        return messages

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join(5)
            if not worker.closed:
                worker.connection.close()
                worker.closed = True
        self.workers.clear()
