"""Presets: YAML files of shared settings, found by name in the preset folders or given as a path.

Search order: the folders in ``SKETCHCOLOR_PRESET_PATH`` (os.pathsep-separated), then the
presets shipped with sketchcolor.
"""

from __future__ import annotations

import os
from pathlib import Path

from sketchcolor_cli.errors import ManifestError, Problem



def _builtin_presets() -> Path:
    # The repository's top-level presets/ folder, installed as the package sketchcolor_cli.presets.
    from importlib.resources import files

    return Path(str(files("sketchcolor_cli.presets")))


def preset_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("SKETCHCOLOR_PRESET_PATH", "").split(os.pathsep) if p]
    return extra + [_builtin_presets()]


def available_presets() -> dict[str, Path]:
    """name -> file, earlier folders winning over later ones."""
    found: dict[str, Path] = {}
    for folder in preset_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def find_preset(name_or_path: str, *, relative_to: Path | None = None) -> Path:
    """A preset by name, or a YAML path (relative to `relative_to`, e.g. the cut folder)."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        if path.is_file():
            return path
        raise ManifestError([Problem(f"preset file {path} not found", field="preset", hint="check the path")])
    presets = available_presets()
    if name_or_path in presets:
        return presets[name_or_path]
    raise ManifestError(
        [
            Problem(
                f"unknown preset {name_or_path!r}",
                field="preset",
                hint=f"known presets: {', '.join(presets) or 'none'}; see `sketchcolor presets list`",
            )
        ]
    )
