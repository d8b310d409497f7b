"""Manifest loading, validation with line numbers, presets and settings precedence."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sketchcolor_cli.errors import ManifestError
from sketchcolor_cli.manifest.resolve import load_cut, parse_override
from sketchcolor_cli.manifest.upgrade import SchemaVersionError, upgrade_manifest

GOOD = """\
schema_version: 1
name: c004
frames:
  source: line/####.png
characters:
  - name: hero
    references:
      - image: refs/hero.png
outputs:
  folder: out
"""


def write(folder: Path, text: str, name: str = "cut.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_manifest_resolves_with_defaults(tmp_path):
    write(tmp_path, GOOD)
    cut = load_cut(tmp_path)
    assert cut.name == "c004"
    assert cut.manifest.engine.name == "flat"
    assert cut.output_dir == tmp_path.resolve() / "out"
    assert cut.manifest.outputs.layers == ["color", "fill", "line", "review"]
    assert cut.origins["outputs.folder"] == "manifest"


def test_three_mistakes_are_all_reported_with_lines(tmp_path):
    write(
        tmp_path,
        """\
        schema_version: 1
        frames:
          source: line/####.png
          range: 1-10x0
        characters:
          - name: hero
            references:
              - image: refs/hero.png
            pallete: refs/hero.yaml
        outputs:
          bit_depth: 12
        """,
    )
    with pytest.raises(ManifestError) as caught:
        load_cut(tmp_path)
    problems = caught.value.problems
    assert len(problems) == 3
    by_field = {p.field: p for p in problems}
    assert by_field["frames.range"].line == 4 and "step 0" in by_field["frames.range"].message
    assert by_field["characters.0.pallete"].line == 9 and "unknown setting" in by_field["characters.0.pallete"].message
    assert by_field["outputs.bit_depth"].line == 11
    assert all(p.file == (tmp_path / "cut.yaml").resolve() for p in problems)


def test_yaml_syntax_error_has_a_line(tmp_path):
    write(tmp_path, "schema_version: 1\nframes:\n  source: [unclosed\n")
    with pytest.raises(ManifestError) as caught:
        load_cut(tmp_path)
    assert caught.value.problems[0].line is not None
    assert "YAML" in caught.value.problems[0].message


def test_missing_schema_version_is_not_guessed(tmp_path):
    write(tmp_path, GOOD.replace("schema_version: 1\n", ""))
    with pytest.raises(ManifestError) as caught:
        load_cut(tmp_path)
    assert "schema_version" in caught.value.problems[0].message


def test_newer_schema_version_says_upgrade_sketchcolor():
    with pytest.raises(SchemaVersionError, match="newer sketchcolor"):
        upgrade_manifest({"schema_version": 99})
    assert upgrade_manifest({"schema_version": 1, "x": 1}) == {"schema_version": 1, "x": 1}


def test_precedence_defaults_preset_manifest_cli(tmp_path):
    write(
        tmp_path,
        """\
        schema_version: 1
        description: test preset
        outputs:
          bit_depth: 16
          format: tif
        run:
          batch_size: 2
        """,
        name="studio.yaml",
    )
    write(tmp_path, GOOD.replace("outputs:\n  folder: out\n", "preset: studio.yaml\noutputs:\n  format: png\n"))
    cut = load_cut(tmp_path)
    assert cut.manifest.outputs.bit_depth == 16  # preset over default
    assert cut.manifest.outputs.format == "png"  # manifest over preset
    assert cut.manifest.run.batch_size == 2
    assert cut.origins["outputs.bit_depth"] == "preset studio"
    cut = load_cut(tmp_path, overrides=dict([parse_override("outputs.bit_depth=8")]))
    assert cut.manifest.outputs.bit_depth == 8  # command line over everything
    assert cut.origins["outputs.bit_depth"] == "command line"


def test_error_in_preset_value_points_at_the_preset_file(tmp_path):
    preset = write(tmp_path, "schema_version: 1\noutputs:\n  bit_depth: 7\n", name="bad.yaml")
    write(tmp_path, GOOD)
    with pytest.raises(ManifestError) as caught:
        load_cut(tmp_path, preset=str(preset))
    (problem,) = caught.value.problems
    assert problem.file == preset and problem.line == 3


def test_builtin_presets_load(tmp_path):
    write(tmp_path, GOOD)
    for name in ("preview", "tv1080", "comp-exr"):
        cut = load_cut(tmp_path, preset=name)
        assert cut.preset_path is not None and cut.preset_path.stem == name
    assert load_cut(tmp_path, preset="comp-exr").manifest.outputs.file_pattern() == "{cut}.####.exr"


def test_unknown_preset_lists_the_known_ones(tmp_path):
    write(tmp_path, GOOD)
    with pytest.raises(ManifestError, match="tv1080"):
        load_cut(tmp_path, preset="nope")


def test_engine_settings_are_validated_against_the_engine(tmp_path):
    write(tmp_path, GOOD + "engine:\n  name: flat\n  flat:\n    no_such_setting: 3\n")
    with pytest.raises(ManifestError) as caught:
        load_cut(tmp_path)
    (problem,) = caught.value.problems
    assert problem.field == "engine.flat.no_such_setting" and problem.line == 14


def test_unknown_engine_is_named(tmp_path):
    write(tmp_path, GOOD + "engine:\n  name: magic\n")
    with pytest.raises(ManifestError, match="unknown engine 'magic'"):
        load_cut(tmp_path)


def test_folder_without_manifest_says_init(tmp_path):
    with pytest.raises(ManifestError, match="sketchcolor init"):
        load_cut(tmp_path)


def test_settings_digest_changes_with_engine_settings(tmp_path):
    write(tmp_path, GOOD)
    first = load_cut(tmp_path).settings_digest()
    second = load_cut(tmp_path, overrides={"engine.flat.gap_close_px": 9}).settings_digest()
    assert first != second
    assert load_cut(tmp_path).settings_digest() == first
