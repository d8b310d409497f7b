"""`sketchcolor masks` on the example cut with stand-in ONNX models made here, and `run` using
(and logging) the masks it wrote; the artists' masks are never written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from sketchcolor_cli.cli import app  # noqa: E402
from sketchcolor_cli.frames.images import read_image, read_rgba16, write_image  # noqa: E402
from sketchcolor_cli.manifest.resolve import load_cut  # noqa: E402
from sketchcolor_cli.plan import COMPUTED_FOREGROUND, build_plan  # noqa: E402
from sketchcolor_cli.runner.inputs import without_artists_masks  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "walk"
runner = CliRunner()
MODEL_SIZE = 256
DILATION = 5  # the stand-in's foreground: ink, widened by a 5 x 5 max-pool


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def words(text: str) -> str:
    """CLI output with Rich's line wrapping undone (it may break a long path anywhere)."""
    return " ".join(text.split())


def squeezed(text: str) -> str:
    return "".join(text.split())


def save(model, path: Path) -> Path:
    model.ir_version = 9  # what this onnxruntime reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def sketch_stand_in(path: Path) -> Path:
    """An ISNet-shaped graph: N x 3 x 256 x 256 white-paper sketch in [-1, 1] -> N x 1 x 256 x 256
    probability: ink (channel mean near -1) dilated, through a steep sigmoid."""
    nodes = [
        helper.make_node("ReduceMean", ["img"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Neg", ["mean"], ["ink"]),
        helper.make_node("MaxPool", ["ink"], ["wide"], kernel_shape=[DILATION, DILATION],
                         pads=[DILATION // 2] * 4, strides=[1, 1]),  # fmt: skip
        helper.make_node("Mul", ["wide", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["mask"]),
    ]
    graph = helper.make_graph(
        nodes, "sketch_stand_in",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["n", 3, MODEL_SIZE, MODEL_SIZE])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", 1, MODEL_SIZE, MODEL_SIZE])],
        initializer=[helper.make_tensor("gain", TensorProto.FLOAT, [], [8.0])],
    )  # fmt: skip
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def rmbg_stand_in(path: Path) -> Path:
    """A BiRefNet-shaped graph: ImageNet-normalised image -> logits, anything darker than paper
    foreground (white paper normalises to a channel mean of about 2.44)."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1], keepdims=1),
         helper.make_node("Sub", ["mean", "paper"], ["below"]),
         helper.make_node("Mul", ["below", "gain"], ["logits"])],
        "rmbg_stand_in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 128, 128])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 128, 128])],
        initializer=[helper.make_tensor("gain", TensorProto.FLOAT, [], [-8.0]),
                     helper.make_tensor("paper", TensorProto.FLOAT, [], [2.2])],
    )  # fmt: skip
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.fixture
def cut(tmp_path) -> Path:
    target = tmp_path / "walk"
    shutil.copytree(EXAMPLE, target)
    sketch_stand_in(target / "sketch.onnx")
    return target


def edit_manifest(cut: Path, change) -> None:
    data = yaml.safe_load((cut / "cut.yaml").read_text())
    change(data)
    (cut / "cut.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


def frame_records(cut: Path) -> dict[int, dict]:
    lines = (cut / "out" / "logs" / "frames.jsonl").read_text().splitlines()
    return {r["frame"]: r for r in map(json.loads, lines)}


def test_masks_then_run_uses_them_and_logs_it(cut):
    edit_manifest(cut, lambda d: (d["characters"][0].pop("masks"), d.update(masks={"sketch_model": "sketch.onnx"})))
    result = run_cli("masks", cut, "--frames", "1-4")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (cut / "masks" / "auto").glob("*.png"))
    assert written == ["0001.png", "0002.png", "0003.png", "0004.png"]

    for frame in (1, 4):
        mask = read_image(cut / "masks" / "auto" / f"{frame:04d}.png").pixels[:, :, 0] > 127
        line = read_rgba16(cut / "line" / f"{frame:04d}.png")
        ink = line[:, :, :3].max(axis=2) < 20000
        # The stand-in's foreground is the ink widened: all the ink is in, most of the paper out.
        assert ink.sum() > 500
        assert mask[ink].mean() > 0.99
        assert 0.02 < mask.mean() < 0.6
        assert mask.sum() > 1.5 * ink.sum()

    result = run_cli("run", cut, "--frames", "1-3", "-q")
    assert result.exit_code == 0, result.output
    records = frame_records(cut)
    for frame in (1, 2, 3):
        inputs = records[frame]["inputs"]
        assert inputs["mask_sources"] == {"hero": "computed"}
        assert inputs["masks"]["hero"] == str(cut / "masks" / "auto" / f"{frame:04d}.png")
    assert "masks: hero computed (frames 1-3)" in (cut / "out" / "logs" / "run.log").read_text()


def test_run_without_computed_masks_logs_none(cut):
    edit_manifest(cut, lambda d: d["characters"][0].pop("masks"))
    assert run_cli("run", cut, "--frames", "1", "-q").exit_code == 0
    assert frame_records(cut)[1]["inputs"]["mask_sources"] == {"hero": "none"}


def test_artists_masks_win_and_are_never_written(cut):
    artists = digests(cut / "masks" / "hero")
    edit_manifest(cut, lambda d: d.update(masks={"sketch_model": "sketch.onnx"}))
    assert run_cli("masks", cut, "--frames", "1-2").exit_code == 0
    assert run_cli("masks", cut, "--frames", "1-2", "--overwrite").exit_code == 0
    assert (cut / "masks" / "auto" / "0001.png").is_file()
    assert digests(cut / "masks" / "hero") == artists
    assert run_cli("run", cut, "--frames", "1", "-q").exit_code == 0
    inputs = frame_records(cut)[1]["inputs"]
    assert inputs["mask_sources"] == {"hero": "manifest"}
    assert inputs["masks"] == {"hero": str(cut / "masks" / "hero" / "0001.png")}

    # Pointing the computed masks at the artists' files is refused before anything is written.
    result = run_cli("masks", cut, "--overwrite", "--set", "masks.auto=masks/hero/####.png")
    assert result.exit_code == 2
    assert "masks.auto" in words(result.output) and "characters.0.masks" in words(result.output)
    result = run_cli("masks", cut, "--overwrite", "--set", "masks.auto=line/####.png")
    assert result.exit_code == 2 and "frames.source" in words(result.output)
    assert digests(cut / "masks" / "hero") == artists


def test_existing_computed_masks_are_kept_unless_overwrite(cut):
    edit_manifest(cut, lambda d: d.update(masks={"sketch_model": "sketch.onnx"}))
    target = cut / "masks" / "auto" / "0002.png"
    target.parent.mkdir(parents=True)
    shutil.copy(cut / "masks" / "hero" / "0007.png", target)  # an artist's correction, say
    corrected = target.read_bytes()
    result = run_cli("masks", cut, "--frames", "1-3", "--json", "-q")
    summary = json.loads(result.stdout)
    assert summary["written"] == [1, 3] and summary["skipped"] == [2]
    assert target.read_bytes() == corrected
    summary = json.loads(run_cli("masks", cut, "--frames", "1-3", "--json", "-q", "--overwrite").stdout)
    assert summary["written"] == [1, 2, 3]
    assert target.read_bytes() != corrected


def test_missing_or_unset_model_is_a_clear_error(cut):
    result = run_cli("masks", cut)
    assert result.exit_code == 2 and "masks.sketch_model is not set" in words(result.output)
    edit_manifest(cut, lambda d: d.update(masks={"sketch_model": "models/isnet.onnx"}))
    result = run_cli("masks", cut)
    text = words(result.output)
    assert result.exit_code == 2
    assert "masks.sketch_model" in text and "does not exist" in text
    assert str(cut / "models" / "isnet.onnx") in squeezed(result.output)
    result = run_cli("masks", cut, "--reference-model", cut / "absent.onnx", "--sketch-model", cut / "sketch.onnx")
    assert result.exit_code == 2
    assert "masks.reference_model" in words(result.output) and "absent.onnx" in squeezed(result.output)
    assert not (cut / "masks" / "auto").exists() or not any((cut / "masks" / "auto").glob("*.png"))


def test_reference_masks_with_an_rmbg_export(cut):
    rmbg_stand_in(cut / "rmbg.onnx")
    sheet = (cut / "refs" / "hero_sheet.png").read_bytes()
    edit_manifest(cut, lambda d: d.update(masks={"sketch_model": "sketch.onnx", "reference_model": "rmbg.onnx"}))
    summary = json.loads(run_cli("masks", cut, "--frames", "1", "--json", "-q").stdout)
    assert summary["references_written"] == ["hero.1"] and "rmbg" in summary["reference_model"]
    mask = read_image(cut / "masks" / "auto" / "references" / "hero.1.png").pixels[:, :, 0] > 127
    image = read_rgba16(cut / "refs" / "hero_sheet.png")
    assert mask.shape == image.shape[:2]
    paper = (image[:, :, :3].min(axis=2) > 60000) | (image[:, :, 3] == 0)
    # Dark-enough pixels are foreground, dilated: the drawing is in, much of the paper is out.
    assert mask[~paper].mean() > 0.9 and mask[paper].mean() < 0.9
    assert (cut / "refs" / "hero_sheet.png").read_bytes() == sheet

    # `run` hands the computed reference mask to the engine and logs it.
    assert run_cli("run", cut, "--frames", "1", "-q").exit_code == 0
    inputs = frame_records(cut)[1]["inputs"]
    assert inputs["reference_masks"] == {
        str(cut / "refs" / "hero_sheet.png"): str(cut / "masks" / "auto" / "references" / "hero.1.png")
    }
    from sketchcolor_cli.runner.inputs import CutInputs

    (reference,) = CutInputs(load_cut(cut)).references["hero"]
    np.testing.assert_array_equal(reference.mask, mask)
    assert CutInputs(load_cut(cut, overrides={"masks.use_computed": False})).references["hero"][0].mask is None


def test_several_characters_without_masks_share_the_computed_foreground(cut):
    def two_characters(data):
        villain = dict(data["characters"][0], name="villain")
        villain.pop("masks")
        data["characters"].append(villain)
        data["masks"] = {"sketch_model": "sketch.onnx"}

    edit_manifest(cut, two_characters)
    assert run_cli("masks", cut, "--frames", "1").exit_code == 0
    plan = build_plan(load_cut(cut), selection=[1])
    unit = plan.unit(1)
    # hero keeps the artists' mask; the villain is the only one without: the computed mask is its.
    assert unit.mask_sources == {"hero": "manifest", "villain": "computed"}

    edit_manifest(cut, lambda d: d["characters"][0].pop("masks"))
    unit = build_plan(load_cut(cut), selection=[1]).unit(1)
    assert unit.mask_sources == {COMPUTED_FOREGROUND: "computed"}
    assert unit.mask_paths[COMPUTED_FOREGROUND] == cut / "masks" / "auto" / "0001.png"

    edit_manifest(cut, lambda d: d.update(masks={"sketch_model": "sketch.onnx", "use_computed": False}))
    unit = build_plan(load_cut(cut), selection=[1]).unit(1)
    assert unit.mask_sources == {"hero": "none", "villain": "none"} and unit.mask_paths == {}


def test_the_artists_masks_are_taken_out_of_a_computed_one():
    computed = np.zeros((4, 6), dtype=bool)
    computed[:, 1:5] = True
    hero = np.zeros((4, 6), dtype=bool)
    hero[:, :3] = True
    background = np.ones((4, 6), dtype=bool)
    masks = {"hero": hero, "villain": computed, "background": background}
    result = without_artists_masks(masks, {"hero": "manifest", "villain": "computed", "background": "manifest"})
    expected = np.zeros((4, 6), dtype=bool)
    expected[:, 3:5] = True
    np.testing.assert_array_equal(result["villain"], expected)
    assert result["hero"] is hero and result["background"] is background
    assert without_artists_masks(masks, {"villain": "computed"})["villain"] is computed


def test_validate_checks_the_mask_models_and_the_computed_masks(cut):
    edit_manifest(cut, lambda d: d.update(masks={"sketch_model": "models/absent.onnx"}))
    computed = cut / "masks" / "auto" / "0003.png"
    computed.parent.mkdir(parents=True)
    write_image(computed, np.zeros((80, 100), dtype=np.uint16))  # not the frames' size
    result = run_cli("validate", cut)
    text = words(result.output)
    assert result.exit_code != 0
    assert "masks.sketch_model" in text and "absent.onnx" in squeezed(result.output)
    assert "masks.auto" in text and "computed masks of frames 3 do not fit" in text
