"""Errors the CLI turns into exit codes, and the `Problem` record that every check reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_FRAMES_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DEVICE = 3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where it is, what is wrong, what to do."""

    message: str
    file: Path | None = None
    line: int | None = None
    field: str | None = None
    hint: str | None = None
    warning: bool = False  # worth knowing, but the cut can still run

    def location(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(str(self.file) + (f":{self.line}" if self.line else ""))
        if self.field:
            parts.append(self.field)
        return ": ".join(parts)

    def __str__(self) -> str:
        where = self.location()
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} ({self.hint})" if self.hint else text

    def to_dict(self) -> dict:
        return {
            "file": str(self.file) if self.file else None,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "hint": self.hint,
            "severity": "warning" if self.warning else "error",
        }


class SketchcolorError(Exception):
    """Base of the errors that end a command with a clear message (exit 2)."""

    exit_code = EXIT_USAGE


class ManifestError(SketchcolorError):
    """A manifest, preset or option is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class NoDeviceError(SketchcolorError):
    """GPUs were asked for (`--gpus`) and this machine has none, or not the ones named (exit 3)."""

    exit_code = EXIT_NO_DEVICE


class WorkerError(SketchcolorError):
    """A worker cannot run at all (its engine did not load, no worker could be started)."""


class FrameError(Exception):
    """One frame cannot be coloured (unreadable image, wrong size); the run goes on without it."""
