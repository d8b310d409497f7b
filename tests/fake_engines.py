"""Engines for scheduler tests: cheap, deterministic, and able to misbehave on request.

Registered by name in the tests (`register_engine`), and imported by spawned workers through the
registry entries the scheduler hands them (this folder is on the workers' sys.path).
"""

from __future__ import annotations

import os
import time
from typing import ClassVar, Literal

import numpy as np

from sketchcolor_cli.engines.base import FULL, Engine, EngineOutOfMemory, EngineSettings, Layers, WorkItem


class FakeSettings(EngineSettings):
    sleep_s: float = 0.0  # cost per frame
    oom_above: int | None = None  # raise EngineOutOfMemory for batches larger than this
    hang_frame: int | None = None  # sleep "forever" on this frame
    fail_frame: int | None = None  # raise ValueError on this frame, every time
    fail_once_marker: str | None = None  # raise once per marker file: fails the first attempt only
    crash_frame: int | None = None  # kill the worker process on this frame (like a CUDA abort)


def fake_layers(item: WorkItem) -> Layers:
    """Layers that depend on the frame's pixels and seed, and on the previous frame's fill."""
    line = item.line_art
    fill = line.copy()
    fill[0, 0, :3] = (item.seed % 65536, item.frame, item.previous.frame if item.previous else 0)
    fill[0, 0, 3] = FULL
    if item.previous is not None:
        fill[1, 0, :3] = item.previous.fill[0, 0, :3]  # carries what the previous frame wrote
    return Layers(color=line.copy(), fill=fill, line=line[:, :, 3].copy(), review=np.zeros_like(line), stats={})


class FakeEngine(Engine):
    name: ClassVar[str] = "fake"
    settings_model: ClassVar[type[EngineSettings]] = FakeSettings
    frame_dependency: ClassVar[Literal["none", "previous"]] = "none"

    def __init__(self, settings: FakeSettings):
        self.settings = settings

    @classmethod
    def load(cls, settings: EngineSettings) -> "FakeEngine":
        return cls(FakeSettings.model_validate(settings.model_dump()))

    def colorize(self, batch: list[WorkItem]) -> list[Layers]:
        s = self.settings
        if s.oom_above is not None and len(batch) > s.oom_above:
            raise EngineOutOfMemory(f"batch of {len(batch)} does not fit")
        results = []
        for item in batch:
            if item.frame == s.hang_frame:
                time.sleep(3600)
            if item.frame == s.crash_frame:
                os._exit(70)
            if item.frame == s.fail_frame:
                raise ValueError(f"frame {item.frame} is cursed")
            if s.fail_once_marker and not os.path.exists(f"{s.fail_once_marker}.{item.frame}"):
                open(f"{s.fail_once_marker}.{item.frame}", "w").close()
                raise ValueError(f"frame {item.frame}: first attempt fails")
            if s.sleep_s:
                time.sleep(s.sleep_s)
            results.append(fake_layers(item))
        return results


class FakeChainEngine(FakeEngine):
    """Like the flat engine: frame N carries colours from frame N-1's written fill."""

    name: ClassVar[str] = "fake_chain"
    frame_dependency: ClassVar[Literal["none", "previous"]] = "previous"


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError: the worker must treat it as out of memory."""


class TorchLikeOomEngine(FakeEngine):
    name: ClassVar[str] = "fake_torch_oom"

    def colorize(self, batch: list[WorkItem]) -> list[Layers]:
        if len(batch) > 1:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [fake_layers(item) for item in batch]


ENGINES = {
    "fake": "fake_engines:FakeEngine",
    "fake_chain": "fake_engines:FakeChainEngine",
    "fake_torch_oom": "fake_engines:TorchLikeOomEngine",
}
