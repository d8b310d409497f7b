"""`sketchcolor dataset build|check`: finished cuts -> shards, on the example cut (examples/walk)
and small synthetic cuts."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sketchcolor_cli.cli import app
from sketchcolor_cli.frames.images import read_rgba16, write_image
from sketchcolor_cli.training.dataset import (
    DATASET_SCHEMA_VERSION,
    Placement,
    aspect_buckets,
    decode_png,
    index_shard,
    nearest_bucket,
    read_member,
)

runner = CliRunner()
WALK = Path(__file__).resolve().parents[1] / "examples" / "walk"
COLOR = "truth/color/####.png"


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def walk(tmp_path) -> Path:
    target = tmp_path / "walk"
    shutil.copytree(WALK, target)
    return target


def samples_of(dataset: Path) -> dict[str, tuple]:
    """key -> (split, member index, meta) for every sample in the shards."""
    manifest = json.loads((dataset / "dataset.json").read_text())
    found = {}
    for shard in manifest["shards"]:
        for key, member in index_shard(dataset / shard["name"]).items():
            found[key] = (shard["split"], member, json.loads(read_member(member, "json")))
    return found


def test_build_writes_pairs_masks_and_valid_references(walk, tmp_path):
    out = tmp_path / "ds"
    result = run_cli("dataset", "build", walk, "-o", out, "--color", COLOR, "--resolution", "64",
                     "--reference-size", "64", "--shard-samples", "4", "--holdout", "2", "--reference-gap", "3")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["schema_version"] == DATASET_SCHEMA_VERSION
    assert manifest["samples"] == {"train": 10, "holdout": 2}
    assert sum(s["samples"] for s in manifest["shards"] if s["split"] == "train") == 10
    assert max(s["samples"] for s in manifest["shards"]) <= 4  # sharded as asked
    samples = samples_of(out)
    assert sorted(k for k, v in samples.items() if v[0] == "holdout") == sorted(manifest["holdout"])
    for key, (_, member, meta) in samples.items():
        frame = meta["frame"]
        line = decode_png(read_member(member, "line.png"), key)
        color = decode_png(read_member(member, "color.png"), key)
        mask = decode_png(read_member(member, "mask.png"), key)
        assert line.shape == color.shape == (64, 64, 3) and mask.shape == (64, 64)
        # The mask is the manifest's hero mask, downscaled: the same share of the frame.
        source = read_rgba16(walk / "masks" / "hero" / f"{frame:04d}.png")[:, :, 0] > 32768
        assert abs(float(mask.mean()) - float(source.mean())) < 0.03
        # The darkest ink of the line art lies on dark lines of the colour (a true pair).
        darkness = line.mean(axis=2)
        ink = darkness < np.quantile(darkness, 0.03)
        assert ink.any() and color[ink].mean() < color.mean() - 0.2
        refs = meta["references"]
        assert {"kind": "sheet", "character": "hero", "source": str(walk / "refs" / "hero_sheet.png")} in refs
        frames = [r["frame"] for r in refs if r["kind"] == "frame"]
        assert frames and frame not in frames and all(abs(f - frame) >= 3 for f in frames)
        stored = [m for m in member.members if m.startswith("ref") and "mask" not in m]
        assert len(stored) == min(4, len(refs))

    check = run_cli("dataset", "check", out, "--json")
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)
    assert report["ok"] and report["samples"] == {"train": 10, "holdout": 2}
    assert report["buckets"] == {"64x64": 12} and report["characters"] == {"hero": 12}


def test_a_cut_without_colour_frames_says_how_to_name_them(walk, tmp_path):
    result = run_cli("dataset", "build", walk, "-o", tmp_path / "ds", "--resolution", "64")
    assert result.exit_code == 1
    assert "names no final colour frames" in result.output and "--color" in result.output
    assert not (tmp_path / "ds").exists()


def test_misaligned_and_missing_colour_frames_are_left_out_and_named(walk, tmp_path):
    shifted = walk / "truth" / "color" / "0004.png"
    image = read_rgba16(shifted)
    write_image(shifted, np.roll(image, (0, 12), axis=(0, 1)), bit_depth=8)
    (walk / "truth" / "color" / "0009.png").unlink()
    result = run_cli("dataset", "build", walk, "-o", tmp_path / "ds", "--color", COLOR, "--resolution", "64",
                     "--reference-size", "64", "--holdout", "0", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["train"] == 10 and summary["skipped"] == 1
    problems = {Path(p["file"]).name + ":" + p["message"] for p in summary["problems"]}
    shift = [re.search(r"shifted by about \(([+-]\d+), ([+-]\d+)\)", p) for p in problems if p.startswith("0004.png:")]
    assert shift and shift[0] is not None, problems
    assert abs(int(shift[0][1]) - 12) <= 2 and abs(int(shift[0][2])) <= 2
    assert any("frame 9: colour is missing" in p for p in problems), problems
    keys = set(samples_of(tmp_path / "ds"))
    assert "walk-000004" not in keys and "walk-000009" not in keys


def test_check_names_a_damaged_or_missing_shard(walk, tmp_path):
    out = tmp_path / "ds"
    assert run_cli("dataset", "build", walk, "-o", out, "--color", COLOR, "--resolution", "64",
                   "--reference-size", "64", "--shard-samples", "5").exit_code == 0
    shards = sorted((out / "shards").glob("train-*.tar"))
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) // 2])
    shards[1].unlink()
    result = run_cli("dataset", "check", out)
    assert result.exit_code == 1
    assert f"{shards[0]}: shard's contents differ" in result.output
    assert f"{shards[1]}: shard is missing" in result.output
    assert "dataset build" in result.output  # what to do


def test_wide_frames_go_to_a_wide_bucket_padded_with_paper(tmp_path):
    from sketchcolor_cli.synthetic.cut import make_cut

    cut = tmp_path / "wide"
    make_cut(cut, frames=6, size=(192, 96), seed=1, key_frames=())
    out = tmp_path / "ds"
    result = run_cli("dataset", "build", cut, "-o", out, "--color", COLOR, "--resolution", "128", "--step", "32",
                     "--reference-size", "64", "--holdout", "0", "--reference-gap", "2")
    assert result.exit_code == 0, result.output
    samples = samples_of(out)
    assert {tuple(m["size"]) for _, _, m in samples.values()} == {(160, 96)}
    line = decode_png(read_member(next(iter(samples.values()))[1], "line.png"), "line")
    placement = Placement.fit(192, 96, (160, 96))
    assert placement.top > 0 and placement.left == 0
    assert (line[: placement.top] == 1.0).all() and (line[placement.top + placement.inner_h :] == 1.0).all()


def test_buckets_are_multiples_of_the_step_near_the_area():
    buckets = aspect_buckets(512, 64)
    assert (512, 512) in buckets and (576, 448) in buckets and (448, 576) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 and max(w, h) / min(w, h) <= 2
    assert nearest_bucket(1920, 1080, buckets) == (640, 384)
    assert nearest_bucket(1080, 1920, buckets) == (384, 640)


def test_an_existing_dataset_is_replaced_only_when_asked(walk, tmp_path):
    out = tmp_path / "ds"
    args = ("dataset", "build", walk, "-o", out, "--color", COLOR, "--resolution", "64", "--reference-size", "64")
    assert run_cli(*args).exit_code == 0
    first = (out / "dataset.json").read_text()
    refused = run_cli(*args)
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert (out / "dataset.json").read_text() == first
    assert run_cli(*args, "--overwrite", "--holdout", "1").exit_code == 0
    assert json.loads((out / "dataset.json").read_text())["samples"]["holdout"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "walk"]  # no temp folders left
    with tarfile.open(next((out / "shards").glob("*.tar"))) as tar:
        assert all(name.split(".", 1)[0].startswith("walk-") for name in tar.getnames())


def test_check_finds_a_colour_that_no_longer_lies_on_its_line_art(walk, tmp_path):
    import hashlib
    import io

    import cv2

    out = tmp_path / "ds"
    assert run_cli("dataset", "build", walk, "-o", out, "--color", COLOR, "--resolution", "128",
                   "--reference-size", "64", "--holdout", "0").exit_code == 0
    shard = next((out / "shards").glob("train-*.tar"))
    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]
    rewritten = io.BytesIO()
    with tarfile.open(fileobj=rewritten, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            if info.name == "walk-000002.color.png":  # someone re-exported it off register
                pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                data = cv2.imencode(".png", np.roll(pixels, 9, axis=0))[1].tobytes()
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shard.write_bytes(rewritten.getvalue())
    manifest = json.loads((out / "dataset.json").read_text())
    for entry in manifest["shards"]:
        if entry["name"].endswith(shard.name):
            entry["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (out / "dataset.json").write_text(json.dumps(manifest))
    result = run_cli("dataset", "check", out, "--json")
    assert result.exit_code == 1
    problems = [p for p in json.loads(result.stdout)["problems"] if p["severity"] == "error"]
    assert len(problems) == 1 and "sample walk-000002: colour is shifted by about (+0, +9) px" in problems[0]["message"]
    assert "0002.png" in problems[0]["hint"]


def test_auto_masks_are_those_sketchcolor_masks_wrote(walk, tmp_path):
    manifest = walk / "cut.yaml"
    manifest.write_text("\n".join(l for l in manifest.read_text().splitlines() if "masks: masks/hero" not in l) + "\n")
    args = ("dataset", "build", walk, "--color", COLOR, "--resolution", "64", "--reference-size", "64", "--masks", "auto")
    missing = run_cli(*args, "-o", tmp_path / "none")
    assert missing.exit_code != 0 and "sketchcolor masks" in missing.output
    for frame in range(1, 13):  # as `sketchcolor masks` leaves them: white foreground, left half here
        line = read_rgba16(walk / "line" / f"{frame:04d}.png")
        computed = np.zeros(line.shape[:2] + (3,), np.uint16)
        computed[:, : line.shape[1] // 2] = 65535
        write_image(walk / "masks" / "auto" / f"{frame:04d}.png", computed)
    result = run_cli(*args, "-o", tmp_path / "auto")
    assert result.exit_code == 0, result.output
    for key, (_, member, meta) in samples_of(tmp_path / "auto").items():
        mask = decode_png(read_member(member, "mask.png"), key)
        assert abs(float(mask.mean()) - 0.5) < 0.05
