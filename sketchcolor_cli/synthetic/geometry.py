"""2D affine transforms and shape outlines for drawing the synthetic characters.

Coordinates follow the image: x to the right, y down. Characters are modelled in "head units"
(1.0 = the height of the head, crown to chin) and placed in the frame by an affine camera matrix.
Every transform is a 3 x 3 matrix acting on column vectors; outlines are N x 2 float arrays.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Outline = np.ndarray  # N x 2 float64 points, x then y


def translation(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])


def rotation(degrees: float) -> np.ndarray:
    """Positive angles turn clockwise on screen (because y points down)."""
    r = math.radians(degrees)
    c, s = math.cos(r), math.sin(r)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def scaling(sx: float, sy: float | None = None) -> np.ndarray:
    return np.array([[sx, 0.0, 0.0], [0.0, sx if sy is None else sy, 0.0], [0.0, 0.0, 1.0]])


def swing_down(degrees: float) -> np.ndarray:
    """Rotation of a bone that points down (+y): positive moves its far end forward (+x)."""
    return rotation(-degrees)


def swing_up(degrees: float) -> np.ndarray:
    """Rotation of a bone that points up (-y): positive leans its far end forward (+x)."""
    return rotation(degrees)


def apply(matrix: np.ndarray, points: Outline) -> Outline:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def ellipse(
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    angle: float = 0.0,
    *,
    start: float = 0.0,
    end: float = 360.0,
    count: int = 40,
) -> Outline:
    """Points on an ellipse (or an arc of it). Angles in degrees, clockwise on screen from +x."""
    closed = abs((end - start) % 360.0) < 1e-9 and end != start
    t = np.radians(np.linspace(start, end, count, endpoint=not closed))
    points = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    return apply(translation(cx, cy) @ rotation(angle), points)


def arc_band(
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    thickness: float,
    start: float,
    end: float,
    *,
    taper: bool = True,
    count: int = 16,
) -> Outline:
    """A curved stroke along an elliptic arc, `thickness` wide, pointed at both ends if `taper`."""
    t = np.linspace(0.0, 1.0, count)
    widths = thickness * (np.sin(np.pi * t) ** 0.6 if taper else np.ones_like(t))
    angles = np.radians(start + (end - start) * t)
    outer = np.stack([(rx + widths / 2) * np.cos(angles), (ry + widths / 2) * np.sin(angles)], axis=1)
    inner = np.stack([(rx - widths / 2) * np.cos(angles), (ry - widths / 2) * np.sin(angles)], axis=1)
    return np.concatenate([outer, inner[::-1]]) + np.array([cx, cy])


def capsule(length: float, start_width: float, end_width: float, *, start: float = 0.0, count: int = 10) -> Outline:
    """A tapered limb along +y from (0, start) to (0, length), with round ends."""
    a, b = start_width / 2.0, end_width / 2.0
    bottom = np.radians(np.linspace(0.0, 180.0, count))
    top = np.radians(np.linspace(180.0, 360.0, count))
    lower = np.stack([b * np.cos(bottom), length + b * np.sin(bottom)], axis=1)
    upper = np.stack([a * np.cos(top), start + a * np.sin(top)], axis=1)
    return np.concatenate([lower, upper])


def rectangle(x0: float, y0: float, x1: float, y1: float) -> Outline:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def spiky(outline: Outline, center: tuple[float, float], amount: float, *, every: int = 2, offset: int = 0) -> Outline:
    """Push every `every`-th point of an outline away from `center` by `amount` (hair tips)."""
    points = np.array(outline, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)
    for i in range(offset, len(points), every):
        direction = points[i] - c
        norm = float(np.hypot(*direction))
        if norm > 1e-9:
            points[i] = points[i] + direction / norm * amount
    return points


def shifted(outline: Outline, dx: float, dy: float) -> Outline:
    return np.asarray(outline, dtype=np.float64) + np.array([dx, dy])


def swept_spikes(arc: Outline, center: tuple[float, float], lengths: Sequence[float], sweep: float) -> Outline:
    """Insert a spike between consecutive arc points, pointing outward turned by `sweep` degrees
    (clockwise on screen); `lengths` gives each spike's length (cycled)."""
    points = np.asarray(arc, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)
    turn = rotation(sweep)[:2, :2]
    result = [points[0]]
    for i in range(len(points) - 1):
        middle = (points[i] + points[i + 1]) / 2.0
        outward = middle - c
        outward /= max(float(np.hypot(*outward)), 1e-9)
        result.append(middle + (turn @ outward) * lengths[i % len(lengths)])
        result.append(points[i + 1])
    return np.array(result)


def zigzag_band(
    cx: float, cy: float, rx: float, ry: float, thickness: float, start: float, end: float, *, teeth: int = 5
) -> Outline:
    """A band along an elliptic arc whose inner edge is a zigzag (a cel-style hair highlight)."""
    outer_angles = np.radians(np.linspace(start, end, 2 * teeth + 1))
    outer = np.stack([rx * np.cos(outer_angles), ry * np.sin(outer_angles)], axis=1)
    depth = np.where(np.arange(2 * teeth + 1) % 2 == 1, thickness, thickness * 0.25)
    depth[0] = depth[-1] = 0.0
    inner = np.stack([(rx - depth) * np.cos(outer_angles), (ry - depth) * np.sin(outer_angles)], axis=1)
    return np.concatenate([outer, inner[::-1][1:-1]]) + np.array([cx, cy])
