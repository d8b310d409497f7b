"""The delivery features with the xl/xlv2 models: ``palette: snap`` (palette-exact fills, the
shade layer) and the hi-res pass (tiles at the delivery size: the size conditioning of the whole
canvas, the reference context encoded once, each tile its own sketch, mask and, for xlv2 with
low-level injection, its own ReferenceNet bank). Tiny random-weight models, in process, one torch
thread."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from sketchcolor_cli.engines.base import FULL  # noqa: E402
from sketchcolor_cli.engines.diffusion import DiffusionSettings  # noqa: E402
from sketchcolor_cli.engines.diffusion.delivery import HiresSettings  # noqa: E402
from sketchcolor_cli.engines.diffusion.hires import latent_tiles  # noqa: E402

from diffusion_xl_tiny import write_tiny_xl_model  # noqa: E402

BASE = {"steps": 1, "resolution": 256, "reference_guidance": 2.0, "sketch_guidance": 1.0}
# 192 px line art, base canvas 256 px, delivered at 384 px in 2 x 2 tiles of 256 px (xl) or 3 x 3
# of 192 px (xlv2: then a tile's latent differs from the base canvas's).
HIRES = {"size": "384x384", "tile": 256, "overlap": 64, "vae_tile": 192, "strength": 0.6}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # A shared machine: OpenMP threads waiting on each other make a tiny model many times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory):
    return write_tiny_xl_model(tmp_path_factory.mktemp("tiny_xl_delivery"), "xl")


@pytest.fixture(scope="module")
def tiny_xlv2(tmp_path_factory):
    return write_tiny_xl_model(tmp_path_factory.mktemp("tiny_xlv2_delivery"), "xlv2", seed=1)


def runtime_and_settings(model: dict, **values):
    from sketchcolor_cli.engines.diffusion.runtime_xl import XLRuntime

    settings = DiffusionSettings(model=str(model["checkpoint"]), clip=str(model["clip"]), tagger=str(model["tagger"]),
                                 config=str(model["config"]), **{**BASE, **values})
    return XLRuntime.load(settings), settings


def frame_item(cut, frame: int = 2):
    """The work item as the runner builds it (masks, the model sheet with its palette)."""
    from sketchcolor_cli.runner.cut import RunRequest, plan_cut
    from sketchcolor_cli.runner.inputs import CutInputs

    plan = plan_cut(RunRequest(target=cut, frames=str(frame)))
    return CutInputs(plan.cut).work_item(plan.units[0], None)


def ink_of(item) -> np.ndarray:
    return item.line_art[:, :, :3].max(axis=2) == 0


def test_xl_palette_snap_gives_palette_exact_fills_the_drawn_ink_and_a_shade_layer(small_cut, tiny_xl):
    runtime, settings = runtime_and_settings(tiny_xl, palette="snap", background_enhance=True)
    item = frame_item(small_cut)
    layers = runtime.colorize([item], settings)[0]
    palette = {tuple(int(h[i : i + 2], 16) * 257 for i in (1, 3, 5))
               for h in yaml.safe_load((small_cut / "refs" / "hero_palette.yaml").read_text()).values()}
    opaque = layers.fill[:, :, 3] == FULL
    assert opaque.mean() > 0.05
    assert {tuple(p) for p in np.unique(layers.fill[opaque][:, :3], axis=0).tolist()} <= palette
    assert set(np.unique(layers.fill[:, :, 3]).tolist()) <= {0, FULL}
    ink = ink_of(item)
    assert ink.sum() > 100 and np.array_equal(layers.color[ink], item.line_art[ink])
    # The shade is the model's own colour: shaded, far more colours than the palette.
    assert layers.shade is not None and layers.shade.shape == item.line_art.shape
    assert len(np.unique(layers.shade.reshape(-1, 4), axis=0)) > 4 * len(palette)
    assert layers.stats["palette"] == "snap" and layers.stats["regions"] > 5
    # palette: model keeps the generated colour as the fill, and the shade layer all the same.
    model_colour = runtime.colorize([item], settings.model_copy(update={"palette": "model"}))[0]
    assert np.array_equal(model_colour.fill, model_colour.shade)
    assert np.array_equal(model_colour.shade, layers.shade)  # the same generation under both


def test_xl_hires_keeps_size_and_ink_is_deterministic_and_changes_the_colour(small_cut, tiny_xl, monkeypatch):
    from sketchcolor_cli.engines.diffusion.pipelines.xl import XLPipeline

    runtime, settings = runtime_and_settings(tiny_xl, background_enhance=True, hires=HIRES)
    item = frame_item(small_cut)
    calls: list[dict] = []
    prepare = XLPipeline.prepare_xl_conditions

    def spy(self, sketch, references, **kwargs):
        calls.append({"shape": tuple(sketch.shape[-2:]), "mask": tuple(kwargs["sketch_mask"].shape[-2:]),
                      "size_value": kwargs.get("size_value"), "encoded": kwargs.get("encoded")})
        return prepare(self, sketch, references, **kwargs)

    monkeypatch.setattr(XLPipeline, "prepare_xl_conditions", spy)
    first = runtime.colorize([item], settings)[0]
    tile_calls, calls[:] = calls[1:], []  # the base generation's, then one per tile (kept for every step)
    second = runtime.colorize([item], settings)[0]
    plain = runtime.colorize([item], settings.model_copy(update={"hires": HiresSettings()}))[0]
    assert first.color.shape == item.line_art.shape == (192, 192, 4)
    assert first.stats["hires"]["size"] == [384, 384] and "hires" not in plain.stats
    ink = ink_of(item)
    assert ink.sum() > 100 and np.array_equal(first.color[ink], item.line_art[ink])
    assert np.array_equal(first.color, second.color) and np.array_equal(first.shade, second.shade)
    changed = np.abs(first.fill.astype(np.int64) - plain.fill.astype(np.int64)).max(axis=2) > 257 * 4
    assert changed.mean() > 0.2, changed.mean()
    # Per tile: the sketch and its mask at the tile's size; y: the whole delivery canvas's
    # sqrt(H * W); the references encoded once for all tiles.
    assert len(tile_calls) == len(latent_tiles(48, 48, 32, 8)) == 4
    assert all(c["shape"] == c["mask"] == (256, 256) for c in tile_calls)
    assert all(c["size_value"] == pytest.approx(384.0) for c in tile_calls)
    assert tile_calls[0]["encoded"] is not None and all(c["encoded"] is tile_calls[0]["encoded"] for c in tile_calls)


def test_xlv2_hires_with_low_level_injection_reads_a_bank_per_tile(small_cut, tiny_xlv2, monkeypatch):
    from sketchcolor_cli.engines.diffusion.pipelines.xl import XLPipeline

    hires = {**HIRES, "tile": 192}
    runtime, settings = runtime_and_settings(tiny_xlv2, reference_guidance=1.0, background_enhance=True, hires=hires)
    item = frame_item(small_cut)
    bank_inputs: list[tuple[int, ...]] = []
    banks = XLPipeline.reference_net_banks

    def spy(self, latents, sketch_mask, background_masks, y):
        bank_inputs.append((*latents.shape[-2:], *sketch_mask.shape[-2:], *background_masks[0].shape[-2:]))
        return banks(self, latents, sketch_mask, background_masks, y)

    monkeypatch.setattr(XLPipeline, "reference_net_banks", spy)
    layers = runtime.colorize([item], settings)[0]
    assert layers.stats["attention"] == "split (soft) + ReferenceNet bank + background LoRA"
    assert layers.stats["hires"]["bank"].startswith("per tile")
    # The base canvas's bank (32 latent px; the reference's mask at its own size, resized by the
    # ReferenceNet's inputs), then one per tile of 192 px (24 latent px, the mask cropped to it).
    assert bank_inputs[0][:4] == (32, 32, 256, 256)
    assert bank_inputs[1:] == [(24, 24, 192, 192, 192, 192)] * len(latent_tiles(48, 48, 24, 8))
    assert layers.color.shape == item.line_art.shape
    ink = ink_of(item)
    assert np.array_equal(layers.color[ink], item.line_art[ink])
    assert np.isfinite(layers.shade.astype(np.float64)).all() and len(np.unique(layers.shade.reshape(-1, 4), axis=0)) > 50


def test_a_tile_covering_the_canvas_reads_the_bank_upstream_computes_for_that_canvas(small_cut, tiny_xlv2, monkeypatch):
    """The per-tile bank's inputs are the whole-frame bank's inputs when the tile is the frame:
    the same background latent (same resize, same posterior sample), masks and crop ``y``."""
    from sketchcolor_cli.engines.diffusion.hires import LatentBox
    from sketchcolor_cli.engines.diffusion.imaging import reference_input, reference_mask
    from sketchcolor_cli.engines.diffusion.pipelines.xl import XLPipeline

    runtime, _ = runtime_and_settings(tiny_xlv2, background_enhance=True)
    pipeline = runtime.pipeline
    item = frame_item(small_cut)
    sheet = item.references[0].image
    references, masks = [[torch.from_numpy(reference_input(sheet))]], [[torch.from_numpy(reference_mask(sheet, 21))]]
    sketch = torch.rand(1, 3, 192, 192, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sketch_mask = (torch.rand(1, 1, 192, 192, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    seen: list[tuple[torch.Tensor, ...]] = []
    banks = XLPipeline.reference_net_banks

    def spy(self, latents, frame_mask, background_masks, y):
        seen.append((latents, frame_mask, background_masks[0], y))
        return banks(self, latents, frame_mask, background_masks, y)

    monkeypatch.setattr(XLPipeline, "reference_net_banks", spy)
    settings = dict(reference_strength=1.0, sketch_strength=1.0, sketch_level_strengths=None, fg_strength=1.0,
                    bg_strength=1.0, merge_scale=0.0, sketch_mask_threshold=0.05, reference_mask_threshold=0.5,
                    background_enhance=True, reference_padding=1.0)
    with torch.no_grad():
        pipeline.prepare_xl_conditions(sketch, references, sketch_mask=sketch_mask, reference_masks=masks,
                                       background=None, reference_guidance=1.0, sketch_guidance=1.0,
                                       generators=[torch.Generator().manual_seed(5)], **settings)
        predict = pipeline.tile_predictor(sketch, references, sketch_mask=sketch_mask, reference_masks=masks,
                                          reference_guidance=1.0, bank_seed=5, **settings)
        predict(LatentBox(0, 0, 24, 24), torch.zeros(1, 4, 24, 24), torch.tensor(500))
    (whole, tile) = seen
    assert torch.allclose(whole[0], tile[0], atol=1e-5)  # the background latent
    assert torch.equal(whole[1], tile[1]) and torch.equal(whole[3], tile[3])  # sketch mask, y
    resized = torch.nn.functional.interpolate(whole[2][None], size=(192, 192), mode="bicubic")[0]
    assert torch.allclose(resized, tile[2], atol=1e-5)  # the reference mask, at the frame's size
