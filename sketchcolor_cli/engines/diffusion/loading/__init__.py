"""Loading the switch model: its architecture configs, the LDM -> diffusers key maps, the strict
single-file loader, and the converted-folder format written by `sketchcolor convert`."""

from .configs import SwitchConfig, prediction_from_name
from .single_file import CheckpointKeyError, load_switch_components
from .convert import is_converted_folder, load_converted, save_converted

__all__ = [
    "CheckpointKeyError",
    "SwitchConfig",
    "is_converted_folder",
    "load_converted",
    "load_switch_components",
    "prediction_from_name",
    "save_converted",
]
