"""Settings precedence: built-in defaults < preset < manifest < command-line options.

Each layer is merged key by key (mappings merge, lists and values replace), and every value
remembers the layer it came from, so an invalid value is reported at its own file and line and
`sketchcolor config` can show where each setting came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sketchcolor_cli.engines.base import EngineSettings, engine_class, engine_names
from sketchcolor_cli.errors import ManifestError, Problem
from sketchcolor_cli.manifest.model import CutManifest, Preset
from sketchcolor_cli.manifest.presets import find_preset
from sketchcolor_cli.manifest.upgrade import SchemaVersionError, upgrade_manifest
from sketchcolor_cli.manifest.yamlfile import FieldPath, YamlDocument, load_yaml

MANIFEST_NAME = "cut.yaml"


@dataclass
class SettingsLayer:
    """One source of settings: a preset file, the manifest, or the command line."""

    label: str  # "preset tv1080", "manifest", "command line"
    data: dict[str, Any]
    document: YamlDocument | None = None  # None for the command line

    def where(self, path: FieldPath) -> tuple[Path | None, int | None]:
        if self.document is None:
            return None, None
        return self.document.path, self.document.line_of(path)


@dataclass
class ResolvedCut:
    """A manifest with its preset and options applied, validated, with paths made absolute."""

    manifest: CutManifest
    manifest_path: Path
    engine_settings: EngineSettings
    origins: dict[str, str] = field(default_factory=dict)  # dotted setting -> where it came from
    preset_path: Path | None = None

    @property
    def cut_dir(self) -> Path:
        return self.manifest_path.parent

    @property
    def name(self) -> str:
        return self.manifest.name or self.cut_dir.name

    @property
    def output_dir(self) -> Path:
        return self.path(self.manifest.outputs.folder)

    def path(self, relative: str) -> Path:
        """A manifest path, relative to the cut folder unless absolute."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.cut_dir / path

    def settings_dict(self) -> dict[str, Any]:
        """Everything resolved, as plain data (what `sketchcolor config` prints)."""
        data = self.manifest.model_dump(mode="json")
        engine_name = self.manifest.engine.name
        data["engine"] = {"name": engine_name, engine_name: self.engine_settings.model_dump(mode="json")}
        return data

    def settings_digest(self) -> str:
        """A short digest of what decides the pixels: engine, its settings, background, seed, depth."""
        data = self.settings_dict()
        decisive = {
            "engine": data["engine"],
            "background": data["background"],
            "seed": data["seed"],
            "bit_depth": data["outputs"]["bit_depth"],
        }
        overrides = {c["name"]: c["engine"] for c in data["characters"] if c.get("engine")}
        if overrides:  # per-character engine settings decide pixels too
            decisive["character_engine"] = overrides
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


def find_manifest(target: Path) -> Path:
    """A cut folder (its cut.yaml) or a manifest file."""
    if target.is_dir():
        path = target / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(
                [
                    Problem(
                        f"no {MANIFEST_NAME} in the cut folder",
                        file=target,
                        hint=f"write one with `sketchcolor init {target}`, or name the manifest file",
                    )
                ]
            )
        return path
    if not target.exists():
        raise ManifestError([Problem("no such cut folder or manifest", file=target, hint="check the path")])
    return target


def parse_override(text: str) -> tuple[str, Any]:
    """`--set outputs.bit_depth=16` -> ("outputs.bit_depth", 16); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ManifestError([Problem(f"--set {text!r}: write it as key.path=value, e.g. outputs.bit_depth=16")])
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        node = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ManifestError([Problem(f"option {dotted!r} conflicts with another option", field=dotted)])
        node[parts[-1]] = value
    return nested


def _merge(layers: list[SettingsLayer]) -> tuple[dict[str, Any], dict[FieldPath, SettingsLayer]]:
    """Deep-merge the layers in order; return the data and, per leaf path, the layer that set it."""
    merged: dict[str, Any] = {}
    origin: dict[FieldPath, SettingsLayer] = {}

    def merge_into(target: dict, source: dict, path: FieldPath, layer: SettingsLayer) -> None:
        for key, value in source.items():
            here = path + (key,)
            replaces = not (isinstance(value, dict) and isinstance(target.get(key), dict))
            if replaces:
                for stale in [p for p in origin if p[: len(here)] == here]:
                    del origin[stale]
            if isinstance(value, dict):
                if replaces:
                    target[key] = {}
                merge_into(target[key], value, here, layer)
            else:
                target[key] = value
            origin[here] = layer

    for layer in layers:
        merge_into(merged, layer.data, (), layer)
    return merged, origin


def _layer_of(path: FieldPath, origin: dict[FieldPath, SettingsLayer], fallback: SettingsLayer) -> SettingsLayer:
    for end in range(len(path), 0, -1):
        if path[:end] in origin:
            return origin[path[:end]]
    return fallback


def _problems(
    error: ValidationError,
    origin: dict[FieldPath, SettingsLayer],
    fallback: SettingsLayer,
    prefix: FieldPath = (),
) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = prefix + tuple(part for part in item["loc"] if part != "__root__")
        layer = _layer_of(loc, origin, fallback)
        file, line = layer.where(loc)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown setting {loc[-1]!r}"
            hint = "check its spelling; `sketchcolor schema` lists every field"
        elif item["type"] == "missing":
            hint = "add it"
        else:
            hint = None
            if "input" in item and not isinstance(item["input"], (dict, list)):
                message = f"{message} (got {item['input']!r})"
        field_name = ".".join(str(p) for p in loc) or None
        source = None if layer.document is not None else layer.label
        problems.append(Problem(message, file=file, line=line, field=field_name, hint=hint or source))
    return problems


def _absolute_paths(settings: EngineSettings, base: Path) -> EngineSettings:
    """Engine settings marked as paths (``json_schema_extra={"path": True}``, e.g. model files)
    are relative to the cut folder, like every path in a manifest."""
    updates = {}
    for name, info in type(settings).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        value = getattr(settings, name)
        if extra.get("path") and isinstance(value, str) and value:
            path = Path(value).expanduser()
            updates[name] = str(path if path.is_absolute() else (base / path))
    return settings.model_copy(update=updates) if updates else settings


def load_cut(
    target: Path,
    *,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> ResolvedCut:
    """Read and validate a cut's manifest with its preset and command-line overrides."""
    manifest_path = find_manifest(Path(target)).resolve()
    document = load_yaml(manifest_path)
    try:
        document.data = upgrade_manifest(document.data)
    except SchemaVersionError as error:
        raise ManifestError(
            [Problem(str(error), file=manifest_path, line=document.line_of(("schema_version",)), field="schema_version")]
        ) from None

    manifest_layer = SettingsLayer("manifest", document.data, document)
    cli_layer = SettingsLayer("command line", _nest(overrides or {}))
    layers = [manifest_layer, cli_layer]

    preset_name = preset or document.data.get("preset")
    preset_path = None
    if preset_name:
        try:
            preset_path = find_preset(str(preset_name), relative_to=manifest_path.parent)
        except ManifestError as error:
            where = None if preset else document.line_of(("preset",))
            raise ManifestError(
                [Problem(p.message, file=None if preset else manifest_path, line=where, field="preset", hint=p.hint)
                 for p in error.problems]
            ) from None
        preset_doc = load_yaml(preset_path, what="preset")
        preset_layer = SettingsLayer(f"preset {preset_path.stem}", preset_doc.data, preset_doc)
        try:
            Preset.model_validate(preset_doc.data)
        except ValidationError as error:
            raise ManifestError(_problems(error, {}, preset_layer)) from None
        preset_data = {k: v for k, v in preset_doc.data.items() if k not in ("schema_version", "description")}
        layers.insert(0, SettingsLayer(preset_layer.label, preset_data, preset_doc))

    merged, origin = _merge(layers)
    try:
        manifest = CutManifest.model_validate(merged)
    except ValidationError as error:
        raise ManifestError(_problems(error, origin, manifest_layer)) from None

    engine_name = manifest.engine.name
    settings_model = engine_class(engine_name).settings_model
    try:
        engine_settings = settings_model.model_validate(manifest.engine.settings_for(engine_name))
    except ValidationError as error:
        raise ManifestError(_problems(error, origin, manifest_layer, prefix=("engine", engine_name))) from None
    engine_settings = _absolute_paths(engine_settings, manifest_path.parent)
    for index, character in enumerate(manifest.characters):
        override = (character.engine or {}).get(engine_name)
        unknown = sorted(set(character.engine or {}) - {engine_name} - set(engine_names()))
        if unknown:
            raise ManifestError([Problem(
                f"character {character.name}: unknown engine {', '.join(unknown)} under `engine`",
                file=manifest_path, line=document.line_of(("characters", index, "engine")),
                field=f"characters.{index}.engine")])
        if override:
            try:
                settings_model.model_validate({**engine_settings.model_dump(), **override})
            except ValidationError as error:
                raise ManifestError(
                    _problems(error, origin, manifest_layer, prefix=("characters", index, "engine", engine_name))
                ) from None

    origins = {".".join(str(p) for p in path): layer.label for path, layer in origin.items()}
    return ResolvedCut(
        manifest=manifest,
        manifest_path=manifest_path,
        engine_settings=engine_settings,
        origins=origins,
        preset_path=preset_path,
    )
