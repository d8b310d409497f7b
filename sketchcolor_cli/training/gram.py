"""The Gram regularization of the dual-branch training (paper "Towards High-resolution and
Disentangled Reference-based Sketch Colorization"), as the upstream trainer computes it
(``refnet/gram_hook.py`` with ``configs/training/sdxl-base.yaml``):

* forward hooks on two transformer blocks, the 23rd and the 63rd ``BasicTransformerBlock`` with a
  cross-attention, counted from 1 in the order input blocks, middle block, output blocks (for
  SDXL: the 9th block of ``input_blocks.8`` and of ``output_blocks.2``, both at 1/32 of the
  image); hook type "ff": the block's own output, i.e. after its feed-forward and residual;
* per hooked block, tokens T [B, N, C] are L2-normalised over C (``apply_norm``; the config turns
  ``apply_dist_norm`` off) and G = T T^T, an N x N token-similarity matrix per sample;
* loss = sum over the hooked blocks of MSE(G_mismatched, stop_gradient(G_paired)), in float32,
  times the recipe's weight (upstream 1.0), from the recipe's start step on (upstream epoch 2).

The mismatched branch sees the same noisy latent and timestep as the paired one, with the
reference context rolled by one over the batch. Both branches run in ONE UNet call (the batch
doubled), so the hooks see [2B, N, C] and data-parallel wrappers see one forward per step.

Hooks keep a reference to the block output only while `armed`: gradient checkpointing re-runs
blocks during backward, and those re-runs must not record anything.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# Upstream's `gram_ids`: BasicTransformerBlocks with attn2, counted from 1 in LDM order.
PUBLISHED_BLOCK_NUMBERS = (23, 63)
# The same two blocks in a diffusers UNet2DConditionModel with the SDXL config.
SDXL_GRAM_BLOCKS = (
    "down_blocks.2.attentions.1.transformer_blocks.8",
    "up_blocks.0.attentions.2.transformer_blocks.8",
)
PUBLISHED_INDEX_IN_ATTENTION = 8  # the 9th block of its Transformer2DModel


def transformer_blocks_in_ldm_order(unet: nn.Module) -> list[str]:
    """Paths of the transformer blocks with a cross-attention in the order upstream counts them
    (encoder, middle, decoder), whatever order the module registered its children in."""
    from diffusers.models.attention import BasicTransformerBlock

    found = [(name, m) for name, m in unet.named_modules()
             if isinstance(m, BasicTransformerBlock) and getattr(m, "attn2", None) is not None]
    part = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    return [name for name, _ in sorted(found, key=lambda item: part.get(item[0].split(".")[0], 3))]


def published_gram_blocks(unet: nn.Module) -> list[str]:
    """The hooked blocks by upstream's rule (the 23rd and 63rd): only SDXL-shaped UNets have them."""
    ordered = transformer_blocks_in_ldm_order(unet)
    if len(ordered) < max(PUBLISHED_BLOCK_NUMBERS):
        raise ValueError(f"this UNet has {len(ordered)} transformer blocks; the published Gram blocks "
                         f"(numbers {PUBLISHED_BLOCK_NUMBERS}) exist only in SDXL-shaped UNets. "
                         "Name the blocks in the recipe (loss.gram_blocks) or use gram_blocks: auto")
    return [ordered[n - 1] for n in PUBLISHED_BLOCK_NUMBERS]


def default_gram_blocks(unet: nn.Module) -> list[str]:
    """The published blocks' rule generalised: at the lowest-resolution level with cross-attention,
    the last attention of the encoder and the last attention of the first decoder block at that
    level, transformer block 9 (or the last, when shallower). On an SDXL-shaped UNet this gives
    exactly the published blocks; on the switch (SD2.1) UNet it gives
    ``down_blocks.2.attentions.1.transformer_blocks.0`` and ``up_blocks.1.attentions.2.transformer_blocks.0``
    (our choice: the switch paper trains without Gram)."""
    down = [i for i, b in enumerate(unet.down_blocks) if getattr(b, "attentions", None)]
    up = [i for i, b in enumerate(unet.up_blocks) if getattr(b, "attentions", None)]
    if not down or not up:
        raise ValueError("this UNet has no cross-attention blocks to hook")
    d, u = down[-1], up[0]
    paths = []
    for kind, index in (("down_blocks", d), ("up_blocks", u)):
        block = getattr(unet, kind)[index]
        attention = len(block.attentions) - 1
        depth = len(block.attentions[attention].transformer_blocks)
        paths.append(f"{kind}.{index}.attentions.{attention}.transformer_blocks.{min(PUBLISHED_INDEX_IN_ATTENTION, depth - 1)}")
    return paths


def gram_matrix(tokens: torch.Tensor) -> torch.Tensor:
    """[B, N, C] -> [B, N, N]: tokens L2-normalised over channels, then T T^T (float32)."""
    normalised = F.normalize(tokens.float(), dim=-1)
    return normalised @ normalised.transpose(-1, -2)


def gram_loss(mismatched: list[torch.Tensor], paired: list[torch.Tensor]) -> torch.Tensor:
    """Sum over blocks of MSE(G_mismatched, stopgrad(G_paired)); inputs are block outputs [B, N, C]."""
    if len(mismatched) != len(paired) or not paired:
        raise ValueError(f"{len(mismatched)} mismatched and {len(paired)} paired block outputs")
    total = torch.zeros((), device=paired[0].device)
    for m, p in zip(mismatched, paired):
        total = total + F.mse_loss(gram_matrix(m), gram_matrix(p).detach())
    return total


class GramHooks:
    """Forward hooks recording the outputs of named blocks while armed."""

    def __init__(self, model: nn.Module, paths: list[str]):
        modules = dict(model.named_modules())
        missing = [p for p in paths if p not in modules]
        if missing:
            raise ValueError(f"no block {', '.join(missing)} in the UNet; Gram blocks must name transformer "
                             f"blocks, e.g. {transformer_blocks_in_ldm_order(model)[:2]}")
        self.paths = list(paths)
        self.outputs: dict[str, torch.Tensor] = {}
        self.armed = False
        self._handles = [modules[p].register_forward_hook(self._hook(p)) for p in self.paths]

    def _hook(self, path: str):
        def record(module: nn.Module, inputs, output) -> None:
            if self.armed:
                self.outputs[path] = output[0] if isinstance(output, tuple) else output
        return record

    @contextmanager
    def recording(self) -> Iterator[dict[str, torch.Tensor]]:
        self.outputs = {}
        self.armed = True
        try:
            yield self.outputs
        finally:
            self.armed = False

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def split_branch_loss(outputs: dict[str, torch.Tensor], paths: list[str], batch: int) -> torch.Tensor:
    """The Gram loss from outputs of a doubled batch: the first `batch` rows are the paired branch,
    the rest the mismatched one."""
    missing = [p for p in paths if p not in outputs]
    if missing:
        raise RuntimeError(f"the Gram hooks on {', '.join(missing)} recorded nothing (was the UNet called?)")
    paired = [outputs[p][:batch] for p in paths]
    mismatched = [outputs[p][batch:] for p in paths]
    return gram_loss(mismatched, paired)
