"""What every model family's training module shares: the step's random draws, the VAE latents,
the trained tensors and their export. A family (`switch.SwitchTraining`, `xl.XLTraining`) adds
its parts, its conditioning and its forward (the losses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .gram import GramHooks, default_gram_blocks, published_gram_blocks
from .lora import inject_lora, lora_state


@dataclass
class Draws:
    """Everything random about one training step, drawn by the loop."""

    noise: torch.Tensor  # [B, 4, h, w]
    latent_noise: torch.Tensor  # [B, 4, h, w], samples the VAE posterior
    timesteps: torch.Tensor  # [B] long
    sketch_threshold: torch.Tensor  # [B]
    reference_threshold: torch.Tensor  # [B]
    drop_reference: torch.Tensor  # [B] bool
    drop_sketch: torch.Tensor  # [B] bool

    def to(self, device: torch.device) -> "Draws":
        return Draws(**{k: v.to(device) for k, v in self.__dict__.items()})


class DiffusionTraining(nn.Module):
    """Needs ``self.vae``, ``self.unet``, ``self.noise_scheduler``, ``self.train_mode``,
    ``_parts()`` and ``trainable_named()`` from the family, which calls `_prepare_training` once
    its parts are set."""

    vae: Any
    unet: Any
    noise_scheduler: Any
    train_mode: str

    def _parts(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def trainable_named(self) -> dict[str, nn.Parameter]:
        raise NotImplementedError

    def _prepare_training(
        self, train: str, lora_rank: int, lora_alpha: float | None, lora_attentions: tuple[str, ...],
        gram_blocks: Any, gradient_checkpointing: bool,
    ) -> None:
        """Freeze every part, add the LoRAs (`train: lora`), unfreeze what trains, and hook the
        Gram regularization's blocks ("published", "auto" or a list of module paths)."""
        for module in self._parts().values():
            module.requires_grad_(False)
        if train == "lora":
            self.lora_targets = inject_lora(self.unet, lora_rank, lora_alpha, lora_attentions)
        for parameter in self.trainable_parameters():
            parameter.requires_grad_(True)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.gram_paths: list[str] = []
        self.gram_hooks: GramHooks | None = None
        if gram_blocks is not None:
            if gram_blocks == "published":
                self.gram_paths = published_gram_blocks(self.unet)
            elif gram_blocks == "auto":
                self.gram_paths = default_gram_blocks(self.unet)
            else:
                self.gram_paths = list(gram_blocks)
            self.gram_hooks = GramHooks(self.unet, self.gram_paths)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.trainable_named().values())

    def export(self) -> tuple[dict[str, torch.Tensor], str]:
        """(tensors, kind) for the output file."""
        if self.train_mode == "lora":
            return lora_state("unet", self.unet), "lora"
        return {k: p.detach().float().cpu().contiguous() for k, p in self.trainable_named().items()}, "weights"

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return self.vae.config.latent_channels, height // factor, width // factor

    @torch.no_grad()
    def encode_latents(self, color: torch.Tensor, latent_noise: torch.Tensor) -> torch.Tensor:
        """Colour [B, 3, H, W] in [0, 1] -> scaled latents, a sample of the VAE posterior."""
        posterior = self.vae.encode(color.to(self.vae.dtype) * 2 - 1).latent_dist
        sample = posterior.mean + posterior.std * latent_noise.to(posterior.mean.dtype)
        return sample * self.vae.config.scaling_factor

    def draw(self, batch: dict[str, torch.Tensor], generator: torch.Generator, losses: Any) -> Draws:
        """The step's random draws from the loop's generator (on the CPU, moved by the caller)."""
        size, _, height, width = batch["line"].shape
        shape = (size,) + self.latent_shape(height, width)
        span = losses.threshold_max - losses.threshold_min
        return Draws(
            noise=torch.randn(shape, generator=generator),
            latent_noise=torch.randn(shape, generator=generator),
            timesteps=torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (size,), generator=generator),
            sketch_threshold=losses.threshold_min + span * torch.rand(size, generator=generator),
            reference_threshold=losses.threshold_min + span * torch.rand(size, generator=generator),
            drop_reference=torch.rand(size, generator=generator) < losses.reference_dropout,
            drop_sketch=torch.rand(size, generator=generator) < losses.sketch_dropout,
        )
