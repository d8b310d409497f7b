"""Running plans: the scheduler with as many workers as asked for (one local worker is the same
scheduler and the same worker loop, in a thread of this process). A failed frame is recorded and
the run goes on.
"""

from __future__ import annotations

from sketchcolor_cli.engines.base import Engine, engine_class
from sketchcolor_cli.plan import Plan
from sketchcolor_cli.runner.logs import RunSummary
from sketchcolor_cli.runner.progress import Reporter
from sketchcolor_cli.runner.scheduler import RunOptions, run_plans

__all__ = ["RunOptions", "load_engine", "run_plan", "run_plans"]


def load_engine(plan: Plan) -> Engine:
    """The plan's engine, loaded here (tools and tests; runs load it inside each worker)."""
    cut = plan.cut
    return engine_class(cut.manifest.engine.name).load(cut.engine_settings)


def run_plan(plan: Plan, *, reporter: Reporter, options: RunOptions | None = None) -> RunSummary:
    """Colour one plan's frames; see `scheduler.run_plans` for several cuts at once."""
    (summary,) = run_plans([plan], reporter, options)
    return summary
