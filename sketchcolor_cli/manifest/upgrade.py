"""Explicit schema upgrades: an older manifest is brought to the current version by named
functions, one per version step, never by guessing.

Version 1 is the first published schema, so the table is empty; when version 2 arrives, add
``UPGRADES[1] = _v1_to_v2`` and bump `SCHEMA_VERSION`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sketchcolor_cli.manifest.model import SCHEMA_VERSION

# from-version -> function returning the data at from-version + 1
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class SchemaVersionError(ValueError):
    pass


def upgrade_manifest(data: dict[str, Any]) -> dict[str, Any]:
    """Return `data` at the current schema version, or raise `SchemaVersionError` saying what to do."""
    version = data.get("schema_version")
    if version is None:
        raise SchemaVersionError(
            f"the manifest has no schema_version; add 'schema_version: {SCHEMA_VERSION}' at the top"
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SchemaVersionError(f"schema_version must be a whole number from 1 to {SCHEMA_VERSION}, not {version!r}")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"schema_version {version} was written by a newer sketchcolor (this one reads up to "
            f"{SCHEMA_VERSION}); upgrade sketchcolor"
        )
    while version < SCHEMA_VERSION:
        data = UPGRADES[version](dict(data))
        version += 1
        data["schema_version"] = version
    return data
