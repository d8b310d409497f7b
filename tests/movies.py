"""Reading a flip-book back in tests."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np


def read_movie(path: Path) -> list[np.ndarray]:
    """Every frame of an MP4 as H x W x 3 uint8 RGB."""
    reader = imageio.get_reader(str(path))
    try:
        return [np.asarray(frame) for frame in reader]
    finally:
        reader.close()
