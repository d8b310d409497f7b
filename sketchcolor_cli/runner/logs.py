"""A run's records in the output folder: one JSON line per frame, a summary, a readable log."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sketchcolor_cli import __version__

LOG_DIR = "logs"
FRAMES_LOG = "frames.jsonl"
SUMMARY = "summary.json"
TEXT_LOG = "run.log"


@dataclass
class FrameRecord:
    frame: int
    status: str  # "done" | "skipped" | "failed"
    seconds: float = 0.0
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    engine: str = ""
    settings_digest: str = ""
    seed: int | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0  # times the frame was handed to a worker (a retry makes 2)
    worker: str | None = None  # the worker that finished it
    retried: bool = False
    oom_halvings: int = 0  # times its batch was halved because the engine ran out of memory
    attempt_errors: list[str] = field(default_factory=list)  # why earlier attempts failed


@dataclass
class RunSummary:
    cut: str
    manifest: str
    output_dir: str
    engine: str
    settings_digest: str
    run_id: str
    started: float
    finished: float = 0.0
    frames_done: list[int] = field(default_factory=list)
    frames_skipped: list[int] = field(default_factory=list)
    frames_failed: dict[int, str] = field(default_factory=dict)
    extras: dict[str, str] = field(default_factory=dict)  # contact sheet, flip-book, ...
    version: str = __version__
    backend: str = "local"
    log_tag: str | None = None  # farm task / shard name in the log files' names
    frame_timeout_s: float | None = None
    frames_retried: list[int] = field(default_factory=list)
    oom_halvings: int = 0
    workers: list[dict[str, Any]] = field(default_factory=list)  # per worker: device, frames, busy
    workers_lost: list[str] = field(default_factory=list)  # why workers died and were replaced
    engine_idle_share: float | None = None  # share of the workers' wall time the engine waited

    @property
    def ok(self) -> bool:
        return not self.frames_failed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frames_failed"] = {str(k): v for k, v in self.frames_failed.items()}
        data["seconds"] = round(self.finished - self.started, 3)
        data["status"] = "ok" if self.ok else "frames_failed"
        return data


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def log_file(output_dir: Path, name: str, tag: str | None = None) -> Path:
    """A log file of the run, named after the farm task when there is one (`frames.shard2of4.jsonl`),
    so tasks writing into the same output folder never clobber each other's logs."""
    if tag:
        stem, dot, suffix = name.partition(".")
        name = f"{stem}.{tag}{dot}{suffix}"
    return output_dir / LOG_DIR / name


class RunLog:
    """Appends to the frame log and the text log as frames finish, so a killed run keeps them."""

    def __init__(self, output_dir: Path, run_id: str, tag: str | None = None):
        self.dir = output_dir / LOG_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.tag = tag
        self.summary_path = log_file(output_dir, SUMMARY, tag)
        self._frames = open(log_file(output_dir, FRAMES_LOG, tag), "a", encoding="utf-8")
        self._text = open(log_file(output_dir, TEXT_LOG, tag), "a", encoding="utf-8")
        self.text(f"run {run_id} on {socket.gethostname()} (sketchcolor {__version__})")

    def text(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._text.write(f"{stamp} {message}\n")
        self._text.flush()

    def frame(self, record: FrameRecord) -> None:
        self._frames.write(json.dumps(dict(asdict(record), run=self.run_id), sort_keys=True) + "\n")
        self._frames.flush()
        line = f"frame {record.frame}: {record.status}"
        if record.status == "done":
            line += f" in {record.seconds:.2f} s"
        if record.worker:
            line += f" on worker {record.worker}"
        if record.retried:
            line += f" after {record.attempts} attempts ({'; '.join(record.attempt_errors)})"
        if record.oom_halvings:
            line += f" (batch halved {record.oom_halvings}x: out of memory)"
        if record.error:
            line += f": {record.error}"
        for note in record.notes:
            line += f" [{note}]"
        self.text(line)

    def summary(self, summary: RunSummary) -> Path:
        write_json_atomic(self.summary_path, summary.to_dict())
        return self.summary_path

    def close(self) -> None:
        self._frames.close()
        self._text.close()
