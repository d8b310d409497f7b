"""Image resizing in numpy that gives what upstream's torch resizes give.

The published mask pre- and post-processing resizes with ``F.interpolate(mode="bicubic")`` (no
antialias; ISNet) and torchvision's tensor ``resize`` (bilinear with antialias; RMBG-2.0 and
BiRefNet). OpenCV's resizers differ from both at the borders and when shrinking, so the
onnxruntime path, which must not need torch, resizes with these separable weight matrices
instead; the tests compare them with torch.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np

Mode = Literal["bicubic", "bilinear"]
_CUBIC_A = -0.75  # torch's bicubic (no antialias) uses Keys' a = -0.75


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


@lru_cache(maxsize=32)
def resize_weights(in_size: int, out_size: int, mode: Mode, antialias: bool, align_corners: bool = False) -> np.ndarray:
    """(out_size, in_size) float32 matrix W with ``out = W @ in`` along one axis."""
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
        scale = in_size / out_size
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    if antialias:
        # As torch's antialiased kernels (after PIL): the filter is stretched by the scale when
        # shrinking, cut at the image edge, then normalised; a = -0.5 for bicubic there.
        stretch = max(scale, 1.0)
        support = (2.0 if mode == "bicubic" else 1.0) * stretch
        for i in rows:
            center = scale * (i + 0.5)
            low = max(int(center - support + 0.5), 0)
            high = min(int(center + support + 0.5), in_size)
            taps = np.arange(low, high)
            offsets = (taps - center + 0.5) / stretch
            w = _cubic(offsets, -0.5) if mode == "bicubic" else _triangle(offsets)
            weights[i, taps] = w / w.sum()
        return weights.astype(np.float32)
    center = rows * scale if align_corners else (rows + 0.5) * scale - 0.5
    if mode == "bilinear":
        center = np.maximum(center, 0.0)  # torch clamps the source index of linear modes at 0
        first = np.floor(center).astype(np.int64)
        frac = center - first
        second = np.minimum(first + 1, in_size - 1)
        first = np.minimum(first, in_size - 1)
        np.add.at(weights, (rows, first), 1.0 - frac)
        np.add.at(weights, (rows, second), frac)
    else:
        first = np.floor(center).astype(np.int64)
        frac = center - first
        for k in range(-1, 3):
            taps = np.clip(first + k, 0, in_size - 1)  # torch reads clamped indices at the border
            np.add.at(weights, (rows, taps), _cubic(frac - k, _CUBIC_A))
    return weights.astype(np.float32)


@lru_cache(maxsize=32)
def resize_taps(in_size: int, out_size: int, mode: Mode, antialias: bool, align_corners: bool) -> tuple[np.ndarray, np.ndarray]:
    """The weight matrix as (indices, weights), each out_size x K: a few taps per output pixel,
    so resizing a 1080p frame costs a few multiply-adds per pixel, not a dense matrix product."""
    weights = resize_weights(in_size, out_size, mode, antialias, align_corners)
    used = weights != 0
    taps = max(1, int(used.sum(axis=1).max()))
    # Each row's non-zero columns are contiguous: start at the first, pad with zero weights.
    first = np.where(used.any(axis=1), used.argmax(axis=1), 0)
    indices = np.minimum(first[:, None] + np.arange(taps)[None, :], in_size - 1)
    picked = np.take_along_axis(weights, indices, axis=1)
    picked[first[:, None] + np.arange(taps)[None, :] >= in_size] = 0.0
    return indices, picked.astype(np.float32)


def _along_axis(data: np.ndarray, indices: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Resample `data` along `axis` (0 or 1) with per-output taps."""
    shape = list(data.shape)
    shape[axis] = indices.shape[0]
    out = np.zeros(shape, dtype=np.float32)
    expand = [None] * data.ndim
    expand[axis] = slice(None)
    for k in range(indices.shape[1]):
        out += weights[:, k][tuple(expand)] * np.take(data, indices[:, k], axis=axis)
    return out


def resize(
    image: np.ndarray, size: tuple[int, int], mode: Mode = "bicubic", antialias: bool = False,
    align_corners: bool = False,
) -> np.ndarray:  # fmt: skip
    """H x W or H x W x C float -> size (height, width), float32, no clamping (as torch's
    ``F.interpolate`` with the same mode, antialias and align_corners)."""
    height, width = size
    data = image.astype(np.float32, copy=False)
    rows = _along_axis(data, *resize_taps(data.shape[0], height, mode, antialias, align_corners), axis=0)
    return _along_axis(rows, *resize_taps(data.shape[1], width, mode, antialias, align_corners), axis=1)


def max_pool(mask: np.ndarray, kernel: int) -> np.ndarray:
    """``F.max_pool2d(kernel, stride 1, padding kernel // 2)`` on H x W: a square dilation."""
    if kernel <= 1:
        return mask
    import cv2

    # OpenCV's default border for dilation never wins the maximum, like max-pool's padding.
    return cv2.dilate(mask.astype(np.float32), np.ones((kernel, kernel), np.uint8))
