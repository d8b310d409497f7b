"""What the commands share: consoles, problem printing, option parsing helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from sketchcolor_cli.errors import Problem
from sketchcolor_cli.manifest.resolve import parse_override

console = Console()
console_err = Console(stderr=True)


def print_problems(problems: list[Problem]) -> None:
    errors = [p for p in problems if not p.warning]
    for problem in problems:
        label = "[yellow]warning[/yellow]" if problem.warning else "[red]error[/red]"
        where = problem.location()
        text = f"{label} {where}: {problem.message}" if where else f"{label} {problem.message}"
        if problem.hint:
            text += f"\n      -> {problem.hint}"
        console_err.print(text, highlight=False, markup=True, soft_wrap=True)
    if errors:
        console_err.print(f"{len(errors)} problem(s) found", highlight=False)


def overrides_from(
    *, engine: str | None = None, out: Path | None = None, settings: list[str] | None = None
) -> dict[str, Any]:
    """Command-line options as manifest settings (the highest layer of precedence)."""
    overrides: dict[str, Any] = dict(parse_override(item) for item in settings or [])
    if engine:
        overrides["engine.name"] = engine
    if out:
        overrides["outputs.folder"] = str(out.expanduser().resolve())
    return overrides


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
