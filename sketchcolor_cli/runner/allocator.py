"""Keep large frame buffers in the C heap from one frame to the next (glibc on Linux).

Every frame allocates and frees arrays of several to tens of MB (layers, labels, flow fields,
movie pictures). glibc gives any block above its mmap threshold straight back to the kernel on
free, so the next frame's arrays are fresh pages that the kernel faults in and zeroes again: for
48 frames at 1920x1080 that was 2-4 s of system time out of about 25 s of CPU on a 2-core
machine. Raising the mmap threshold to glibc's 64-bit maximum (32 MiB) and the trim threshold
lets freed blocks be reused; the peak memory stays about the same (benchmarks/flat_accuracy.py).
A user's own MALLOC_* environment settings win.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for 64-bit
TRIM_THRESHOLD = 512 * 1024 * 1024


def keep_frame_buffers() -> bool:
    """Tune glibc's allocator for this process; False where it does not apply (not glibc, or
    the environment sets it already)."""
    if not sys.platform.startswith("linux"):
        return False
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others: no glibc mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
