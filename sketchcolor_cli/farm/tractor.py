"""The plan as a Tractor job script (the "alfscript" Tcl format that Tractor inherited from Alfred),
spooled with ``tractor-spool farm_plan.alf``.

Tractor has no frame tokens: a job script names every task's command. A Task's ``-subtasks`` run
before its own ``-cmds``, so the contact sheet and flip-book are the command of a top task whose
subtasks are the chunks, and a chunk that carries colours from another chunk's frames lists that
chunk as a subtask through ``Instance {title}`` (defined once, referenced by title). Command
arguments are Tcl words: each is wrapped in braces, which Tractor's tokenizer takes literally.
Tractor streams each command's output to the task log; a non-zero exit fails the task.
"""

from __future__ import annotations

from sketchcolor_cli.farm.tasks import FarmPlan, FarmTask

FILE = "farm_plan.alf"


def _word(text: str) -> str:
    """A Tcl word that stands for exactly `text` (braces: no substitution inside)."""
    if text.count("{") != text.count("}") or text.endswith("\\"):
        raise ValueError(f"cannot write {text!r} into a Tractor job script: unbalanced braces or a trailing backslash")
    return "{" + text + "}"


def _command(argv: list[str], service: str, environment: dict[str, str]) -> str:
    # Tractor's -envkey names site environments, not variables: set ours through env(1).
    if environment:
        argv = ["/usr/bin/env", *(f"{name}={value}" for name, value in environment.items()), *argv]
    return f"RemoteCmd {{{' '.join(_word(a) for a in argv)}}} -service {_word(service)}"


def _in_dependency_order(tasks: list[FarmTask]) -> list[FarmTask]:
    """Tasks with every task an `Instance` refers to defined before it."""
    by_index = {task.index: task for task in tasks}
    ordered: list[FarmTask] = []
    placed: set[int] = set()

    def place(task: FarmTask, seen: tuple[int, ...] = ()) -> None:
        if task.index in placed:
            return
        if task.index in seen:
            raise ValueError(f"farm tasks wait for each other in a circle: {seen}")
        for index in task.after:
            place(by_index[index], (*seen, task.index))
        placed.add(task.index)
        ordered.append(task)

    for task in tasks:
        place(task)
    return ordered


def _title(task: FarmTask) -> str:
    return f"frames {task.spec}"


def render(plan: FarmPlan, *, service: str = "sketchcolor") -> dict[str, str]:
    """`service`: the Tractor service key that picks the blades (a site's own name for them)."""
    titles = {task.index: _title(task) for task in plan.tasks}
    lines = [
        "##AlfredToDo 3.0",
        f"# sketchcolor farm plan: cut {plan.cut_name}, frames {plan.frame_spec}, "
        f"{len(plan.tasks)} task(s) of up to {plan.chunk} frame(s).",
    ]
    lines += [f"# note: {warning}" for warning in plan.warnings]
    lines.append(f"Job -title {_word(f'sketchcolor {plan.cut_name}')} -service {_word(service)} -subtasks {{")
    lines.append(f"    Task {_word(f'review {plan.cut_name}')} -subtasks {{")
    for task in _in_dependency_order(plan.tasks):
        waits = " ".join(f"Instance {_word(titles[i])}" for i in task.after)
        lines.append(f"        Task {_word(titles[task.index])} -subtasks {{{waits}}} -cmds {{")
        lines.append(f"            {_command(task.argv, service, plan.environment)}")
        lines.append("        }")
    lines.append("    } -cmds {")
    lines.append(f"        {_command(plan.review_argv, service, plan.environment)}")
    lines.append("    }")
    lines.append("}")
    return {FILE: "\n".join(lines) + "\n"}
