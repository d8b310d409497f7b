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


class RunLog:
    """Appends to the frame log and the text log as frames finish, so a killed run keeps them."""

    def __init__(self, output_dir: Path, run_id: str):
        self.dir = output_dir / LOG_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self._frames = open(self.dir / FRAMES_LOG, "a", encoding="utf-8")
        self._text = open(self.dir / TEXT_LOG, "a", encoding="utf-8")
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
        if record.error:
            line += f": {record.error}"
        for note in record.notes:
            line += f" [{note}]"
        self.text(line)

    def summary(self, summary: RunSummary) -> Path:
        path = self.dir / SUMMARY
        write_json_atomic(path, summary.to_dict())
        return path

    def close(self) -> None:
        self._frames.close()
        self._text.close()
