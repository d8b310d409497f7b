"""Diffusion pipelines: `switch` (the SD2.1 switch/mult models)."""

from .switch import SAMPLERS, SwitchPipeline, make_scheduler

__all__ = ["SAMPLERS", "SwitchPipeline", "make_scheduler"]
