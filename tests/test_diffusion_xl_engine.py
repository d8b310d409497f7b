"""The diffusion engine with the SDXL-based xl and xlv2 models end to end on the CPU: tiny
random-weight models saved in the published single-file layout (xlv2's background encoder and
LoRA included), with tiny CLIP and WD-tagger files, loaded by the real loader, run through
`sketchcolor run`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from typer.testing import CliRunner  # noqa: E402

from sketchcolor_cli.cli import app  # noqa: E402
from sketchcolor_cli.frames.images import read_rgba16, write_image  # noqa: E402

from diffusion_xl_tiny import write_tiny_xl_model  # noqa: E402

runner = CliRunner()
ENGINE = {"steps": 2, "resolution": 256, "reference_guidance": 2.0, "sketch_guidance": 1.5}
PRESET = Path(__file__).resolve().parents[1] / "presets" / "diffusion-xl.yaml"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The test machine is shared by several people: one thread avoids OpenMP contention, here and
    # in the spawned workers of `sketchcolor run` (which read OMP_NUM_THREADS).
    import os

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory):
    return write_tiny_xl_model(tmp_path_factory.mktemp("tiny_xl"), "xl")


@pytest.fixture(scope="module")
def tiny_xlv2(tmp_path_factory):
    return write_tiny_xl_model(tmp_path_factory.mktemp("tiny_xlv2"), "xlv2", seed=1)


def xl_cut(cut: Path, model: dict, **settings) -> Path:
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    manifest["engine"] = {
        "name": "diffusion",
        "diffusion": {"model": str(model["checkpoint"]), "clip": str(model["clip"]), "tagger": str(model["tagger"]),
                      "config": str(model["config"]), **ENGINE, **settings},
    }
    manifest["outputs"]["contact_sheet"] = False
    manifest["outputs"]["flipbook"] = False
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    return cut


def frames_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / "frames.jsonl").read_text().splitlines()]


def pixels(out: Path, frame: int, layer: str = "color") -> np.ndarray:
    return read_rgba16(out / layer / f"walk.{frame:04d}.png")


@pytest.mark.slow
def test_xl_run_sizes_lines_determinism_and_the_reference_matters(small_cut, tiny_xl, tmp_path):
    cut = xl_cut(small_cut, tiny_xl, background_enhance=True)
    first, second, changed = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    result = run_cli("run", cut, "--out", first, "--frames", "1-2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames_done"] == [1, 2]
    for frame in (1, 2):
        line_art = read_rgba16(cut / "line" / f"{frame:04d}.png")
        color = pixels(first, frame)
        assert color.shape == pixels(first, frame, "fill").shape == line_art.shape == (192, 192, 4)
        ink = line_art[:, :, :3].max(axis=2) == 0
        assert ink.sum() > 100 and np.array_equal(color[ink], line_art[ink])  # original line pixels kept
    records = frames_log(first)
    assert all(r["stats"]["model_size"] == [256, 256] for r in records)
    assert all(r["stats"]["attention"] == "split (mask bias)" for r in records)
    assert not np.array_equal(pixels(first, 1), pixels(first, 2))  # per-frame seeds
    # Same inputs, same seed: same pixels.
    assert run_cli("run", cut, "--out", second, "--frames", "2").exit_code == 0
    assert np.array_equal(pixels(first, 2), pixels(second, 2))
    # Another reference: other colours.
    sheet = cut / "refs" / "hero_sheet.png"
    image = read_rgba16(sheet)
    image[:, :, :3] = 65535 - image[:, :, :3]
    write_image(sheet, image, bit_depth=8)
    assert run_cli("run", cut, "--out", changed, "--frames", "2").exit_code == 0
    moved = np.any(pixels(first, 2)[:, :, :3] != pixels(changed, 2)[:, :, :3], axis=2)
    assert moved.mean() > 0.05, moved.mean()


@pytest.mark.slow
def test_xlv2_low_level_injection_changes_the_frame_and_convert_gives_the_same_pixels(small_cut, tiny_xlv2, tmp_path):
    cut = xl_cut(small_cut, tiny_xlv2, steps=1, reference_guidance=1.0, sketch_guidance=1.0)
    off, on = tmp_path / "off", tmp_path / "on"
    assert run_cli("run", cut, "--out", off, "--frames", "1", "--set", "engine.diffusion.background_enhance=false").exit_code == 0
    assert run_cli("run", cut, "--out", on, "--frames", "1", "--set", "engine.diffusion.background_enhance=true").exit_code == 0
    assert frames_log(on)[0]["stats"]["attention"] == "split (soft) + ReferenceNet bank + background LoRA"
    moved = np.any(pixels(off, 1)[:, :, :3] != pixels(on, 1)[:, :, :3], axis=2)
    assert moved.mean() > 0.05, moved.mean()

    converted = tmp_path / "converted"
    result = run_cli("convert", tiny_xlv2["checkpoint"], converted, "--config", tiny_xlv2["config"],
                     "--clip", tiny_xlv2["clip"], "--tagger", tiny_xlv2["tagger"])
    assert result.exit_code == 0, result.output
    assert (converted / "reference_net" / "diffusion_pytorch_model.safetensors").is_file()
    assert (converted / "background_lora.safetensors").is_file()
    assert json.loads((converted / "xl_config.json").read_text())["prediction_type"] == "v_prediction"
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    manifest["engine"]["diffusion"] = {"model": str(converted), **ENGINE, "steps": 1, "reference_guidance": 1.0,
                                       "sketch_guidance": 1.0, "background_enhance": True}
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    assert run_cli("run", cut, "--out", tmp_path / "folder", "--frames", "1").exit_code == 0
    assert np.array_equal(pixels(on, 1), pixels(tmp_path / "folder", 1))


def test_a_partial_xlv2_checkpoint_is_refused_with_the_keys_named(tiny_xlv2, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_xlv2["checkpoint"]))
    lora_key = next(k for k in state if k.endswith("attn2.to_k.lora_up_background.weight"))
    del state[lora_key]
    del state["bg_encoder.middle_block.0.in_layers.0.weight"]
    state["control_encoder.extra.weight"] = torch.zeros(1)
    broken = tmp_path / "xlv2-broken.safetensors"
    save_file(state, str(broken))
    result = run_cli("convert", broken, tmp_path / "out", "--config", tiny_xlv2["config"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "3 missing" not in output and "2 missing" in output and "1 unexpected" in output
    for key in (lora_key, "bg_encoder.middle_block.0.in_layers.0.weight", "control_encoder.extra.weight"):
        assert key in output.replace(" ", "") or key in output


def test_settings_defaults_resolve_per_family_and_the_preset_loads(small_cut, tiny_xl):
    from sketchcolor_cli.engines.diffusion import DiffusionSettings
    from sketchcolor_cli.engines.diffusion.runtime_xl import is_xl_model, xl_canvas
    from sketchcolor_cli.manifest.resolve import load_cut

    assert is_xl_model(DiffusionSettings(model=str(tiny_xl["checkpoint"])))
    assert not is_xl_model(DiffusionSettings(model="models/switch-eps.safetensors"))
    canvas = xl_canvas((1080, 1920), "auto")
    assert (canvas.height, canvas.width) == (768, 1376)
    canvas = xl_canvas((1080, 1920), 1024)
    assert (canvas.height, canvas.width) == (576, 1024)
    cut = xl_cut(small_cut, tiny_xl)
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    for key in ("resolution", "steps", "reference_guidance", "sketch_guidance"):
        del manifest["engine"]["diffusion"][key]
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    resolved = load_cut(cut, preset=str(PRESET))
    s = resolved.engine_settings
    assert (s.sampler, s.steps, s.resolution, s.reference_guidance, s.sketch_guidance) == ("dpmpp_3m_sde", 20, "auto", 4.0, 1.0)


# -- in-process: the engine as the runner's worker calls it (fast) ---------------------------------

def _items(cut: Path, frames, seed_base: int = 11, invert_reference: bool = False):
    from sketchcolor_cli.engines.base import Reference, WorkItem

    sheet = read_rgba16(cut / "refs" / "hero_sheet.png")
    if invert_reference:
        sheet = sheet.copy()
        sheet[:, :, :3] = 65535 - sheet[:, :, :3]
    items = []
    for frame in frames:
        line = read_rgba16(cut / "line" / f"{frame:04d}.png")
        mask_file = next((cut / "masks").rglob(f"*{frame:04d}.png"))
        mask = read_rgba16(mask_file)[:, :, 0] > 32767
        items.append(WorkItem(frame=frame, line_art=line, references=(Reference("hero", sheet),), seed=seed_base + frame,
                              masks={"hero": mask}))
    return items


def _engine(model: dict, **settings):
    from sketchcolor_cli.engines.diffusion import DiffusionEngine, DiffusionSettings

    values = {"model": str(model["checkpoint"]), "clip": str(model["clip"]), "tagger": str(model["tagger"]),
              "config": str(model["config"]), **ENGINE, **settings}
    return DiffusionEngine.load(DiffusionSettings(**values))


def test_xl_engine_right_sizes_lines_kept_deterministic_and_the_reference_matters(small_cut, tiny_xl):
    engine = _engine(tiny_xl, background_enhance=True)
    assert "xl sdxl-tiny.safetensors, v_prediction" in engine.describe()
    first = engine.colorize(_items(small_cut, [1, 2]))
    again = engine.colorize(_items(small_cut, [2]))
    other = engine.colorize(_items(small_cut, [2], invert_reference=True))
    for layers, item in zip(first, _items(small_cut, [1, 2])):
        assert layers.color.shape == layers.fill.shape == item.line_art.shape == (192, 192, 4)
        ink = item.line_art[:, :, :3].max(axis=2) == 0
        assert ink.sum() > 100 and np.array_equal(layers.color[ink], item.line_art[ink])
        assert layers.stats["model_size"] == [256, 256] and layers.stats["attention"] == "split (mask bias)"
    assert not np.array_equal(first[0].fill, first[1].fill)  # per-frame seeds
    assert np.array_equal(first[1].fill, again[0].fill)  # same frame, same seed, same pixels
    moved = np.any(first[1].fill[:, :, :3] != other[0].fill[:, :, :3], axis=2)
    assert moved.mean() > 0.05, moved.mean()


def test_xlv2_engine_low_level_injection_changes_the_frame(small_cut, tiny_xlv2):
    engine = _engine(tiny_xlv2, steps=1, reference_guidance=1.0, sketch_guidance=1.0, background_enhance=False)
    off = engine.colorize(_items(small_cut, [1]))[0]
    engine.settings = engine.settings.model_copy(update={"background_enhance": True})
    on = engine.colorize(_items(small_cut, [1]))[0]
    engine.settings = engine.settings.model_copy(update={"background_enhance": False})
    off_again = engine.colorize(_items(small_cut, [1]))[0]
    assert on.stats["attention"] == "split (soft) + ReferenceNet bank + background LoRA"
    moved = np.any(off.fill[:, :, :3] != on.fill[:, :, :3], axis=2)
    assert moved.mean() > 0.05, moved.mean()
    # The LoRA comes out of the weights again (to rounding): off, on, off gives off's frame.
    assert np.abs(off.fill.astype(np.int64) - off_again.fill.astype(np.int64)).max() <= 2


def test_xlv2_converted_folder_gives_the_frame_of_its_single_file(small_cut, tiny_xlv2, tmp_path):
    converted = tmp_path / "converted"
    result = run_cli("convert", tiny_xlv2["checkpoint"], converted, "--config", tiny_xlv2["config"],
                     "--clip", tiny_xlv2["clip"], "--tagger", tiny_xlv2["tagger"])
    assert result.exit_code == 0, result.output
    assert (converted / "reference_net" / "diffusion_pytorch_model.safetensors").is_file()
    assert (converted / "background_lora.safetensors").is_file()
    assert json.loads((converted / "xl_config.json").read_text())["prediction_type"] == "v_prediction"
    settings = {"steps": 1, "reference_guidance": 1.0, "sketch_guidance": 1.0, "background_enhance": True}
    single = _engine(tiny_xlv2, **settings).colorize(_items(small_cut, [3]))[0]
    from sketchcolor_cli.engines.diffusion import DiffusionEngine, DiffusionSettings

    folder = DiffusionEngine.load(DiffusionSettings(model=str(converted), **{**ENGINE, **settings}))
    assert np.array_equal(single.fill, folder.colorize(_items(small_cut, [3]))[0].fill)


def test_the_tagger_exported_to_onnx_gives_the_torch_tagger_frame(small_cut, tiny_xl, tmp_path):
    """`convert --to onnx --kind tagger`, then the xl engine with the .onnx tagger (onnxruntime)."""
    import shutil

    pytest.importorskip("onnxruntime")
    tagger_dir = tmp_path / "tagger"
    shutil.copytree(tiny_xl["tagger"].parent, tagger_dir)
    # the tiny tagger's shape beside its weights, as a studio's other-shaped tagger would have it
    shape = json.loads(Path(tiny_xl["config"]).read_text())["tagger"]
    (tagger_dir / "tagger_config.json").write_text(json.dumps(shape))
    exported = tmp_path / "tagger.onnx"
    result = run_cli("convert", tagger_dir / "model.safetensors", exported, "--to", "onnx", "--kind", "tagger",
                     "--size", shape["img_size"])
    assert result.exit_code == 0, result.output
    torch_frame = _engine(tiny_xl).colorize(_items(small_cut, [2]))[0]
    onnx_engine = _engine(tiny_xl, tagger=str(exported))
    assert type(onnx_engine.runtime.pipeline.tagger).__name__ == "OnnxTaggerModule"
    onnx_frame = onnx_engine.colorize(_items(small_cut, [2]))[0]
    difference = np.abs(torch_frame.fill.astype(np.int64) - onnx_frame.fill.astype(np.int64))
    assert difference.max() <= 2 * 257, difference.max()  # the same features, to float rounding
    assert (difference > 0).mean() < 0.5


def test_a_computed_reference_mask_is_used_before_the_heuristic(small_cut, tiny_xl):
    """`sketchcolor masks` gives references their masks (Reference.mask): the xl engine uses them."""
    from dataclasses import replace

    engine = _engine(tiny_xl, background_enhance=True)
    (item,) = _items(small_cut, [2])
    sheet = item.references[0]
    shape = sheet.image.shape[:2]
    frames = []
    for mask in (np.ones(shape, bool), np.zeros(shape, bool)):
        frames.append(engine.colorize([replace(item, references=(replace(sheet, mask=mask),))])[0])
    moved = np.any(frames[0].fill[:, :, :3] != frames[1].fill[:, :, :3], axis=2)
    assert moved.mean() > 0.01, moved.mean()
