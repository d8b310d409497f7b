"""The plan as a bash script: the tasks one after another (so frames that carry colours find
their predecessors written), then the contact sheet and flip-book. It goes on past a task that
fails and exits with the worst task's code (1: some frames failed)."""

from __future__ import annotations

import shlex

from sketchcolor_cli.farm.tasks import FarmPlan

FILE = "farm_plan.sh"


def render(plan: FarmPlan) -> dict[str, str]:
    lines = [
        "#!/usr/bin/env bash",
        f"# sketchcolor farm plan: cut {plan.cut_name}, frames {plan.frame_spec}, "
        f"{len(plan.tasks)} task(s) of up to {plan.chunk} frame(s).",
        "set -uo pipefail",
        "worst=0",
        'task() { "$@"; local code=$?; if [ "$code" -gt "$worst" ]; then worst=$code; fi; }',
    ]
    for name, value in plan.environment.items():
        lines.append(f"export {name}={shlex.quote(value)}")
    for warning in plan.warnings:
        lines.append(f"# note: {warning}")
    for task in plan.tasks:
        lines.append(f"task {task.command}   # task {task.index}: frames {task.spec}")
    lines.append(f"task {shlex.join(plan.review_argv)}   # contact sheet and flip-book")
    lines.append('exit "$worst"')
    return {FILE: "\n".join(lines) + "\n"}
