"""The hi-res pass: tiles and blending weights, seamless MultiDiffusion denoising, delivery sizes,
determinism with a tiny switch model, and `sketchcolor run` end to end at 1920x1080."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from sketchcolor_cli.engines.base import FULL  # noqa: E402
from sketchcolor_cli.engines.diffusion import DiffusionSettings  # noqa: E402
from sketchcolor_cli.engines.diffusion.delivery import HiresSettings  # noqa: E402
from sketchcolor_cli.engines.diffusion.hires import (  # noqa: E402
    blend_weights,
    blended_prediction,
    delivery_canvas,
    latent_tiles,
    refine_latents,
    tile_starts,
)

SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


@pytest.mark.parametrize("length,tile,overlap", [(136, 64, 16), (240, 96, 16), (64, 64, 8), (40, 64, 8), (129, 32, 12)])
def test_tiles_cover_the_latent_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    shared = [a + size - b for a, b in zip(starts, starts[1:])]
    assert all(s >= overlap for s in shared), shared


@pytest.mark.parametrize("height,width,tile,overlap", [(136, 240, 64, 16), (64, 64, 64, 8), (50, 130, 32, 12)])
def test_blending_weights_sum_to_one_everywhere(height, width, tile, overlap):
    boxes = latent_tiles(height, width, tile, overlap)
    weights = blend_weights(boxes, height, width, overlap)
    total = torch.zeros(height, width)
    for box, weight in zip(boxes, weights):
        assert (weight > 0).all()
        total[box.slices] += weight
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    if len(boxes) > 1:  # a tile fades out towards its neighbour: its inner edge counts less
        first = weights[0]
        assert first[0, 0] == pytest.approx(1.0) and first[-1, -1] < 0.5


def test_a_constant_prediction_blends_to_the_same_constant():
    latents = torch.randn(1, 4, 50, 130)
    boxes = latent_tiles(50, 130, 32, 12)
    out = blended_prediction(lambda box, x, t: torch.full_like(x, 0.37), latents, torch.tensor(500), boxes,
                             blend_weights(boxes, 50, 130, 12))
    assert torch.allclose(out, torch.full_like(out, 0.37), atol=1e-6)


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DPMSolverMultistepScheduler])
def test_tiling_is_seamless_for_a_denoiser_that_ignores_position(scheduler_class):
    """A denoiser that treats every latent pixel alike must give the same result tiled or whole:
    no seam, no tile grid, whatever the sampler (multistep samplers keep their history)."""

    def denoiser(box, x, t):
        return 0.3 * x + 0.05 * torch.tanh(x) - 0.01 * float(t) / 1000

    init = torch.randn(1, 4, 48, 80, generator=torch.Generator().manual_seed(1))
    results = []
    for tile in (16, 24, 80):  # 80: one tile covering everything
        scheduler = scheduler_class.from_config(SCHEDULER)
        results.append(refine_latents(scheduler, denoiser, init, steps=10, strength=0.5, tile=tile, overlap=6,
                                      generator=torch.Generator().manual_seed(3)))
    assert torch.allclose(results[0], results[2], atol=1e-5)
    assert torch.allclose(results[1], results[2], atol=1e-5)
    assert not torch.allclose(results[2], init, atol=1e-2)  # it did denoise


def test_strength_decides_how_many_steps_run():
    calls = []

    def denoiser(box, x, t):
        calls.append(int(t))
        return torch.zeros_like(x)

    refine_latents(DDIMScheduler.from_config(SCHEDULER), denoiser, torch.zeros(1, 4, 16, 16), steps=20, strength=0.3,
                   tile=16, overlap=4, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 6 and calls == sorted(calls, reverse=True) and calls[0] < 400


def test_delivery_sizes_fit_the_frame_with_its_aspect():
    hd = delivery_canvas((1080, 1920), HiresSettings(size="auto"))
    assert (hd.width, hd.height, hd.inner_w, hd.inner_h) == (1920, 1088, 1920, 1080)
    uhd = delivery_canvas((270, 480), HiresSettings(size="4k"))
    assert (uhd.inner_w, uhd.inner_h) == (3840, 2160)
    four_three = delivery_canvas((600, 800), HiresSettings(size="1920x1080"))
    assert (four_three.inner_w, four_three.inner_h) == (1440, 1080)
    assert delivery_canvas((1080, 1920), HiresSettings(size="2k")).inner_w == 1920  # 2048x1080 box


def test_bad_hires_settings_name_the_field():
    with pytest.raises(ValidationError, match="hires size '8k'"):
        DiffusionSettings.model_validate({"hires": {"size": "8k"}})
    with pytest.raises(ValidationError, match="overlap 256 must be smaller than the tile 256"):
        HiresSettings(size="4k", tile=256, overlap=256)
    assert not DiffusionSettings().hires.enabled


# ---- with a tiny switch model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from diffusion_tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny_hires"))


@pytest.fixture
def one_thread():
    """One torch thread: on a shared machine, OpenMP threads waiting on each other make a tiny
    model many times slower; the results are the same."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def frame_item(cut, frame: int = 2):
    from sketchcolor_cli.runner.cut import RunRequest, plan_cut
    from sketchcolor_cli.runner.inputs import CutInputs

    plan = plan_cut(RunRequest(target=cut, frames=str(frame)))
    return CutInputs(plan.cut).work_item(plan.units[0], None)


def test_the_pass_is_deterministic_keeps_the_lines_and_changes_the_colour(small_cut, tiny_model, one_thread):
    from sketchcolor_cli.engines.diffusion.runtime import SwitchRuntime

    # 320 px: 2 x 2 tiles of 256 px; the VAE in tiles of 192 px.
    hires = {"size": "320x320", "tile": 256, "overlap": 64, "vae_tile": 192, "strength": 0.5}
    settings = DiffusionSettings(model=str(tiny_model["checkpoint"]), clip=str(tiny_model["clip"]),
                                 config=str(tiny_model["config"]), steps=2, resolution=256, reference_guidance=1.0,
                                 hires=hires)
    runtime = SwitchRuntime.load(settings)
    item = frame_item(small_cut)
    first, second = (runtime.colorize([item], settings)[0] for _ in range(2))
    plain = runtime.colorize([item], settings.model_copy(update={"hires": HiresSettings()}))[0]
    assert "hires" not in plain.stats
    assert np.array_equal(first.color, second.color) and np.array_equal(first.shade, second.shade)
    assert first.stats["hires"]["size"] == [320, 320]
    ink = item.line_art[:, :, :3].max(axis=2) == 0
    assert ink.sum() > 100 and np.array_equal(first.color[ink], item.line_art[ink])
    changed = np.abs(first.fill.astype(np.int64) - plain.fill.astype(np.int64)).max(axis=2) > 257 * 4
    assert changed.mean() > 0.2, changed.mean()


@pytest.mark.slow
def test_run_end_to_end_at_1920x1080(tmp_path, tiny_model, monkeypatch):
    """The pass at 1080p through `sketchcolor run` (tiny model, one denoising step of tiles)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned worker: see `one_thread`
    from typer.testing import CliRunner

    from sketchcolor_cli.cli import app
    from sketchcolor_cli.frames.images import read_rgba16
    from sketchcolor_cli.synthetic.cut import make_cut

    cut = tmp_path / "hd"
    make_cut(cut, frames=1, size=(1920, 1080), seed=2, hint_lines=True, gaps=1, key_frames=())
    manifest = yaml.safe_load((cut / "cut.yaml").read_text())
    manifest["engine"] = {"name": "diffusion", "diffusion": {
        "model": str(tiny_model["checkpoint"]), "clip": str(tiny_model["clip"]), "config": str(tiny_model["config"]),
        "steps": 2, "resolution": 256, "reference_guidance": 1.0,
        "hires": {"size": "1080p", "strength": 0.5, "tile": 512, "overlap": 64, "vae_tile": 512}}}
    manifest["outputs"].update(contact_sheet=False, flipbook=False, layers=["color", "shade"])
    (cut / "cut.yaml").write_text(yaml.safe_dump(manifest))
    result = CliRunner().invoke(app, ["run", str(cut), "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    line_art = read_rgba16(cut / "line" / "0001.png")
    color = read_rgba16(tmp_path / "out" / "color" / "walk.0001.png")
    assert color.shape == (1080, 1920, 4)
    ink = line_art[:, :, :3].max(axis=2) == 0
    assert np.array_equal(color[ink], line_art[ink])
    assert (color[:, :, 3] == FULL).all()
    (record,) = [json.loads(line) for line in (tmp_path / "out" / "logs" / "frames.jsonl").read_text().splitlines()]
    assert record["stats"]["hires"]["size"] == [1920, 1088]
