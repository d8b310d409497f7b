"""The parts of the published switch model, one file per part of the paper.

* `unet_switch`: the SD2.1 denoising UNet (diffusers `UNet2DConditionModel`) whose forward adds
  the sketch encoder's features where the published model adds them.
* `sketch_encoder`: the convolutional sketch encoder (upstream ``MultiEncoder``).
* `reference_encoder`: the OpenCLIP ViT-H/14 vision tower (transformers format) giving the 256
  local reference tokens.
* `threshold_embedder`: the scalar (mask threshold) embedder.
* `cluster_transformer`: the background token resampler (upstream ``ClusterTransformer``).
* `split_attention`: the split cross-attention processor with its foreground/background LoRAs.

The SDXL-based xl/xlv2 models (paper "Towards High-resolution and Disentangled Reference-based
Sketch Colorization"):

* `unet_xl`: the xl denoising UNet (sketch features after input blocks 0, 3, 6, 8; ``y``) and xlv2's
  ReferenceNet background encoder.
* `xl_sketch_encoder`: the multi-scale attention sketch encoder (``MultiScaleAttentionEncoder``).
* `xl_attention`: the mask-bias split cross-attention and the reference-attention (bank) processors.
* `xl_reference_encoder`, `wd_tagger`, `cluster_concat`: CLIP ViT-bigG beside the WD tagger
  (SwinV2, timm's keys without timm), fused by ``ClusterConcat``.

Everything here imports torch; the engine package imports this lazily.
"""

from .cluster_transformer import ClusterTransformer
from .sketch_encoder import SketchEncoder
from .split_attention import SplitAttention, SplitCrossAttnProcessor, SelfAttnProcessor, install_split_attention
from .threshold_embedder import ThresholdEmbedder
from .unet_switch import SwitchUNet2DConditionModel

__all__ = [
    "ClusterTransformer",
    "SelfAttnProcessor",
    "SketchEncoder",
    "SplitAttention",
    "SplitCrossAttnProcessor",
    "SwitchUNet2DConditionModel",
    "ThresholdEmbedder",
    "install_split_attention",
]
