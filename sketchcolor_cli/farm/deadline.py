"""The plan as a Deadline job: a job info file and a plugin info file for the CommandLine plugin,
submitted with ``deadlinecommand job_info.job plugin_info.job``.

Deadline replaces ``<STARTFRAME>`` and ``<ENDFRAME>`` in the plugin's Arguments with each task's
first and last frame and ``<QUOTE>`` with a double quote; the task runs the job's frames within
that span (``--chunk-range``), which stays right when the frame list has steps. Deadline reads
progress from stdout lines matching ``Progress: (\\d+)%`` (sketchcolor prints one per frame in
plain mode) and fails a task on any non-zero exit code. The contact sheet and flip-book are left
to a ``sketchcolor preview`` run afterwards (a dependent job needs the job id Deadline assigns).
"""

from __future__ import annotations

import re

from sketchcolor_cli.farm.tasks import FarmPlan

JOB_INFO = "job_info.job"
PLUGIN_INFO = "plugin_info.job"


def _quoted(argument: str) -> str:
    return f"<QUOTE>{argument}<QUOTE>" if re.search(r"[\s\"']", argument) else argument


def render(plan: FarmPlan, *, pool: str | None = None, group: str | None = None, priority: int = 50) -> dict[str, str]:
    job = [
        "Plugin=CommandLine",
        f"Name={plan.job_name}",
        f"BatchName=sketchcolor {plan.cut_name}",
        f"Frames={plan.frame_spec}",
        f"ChunkSize={plan.chunk}",
        f"Priority={priority}",
        f"Comment=sketchcolor {plan.engine}: afterwards run {' '.join(plan.review_argv)}",
    ]
    if pool:
        job.append(f"Pool={pool}")
    if group:
        job.append(f"Group={group}")
    for index, (name, value) in enumerate(plan.environment.items()):
        job.append(f"EnvironmentKeyValue{index}={name}={value}")
    argv = plan.run_argv(f"--frames={plan.frame_spec}", "--chunk-range", "<STARTFRAME>-<ENDFRAME>")
    executable, arguments = argv[0], argv[1:]
    plugin = [
        f"Executable={executable}",
        f"Arguments={' '.join(_quoted(a) for a in arguments)}",
        f"StartupDirectory={plan.cut_target.parent if plan.cut_target.is_file() else plan.cut_target}",
        "Shell=default",
        "ShellExecute=False",
        "SingleFramesOnly=False",
    ]
    return {JOB_INFO: "\n".join(job) + "\n", PLUGIN_INFO: "\n".join(plugin) + "\n"}
