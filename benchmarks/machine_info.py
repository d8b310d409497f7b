"""What machine a benchmark ran on, in one line, for its results file."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(*extra: str) -> str:
    """e.g. "Intel(R) Xeon(R) Processor, 2 cores, Python 3.11.7, Linux" (+ `extra` parts)."""
    return ", ".join([cpu_name(), f"{os.cpu_count()} cores", *extra, f"Python {platform.python_version()}",
                      platform.system()])  # fmt: skip
