"""Which devices the workers get: GPUs found without importing torch, CPU cores, worker counts."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from sketchcolor_cli.errors import NoDeviceError


def cpu_cores() -> int:
    """Cores this process may use (the affinity mask on Linux, e.g. a farm slot's cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def detect_gpus() -> list[str]:
    """Ids of the visible GPUs: from `nvidia-smi -L` (no torch import), or from torch when it is
    installed and nvidia-smi is not. ``CUDA_VISIBLE_DEVICES``, when set, limits them."""
    found: list[str] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
            found = re.findall(r"^GPU (\d+):", listing, flags=re.MULTILINE)
        except (OSError, subprocess.SubprocessError):
            found = []
    elif importlib.util.find_spec("torch") is not None:
        import torch

        found = [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
        return found  # torch already applies CUDA_VISIBLE_DEVICES
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        allowed = [part.strip() for part in visible.split(",") if part.strip()]
        found = [gpu for gpu in found if gpu in allowed]
    return found


def resolve_gpus(text: str) -> list[str]:
    """`--gpus all` or `--gpus 0,1,3` -> the GPU ids to start one worker each on (exit 3 if none)."""
    available = detect_gpus()
    if not available:
        raise NoDeviceError(f"--gpus {text}: no GPU found on this machine (nvidia-smi -L lists none); "
                            "run without --gpus, or with --workers N for CPU workers")
    if text.strip().lower() == "all":
        return available
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    if not wanted or not all(part.isdigit() for part in wanted):
        raise NoDeviceError(f"--gpus {text!r}: write 'all' or GPU ids such as 0,1,3")
    missing = [gpu for gpu in wanted if gpu not in available]
    if missing:
        raise NoDeviceError(f"--gpus {text}: no GPU {', '.join(missing)} here; found {', '.join(available)}")
    return list(dict.fromkeys(wanted))


@dataclass(frozen=True)
class WorkerLayout:
    """How many workers, and the device each one sees."""

    devices: tuple[str | None, ...]  # per worker: a GPU id, "" (CPU, GPUs hidden) or None (as is)
    reason: str

    @property
    def count(self) -> int:
        return len(self.devices)

    @property
    def describe(self) -> str:
        gpus = [d for d in self.devices if d]
        return f"{self.count} worker(s) on GPU {','.join(gpus)}" if gpus else f"{self.count} CPU worker(s)"


def choose_layout(
    *, uses_gpu: bool, parallelism: int, workers: int | None = None, gpus: list[str] | None = None
) -> WorkerLayout:
    """`--gpus` (one worker per GPU), `--workers N` (CPU workers), or the default: every GPU for an
    engine that uses one; else as many CPU workers as there are cores, but no more than units that
    can run at once (independent frames, or chains of frames that carry colours)."""
    cpu_device = "" if uses_gpu else None  # a GPU engine asked to run on CPU must not see the GPUs
    if gpus is not None:
        return WorkerLayout(tuple(gpus), "--gpus")
    if workers is not None:
        return WorkerLayout((cpu_device,) * max(1, workers), "--workers")
    if uses_gpu:
        found = detect_gpus()
        if found:
            return WorkerLayout(tuple(found), "every GPU found")
        return WorkerLayout((cpu_device,), "no GPU found: one CPU worker")
    count = max(1, min(cpu_cores(), parallelism))
    return WorkerLayout((cpu_device,) * count, f"{cpu_cores()} core(s), {parallelism} unit(s) that can run at once")
