"""Farm job plans for a cut: the task list (`tasks.py`) and one module per format (`opencue`,
`deadline`, `tractor`, `json_plan`, `shell`), each with ``render(plan: FarmPlan) -> dict[str, str]`` (file
name -> text). `tokens.py` reads the farm's tokens and environment back in `sketchcolor run`."""

from sketchcolor_cli.farm.tasks import FarmPlan, FarmTask, build_farm_plan

FORMATS = ("json", "shell", "opencue", "deadline", "tractor")

__all__ = ["FORMATS", "FarmPlan", "FarmTask", "build_farm_plan", "render_plan"]


def render_plan(plan: FarmPlan, fmt: str) -> dict[str, str]:
    """The files of a plan in one format: file name -> text."""
    if fmt == "json":
        from sketchcolor_cli.farm import json_plan as module
    elif fmt == "shell":
        from sketchcolor_cli.farm import shell as module
    elif fmt == "opencue":
        from sketchcolor_cli.farm import opencue as module
    elif fmt == "deadline":
        from sketchcolor_cli.farm import deadline as module
    elif fmt == "tractor":
        from sketchcolor_cli.farm import tractor as module
    else:
        raise ValueError(f"unknown farm format {fmt!r}; one of {', '.join(FORMATS)}")
    return module.render(plan)
