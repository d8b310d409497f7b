"""The auxiliary models (engines/diffusion/auxiliary): ISNet in torch with the published keys, its ONNX
export, the published mask pre- and post-processing on either runtime, and onnxruntime errors.

The upstream recipes are restated here in torch (F.interpolate, max_pool2d), independently of the
numpy code under test, and the stand-in RMBG/BiRefNet model is an ONNX graph made in the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import torch.nn.functional as F  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from sketchcolor_cli.cli import app  # noqa: E402
from sketchcolor_cli.engines.base import FULL  # noqa: E402
from sketchcolor_cli.engines.diffusion.auxiliary.export import (  # noqa: E402
    AUX_KINDS,
    AuxKind,
    convert_to_onnx,
    export_onnx,
    onnx_agreement,
    register_aux_kind,
)
from sketchcolor_cli.engines.diffusion.auxiliary.isnet import ISNetConfig, ISNetDIS, load_isnet  # noqa: E402
from sketchcolor_cli.engines.diffusion.auxiliary.masks import open_mask_model, reference_mask, sketch_mask  # noqa: E402
from sketchcolor_cli.engines.diffusion.auxiliary.onnx_runtime import AuxModelError, OnnxModel  # noqa: E402
from sketchcolor_cli.engines.diffusion.auxiliary.resample import max_pool, resize  # noqa: E402
from sketchcolor_cli.engines.diffusion.auxiliary.tagger import OnnxTagger  # noqa: E402

runner = CliRunner()
SIZE = 128  # the tiny models' input side (the published one is 1024)


def tiny_isnet(seed: int = 0) -> ISNetDIS:
    torch.manual_seed(seed)
    model = ISNetDIS(ISNetConfig.tiny(16))
    # Non-trivial BatchNorm statistics, so eval-mode normalisation is exercised by the export.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def isnet_files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("isnet")
    model = tiny_isnet()
    weights = folder / "tiny-isnet.safetensors"
    # Saved as the lightning module of anime-segmentation saves it (`net.` prefix).
    save_file({f"net.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    onnx_path, worst = convert_to_onnx("isnet", weights, folder / "tiny-isnet.onnx", size=SIZE)
    return {"model": model, "weights": weights, "onnx": onnx_path, "convert_difference": worst}


def drawing(height: int = 90, width: int = 150) -> np.ndarray:
    """A line-art-like frame: white paper, a dark ring, a transparent corner."""
    yy, xx = np.mgrid[:height, :width]
    ring = np.abs(np.hypot(yy - height / 2, xx - width / 2) - height / 4) < 2.5
    image = np.full((height, width, 4), FULL, dtype=np.uint16)
    image[ring, :3] = 3000
    image[: height // 5, : width // 5, 3] = 0
    return image


def white_paper_unit(image: np.ndarray) -> np.ndarray:
    rgba = image.astype(np.float32) / FULL
    return rgba[:, :, :3] * rgba[:, :, 3:] + (1 - rgba[:, :, 3:])


# ---- resampling: the numpy resizes are torch's ---------------------------------------------------


@pytest.mark.parametrize("mode,antialias,align_corners", [
    ("bicubic", False, False),  # ISNet
    ("bilinear", True, False),  # RMBG-2.0 / BiRefNet (torchvision's tensor resize)
    ("bilinear", False, False),
    ("bicubic", True, True),  # the WD tagger
])  # fmt: skip
@pytest.mark.parametrize("shape,size", [((37, 53), (64, 64)), ((301, 180), (64, 64)), ((64, 40), (211, 300))])
def test_resize_matches_torch(mode, antialias, align_corners, shape, size):
    image = np.random.default_rng(1).random(shape + (3,), dtype=np.float32)
    expected = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], size=size, mode=mode,
                             antialias=antialias, align_corners=align_corners)[0].permute(1, 2, 0).numpy()  # fmt: skip
    assert np.abs(resize(image, size, mode, antialias, align_corners) - expected).max() < 1e-4


def test_max_pool_matches_torch_max_pool_with_padding():
    mask = (np.random.default_rng(2).random((40, 70)) > 0.98).astype(np.float32)
    expected = F.max_pool2d(torch.from_numpy(mask)[None, None], 21, stride=1, padding=10)[0, 0].numpy()
    np.testing.assert_array_equal(max_pool(mask, 21), expected)


# ---- ISNet: published layout, strict loading -----------------------------------------------------


def test_published_isnet_has_the_anime_segmentation_keys():
    with torch.device("meta"):
        model = ISNetDIS()
    state = model.state_dict()
    # Counted from anime-segmentation's ISNetDIS (conv + BatchNorm per unit, 6 side heads).
    assert len(state) == 798
    shapes = {
        "conv_in.weight": (64, 3, 3, 3),
        "stage1.rebnconv7.conv_s1.weight": (32, 32, 3, 3),  # RSU7's bottom conv
        "stage5.rebnconv4.conv_s1.weight": (256, 256, 3, 3),  # RSU4F's dilation-8 conv
        "stage5d.rebnconvin.conv_s1.weight": (512, 1024, 3, 3),
        "stage1d.rebnconv1d.conv_s1.weight": (64, 32, 3, 3),
        "stage4d.rebnconv3d.bn_s1.running_var": (128,),
        "side6.weight": (1, 512, 3, 3),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert ISNetConfig.from_state_dict(state) == ISNetConfig()
    assert model.stage5.rebnconv4.conv_s1.dilation == (8, 8)
    assert model.stage1.rebnconv7.conv_s1.dilation == (2, 2)


def test_isnet_output_is_a_probability_at_the_input_size():
    with torch.no_grad():
        out = tiny_isnet()(torch.rand(2, 3, 96, 72))
    assert out.shape == (2, 1, 96, 72)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_load_isnet_is_strict_and_strips_the_lightning_prefix(isnet_files, tmp_path):
    loaded = load_isnet(isnet_files["weights"])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), isnet_files["model"](x))

    state = isnet_files["model"].state_dict()
    missing = {k: v for k, v in state.items() if k != "stage3.rebnconv2.bn_s1.weight"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(AuxModelError, match=r"missing.safetensors.*1 missing keys \(stage3\.rebnconv2\.bn_s1\.weight\)"):
        load_isnet(tmp_path / "missing.safetensors", field="masks.sketch_model")
    extra = dict(state, **{"side7.weight": torch.zeros(1)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(AuxModelError, match="1 unexpected keys"):
        load_isnet(tmp_path / "extra.safetensors")
    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(AuxModelError, match="not an ISNet"):
        load_isnet(tmp_path / "other.safetensors")


# ---- torch vs ONNX -------------------------------------------------------------------------------


def test_isnet_torch_and_onnx_agree(isnet_files):
    assert isnet_files["convert_difference"] < 1e-3
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))  # batch 2: dynamic axis
    assert onnx_agreement(isnet_files["model"], isnet_files["onnx"], (x,)) < 1e-3
    session = OnnxModel(isnet_files["onnx"], field="test")
    assert [i.name for i in session.inputs] == ["img"] and [o.name for o in session.outputs] == ["mask"]


def test_sketch_mask_follows_the_published_recipe_on_both_runtimes(isnet_files):
    image = drawing()
    torch_net = open_mask_model(isnet_files["weights"], field="masks.sketch_model")
    onnx_net = open_mask_model(isnet_files["onnx"], field="masks.sketch_model")
    assert onnx_net.size == (SIZE, SIZE)
    from_onnx = sketch_mask(onnx_net, image)

    # Upstream xl: white-paper sketch in [-1, 1], bicubic to the square size, ISNet (sigmoid
    # inside), bicubic back, clamped; no dilation.
    sketch = torch.from_numpy(white_paper_unit(image) * 2 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        probability = isnet_files["model"](F.interpolate(sketch, size=(SIZE, SIZE), mode="bicubic"))
    expected = F.interpolate(probability, size=image.shape[:2], mode="bicubic").clamp(0, 1)[0, 0].numpy()
    assert from_onnx.shape == image.shape[:2]
    assert np.abs(from_onnx - expected).max() < 1e-3
    # The torch runtime feeds 1024 (the published size) when the file does not fix one.
    with torch.no_grad():
        at_1024 = isnet_files["model"](F.interpolate(sketch, size=(1024, 1024), mode="bicubic"))
    expected_1024 = F.interpolate(at_1024, size=image.shape[:2], mode="bicubic").clamp(0, 1)[0, 0].numpy()
    assert np.abs(sketch_mask(torch_net, image) - expected_1024).max() < 1e-3


def test_padded_sketch_mask_is_the_mask_of_the_frame_on_square_paper(isnet_files):
    net = open_mask_model(isnet_files["onnx"], field="masks.sketch_model")
    image = drawing(60, 100)
    square = np.full((100, 100, 4), FULL, dtype=np.uint16)
    square[20:80] = image  # on white paper (the transparent corner reads as paper either way)
    np.testing.assert_allclose(sketch_mask(net, image, fit="pad"), sketch_mask(net, square)[20:80], atol=1e-6)
    assert np.abs(sketch_mask(net, image, fit="pad") - sketch_mask(net, image)).max() > 1e-3


def test_isnet_reference_mask_follows_the_published_crop_recipe(isnet_files):
    image = drawing(64, 128)  # long side 128 = the model size: the scale is exact
    got = reference_mask(open_mask_model(isnet_files["onnx"], field="masks.reference_model"), image, "isnet")
    # Upstream: letterbox on -1, inverted into [0, 1], ISNet, crop, bicubic back, clamp, max-pool
    # 21, then above 0.5.
    x = torch.from_numpy(white_paper_unit(image) * 2 - 1).permute(2, 0, 1)[None]
    canvas = -torch.ones(1, 3, SIZE, SIZE)
    canvas[:, :, 32:96, :] = x
    with torch.no_grad():
        out = isnet_files["model"](1 - (canvas + 1) / 2)[:, :, 32:96, :]
    soft = F.interpolate(out, size=(64, 128), mode="bicubic").clamp(0, 1)
    expected = (F.max_pool2d(soft, 21, stride=1, padding=10) > 0.5)[0, 0].numpy()
    assert got.dtype == bool and got.shape == (64, 128)
    assert (got != expected).mean() < 1e-3


def rmbg_stand_in(path: Path, size: int = 64, fixed: bool = True, probabilities: bool = False) -> Path:
    """An RMBG/BiRefNet-shaped ONNX graph: one image input, two outputs of which the last is the
    mask logits (a 1x1 conv, dark pixels foreground), as BiRefNet's list of predictions."""
    weight = np.array([[[[-3.0]], [[-3.0]], [[-3.0]]]], dtype=np.float32)
    bias = np.array([-1.0], dtype=np.float32)
    dims = [1, 3, size, size] if fixed else ["n", 3, "h", "w"]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["logits"]),
             helper.make_node("Relu", ["logits"], ["coarse"])]  # fmt: skip
    last = "logits"
    if probabilities:
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["probability"]))
        last = "probability"
    graph = helper.make_graph(
        nodes, "rmbg_stand_in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("coarse", TensorProto.FLOAT, None),
         helper.make_tensor_value_info(last, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("probabilities", [False, True])
def test_rmbg_reference_mask_follows_the_published_recipe(tmp_path, probabilities):
    path = rmbg_stand_in(tmp_path / "rmbg.onnx", probabilities=probabilities)
    image = drawing(100, 140)
    got = reference_mask(open_mask_model(path, field="masks.reference_model", family="rmbg"), image, "rmbg")
    # Upstream: [0, 1], antialiased bilinear to the square size, ImageNet mean/std, last output's
    # sigmoid, resized back, max-pool 21, then above 0.5.
    x = torch.from_numpy(white_paper_unit(image)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True)
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    probability = torch.sigmoid(F.conv2d(x, torch.full((1, 3, 1, 1), -3.0), torch.tensor([-1.0])))
    soft = F.interpolate(probability, size=(100, 140), mode="bilinear", antialias=True)
    expected = (F.max_pool2d(soft, 21, stride=1, padding=10) > 0.5)[0, 0].numpy()
    assert 0.05 < expected.mean() < 0.95  # the stand-in finds a real foreground
    assert (got != expected).mean() < 1e-3


def test_rmbg_onnx_with_dynamic_size_is_fed_1024(tmp_path):
    net = open_mask_model(rmbg_stand_in(tmp_path / "dyn.onnx", fixed=False), field="masks.reference_model", family="rmbg")
    seen = []
    original = net.model.run
    net.model.run = lambda feeds: seen.append(feeds["input"].shape) or original(feeds)
    reference_mask(net, drawing(30, 40), "rmbg")
    assert seen == [(1, 3, 1024, 1024)]


# ---- onnxruntime errors name the setting and the file ---------------------------------------------


def test_missing_and_unfit_model_files_are_clear_errors(tmp_path):
    with pytest.raises(AuxModelError, match=r"masks\.sketch_model: the model file .*nowhere\.onnx does not exist"):
        open_mask_model(tmp_path / "nowhere.onnx", field="masks.sketch_model")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(AuxModelError, match=r"masks\.sketch_model: onnxruntime cannot load .*junk\.onnx"):
        OnnxModel(tmp_path / "junk.onnx", field="masks.sketch_model")
    with pytest.raises(AuxModelError, match="RMBG-2.0 and BiRefNet run as ONNX exports only"):
        (tmp_path / "rmbg.safetensors").write_bytes(b"x")
        open_mask_model(tmp_path / "rmbg.safetensors", field="masks.reference_model", family="rmbg")

    # Four channels in: not an RGB image model.
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "four.onnx"))
    with pytest.raises(AuxModelError, match=r"four\.onnx input 'x' is \[1, 4, 8, 8\]; an image model takes N x 3"):
        open_mask_model(tmp_path / "four.onnx", field="masks.sketch_model")
    # Right input, wrong output: four channels out is not a mask.
    graph = helper.make_graph([helper.make_node("Concat", ["x", "x"], ["y"], axis=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "six.onnx"))
    net = open_mask_model(tmp_path / "six.onnx", field="masks.sketch_model")
    with pytest.raises(AuxModelError, match=r"six\.onnx gives \[1, 6, 8, 8\].*N x 1 x H x W"):
        sketch_mask(net, drawing(20, 20))


# ---- export of any module (the tagger's, later) ---------------------------------------------------


class TaggerStandIn(torch.nn.Module):
    """Shaped like the xl tagger's feature output: N x 3 x 448 x 448 -> N x 196 x 1024 (final norm)."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 16, 32, stride=32)
        self.expand = torch.nn.Linear(16, 1024)
        self.norm = torch.nn.LayerNorm(1024)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.norm(self.expand(tokens))


def load_tagger_stand_in(path: Path, field: str = "checkpoint") -> TaggerStandIn:
    from safetensors.torch import load_file

    module = TaggerStandIn()
    module.load_state_dict(load_file(str(path)))
    return module.eval()


def test_any_module_exports_and_a_registered_kind_converts_from_the_cli(tmp_path):
    torch.manual_seed(3)
    module = TaggerStandIn().eval()
    x = torch.rand(1, 3, 448, 448) * 2 - 1
    path = export_onnx(module, (x,), tmp_path / "direct.onnx", input_names=["image"], output_names=["features"],
                       dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}})  # fmt: skip
    assert onnx_agreement(module, path, (torch.rand(3, 3, 448, 448),)) < 1e-3

    weights = tmp_path / "tagger.safetensors"
    save_file(module.state_dict(), str(weights))
    saved = AUX_KINDS["tagger"]
    register_aux_kind(AuxKind(saved.name, saved.description, load_tagger_stand_in, saved.input_names,
                              saved.output_names, saved.size, saved.dynamic_axes))  # fmt: skip
    try:
        result = runner.invoke(app, ["convert", str(weights), str(tmp_path / "tagger.onnx"), "--to", "onnx",
                                     "--kind", "tagger"], catch_exceptions=False)  # fmt: skip
    finally:
        register_aux_kind(saved)
    assert result.exit_code == 0, result.output
    session = OnnxModel(tmp_path / "tagger.onnx", field="test")
    (features,) = session.run({"image": x.numpy()})
    assert features.shape == (1, 196, 1024)
    with torch.no_grad():
        assert np.abs(features - module(x).numpy()).max() < 1e-3


def words(text: str) -> str:
    """CLI output with Rich's line wrapping undone."""
    return " ".join(text.split())


def test_tagger_features_on_onnxruntime_follow_the_published_input(tmp_path):
    torch.manual_seed(4)
    module = TaggerStandIn().eval()
    path = export_onnx(module, (torch.rand(1, 3, 448, 448),), tmp_path / "tagger.onnx", input_names=["image"],
                       output_names=["features"], dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}})  # fmt: skip
    image = drawing(300, 520)
    got = OnnxTagger(path, field="engine.xl.tagger").features(image)
    # Upstream xl: RGB in [-1, 1], stretched to 448 (bicubic, align_corners, antialias), BGR.
    x = torch.from_numpy(white_paper_unit(image) * 2 - 1).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(448, 448), mode="bicubic", align_corners=True, antialias=True).flip(1)
    with torch.no_grad():
        expected = module(x)[0].numpy()
    assert got.shape == (196, 1024)
    assert np.abs(got - expected).max() < 1e-3

    # The tagger's published ONNX gives tag probabilities: refused with what to do instead.
    class Tags(torch.nn.Module):
        def forward(self, x):
            return torch.sigmoid(x.mean(dim=(2, 3)).repeat(1, 3))

    tags = export_onnx(Tags(), (torch.rand(1, 3, 448, 448),), tmp_path / "tags.onnx", input_names=["input"],
                       output_names=["probs"])  # fmt: skip
    with pytest.raises(AuxModelError, match=r"tags\.onnx outputs \[1, 9\].*--kind tagger"):
        OnnxTagger(tags, field="engine.xl.tagger")


def test_convert_to_onnx_errors(tmp_path, isnet_files):
    result = runner.invoke(app, ["convert", str(isnet_files["weights"]), str(tmp_path / "x.onnx"), "--to", "onnx"])
    assert result.exit_code == 2 and "--to onnx needs --kind" in words(result.output)
    result = runner.invoke(app, ["convert", str(tmp_path / "absent.safetensors"), str(tmp_path / "x.onnx"),
                                 "--to", "onnx", "--kind", "isnet"])  # fmt: skip
    assert result.exit_code == 2 and "absent.safetensors does not exist" in words(result.output)
    result = runner.invoke(app, ["convert", str(isnet_files["weights"]), str(tmp_path / "x.bin"), "--to", "onnx",
                                 "--kind", "isnet"])  # fmt: skip
    assert result.exit_code == 2 and "ending in .onnx" in words(result.output)
    assert not (tmp_path / "x.onnx").exists()
