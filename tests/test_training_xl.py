"""`sketchcolor train` for the xl/xlv2 models on the CPU, with tiny random-weight models (the
published single-file layout, `diffusion_xl_tiny`) and a tiny training set built from the example
cut: the run end to end through the CLI, the Gram term of the dual branch on the xl UNet, and
using the result (`engine.diffusion.lora`, a mismatched file refused, `convert --lora`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from typer.testing import CliRunner  # noqa: E402

from sketchcolor_cli.cli import app  # noqa: E402
from sketchcolor_cli.frames.images import read_rgba16  # noqa: E402
from sketchcolor_cli.training.dataset import BuildOptions, build_dataset  # noqa: E402

from diffusion_xl_tiny import write_tiny_xl_model  # noqa: E402

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared machine: one thread (here and in `sketchcolor run`'s workers)."""
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


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory):
    return write_tiny_xl_model(tmp_path_factory.mktemp("tiny_xl"), "xl")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    cut = root / "walk"
    shutil.copytree(ROOT / "examples" / "walk", cut)
    options = BuildOptions(resolution=64, reference_size=64, holdout=1, shard_samples=6, color="truth/color/####.png")
    return build_dataset([cut], root / "ds", options).path


def write_recipe(folder: Path, model: dict, dataset: Path, **changes) -> Path:
    recipe = {
        "schema_version": 1,
        "name": "tinyxl",
        "model": {"family": "xl", "checkpoint": str(model["checkpoint"]), "config": str(model["config"]),
                  "clip": str(model["clip"]), "tagger": str(model["tagger"])},
        "dataset": str(dataset),
        "train": "full",
        "schedule": {"steps": 3, "batch_size": 2, "learning_rate": 1e-3, "seed": 3},
        "loss": {"gram_start_step": 1, "gram_weight": 1.0},
        "precision": "fp32",
        "gradient_checkpointing": True,
        "ema": {"enabled": True, "decay": 0.9},
        "checkpoints": {"every": 2},
        "validation": {"every": 100, "samples": 1, "steps": 1, "sampler": "ddim"},
        "workers": 0,
        "log_dir": str(folder / "run"),
    }
    for dotted, value in changes.items():
        node = recipe
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def load_output(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- the run -------------------------------------------------------------------------------


def test_xl_train_runs_end_to_end_through_the_cli(tiny_xl, tiny_dataset, tmp_path):
    recipe = write_recipe(tmp_path, tiny_xl, tiny_dataset)
    result = run_cli("train", recipe, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 3
    output = Path(summary["output"])
    tensors, meta = load_output(output)
    assert meta["sketchcolor:kind"] == "weights" and meta["sketchcolor:family"] == "xl"
    assert meta["sketchcolor:base_model"].startswith("sdxl-tiny.safetensors")
    # As published: the whole UNet, the sketch encoder and the projection; no frozen encoder.
    assert {k.split(".")[0] for k in tensors} == {"unet", "sketch_encoder", "proj"}
    from sketchcolor_cli.engines.diffusion.loading.tiny import tiny_xl_config
    from sketchcolor_cli.engines.diffusion.loading.xl_single_file import build_xl_components

    parts = build_xl_components(tiny_xl_config("xl"), device="meta")
    for part in ("unet", "sketch_encoder", "proj"):
        assert {k for k in tensors if k.startswith(part + ".")} == {f"{part}.{k}" for k, _ in parts[part].named_parameters()}
    records = [r for r in metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert "gram_loss" not in records[0] and all(r["gram_loss"] > 0 for r in records[1:])
    assert all(np.isfinite(r["diffusion_loss"]) for r in records)
    held_out = json.loads((tiny_dataset / "dataset.json").read_text())["holdout"]
    image = read_rgba16(tmp_path / "run" / "validation" / "step-0000003" / f"{held_out[0]}.png")
    assert image.shape[:2] == (64, 192)  # line | result | truth
    assert (tmp_path / "run" / "checkpoints" / "step-0000002" / "state.json").is_file()


@pytest.mark.slow
def test_an_xl_run_stopped_midway_resumes_to_the_same_weights(tiny_xl, tiny_dataset, tmp_path):
    changes = {"train": "lora", "lora__rank": 4, "schedule__steps": 3, "checkpoints__every": 2,
               "gradient_checkpointing": False, "validation__samples": 0}
    straight = write_recipe(tmp_path / "straight", tiny_xl, tiny_dataset, **changes)
    assert run_cli("train", straight, "--quiet").exit_code == 0
    stopped = write_recipe(tmp_path / "stopped", tiny_xl, tiny_dataset, **changes)
    assert run_cli("train", stopped, "--quiet", "--stop-after", "2").exit_code == 0
    second = run_cli("train", stopped, "--quiet", "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["resumed_from"] == 2
    a, _ = load_output(tmp_path / "straight" / "run" / "tinyxl.safetensors")
    b, _ = load_output(tmp_path / "stopped" / "run" / "tinyxl.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_switch_only_setting_is_refused_for_xl(tiny_xl, tiny_dataset, tmp_path):
    result = run_cli("train", write_recipe(tmp_path, tiny_xl, tiny_dataset, train="switch"), "--quiet")
    assert result.exit_code == 2
    assert "train: switch is for the switch model" in " ".join(result.output.split())


# -- the Gram term -------------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True])
def test_xl_gram_term_is_zero_with_the_same_reference_and_positive_with_different_ones(tiny_xl, tiny_dataset, split):
    from sketchcolor_cli.training.data import ShardSamples, collate
    from sketchcolor_cli.training.recipe import Losses, ModelFiles
    from sketchcolor_cli.training.xl import XLTraining, load_xl_base

    torch.manual_seed(0)
    files = ModelFiles(family="xl", checkpoint=str(tiny_xl["checkpoint"]), config=str(tiny_xl["config"]),
                       clip=str(tiny_xl["clip"]), tagger=str(tiny_xl["tagger"]))
    model = XLTraining(*load_xl_base(files), train="full", gram_blocks="auto", split=split)
    # The published rule at the tiny UNet's lowest level (its last transformer block there).
    assert model.gram_paths == ["down_blocks.2.attentions.1.transformer_blocks.1",
                                "up_blocks.0.attentions.2.transformer_blocks.1"]
    samples = ShardSamples(tiny_dataset, "train", reference_size=model.reference_size)
    batch = collate([samples[(0, 0)], samples[(1, 0)], samples[(2, 0)]])
    # The example cut's frames show one character alike: make the references plainly different
    # (inverted colours, a mirrored one) so the tiny random model sees them apart.
    batch["reference"] = torch.stack([batch["reference"][0], 1 - batch["reference"][1], batch["reference"][2].flip(-1)])
    draws = model.draw(batch, torch.Generator().manual_seed(0), Losses())
    same = dict(batch, reference=batch["reference"][:1].repeat(3, 1, 1, 1),
                reference_mask=batch["reference_mask"][:1].repeat(3, 1, 1, 1))
    draws_same = type(draws)(**{**draws.__dict__, "reference_threshold": draws.reference_threshold[:1].repeat(3)})
    with torch.no_grad():
        zero = model(same, draws_same, use_gram=True)
        positive = model(batch, draws, use_gram=True)
        plain = model(batch, draws, use_gram=False)
    # Same reference: the two branches compute the same numbers, the term is exactly zero. The
    # tiny model's lowest level holds 2 x 2 tokens, so its Gram matrices move little: the bound is
    # far above float32 rounding (the zero case shows that is ~0) and far below what is measured.
    assert float(zero["gram_loss"]) < 1e-12
    assert float(positive["gram_loss"]) > 1e-8
    # The paired branch's loss does not depend on the mismatched branch beside it.
    assert float(positive["diffusion_loss"]) == pytest.approx(float(plain["diffusion_loss"]), rel=1e-5)
    # Gradients of the Gram term reach the UNet and the projection (it trains, as published).
    model.zero_grad(set_to_none=True)
    model(batch, draws, use_gram=True)["gram_loss"].backward()
    assert model.proj.proj[0].weight.grad is not None and model.proj.proj[0].weight.grad.abs().sum() > 0
    assert model.clip.vision_model.embeddings.patch_embedding.weight.grad is None  # frozen


def test_the_published_gram_blocks_of_the_full_size_xl_unet():
    from sketchcolor_cli.engines.diffusion.loading.xl_configs import XLConfig
    from sketchcolor_cli.engines.diffusion.loading.xl_single_file import build_xl_components
    from sketchcolor_cli.training.gram import SDXL_GRAM_BLOCKS, published_gram_blocks, transformer_blocks_in_ldm_order

    unet = build_xl_components(XLConfig.for_family("xl"), device="meta")["unet"]  # shapes only, no memory
    ordered = transformer_blocks_in_ldm_order(unet)
    assert len(ordered) == 70
    assert published_gram_blocks(unet) == list(SDXL_GRAM_BLOCKS) == [ordered[22], ordered[62]]


def test_xlv2_trains_its_base_unet_with_the_background_parts_frozen(tiny_dataset, tmp_path):
    from sketchcolor_cli.training.data import ShardSamples, collate
    from sketchcolor_cli.training.recipe import Losses, ModelFiles
    from sketchcolor_cli.training.xl import XLTraining, load_xl_base

    files = write_tiny_xl_model(tmp_path / "xlv2", "xlv2", seed=1)
    model_files = ModelFiles(family="xlv2", checkpoint=str(files["checkpoint"]), config=str(files["config"]),
                             clip=str(files["clip"]), tagger=str(files["tagger"]))
    torch.manual_seed(0)
    model = XLTraining(*load_xl_base(model_files), train="full", gram_blocks="auto", split=True)
    assert model.reference_net is not None
    samples = ShardSamples(tiny_dataset, "train", reference_size=model.reference_size)
    batch = collate([samples[(0, 0)], samples[(1, 0)]])
    draws = model.draw(batch, torch.Generator().manual_seed(1), Losses())
    out = model(batch, draws, use_gram=True)
    (out["diffusion_loss"] + out["gram_loss"]).backward()
    assert all(p.grad is None for p in model.reference_net.parameters())
    assert model.unet.conv_in.weight.grad.abs().sum() > 0
    tensors, kind = model.export()
    assert kind == "weights" and {k.split(".")[0] for k in tensors} == {"unet", "sketch_encoder", "proj"}
    with pytest.raises(ValueError, match="set model.family: xlv2"):
        load_xl_base(model_files.model_copy(update={"family": "xl"}))


# -- using the result ----------------------------------------------------------------------


def xl_cut(cut: Path, model: dict, **settings) -> Path:
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    manifest["engine"] = {"name": "diffusion", "diffusion": {
        "model": str(model["checkpoint"]), "clip": str(model["clip"]), "tagger": str(model["tagger"]),
        "config": str(model["config"]), "steps": 1, "resolution": 256, "reference_guidance": 1.0, **settings}}
    manifest["outputs"].update(contact_sheet=False, flipbook=False)
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    return cut


def colour_of(cut: Path, out: Path, *options) -> np.ndarray:
    result = run_cli("run", cut, "--out", out, "--frames", "1", *options)
    assert result.exit_code == 0, result.output
    return read_rgba16(out / "fill" / "walk.0001.png")


@pytest.fixture(scope="module")
def trained_xl_lora(tiny_xl, tiny_dataset, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("xl_lora_run")
    recipe = write_recipe(folder, tiny_xl, tiny_dataset, train="lora", lora__rank=4, schedule__steps=2,
                          schedule__learning_rate=0.05, loss__gram_start_step=None, validation__samples=0,
                          ema__enabled=False, gradient_checkpointing=False)
    result = run_cli("train", recipe, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["output"])


def test_a_trained_xl_lora_changes_the_run(tiny_xl, trained_xl_lora, small_cut, tmp_path):
    tensors, meta = load_output(trained_xl_lora)
    assert meta["sketchcolor:kind"] == "lora" and meta["sketchcolor:family"] == "xl"
    assert any(k.endswith("attn2.to_k.lora_up.weight") for k in tensors)
    assert all(k.startswith("unet.") for k in tensors)
    cut = xl_cut(small_cut, tiny_xl)
    base = colour_of(cut, tmp_path / "base")
    with_lora = colour_of(cut, tmp_path / "lora", "--set", f"engine.diffusion.lora={trained_xl_lora}")
    assert np.mean(np.any(with_lora != base, axis=2)) > 0.05


def test_a_file_that_does_not_fit_the_xl_model_is_refused_with_its_keys(tiny_xl, small_cut, tmp_path):
    from sketchcolor_cli.training.lora import save_trained_file

    wrong = tmp_path / "wrong.safetensors"
    layer = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    save_trained_file(wrong, {
        f"{layer}.lora_down.weight": torch.zeros(4, 2048),  # the published context width; the tiny one is 32
        f"{layer}.lora_up.weight": torch.zeros(64, 4),
        "unet.threshold_embedder.fc.lora_down.weight": torch.zeros(4, 32),  # a switch-only part
        "unet.threshold_embedder.fc.lora_up.weight": torch.zeros(32, 4),
    }, "lora", {"base_model": "sdxl-other.safetensors"})
    cut = xl_cut(small_cut, tiny_xl, lora=str(wrong))
    result = run_cli("run", cut, "--out", tmp_path / "o", "--frames", "1")
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "engine.diffusion.lora" in text and "does not fit this base model" in text
    assert f"{layer}: up (64, 4) @ down (4, 2048)" in text
    assert "unet.threshold_embedder.fc" in text and "sdxl-other.safetensors" in text


@pytest.mark.slow
def test_full_weights_apply_at_run_and_merge_into_a_converted_xl_folder(tiny_xl, tiny_dataset, small_cut, tmp_path):
    recipe = write_recipe(tmp_path / "train", tiny_xl, tiny_dataset, schedule__steps=2, schedule__learning_rate=0.01,
                          loss__gram_start_step=None, validation__samples=0, ema__enabled=False,
                          gradient_checkpointing=False)
    result = run_cli("train", recipe, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    trained = Path(json.loads(result.stdout)["output"])
    cut = xl_cut(small_cut, tiny_xl)
    base = colour_of(cut, tmp_path / "base")
    applied = colour_of(cut, tmp_path / "applied", "--set", f"engine.diffusion.lora={trained}")
    assert np.mean(np.any(applied != base, axis=2)) > 0.05
    off = colour_of(cut, tmp_path / "off", "--set", f"engine.diffusion.lora={trained}",
                    "--set", "engine.diffusion.lora_strength=0")
    assert np.array_equal(off, base)  # W_base + 0 * (W_file - W_base)
    converted = tmp_path / "merged"
    result = run_cli("convert", tiny_xl["checkpoint"], converted, "--config", tiny_xl["config"], "--clip", tiny_xl["clip"],
                     "--tagger", tiny_xl["tagger"], "--lora", trained)
    assert result.exit_code == 0, result.output
    assert json.loads((converted / "merged_loras.json").read_text())[0]["kind"] == "weights"
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    manifest["engine"]["diffusion"] = {**manifest["engine"]["diffusion"], "model": str(converted), "config": None,
                                       "clip": None, "tagger": None}
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    assert np.array_equal(colour_of(cut, tmp_path / "merged_run"), applied)


def test_the_example_xl_recipe_is_valid():
    from sketchcolor_cli.training.recipe import load_recipe

    recipe = load_recipe(ROOT / "examples" / "train-xl.yaml")
    assert recipe.model.family == "xl" and recipe.train == "full"
    assert Path(recipe.model.tagger).is_absolute() and Path(recipe.model.tagger).parent.parent == ROOT / "models"
    assert recipe.loss.gram_blocks == "published" and recipe.loss.gram_weight == 1.0  # as published
    assert recipe.schedule.learning_rate == 1e-5
