"""Shared fixtures: small synthetic cuts made once per test session and copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sketchcolor_cli.synthetic.cut import make_cut


@pytest.fixture(scope="session")
def _small_cut_master(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("master") / "walk"
    make_cut(root, frames=5, size=(192, 192), seed=3, hint_lines=True, gaps=1, key_frames=())
    return root


@pytest.fixture
def small_cut(_small_cut_master, tmp_path) -> Path:
    """A 5-frame, 192 px cut with a model sheet, masks, hint lines and one gap per frame."""
    target = tmp_path / "walk"
    shutil.copytree(_small_cut_master, target)
    return target
