"""Diffusion pipelines: `switch` (the SD2.1 switch/mult models), `xl` (the SDXL xl/xlv2 models)."""

from .switch import SAMPLERS, SwitchPipeline, make_scheduler
from .xl import XLPipeline

__all__ = ["SAMPLERS", "SwitchPipeline", "XLPipeline", "make_scheduler"]
