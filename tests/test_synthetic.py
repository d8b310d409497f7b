"""Tests of the synthetic-cut generator: determinism, agreement of the truth layers, hint lines,
gaps, masks, key frames, the manifest, and the committed example cut."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from sketchcolor_cli.synthetic import LINE_INKS, PAPER, SyntheticCut, make_cut

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(frames=3, size=(176, 160), seed=3)
WHITE = np.array(PAPER, dtype=np.uint8)


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"cannot read {path}"
    if image.ndim == 3 and image.shape[2] == 3:
        return image[..., ::-1]
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., [2, 1, 0, 3]]
    return image


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hex_rgb(value: str) -> tuple[int, int, int]:
    return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))


def truth_table(root: Path) -> tuple[np.ndarray, dict[int, dict]]:
    """Label -> RGB lookup table built from the written files, cross-checked with the palettes."""
    regions = yaml.safe_load((root / "truth/regions.yaml").read_text())
    lut = np.zeros((max(regions) + 1, 3), dtype=np.uint8)
    lut[0] = PAPER
    for label, info in regions.items():
        palette = yaml.safe_load((root / f"refs/{info['character']}_palette.yaml").read_text())
        assert palette[info["color"]] == info["rgb"], f"label {label}: palette and regions.yaml disagree"
        lut[label] = hex_rgb(info["rgb"])
    return lut, regions


@pytest.fixture(scope="module")
def two_character_cut(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cut") / "duo"
    truth = make_cut(root, **SMALL, characters=2, hint_lines=True, gaps=2, key_frames=(1, 3))
    return truth


def test_palettes_are_distinct_exact_colours_apart_from_paper_and_inks() -> None:
    from sketchcolor_cli.synthetic.characters import DESIGNS

    seen: dict[str, str] = {}
    for design in DESIGNS.values():
        assert {spec.color for spec in design.regions} == set(design.palette), f"{design.name}: unused or missing colours"
        for name, value in design.palette.items():
            rgb = hex_rgb(value)
            assert rgb != PAPER and rgb not in [tuple(ink) for ink in LINE_INKS], f"{design.name}.{name} is paper or ink"
            assert value not in seen, f"{design.name}.{name} repeats {seen.get(value)}"
            seen[value] = f"{design.name}.{name}"


def test_same_seed_writes_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    settings = dict(frames=2, size=(128, 128), characters=2, gaps=2, key_frames=(1,))
    make_cut(tmp_path / "a", seed=5, **settings)
    make_cut(tmp_path / "b", seed=5, **settings)
    make_cut(tmp_path / "c", seed=6, **settings)
    first, second = folder_bytes(tmp_path / "a"), folder_bytes(tmp_path / "b")
    assert len(first) > 20
    assert first == second
    other = folder_bytes(tmp_path / "c")
    assert other["line/0001.png"] != first["line/0001.png"]


def test_truth_layers_agree_with_labels_and_palettes(two_character_cut) -> None:
    root = two_character_cut.root
    lut, _ = truth_table(root)
    inks = {tuple(ink) for ink in LINE_INKS}
    for frame in two_character_cut.frame_numbers:
        labels = read_image(root / f"truth/labels/{frame:04d}.png")
        line = read_image(root / f"line/{frame:04d}.png")
        color = read_image(root / f"truth/color/{frame:04d}.png")
        fill = read_image(root / f"truth/fill/{frame:04d}.png")
        assert labels.dtype == np.uint16 and line.shape == color.shape == (160, 176, 3) and fill.shape == (160, 176, 4)
        on_line = (line != WHITE).any(axis=2)
        assert on_line.mean() > 0.01
        assert {tuple(c) for c in line[on_line]} <= inks, "line art holds colours other than black and hint inks"
        assert (labels[on_line] > 0).all(), "a line pixel lies on the background label"
        region = labels > 0
        off_line_region = region & ~on_line
        assert (color[off_line_region] == lut[labels[off_line_region]]).all()
        assert (color[~region] == WHITE).all()
        assert (color[on_line] == line[on_line]).all()
        assert (fill[region, 3] == 255).all() and (fill[~region, 3] == 0).all()
        assert (fill[region, :3] == lut[labels[region]]).all(), "the fill under a line is not its region's colour"


def test_hint_lines_bound_shading_regions_and_vanish_when_off(two_character_cut, tmp_path: Path) -> None:
    root = two_character_cut.root
    _, regions = truth_table(root)
    shading = {label: info for label, info in regions.items() if "hint" in info}
    assert {info["hint"] for info in shading.values()} == {"shadow", "highlight"}
    for hint, ink in (("shadow", (255, 0, 0)), ("highlight", (0, 0, 255))):
        allowed = {label for label, info in shading.items() if info["hint"] == hint}
        allowed |= {info["shades"] for label, info in shading.items() if info["hint"] == hint}
        seen = 0
        for frame in two_character_cut.frame_numbers:
            labels = read_image(root / f"truth/labels/{frame:04d}.png")
            line = read_image(root / f"line/{frame:04d}.png")
            inked = (line == np.array(ink, dtype=np.uint8)).all(axis=2)
            seen += int(inked.sum())
            assert set(np.unique(labels[inked]).tolist()) <= allowed, f"{hint} line off its regions in frame {frame}"
        assert seen > 0, f"no {hint} hint line drawn"

    plain = make_cut(tmp_path / "plain", **SMALL, characters=2, hint_lines=False)
    plain_regions = yaml.safe_load((plain.root / "truth/regions.yaml").read_text())
    assert not any("hint" in info for info in plain_regions.values())
    assert len(plain_regions) == len(regions) - len(shading)
    for frame in plain.frame_numbers:
        line = read_image(plain.root / f"line/{frame:04d}.png")
        assert {tuple(c) for c in np.unique(line.reshape(-1, 3), axis=0)} == {(0, 0, 0), PAPER}
        labels = read_image(plain.root / f"truth/labels/{frame:04d}.png")
        assert set(np.unique(labels).tolist()) - {0} <= set(plain_regions)


def test_key_frames_equal_the_truth_and_the_manifest_names_them(two_character_cut, tmp_path: Path) -> None:
    root = two_character_cut.root
    for frame in (1, 3):
        assert (root / f"color/{frame:04d}.png").read_bytes() == (root / f"truth/color/{frame:04d}.png").read_bytes()
    assert not (root / "color/0002.png").exists()
    manifest = yaml.safe_load((root / "cut.yaml").read_text())
    assert manifest["keys"] == {"source": "color/####.png", "frames": "1,3"}

    bare = make_cut(tmp_path / "nokeys", frames=2, size=(128, 128), key_frames=())
    assert "keys" not in yaml.safe_load(bare.manifest.read_text())
    assert not (bare.root / "color").exists()


def test_manifest_has_the_agreed_shape_and_its_paths_exist(two_character_cut) -> None:
    root = two_character_cut.root
    text = (root / "cut.yaml").read_text()
    assert text.startswith("#")
    manifest = yaml.safe_load(text)
    assert list(manifest) == [
        "schema_version", "name", "fps", "seed", "frames", "keys", "characters", "background", "engine", "outputs",
    ]  # fmt: skip
    assert manifest["schema_version"] == 1 and manifest["seed"] == 3 and manifest["fps"] == 24
    assert manifest["background"] == {"mode": "transparent"}
    assert manifest["engine"] == {"name": "flat"}
    assert manifest["outputs"] == {
        "folder": "out", "layers": ["color", "fill", "line", "review"], "format": "png", "bit_depth": 8,
    }  # fmt: skip
    assert [c["name"] for c in manifest["characters"]] == ["hero", "mika"]

    def exists(pattern: str) -> bool:
        return all((root / pattern.replace("####", f"{f:04d}")).is_file() for f in range(1, SMALL["frames"] + 1))

    assert exists(manifest["frames"]["source"])
    for character in manifest["characters"]:
        assert list(character) == ["name", "references", "palette", "masks"]
        assert exists(character["masks"]) and (root / character["palette"]).is_file()
        for reference in character["references"]:
            sheet, sheet_line = read_image(root / reference["image"]), read_image(root / reference["line"])
            assert sheet.shape == sheet_line.shape == (160, 176, 3)
            # the model sheet's colour image carries exactly the line art's lines
            on_line = (sheet_line != WHITE).any(axis=2)
            assert (sheet[on_line] == sheet_line[on_line]).all() and (sheet[~on_line] != sheet_line[~on_line]).any()


def test_masks_cover_exactly_each_characters_labels(two_character_cut) -> None:
    root = two_character_cut.root
    _, regions = truth_table(root)
    for frame in two_character_cut.frame_numbers:
        labels = read_image(root / f"truth/labels/{frame:04d}.png")
        union = np.zeros(labels.shape, dtype=bool)
        for character in ("hero", "mika"):
            mask = read_image(root / f"masks/{character}/{frame:04d}.png")
            assert set(np.unique(mask).tolist()) <= {0, 255}
            own = np.isin(labels, [label for label, info in regions.items() if info["character"] == character])
            assert own.any()
            assert ((mask == 255) == own).all(), f"mask of {character} frame {frame} does not match its labels"
            assert not (union & own).any()
            union |= own
        assert (union == (labels > 0)).all()


def test_gaps_break_black_lines_and_open_leaks() -> None:
    closed = SyntheticCut(frames=2, size=(192, 192), seed=1, gaps=0)
    broken = SyntheticCut(frames=2, size=(192, 192), seed=1, gaps=5)
    for frame in (1, 2):
        a, b = closed.render_frame(frame), broken.render_frame(frame)
        assert b.gaps == 5 and a.gaps == 0
        assert (a.labels == b.labels).all()
        changed = (a.line != b.line).any(axis=2)
        assert changed.sum() >= 5 * 4
        assert (a.line[changed] == 0).all(), "a gap erased something other than black line"
        assert (b.line[changed] == 255).all(), "a gap left something other than paper"
        paper_a = cv2.connectedComponents((a.ink == 0).astype(np.uint8), connectivity=4)[0]
        paper_b = cv2.connectedComponents((b.ink == 0).astype(np.uint8), connectivity=4)[0]
        assert paper_b < paper_a, "no gap opened a leak between two regions"


def test_walk_moves_occludes_and_blinks() -> None:
    cut = SyntheticCut(frames=12, size=(192, 192), seed=0)
    label = {info.region: lab for lab, info in cut.regions.items() if info.character == "hero"}
    frames = [cut.render_frame(f) for f in range(1, 13)]
    for before, after in zip(frames, frames[1:]):
        assert (before.labels != after.labels).mean() > 0.01
    visible = [set(np.unique(f.labels).tolist()) for f in frames]
    assert any(label["near_eye_white"] not in v for v in visible), "the eyes never close"
    assert any(label["near_eye_white"] in v for v in visible)

    torso = [label["jacket"], label["jacket_shadow"]]

    def arm_crosses_torso(labels: np.ndarray) -> bool:
        # a row or column where the torso shows on both sides of the near sleeve: the arm is in front
        for line in [*labels, *labels.T]:
            sleeve = np.flatnonzero(line == label["near_sleeve"])
            body = np.flatnonzero(np.isin(line, torso))
            if sleeve.size and body.size and body.min() < sleeve.min() and body.max() > sleeve.max():
                return True
        return False

    crossings = [arm_crosses_torso(f.labels) for f in frames]
    assert any(crossings) and not all(crossings)


def test_two_characters_overlap_in_some_frames() -> None:
    cut = SyntheticCut(frames=12, size=(192, 160), seed=0, characters=2)
    touching = []
    for frame in range(1, 13):
        result = cut.render_frame(frame)
        hero, mika = result.masks["hero"], result.masks["mika"]
        assert hero.any() and mika.any() and not (hero & mika).any()
        touching.append(bool((cv2.dilate(hero.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & mika).any()))
    assert any(touching) and not all(touching)


def test_model_sheet_shows_every_region_in_a_pose_of_its_own() -> None:
    cut = SyntheticCut(frames=12, size=(256, 256), seed=0)
    sheet = cut.render_sheet("hero")
    assert set(np.unique(sheet.labels).tolist()) - {0} == set(cut.regions)
    for frame in range(1, 13):
        assert (cut.render_frame(frame).labels != sheet.labels).mean() > 0.01


def test_antialiased_lines_are_soft_and_the_fill_stays_under_them() -> None:
    result = SyntheticCut(frames=1, size=(160, 160), seed=2, antialias=True).render_frame(1)
    grey = result.line[(result.ink > 0) & (result.ink < 255)]
    assert len(grey) > 50
    assert (result.fill[result.ink > 0, 3] == 255).all()
    paper = result.ink == 0
    assert (result.color[paper & (result.labels > 0)] == result.fill[paper & (result.labels > 0), :3]).all()


def test_background_colour_fills_the_truth(tmp_path: Path) -> None:
    truth = make_cut(tmp_path / "bg", frames=1, size=(128, 128), background="#336699", key_frames=())
    labels = read_image(truth.root / "truth/labels/0001.png")
    fill = read_image(truth.root / "truth/fill/0001.png")
    color = read_image(truth.root / "truth/color/0001.png")
    assert (fill[..., 3] == 255).all()
    assert (fill[labels == 0, :3] == (0x33, 0x66, 0x99)).all()
    assert (color[labels == 0] == (0x33, 0x66, 0x99)).all()
    assert yaml.safe_load(truth.manifest.read_text())["background"] == {"mode": "color", "color": "#336699"}


@pytest.mark.parametrize(
    "arguments, field",
    [
        (dict(frames=0), "frames"),
        (dict(characters=3), "characters"),
        (dict(frames=3, key_frames=(4,)), "key_frames"),
        (dict(size=(32, 32)), "size"),
        (dict(gaps=-1), "gaps"),
        (dict(name="my cut"), "name"),
    ],
)
def test_bad_arguments_name_the_field(tmp_path: Path, arguments: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make_cut(tmp_path / "x", **arguments)


def test_refuses_to_write_into_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "cut.yaml").write_text("schema_version: 1\n")
    with pytest.raises(FileExistsError, match="cut.yaml"):
        make_cut(tmp_path, frames=1, size=(96, 96))
    assert (tmp_path / "cut.yaml").read_text() == "schema_version: 1\n"


def test_rewriting_a_cut_drops_stale_frames(tmp_path: Path) -> None:
    make_cut(tmp_path / "cut", frames=3, size=(96, 96), key_frames=(3,))
    make_cut(tmp_path / "cut", frames=2, size=(96, 96), key_frames=())
    assert sorted(p.name for p in (tmp_path / "cut/line").iterdir()) == ["0001.png", "0002.png"]
    assert not (tmp_path / "cut/color").exists()


def test_committed_example_matches_the_generator(tmp_path: Path) -> None:
    committed = REPO / "examples" / "walk"
    if not (committed / "cut.yaml").exists():
        pytest.skip("examples/walk has not been generated")
    spec = importlib.util.spec_from_file_location("make_example_cut", REPO / "examples" / "make_example_cut.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path / "walk")]) == 0
    fresh = folder_bytes(tmp_path / "walk")
    ours = {name: data for name, data in folder_bytes(committed).items() if not name.startswith("out/")}
    stale = "examples/walk is stale: run python examples/make_example_cut.py --out examples/walk"
    assert sorted(fresh) == sorted(ours), stale
    for name, data in fresh.items():
        if name.endswith(".png"):  # pixels, not bytes: another PNG encoder version may compress differently
            assert (read_image(tmp_path / "walk" / name) == read_image(committed / name)).all(), f"{stale} ({name})"
        else:
            assert data == ours[name], f"{stale} ({name})"
