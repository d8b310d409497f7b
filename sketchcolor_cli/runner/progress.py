"""Progress: a Rich bar on a terminal; plain, parseable lines in a farm log.

Plain lines carry ``Progress: N%`` (what Deadline's CommandLine plugin matches) and one line per
finished frame (OpenCue fails a frame whose log stops updating).
"""

from __future__ import annotations

import sys
from typing import TextIO


class Reporter:
    """What the runner tells the person or the farm; the base class says nothing."""

    def start(self, cut: str, total: int) -> None: ...

    def frame(self, frame: int, status: str, detail: str = "", *, cut: str | None = None) -> None: ...

    def message(self, text: str) -> None: ...

    def finish(self) -> None: ...


class PlainReporter(Reporter):
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.total = 0
        self.finished = 0
        self.cut = ""

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, cut: str, total: int) -> None:
        self.cut, self.total, self.finished = cut, total, 0
        self._write(f"[sketchcolor] {cut}: {total} frame(s) to colour Progress: 0%")

    def frame(self, frame: int, status: str, detail: str = "", *, cut: str | None = None) -> None:
        self.finished += 1
        percent = int(100 * self.finished / self.total) if self.total else 100
        extra = f" ({detail})" if detail else ""
        self._write(f"[sketchcolor] {cut or self.cut} frame {frame} {status}{extra} Progress: {percent}%")

    def message(self, text: str) -> None:
        self._write(f"[sketchcolor] {text}")


class RichReporter(Reporter):
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[last]}"),
            console=self.console,
        )
        self.task = None

    def start(self, cut: str, total: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(cut, total=total, last="")

    def frame(self, frame: int, status: str, detail: str = "", *, cut: str | None = None) -> None:
        where = f"{cut} frame {frame}" if cut else f"frame {frame}"
        if status == "failed":
            self.progress.console.print(f"[red]{where} failed[/red]: {detail}", highlight=False, markup=True)
        self.progress.update(self.task, advance=1, last=f"{where} {status}")

    def message(self, text: str) -> None:
        self.progress.console.print(text) if self.task is not None else self.console.print(text)

    def finish(self) -> None:
        self.progress.stop()


def make_reporter(quiet: bool = False) -> Reporter:
    if quiet:
        return Reporter()
    return RichReporter() if sys.stderr.isatty() else PlainReporter()
