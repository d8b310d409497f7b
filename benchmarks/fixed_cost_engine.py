"""An engine of fixed cost (it sleeps) for measuring the scheduler itself; not part of the package.
Registered by `benchmarks/scaling.py` as "fixed_cost"."""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np

from sketchcolor_cli.engines.base import Engine, EngineSettings, Layers, WorkItem


class FixedCostSettings(EngineSettings):
    seconds_per_frame: float = 0.02


class FixedCostEngine(Engine):
    name: ClassVar[str] = "fixed_cost"
    settings_model: ClassVar[type[EngineSettings]] = FixedCostSettings

    def __init__(self, settings: FixedCostSettings):
        self.seconds = settings.seconds_per_frame

    @classmethod
    def load(cls, settings: EngineSettings) -> "FixedCostEngine":
        return cls(FixedCostSettings.model_validate(settings.model_dump()))

    def colorize(self, batch: list[WorkItem]) -> list[Layers]:
        time.sleep(self.seconds * len(batch))
        return [
            Layers(color=item.line_art, fill=item.line_art, line=item.line_art[:, :, 3], review=np.zeros_like(item.line_art))
            for item in batch
        ]
