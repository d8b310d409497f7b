"""A cut's frames as farm tasks: one `sketchcolor run` command per chunk.

Chunks are consecutive runs of the requested frames, as a farm cuts them (`chunk_frames`). When
the engine carries colours from frame to frame, a chunk whose first frame depends on a frame of
an earlier chunk must wait for it: the task says so (`after`), the shell plan runs tasks in order,
the json plan lists the order, and OpenCue/Deadline plans are best with chunks that start at key
frames (the plan warns otherwise: such a task would colour the missing frames itself, which gives
the same bytes but repeats work).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from sketchcolor_cli.engines.base import engine_class
from sketchcolor_cli.frames.spec import chunk_frames, format_frame_spec
from sketchcolor_cli.plan import Plan


@dataclass
class FarmTask:
    index: int  # 1-based
    frames: list[int]
    argv: list[str]  # the command, ready to run
    after: list[int] = field(default_factory=list)  # tasks that must finish first

    @property
    def spec(self) -> str:
        return format_frame_spec(self.frames)

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


@dataclass
class FarmPlan:
    cut_name: str
    cut_target: Path  # absolute: farm tasks start anywhere
    engine: str
    uses_gpu: bool
    carries: bool  # frames depend on the previous frame's result
    frames: list[int]
    chunk: int
    executable: list[str]  # e.g. ["sketchcolor"] or [python, "-m", "sketchcolor_cli"]
    run_options: list[str]  # options every task passes on (--preset, --set, --out ...)
    tasks: list[FarmTask]
    review_argv: list[str]  # the contact sheet and flip-book, once every task is done
    warnings: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)  # e.g. SKETCHCOLOR_ENGINES

    @property
    def frame_spec(self) -> str:
        return format_frame_spec(self.frames)

    def run_argv(self, *frame_options: str) -> list[str]:
        """The task command with farm-specific frame options (tokens) instead of concrete frames."""
        return [*self.executable, "run", str(self.cut_target), *frame_options, *self.run_options]

    @property
    def job_name(self) -> str:
        """A farm-safe job name (OpenCue wants [\\w.-]{3,})."""
        name = re.sub(r"[^\w.-]+", "_", f"sketchcolor_{self.cut_name}")
        return name if len(name) >= 3 else f"{name}___"[:3]


def build_farm_plan(
    plan: Plan, target: Path, *, chunk: int, executable: list[str], run_options: list[str],
    environment: dict[str, str] | None = None,
) -> FarmPlan:  # fmt: skip
    """Tasks of `chunk` frames over the plan's requested frames (done or not: a task skips what
    is already written when it runs)."""
    cut = plan.cut
    engine = engine_class(cut.manifest.engine.name)
    carries = any(unit.depends_on is not None for unit in plan.units)
    frames = sorted(unit.frame for unit in plan.units if unit.requested)
    chunks = chunk_frames(frames, chunk)
    owner = {frame: number for number, frames_of in enumerate(chunks, start=1) for frame in frames_of}
    base = [*executable, "run", str(target)]
    tasks: list[FarmTask] = []
    warnings: list[str] = []
    for number, frames_of in enumerate(chunks, start=1):
        spec = format_frame_spec(frames_of)
        tag = f"{frames_of[0]}-{frames_of[-1]}"
        argv = [*base, f"--frames={spec}", "--log-tag", tag, *run_options]
        after: list[int] = []
        if carries:
            # Chains run forwards from a key and backwards before the first key: any frame of the
            # chunk may carry colours from another chunk's frame.
            for frame in frames_of:
                dependency = plan.unit(frame).depends_on
                if dependency is None or dependency not in owner or owner[dependency] in (number, *after):
                    continue
                after.append(owner[dependency])
                warnings.append(
                    f"task {number} (frames {spec}) has frame {frame}, which carries colours from "
                    f"frame {dependency} of task {owner[dependency]}: run it after that task (json: `after`, shell: "
                    "in order), or pick --chunk so chunks start at key frames"
                )
        tasks.append(FarmTask(index=number, frames=frames_of, argv=argv, after=after))
    review = [*executable, "preview", str(target), *_review_options(run_options)]
    return FarmPlan(
        cut_name=cut.name, cut_target=target, engine=cut.manifest.engine.name, uses_gpu=engine.uses_gpu,
        carries=carries, frames=frames, chunk=chunk, executable=executable, run_options=run_options,
        tasks=tasks, review_argv=review, warnings=warnings, environment=dict(environment or {}),
    )  # fmt: skip


def _review_options(run_options: list[str]) -> list[str]:
    """The options `preview` understands among the run's (where the outputs are)."""
    kept: list[str] = []
    for position, option in enumerate(run_options):
        if option in ("--out", "-o", "--preset") and position + 1 < len(run_options):
            kept += [option, run_options[position + 1]]
    return kept
