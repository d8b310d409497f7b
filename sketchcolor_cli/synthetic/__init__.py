"""Synthetic cuts with known truth: line art of walking characters and their exact colours.

Used for the README demo (`examples/walk/`), the tests and the accuracy benchmarks. numpy + cv2
only, deterministic for a seed. Start with `make_cut` (writes a cut folder) or `SyntheticCut`
(renders frames in memory).
"""

from .cut import LAYOUT, CutTruth, FrameTruth, RegionInfo, SyntheticCut, make_cut
from .render import BLACK_INK, HIGHLIGHT_INK, LINE_INKS, PAPER, SHADOW_INK

__all__ = [
    "BLACK_INK",
    "HIGHLIGHT_INK",
    "LAYOUT",
    "LINE_INKS",
    "PAPER",
    "SHADOW_INK",
    "CutTruth",
    "FrameTruth",
    "RegionInfo",
    "SyntheticCut",
    "make_cut",
]
