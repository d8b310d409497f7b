"""`sketchcolor train` on the CPU with tiny random-weight switch models and a tiny training set
built from the example cut: the Gram term, its hooks, the run end to end, exact resume, and
using the result (`engine.diffusion.lora`, `sketchcolor convert --lora`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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
from sketchcolor_cli.training.gram import (  # noqa: E402
    SDXL_GRAM_BLOCKS,
    GramHooks,
    default_gram_blocks,
    gram_loss,
    gram_matrix,
    published_gram_blocks,
    transformer_blocks_in_ldm_order,
)

from diffusion_tiny import write_tiny_model  # noqa: E402

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared machine: one thread avoids waiting on a descheduled second thread
    at every small op (several times faster under load, the same numbers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"))


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
        "name": "tiny",
        "model": {"checkpoint": str(model["checkpoint"]), "config": str(model["config"]), "clip": str(model["clip"])},
        "dataset": str(dataset),
        "train": "switch",
        "schedule": {"steps": 6, "batch_size": 2, "learning_rate": 1e-3, "seed": 3},
        "loss": {"gram_start_step": 2, "gram_weight": 1.0},
        "precision": "fp32",
        "gradient_checkpointing": True,
        "ema": {"enabled": True, "decay": 0.9},
        "checkpoints": {"every": 3},
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


# -- the Gram term -------------------------------------------------------------------------


def test_gram_term_on_a_hand_computed_case():
    paired = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]], requires_grad=True)  # orthogonal tokens: G = I
    mismatched = torch.tensor([[[1.0, 1.0], [4.0, 0.0]]], requires_grad=True)  # 45 degrees apart
    assert torch.equal(gram_matrix(paired), torch.eye(2)[None])
    cos45 = 2**-0.5
    assert torch.allclose(gram_matrix(mismatched), torch.tensor([[[1.0, cos45], [cos45, 1.0]]]))
    # MSE over the 4 entries: (0 + 1/2 + 1/2 + 0) / 4.
    loss = gram_loss([mismatched], [paired])
    assert float(loss.detach()) == pytest.approx(0.25)
    loss.backward()
    assert paired.grad is None  # stop-gradient on the paired branch
    assert mismatched.grad is not None and mismatched.grad.abs().sum() > 0
    # Same tokens (at any scale: they are L2-normalised over channels) -> zero.
    assert float(gram_loss([paired.detach() * 5], [paired.detach()])) == 0.0
    # Two hooked blocks add up.
    assert float(gram_loss([mismatched, mismatched], [paired, paired]).detach()) == pytest.approx(0.5)


def _tiny_sdxl_unet():
    from diffusers import UNet2DConditionModel

    # The SDXL layout (levels without/with 2/with 10 transformer blocks) with few channels.
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=8, cross_attention_dim=16,
        use_linear_projection=True, norm_num_groups=8,
    )


def test_hooks_sit_on_the_published_blocks_of_an_sdxl_shaped_unet():
    from diffusers.models.attention import BasicTransformerBlock

    torch.manual_seed(0)
    unet = _tiny_sdxl_unet()
    ordered = transformer_blocks_in_ldm_order(unet)
    assert len(ordered) == 70  # SDXL: 4 + 20 encoder, 10 middle, 6 + 30 decoder
    # Upstream's gram_ids 23 and 63 (counted from 1) are the 9th block of input_blocks.8 and of output_blocks.2.
    assert published_gram_blocks(unet) == list(SDXL_GRAM_BLOCKS) == [ordered[22], ordered[62]]
    assert default_gram_blocks(unet) == list(SDXL_GRAM_BLOCKS)
    modules = dict(unet.named_modules())
    assert all(isinstance(modules[p], BasicTransformerBlock) for p in SDXL_GRAM_BLOCKS)

    hooks = GramHooks(unet, list(SDXL_GRAM_BLOCKS))
    following = {}  # the hooked output is what the block hands on: the input of the next block
    nxt = [SDXL_GRAM_BLOCKS[0].replace("transformer_blocks.8", "transformer_blocks.9"),
           SDXL_GRAM_BLOCKS[1].replace("transformer_blocks.8", "transformer_blocks.9")]
    handles = [modules[p].register_forward_pre_hook(
        lambda m, args, kwargs, p=p: following.__setitem__(p, args[0] if args else kwargs["hidden_states"]),
        with_kwargs=True) for p in nxt]
    sample, context = torch.randn(2, 4, 16, 16), torch.randn(2, 5, 16)
    with torch.no_grad(), hooks.recording() as outputs:
        unet(sample, 10, context)
    for handle in handles:
        handle.remove()
    tokens = (16 // 4) ** 2  # 1/4 of the latent, 1/32 of the image
    for path, after in zip(SDXL_GRAM_BLOCKS, nxt):
        assert outputs[path].shape == (2, tokens, 32)
        assert torch.equal(outputs[path], following[after])
    with torch.no_grad():  # not armed: nothing recorded (gradient checkpointing re-runs blocks)
        unet(sample, 10, context)
    assert hooks.outputs == outputs


def test_gram_term_is_zero_with_the_same_reference_and_positive_with_different_ones(tiny_model, tiny_dataset):
    from sketchcolor_cli.training.data import ShardSamples, collate
    from sketchcolor_cli.training.recipe import Losses
    from sketchcolor_cli.training.switch import SwitchTraining, load_base
    from sketchcolor_cli.training.recipe import ModelFiles

    torch.manual_seed(0)
    files = ModelFiles(checkpoint=str(tiny_model["checkpoint"]), config=str(tiny_model["config"]),
                       clip=str(tiny_model["clip"]))
    model = SwitchTraining(*load_base(files), train="switch", gram_blocks="auto")
    assert model.gram_paths == ["down_blocks.0.attentions.0.transformer_blocks.0",
                                "up_blocks.1.attentions.1.transformer_blocks.0"]
    samples = ShardSamples(tiny_dataset, "train", reference_size=56)
    batch = collate([samples[(0, 0)], samples[(1, 0)], samples[(2, 0)]])
    draws = model.draw(batch, torch.Generator().manual_seed(0), Losses())
    same = dict(batch, reference=batch["reference"][:1].repeat(3, 1, 1, 1),
                reference_mask=batch["reference_mask"][:1].repeat(3, 1, 1, 1))
    draws_same = type(draws)(**{**draws.__dict__, "reference_threshold": draws.reference_threshold[:1].repeat(3),
                                "sketch_threshold": draws.sketch_threshold[:1].repeat(3)})
    with torch.no_grad():
        zero = model(same, draws_same, use_gram=True)
        positive = model(batch, draws, use_gram=True)
        plain = model(batch, draws, use_gram=False)
    assert float(zero["gram_loss"]) < 1e-12
    assert float(positive["gram_loss"]) > 1e-6
    # The paired branch's diffusion loss is the same with or without the mismatched branch beside it.
    assert float(positive["diffusion_loss"]) == pytest.approx(float(plain["diffusion_loss"]), rel=1e-5)


# -- the run -------------------------------------------------------------------------------


def test_train_runs_end_to_end_through_the_cli(tiny_model, tiny_dataset, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model, tiny_dataset, schedule__steps=4, validation__every=2,
                          checkpoints__every=2)
    result = run_cli("train", recipe, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 4 and summary["resumed_from"] == 0
    output = Path(summary["output"])
    assert output == tmp_path / "run" / "tiny.safetensors"
    tensors, meta = load_output(output)
    assert meta["sketchcolor:kind"] == "weights" and meta["sketchcolor:base_model"].startswith("switch-eps-tiny.safetensors")
    parts = {k.split(".")[0] for k in tensors}
    assert parts == {"unet", "threshold_embedder", "cluster_transformer"}
    assert all(".processor." in k and ".lora_" in k for k in tensors if k.startswith("unet."))
    records = metrics(tmp_path / "run")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all("gram_loss" not in r for r in steps[:2]) and all(r["gram_loss"] > 0 for r in steps[2:])
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4]
    held_out = json.loads((tiny_dataset / "dataset.json").read_text())["holdout"]
    image = read_rgba16(tmp_path / "run" / "validation" / "step-0000004" / f"{held_out[0]}.png")
    assert image.shape[:2] == (64, 192)  # line | result | truth
    assert (tmp_path / "run" / "checkpoints" / "step-0000002" / "state.json").is_file()


def test_a_run_stopped_midway_resumes_to_the_same_weights(tiny_model, tiny_dataset, tmp_path):
    # Gradient accumulation, the Gram term from step 1 and the EMA (as the output) all run.
    changes = {"schedule__gradient_accumulation": 2, "schedule__steps": 4, "checkpoints__every": 2,
               "loss__gram_start_step": 1, "gradient_checkpointing": False, "validation__samples": 0}
    straight = write_recipe(tmp_path / "straight", tiny_model, tiny_dataset, **changes)
    assert run_cli("train", straight, "--quiet").exit_code == 0
    stopped = write_recipe(tmp_path / "stopped", tiny_model, tiny_dataset, **changes)
    first = run_cli("train", stopped, "--quiet", "--stop-after", "3", "--json")
    assert first.exit_code == 0 and json.loads(first.stdout)["output"] is None
    assert not (tmp_path / "stopped" / "run" / "tiny.safetensors").exists()
    second = run_cli("train", stopped, "--quiet", "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["resumed_from"] == 2  # the last checkpoint before the stop
    a, _ = load_output(tmp_path / "straight" / "run" / "tiny.safetensors")
    b, _ = load_output(tmp_path / "stopped" / "run" / "tiny.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ...and the metrics log holds each step once, as the straight run's.
    assert [r["step"] for r in metrics(tmp_path / "stopped" / "run") if "loss" in r] == [1, 2, 3, 4]
    straight_losses = [r["loss"] for r in metrics(tmp_path / "straight" / "run") if "loss" in r]
    assert [r["loss"] for r in metrics(tmp_path / "stopped" / "run") if "loss" in r] == straight_losses
    # Resuming with settings that move the data position is refused, naming them.
    changed = run_cli("train", stopped, "--quiet", "--set", "schedule.batch_size=3", "--set", "schedule.steps=6")
    assert changed.exit_code == 2 and "schedule.batch_size: 2 -> 3" in " ".join(changed.output.split())


@pytest.mark.slow
def test_a_killed_process_resumes_to_the_same_weights(tiny_model, tiny_dataset, tmp_path):
    straight = write_recipe(tmp_path / "straight", tiny_model, tiny_dataset, schedule__steps=8)
    assert run_cli("train", straight, "--quiet").exit_code == 0
    killed = write_recipe(tmp_path / "killed", tiny_model, tiny_dataset, schedule__steps=8)
    # One thread like this process (sums in another order would differ in the last bits).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "sketchcolor_cli", "train", str(killed), "--quiet"], env=env)
    checkpoint = tmp_path / "killed" / "run" / "checkpoints" / "step-0000003" / "state.json"
    deadline = time.time() + 120
    while not checkpoint.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.is_file()
    assert run_cli("train", killed, "--quiet").exit_code == 0
    a, _ = load_output(tmp_path / "straight" / "run" / "tiny.safetensors")
    b, _ = load_output(tmp_path / "killed" / "run" / "tiny.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_the_diffusion_loss_falls(tiny_model, tiny_dataset, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model, tiny_dataset, train="full", schedule__steps=200,
                          schedule__batch_size=4, loss__gram_start_step=None, gradient_checkpointing=False,
                          ema__enabled=False, checkpoints__every=1000, validation__samples=0)
    assert run_cli("train", recipe, "--quiet").exit_code == 0
    losses = [r["diffusion_loss"] for r in metrics(tmp_path / "run") if "diffusion_loss" in r]
    assert len(losses) == 200
    first, last = np.mean(losses[:30]), np.mean(losses[-30:])
    assert last < 0.7 * first, (first, last)


def test_recipe_errors_name_the_line_and_setting(tiny_model, tiny_dataset, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model, tiny_dataset, schedule__stepz=3)
    result = run_cli("train", recipe)
    assert result.exit_code == 2
    assert "recipe.yaml" in result.output and "schedule.stepz" in result.output and "unknown setting" in result.output
    missing = write_recipe(tmp_path / "b", tiny_model, tmp_path / "nowhere")
    result = run_cli("train", missing, "--quiet")
    assert result.exit_code == 2 and "dataset build" in result.output


# -- using the result ----------------------------------------------------------------------


def diffusion_cut(cut: Path, model: dict, **settings) -> Path:
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    manifest["engine"] = {"name": "diffusion", "diffusion": {
        "model": str(model["checkpoint"]), "clip": str(model["clip"]), "config": str(model["config"]),
        "steps": 1, "resolution": 256, "reference_guidance": 1.0, **settings}}
    manifest["outputs"].update(contact_sheet=False, flipbook=False)
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    return cut


def colour_of(cut: Path, out: Path, *options) -> np.ndarray:
    result = run_cli("run", cut, "--out", out, "--frames", "1", *options)
    assert result.exit_code == 0, result.output
    return read_rgba16(out / "fill" / "walk.0001.png")


@pytest.fixture(scope="module")
def trained_lora(tiny_model, tiny_dataset, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lora_run")
    recipe = write_recipe(folder, tiny_model, tiny_dataset, train="lora", lora__rank=4, schedule__steps=2,
                          schedule__learning_rate=0.05, loss__gram_start_step=None, validation__samples=0,
                          ema__enabled=False, gradient_checkpointing=False)
    result = run_cli("train", recipe, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["output"])


def test_a_trained_lora_changes_the_run(tiny_model, trained_lora, small_cut, tmp_path):
    tensors, meta = load_output(trained_lora)
    assert meta["sketchcolor:kind"] == "lora"
    assert any(k.endswith("attn2.to_k.lora_up.weight") for k in tensors)
    assert any(k.endswith("attn1.to_out.0.lora_down.weight") for k in tensors)
    cut = diffusion_cut(small_cut, tiny_model)
    base = colour_of(cut, tmp_path / "base")
    with_lora = colour_of(cut, tmp_path / "lora", "--set", f"engine.diffusion.lora={trained_lora}")
    assert np.mean(np.any(with_lora != base, axis=2)) > 0.05


@pytest.mark.slow
def test_lora_strength_and_merging_into_a_converted_model(tiny_model, trained_lora, small_cut, tmp_path):
    cut = diffusion_cut(small_cut, tiny_model)
    base = colour_of(cut, tmp_path / "base")
    with_lora = colour_of(cut, tmp_path / "lora", "--set", f"engine.diffusion.lora={trained_lora}")
    off = colour_of(cut, tmp_path / "off", "--set", f"engine.diffusion.lora={trained_lora}",
                    "--set", "engine.diffusion.lora_strength=0")
    assert np.array_equal(off, base)
    converted = tmp_path / "merged"
    result = run_cli("convert", tiny_model["checkpoint"], converted, "--config", tiny_model["config"],
                     "--clip", tiny_model["clip"], "--lora", trained_lora)
    assert result.exit_code == 0, result.output
    assert json.loads((converted / "merged_loras.json").read_text())[0]["kind"] == "lora"
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    manifest["engine"]["diffusion"] = {**manifest["engine"]["diffusion"], "model": str(converted), "config": None}
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    assert np.array_equal(colour_of(cut, tmp_path / "merged_run"), with_lora)


def test_a_lora_that_does_not_fit_the_base_model_is_refused_with_its_keys(tiny_model, small_cut, tmp_path):
    from sketchcolor_cli.training.lora import save_trained_file

    wrong = tmp_path / "wrong.safetensors"
    layer = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    save_trained_file(wrong, {
        f"{layer}.lora_down.weight": torch.zeros(4, 1024),  # this base's context is 32 wide, not 1024
        f"{layer}.lora_up.weight": torch.zeros(32, 4),
        "unet.down_blocks.7.attentions.0.transformer_blocks.0.attn2.to_q.lora_down.weight": torch.zeros(4, 32),
        "unet.down_blocks.7.attentions.0.transformer_blocks.0.attn2.to_q.lora_up.weight": torch.zeros(32, 4),
    }, "lora", {"base_model": "another-model.safetensors"})
    cut = diffusion_cut(small_cut, tiny_model, lora=str(wrong))
    result = run_cli("run", cut, "--out", tmp_path / "o", "--frames", "1")
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "does not fit this base model" in text
    assert f"{layer}: up (32, 4) @ down (4, 1024)" in text
    assert "unet.down_blocks.7.attentions.0.transformer_blocks.0.attn2.to_q" in text
    assert "another-model.safetensors" in text


def test_the_example_recipe_is_valid_and_its_paths_are_relative_to_it():
    from sketchcolor_cli.training.recipe import load_recipe

    recipe = load_recipe(ROOT / "examples" / "train-switch.yaml")
    assert recipe.train == "switch" and recipe.model.family == "switch"
    assert Path(recipe.model.checkpoint) == (ROOT / "models" / "switch-eps.safetensors").resolve()
    assert Path(recipe.dataset) == (ROOT / "datasets" / "sc01").resolve()
    assert Path(recipe.output) == (ROOT / "runs" / "switch-sc01" / "switch-sc01.safetensors").resolve()
    assert recipe.loss.threshold_min == 0.05 and recipe.loss.threshold_max == 0.95  # as published
