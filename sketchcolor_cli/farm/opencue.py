"""The plan as an OpenCue job spec (XML, submitted with pycue's ``opencue.api.launchSpec``).

Checked against OpenCue's code: the DOCTYPE names the DTD by the URL Cuebot resolves locally
(``JobSpec.SPCUE_DTD_URL`` + ``cjsl-1.15.dtd``, the version pyoutline writes by default); the
DTD's element order is kept (spec: show, shot, user, job*, depends*; layer: cmd, range, chunk,
cores?, ..., gpus?, ..., tags?, limits?, env*, services?); the layer type is one of the DTD's
``Render | Util | Post`` (Cuebot upper-cases it, the validating parser wants it as the DTD
spells it). Cuebot replaces ``#FRAMESPEC#`` with each chunk's own frames, and ``#FRAME_START#``,
``#FRAME_END#`` with its ends; `sketchcolor run` falls back to ``CUE_RANGE``/``CUE_IFRAME``/
``CUE_CHUNK`` if an old Cuebot leaves a token in place. A second layer makes the contact sheet
and flip-book once the colour layer is done (a LAYER_ON_LAYER dependency).
"""

from __future__ import annotations

import getpass
import shlex
import xml.etree.ElementTree as ET

from sketchcolor_cli.farm.tasks import FarmPlan

FILE = "opencue_job.xml"
SPEC_VERSION = "1.15"
DOCTYPE = (
    '<!DOCTYPE spec PUBLIC "SPI Cue Specification Language" '
    f'"http://localhost:8080/spcue/dtd/cjsl-{SPEC_VERSION}.dtd">'
)
COLOUR_LAYER = "colour"
REVIEW_LAYER = "review"


def _text(parent: ET.Element, tag: str, value: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = value
    return element


def _layer(layers: ET.Element, name: str, cmd: str, frame_range: str, chunk: int, *, gpus: int,
           environment: dict[str, str]) -> None:  # fmt: skip
    layer = ET.SubElement(layers, "layer", {"name": name, "type": "Render"})
    _text(layer, "cmd", cmd)
    _text(layer, "range", frame_range)
    _text(layer, "chunk", str(chunk))
    if gpus:
        _text(layer, "gpus", str(gpus))
    env = ET.SubElement(layer, "env")
    for key, value in environment.items():
        _text(env, "key", value).set("name", key)
    services = ET.SubElement(layer, "services")
    _text(services, "service", "shell")


def render(plan: FarmPlan, *, show: str = "sketchcolor", shot: str | None = None, user: str | None = None) -> dict[str, str]:
    spec = ET.Element("spec")
    _text(spec, "show", show)
    _text(spec, "shot", shot or plan.cut_name)
    _text(spec, "user", user or getpass.getuser())
    job = ET.SubElement(spec, "job", {"name": plan.job_name})
    _text(job, "paused", "False")
    _text(job, "maxretries", "1")
    ET.SubElement(job, "env")
    layers = ET.SubElement(job, "layers")
    colour = shlex.join(plan.run_argv("--frames=#FRAMESPEC#", "--log-tag", "#FRAME_START#-#FRAME_END#"))
    _layer(layers, COLOUR_LAYER, colour, plan.frame_spec, plan.chunk, gpus=1 if plan.uses_gpu else 0,
           environment=plan.environment)  # fmt: skip
    _layer(layers, REVIEW_LAYER, shlex.join(plan.review_argv), str(plan.frames[0]), 1, gpus=0,
           environment=plan.environment)  # fmt: skip
    depends = ET.SubElement(spec, "depends")
    depend = ET.SubElement(depends, "depend", {"type": "LAYER_ON_LAYER", "anyframe": "False"})
    for tag, value in (("depjob", plan.job_name), ("deplayer", REVIEW_LAYER), ("onjob", plan.job_name),
                       ("onlayer", COLOUR_LAYER)):  # fmt: skip
        _text(depend, tag, value)
    ET.indent(spec)
    body = ET.tostring(spec, encoding="unicode")
    return {FILE: f'<?xml version="1.0"?>\n{DOCTYPE}\n{body}\n'}
