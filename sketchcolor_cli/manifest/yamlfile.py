"""YAML loading that keeps the line of every value, so errors can say `cut.yaml:12`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sketchcolor_cli.errors import ManifestError, Problem

FieldPath = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """A parsed YAML mapping with the line (1-based) of every key, item and value."""

    path: Path
    data: dict[str, Any]
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: FieldPath) -> int | None:
        """Line of the deepest part of `path` that the file has (a missing key: its parent)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def _walk(node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = path + (key_node.value,)
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), lines)


def load_yaml(path: Path, *, what: str = "manifest") -> YamlDocument:
    """Read a YAML mapping; syntax errors and non-mappings become a `ManifestError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError([Problem(f"{what} not found", file=path, hint="check the path")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError([Problem(f"cannot read {what}: {error}", file=path)]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        raise ManifestError(
            [
                Problem(
                    f"YAML syntax error: {error.problem}",
                    file=path,
                    line=mark.line + 1 if mark else None,
                    hint="check indentation and quoting near that line",
                )
            ]
        ) from None
    if data is None:
        data, node = {}, None
    if not isinstance(data, dict):
        raise ManifestError([Problem(f"a {what} must be a YAML mapping (key: value lines)", file=path, line=1)])
    lines: dict[FieldPath, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return YamlDocument(path=path, data=data, lines=lines)
