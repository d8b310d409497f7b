"""The frames a farm task runs, from what the farm manager put on its command line or in its
environment.

* OpenCue's Cuebot replaces ``#FRAMESPEC#`` (the chunk's own spec), ``#FRAME_START#`` and
  ``#FRAME_END#`` in a layer's command (``DispatchSupportService.prepareRqdRunFrame``); an older
  Cuebot leaves them as they are. Then the task's frames come from the environment RQD sets:
  ``CUE_RANGE`` (the layer's whole range), ``CUE_IFRAME`` (the chunk's first frame) and
  ``CUE_CHUNK`` (the chunk size), which is how Cuebot itself cuts a chunk.
* Deadline replaces ``<STARTFRAME>`` and ``<ENDFRAME>`` (always); with a stepped frame list the
  task is "the job's frames between START and END", which is what ``--chunk-range`` selects.
* Tractor has no tokens of its own: its job scripts name each task's frames, as the json and
  shell plans here do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sketchcolor_cli.frames.spec import FrameSpecError, parse_frame_spec

OPENCUE_TOKEN = re.compile(r"#[A-Z_]+#")
DEADLINE_TOKEN = re.compile(r"<[A-Z]+(?:%\d+)?>")


def opencue_chunk(environ: Mapping[str, str]) -> list[int]:
    """This OpenCue task's frames from CUE_RANGE, CUE_IFRAME and CUE_CHUNK."""
    missing = [name for name in ("CUE_RANGE", "CUE_IFRAME") if not environ.get(name)]
    if missing:
        raise FrameSpecError(
            f"the frames are an unreplaced OpenCue token and {', '.join(missing)} is not set; "
            "run this inside an OpenCue task or give the frames, e.g. --frames 1-10"
        )
    frames = parse_frame_spec(environ["CUE_RANGE"])
    first = int(environ["CUE_IFRAME"])
    chunk = int(environ.get("CUE_CHUNK") or 1)
    if first not in frames:
        raise FrameSpecError(f"CUE_IFRAME={first} is not in CUE_RANGE={environ['CUE_RANGE']}")
    start = frames.index(first)
    return frames[start:start + max(1, chunk)]


def resolve_frames(text: str | None, environ: Mapping[str, str]) -> tuple[str | None, bool]:
    """`--frames` as given, or the OpenCue task's frames when Cuebot left a token unreplaced.
    Returns (frame spec or None, whether it came from the farm's environment)."""
    if text is None:
        return None, False
    if OPENCUE_TOKEN.search(text):
        return ",".join(str(f) for f in opencue_chunk(environ)), True
    if DEADLINE_TOKEN.search(text):
        raise FrameSpecError(f"--frames {text}: a Deadline token was not replaced; submit with the CommandLine plugin")
    return text, False


def chunk_range(text: str) -> tuple[int, int]:
    """`--chunk-range A-B` -> (A, B): the selected frames from A to B, inclusive."""
    match = re.fullmatch(r"\s*(-?\d+)\s*-\s*(-?\d+)\s*", text)
    if match is None or DEADLINE_TOKEN.search(text) or OPENCUE_TOKEN.search(text):
        raise FrameSpecError(f"--chunk-range {text!r}: write FIRST-LAST, e.g. 11-20 (farm tokens must be replaced)")
    first, last = int(match[1]), int(match[2])
    return (first, last) if first <= last else (last, first)
