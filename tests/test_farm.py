"""`sketchcolor farm plan` in each format, and running what it emits (as the farm would) gives the
whole cut, byte for byte; farm tokens, CUE_* environment, shards, per-task logs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from sketchcolor_cli.cli import app
from sketchcolor_cli.frames.spec import chunk_frames, parse_frame_spec

runner = CliRunner()
PYTHON_M = f"{shlex.quote(sys.executable)} -m sketchcolor_cli"


def invoke(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env=env)


def output_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png")) if p.name != "contact_sheet.png"}


def run_argv(argv: list[str]) -> int:
    """Run a planned `sketchcolor ...` command in this process (the executable part dropped)."""
    start = argv.index("sketchcolor_cli") + 1 if "sketchcolor_cli" in argv else 1
    quiet = ["-q"] if argv[start] == "run" else []
    return invoke(*argv[start:], *quiet).exit_code


def clean_run(cut: Path, out: Path) -> dict[str, bytes]:
    assert invoke("run", cut, "--out", out, "-q").exit_code == 0
    return output_bytes(out)


def test_json_plan_tasks_make_the_whole_cut(small_cut, tmp_path):
    out = tmp_path / "farm"
    result = invoke("farm", "plan", small_cut, "--chunk", "2", "--outputs", out, "--executable", PYTHON_M)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [t["frames"] for t in data["tasks"]] == ["1-2", "3-4", "5"]
    assert [t["after"] for t in data["tasks"]] == [[], [1], [2]]  # the flat engine carries colours
    assert data["tasks"][1]["argv"][:3] == [sys.executable, "-m", "sketchcolor_cli"]
    assert "--log-tag" in data["tasks"][0]["argv"] and data["warnings"]
    for task in data["tasks"]:  # in the order `after` asks for
        assert run_argv(task["argv"]) == 0
    assert run_argv(data["review"]["argv"]) == 0
    assert output_bytes(out) == clean_run(small_cut, tmp_path / "clean")
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert {"frames.1-2.jsonl", "frames.3-4.jsonl", "frames.5-5.jsonl", "summary.3-4.json"} <= set(logs)
    assert "frames.jsonl" not in logs  # no task clobbers another's log
    assert (out / "contact_sheet.png").is_file()


def test_shell_plan_runs_as_a_script(small_cut, tmp_path):
    out, script = tmp_path / "farm", tmp_path / "plan.sh"
    assert invoke("farm", "plan", small_cut, "--chunk", "3", "--format", "shell", "--outputs", out,
                  "--executable", PYTHON_M, "--out", script).exit_code == 0  # fmt: skip
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and text.count("sketchcolor_cli run ") == 2
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert output_bytes(out) == clean_run(small_cut, tmp_path / "clean")
    assert "Progress: 100%" in proc.stderr


def test_opencue_job_spec_follows_the_dtd_and_its_chunks_make_the_cut(small_cut, tmp_path):
    out, spec_file = tmp_path / "farm", tmp_path / "job.xml"
    assert invoke("farm", "plan", small_cut, "--chunk", "2", "--format", "opencue", "--outputs", out,
                  "--executable", PYTHON_M, "--out", spec_file).exit_code == 0  # fmt: skip
    text = spec_file.read_text()
    assert '<!DOCTYPE spec PUBLIC "SPI Cue Specification Language" "http://localhost:8080/spcue/dtd/cjsl-1.15.dtd">' in text
    spec = ET.fromstring(text)
    assert [child.tag for child in spec] == ["show", "shot", "user", "job", "depends"]
    job = spec.find("job")
    assert re.fullmatch(r"[\w.-]{3,}", job.get("name"))
    colour, review = job.find("layers").findall("layer")
    assert colour.get("type") in ("Render", "Util", "Post")  # the DTD's spelling
    dtd_order = ["cmd", "range", "chunk", "cores", "threadable", "memory", "gpus", "gpu", "gpu_memory", "timeout",
                 "timeout_llu", "tags", "limits", "env", "services", "outputs"]  # fmt: skip
    tags = [child.tag for child in colour]
    assert tags == sorted(tags, key=dtd_order.index)
    assert colour.findtext("range") == "1-5" and colour.findtext("chunk") == "2"
    command = colour.findtext("cmd")
    assert "#FRAMESPEC#" in command and "#FRAME_START#" in command
    depend = spec.find("depends/depend")
    assert depend.get("type") == "LAYER_ON_LAYER" and depend.findtext("onlayer") == colour.get("name")
    # Cuebot's dispatch, chunk by chunk: the tokens replaced by the chunk's own frames
    for chunk in chunk_frames(parse_frame_spec(colour.findtext("range")), 2):
        spec_text = ",".join(str(f) for f in chunk)
        filled = (command.replace("#FRAMESPEC#", spec_text).replace("#FRAME_START#", str(chunk[0]))
                  .replace("#FRAME_END#", str(chunk[-1])))  # fmt: skip
        assert run_argv(shlex.split(filled)) == 0
    assert output_bytes(out) == clean_run(small_cut, tmp_path / "clean")


def test_opencue_environment_gives_the_chunk_when_tokens_are_left(small_cut, tmp_path):
    env = {"CUE_RANGE": "1-5", "CUE_IFRAME": "3", "CUE_CHUNK": "2"}
    result = invoke("run", small_cut, "--out", tmp_path / "out", "--frames=#FRAMESPEC#", "--dry-run", "--json", env=env)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["to_colour"] == [1, 2, 3, 4] and plan["added_as_dependencies"] == [1, 2]
    result = invoke("run", small_cut, "--frames=#FRAMESPEC#", "--dry-run", env={"CUE_RANGE": ""})
    assert result.exit_code == 2 and "CUE_RANGE" in result.output


def test_deadline_job_files_and_their_tasks_make_the_cut(small_cut, tmp_path):
    out, folder = tmp_path / "farm", tmp_path / "deadline"
    assert invoke("farm", "plan", small_cut, "--chunk", "2", "--format", "deadline", "--outputs", out,
                  "--executable", PYTHON_M, "--out", folder).exit_code == 0  # fmt: skip
    job = dict(line.split("=", 1) for line in (folder / "job_info.job").read_text().splitlines())
    plugin = dict(line.split("=", 1) for line in (folder / "plugin_info.job").read_text().splitlines())
    assert job["Plugin"] == "CommandLine" and job["Frames"] == "1-5" and job["ChunkSize"] == "2"
    assert plugin["Executable"] == sys.executable and "<STARTFRAME>-<ENDFRAME>" in plugin["Arguments"]
    assert {"StartupDirectory", "Shell", "ShellExecute", "SingleFramesOnly"} <= set(plugin)
    # Deadline's tasks: chunks of the frame list, the tokens replaced
    for chunk in chunk_frames(parse_frame_spec(job["Frames"]), int(job["ChunkSize"])):
        arguments = (plugin["Arguments"].replace("<STARTFRAME>", str(chunk[0])).replace("<ENDFRAME>", str(chunk[-1]))
                     .replace("<QUOTE>", '"'))  # fmt: skip
        assert run_argv(["sketchcolor"] + shlex.split(arguments)) == 0
    assert output_bytes(out) == clean_run(small_cut, tmp_path / "clean")
    assert (out / "logs" / "frames.3-4.jsonl").is_file()


def test_shards_split_the_frames_and_keep_their_own_logs(small_cut, tmp_path):
    out = tmp_path / "out"
    frames = []
    for index in (1, 2):
        result = invoke("run", small_cut, "--out", out, "--shard", f"{index}/2", "--json")
        assert result.exit_code == 0, result.output
        frames.append(json.loads(result.stdout)["frames_done"])
    assert frames == [[1, 2, 3], [4, 5]]  # shard 2 found 1-3 written: nothing recoloured
    assert (out / "logs" / "frames.shard1of2.jsonl").is_file() and (out / "logs" / "summary.shard2of2.json").is_file()
    assert not (out / "logs" / "frames.jsonl").exists()
    assert output_bytes(out) == clean_run(small_cut, tmp_path / "clean")


def test_unknown_format_is_a_usage_error(small_cut):
    result = invoke("farm", "plan", small_cut, "--format", "qube")
    assert result.exit_code == 2 and "tractor" in result.output  # the known formats are listed


def test_tractor_job_script_nests_its_tasks_and_its_commands_make_the_cut(small_cut, tmp_path):
    import re

    out, script = tmp_path / "farm", tmp_path / "job.alf"
    assert invoke("farm", "plan", small_cut, "--chunk", "2", "--format", "tractor", "--outputs", out,
                  "--executable", PYTHON_M, "--out", script).exit_code == 0  # fmt: skip
    text = script.read_text()
    assert text.startswith("##AlfredToDo 3.0\n") and text.count("{") == text.count("}")
    titles = re.findall(r"^\s*Task \{(frames [^}]*)\}", text, re.M)
    assert titles == ["frames 1-2", "frames 3-4", "frames 5"]
    # a chunk that carries colours from the previous chunk waits for it (defined before it)
    instances = re.findall(r"Task \{(frames [^}]*)\} -subtasks \{([^}]*\}?)\}", text)
    assert dict(instances)["frames 3-4"] == "Instance {frames 1-2}"
    # Tractor runs subtasks before their parent's commands: the chunks in order, then the review
    commands = [re.findall(r"\{([^{}]*)\}", body) for body in re.findall(r"RemoteCmd \{(.*?)\} -service", text)]
    assert commands[-1][3] == "preview" and all(c[3] == "run" for c in commands[:-1])
    for argv in commands:
        assert run_argv(argv) == 0
    assert output_bytes(out) == clean_run(small_cut, tmp_path / "clean")
