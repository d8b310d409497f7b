"""Frame specs as farm managers and TDs write them: ``1-24,30,40-60x2``.

The syntax and its meaning follow OpenCue's server (Cuebot, ``FrameRange.java``), one item per
comma-separated entry:

=========  ===========================================  =========================
item       meaning                                      example
=========  ===========================================  =========================
``N``      one frame, negative allowed                  ``-5`` -> -5
``A-B``    every frame from A to B; B < A counts down   ``10-8`` -> 10,9,8
``A-BxN``  every Nth frame from A                       ``1-10x3`` -> 1,4,7,10
``A-ByN``  the frames ``A-BxN`` leaves out              ``1-10y3`` -> 2,3,5,6,8,9
``A-B:N``  all of A-B, interleaved (coarse pass first)  ``1-10:5`` -> see below
=========  ===========================================  =========================

Rules (each broken rule raises :class:`FrameSpecError` naming the item):

* A descending range with a step needs a negative step (``10-1x-1``); ``10-1x2`` and ``1-10x-2``
  are errors because the direction is ambiguous.  ``10-1`` alone counts down (fileseq and Cuebot
  agree on this).  A range whose ends are equal (``5-5x3``) is the single frame.
* Step 0 is an error (Cuebot and fileseq both refuse it).
* Whitespace around commas is ignored (manifests wrap long specs); whitespace inside an item,
  empty items (``1-5,,9``), subframes (``1-10x0.5``) and an empty spec are errors.
* An item that selects no frame at all (``1-10y1``) is an error: it is almost always a typo.
* The result keeps the written order with duplicates removed, first occurrence winning.

Interleave order.  Cuebot fills ``A-B:N`` in passes that all start at A: the frames
``A, A+N, ...``, then step ``N//2``, then ``N//4`` ... down to step 1, each pass adding only frames
not seen yet, so a farm renders a coarse preview of the whole shot first.  ``1-10:5`` is
``1,6,3,5,7,9,2,4,8,10`` and ``10-1:-5`` is ``10,5,8,6,4,2,9,7,3,1`` (Cuebot's FrameRangeTests;
Cuebot keeps the start static since OpenCue PR #975, 2021; the older pycue ``FrameRange.py`` still
shifts the start by one per pass and gives ``1,6,2,4,8,10,3,5,7,9``).  fileseq 3.4 orders the same
frames differently again (``1,6,5,9,4,7,10,3,2,8``), so the interleave is expanded by
:func:`_interleave` here, not by fileseq.

Everything else (``x``, ``y``, plain ranges) is expanded by ``fileseq.FrameSet`` after our stricter
validation (fileseq alone would accept ``10-1x2``, ``1 -3`` and subframes), and
:func:`format_frame_spec` is fileseq's compact form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fileseq import FrameSet, framesToFrameRange
from fileseq.constants import MAX_FRAME_SIZE
from fileseq.exceptions import FileSeqException

__all__ = [
    "FrameSpecError",
    "chunk_frames",
    "format_frame_spec",
    "parse_frame_spec",
    "parse_shard",
    "shard_frames",
]

_ITEM = re.compile(r"^(?P<start>-?\d+)(?:-(?P<end>-?\d+)(?:(?P<kind>[xy:])(?P<step>-?\d+))?)?$")
_SYNTAX_HINT = "expected N, A-B, A-BxN, A-ByN or A-B:N (e.g. 1-24, 1-48x2, 10-1x-1)"


class FrameSpecError(ValueError):
    """A frame spec (or a chunk/shard request) that cannot be used; the message says how to fix it."""


def _fail(item: str, spec: str, reason: str) -> FrameSpecError:
    where = repr(item) if item == spec else f"{item!r} in {spec!r}"
    return FrameSpecError(f"{where}: {reason}")


def _interleave(start: int, end: int, step: int) -> list[int]:
    """Cuebot's interleave order for ``start-end:step`` (step already validated non-zero)."""
    direction = 1 if step > 0 else -1
    ordered: dict[int, None] = {}
    while step != 0:
        for frame in range(start, end + direction, step):
            ordered.setdefault(frame)
        step = direction * (abs(step) // 2)  # Java's integer division truncates toward zero
    return list(ordered)


def _expand_item(item: str, spec: str) -> list[int]:
    if not item:
        raise _fail(item, spec, "empty item (two commas in a row, or a comma at an end); remove it")
    if any(char.isspace() for char in item):
        raise _fail(item, spec, f"whitespace inside an item; write it without spaces, e.g. {''.join(item.split())}")
    match = _ITEM.match(item)
    if match is None:
        raise _fail(item, spec, f"not a frame range; {_SYNTAX_HINT}")
    start = int(match["start"])
    if match["end"] is None:
        return [start]
    end = int(match["end"])
    kind, step_text = match["kind"], match["step"]
    if step_text is not None:
        step = int(step_text)
        if step == 0:
            raise _fail(item, spec, f"step 0 is not allowed; write e.g. {start}-{end}{kind}2")
        if start < end and step < 0:
            raise _fail(item, spec, f"a negative step needs a descending range; write {end}-{start}{kind}{step} "
                        f"or {start}-{end}{kind}{-step}")
        if start > end and step > 0:
            raise _fail(item, spec, f"a descending range needs a negative step; write {start}-{end}{kind}{-step}")
    if abs(end - start) + 1 > MAX_FRAME_SIZE:
        raise _fail(item, spec, f"more than {MAX_FRAME_SIZE} frames; split the job or check the numbers")
    if kind == ":":
        frames = _interleave(start, end, step)
    else:
        try:
            frames = [int(frame) for frame in FrameSet(item)]
        except FileSeqException as error:  # our regex should have caught everything; keep the cause
            raise _fail(item, spec, f"{error}; {_SYNTAX_HINT}") from error
    if not frames:
        raise _fail(item, spec, "selects no frames; check the step")
    return frames


def parse_frame_spec(spec: str | int) -> list[int]:
    """Expand a frame spec to frame numbers: written order kept, duplicates removed (first wins)."""
    if isinstance(spec, bool) or not isinstance(spec, (str, int)):
        raise FrameSpecError(f"{spec!r} is not a frame spec; write frames as text such as '1-24' or a number")
    if isinstance(spec, int):
        return [spec]
    if not spec.strip():
        raise FrameSpecError(f"{spec!r}: empty frame spec; write e.g. 1-24")
    ordered: dict[int, None] = {}
    for raw_item in spec.split(","):
        for frame in _expand_item(raw_item.strip(), spec):
            ordered.setdefault(frame)
    return list(ordered)


def format_frame_spec(frames: Iterable[int]) -> str:
    """The compact spec of a set of frames (sorted, de-duplicated), e.g. ``1-3,5-9x2,10``.

    This is fileseq's compact form, except that a stepped item longer than its frames written out
    is written out; ``parse_frame_spec`` reads it back to ``sorted(set(frames))``.
    An empty set formats as ``""``, which ``parse_frame_spec`` refuses (a spec must name frames).
    """
    numbers: set[int] = set()
    for frame in frames:
        if isinstance(frame, bool) or int(frame) != frame:
            raise FrameSpecError(f"frame {frame!r} is not a whole number; frames are integers")
        numbers.add(int(frame))
    if not numbers:
        return ""
    compact = framesToFrameRange(sorted(numbers), sort=False, compress=False)
    # fileseq groups greedily by step, so sparse frames can come out longer than listing them
    # ({-178, 822, 1822} -> "-178-1822x1000"); such an item is written as its plain frames.
    items = []
    for item in compact.split(","):
        match = _ITEM.match(item)
        if match is not None and match["kind"] == "x":
            count = (int(match["end"]) - int(match["start"])) // int(match["step"]) + 1
            if 2 * count - 1 < len(item):  # only then can the plain list be shorter
                plain = ",".join(str(frame) for frame in parse_frame_spec(item))
                item = plain if len(plain) < len(item) else item
        items.append(item)
    return ",".join(items)


def chunk_frames(frames: list[int], size: int) -> list[list[int]]:
    """Consecutive chunks of at most ``size`` frames, in the given order (the last may be shorter)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise FrameSpecError(f"chunk size {size!r} must be a whole number of frames, at least 1")
    return [list(frames[offset:offset + size]) for offset in range(0, len(frames), size)]


def parse_shard(text: str) -> tuple[int, int]:
    """Read ``--shard K/N`` (K 1-based) into ``(K, N)``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise FrameSpecError(f"shard {text!r}: write it as K/N, e.g. 2/4 for the second of four shards")
    index, count = int(match[1]), int(match[2])
    _check_shard(index, count)
    return index, count


def _check_shard(index: int, count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise FrameSpecError(f"shard count {count!r} must be at least 1 (--shard K/N)")
    if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= count:
        raise FrameSpecError(f"shard {index!r}/{count!r}: K must be between 1 and {count} (K is 1-based)")


def shard_frames(frames: list[int], index: int, count: int) -> list[int]:
    """The frames of shard ``index`` of ``count`` (1-based): one contiguous block of the list.

    Blocks follow the list order and differ in size by at most one frame (the first
    ``len(frames) % count`` shards get the extra frame), so every frame is in exactly one shard and a
    shard's frames are neighbours.  With more shards than frames, the last shards are empty.
    """
    _check_shard(index, count)
    base_size, extra = divmod(len(frames), count)
    position = index - 1
    start = position * base_size + min(position, extra)
    size = base_size + (1 if position < extra else 0)
    return list(frames[start:start + size])
