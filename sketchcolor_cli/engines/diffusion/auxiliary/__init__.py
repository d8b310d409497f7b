"""Auxiliary models of the diffusion engines: automatic masks (ISNet, RMBG-2.0 / BiRefNet) and
the WD tagger, on onnxruntime (CUDA when present, else the CPU) beside their torch versions.

Nothing heavy is imported here: onnxruntime and torch load when a model is opened.

* `onnx_runtime.OnnxModel`: a session with clear errors (file missing, wrong inputs);
* `isnet.ISNetDIS`, `isnet.load_isnet`: the anime-segmentation network in torch, published keys;
* `masks.sketch_mask`, `masks.reference_mask`, `masks.open_mask_model`: the published pre- and
  post-processing around either runtime;
* `tagger.OnnxTagger`, `tagger.tagger_input`: the xl engine's WD tagger features on onnxruntime;
* `export.export_onnx`, `export.onnx_agreement`, `export.convert_to_onnx`, `export.AUX_KINDS`:
  torch modules to ONNX and the check that the two agree;
* `resample`: numpy resizes equal to torch's, so the onnxruntime path needs no torch.

The folder is named as the design names it; note that Windows cannot check out a folder named
``aux`` (a reserved device name).
"""

from .onnx_runtime import AuxModelError, OnnxModel

__all__ = ["AuxModelError", "OnnxModel"]
