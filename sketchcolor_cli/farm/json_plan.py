"""The plan as JSON: every task with its frames, its command (argv) and the tasks it waits for;
for pipeline tools and farms without a format here (Tractor, a custom queue)."""

from __future__ import annotations

import json

from sketchcolor_cli.farm.tasks import FarmPlan

FILE = "farm_plan.json"


def as_data(plan: FarmPlan) -> dict:
    return {
        "cut": plan.cut_name,
        "cut_path": str(plan.cut_target),
        "engine": plan.engine,
        "frames": plan.frame_spec,
        "chunk": plan.chunk,
        "carries_colours": plan.carries,
        "environment": plan.environment,
        "tasks": [
            {"index": t.index, "frames": t.spec, "frame_list": t.frames, "argv": t.argv, "command": t.command,
             "after": t.after}
            for t in plan.tasks
        ],  # fmt: skip
        "review": {"argv": plan.review_argv, "after": [t.index for t in plan.tasks]},
        "warnings": plan.warnings,
    }


def render(plan: FarmPlan) -> dict[str, str]:
    return {FILE: json.dumps(as_data(plan), indent=2) + "\n"}
