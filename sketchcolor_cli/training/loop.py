"""The training loop: Hugging Face ``accelerate`` (one process per GPU under ``accelerate launch``,
or one process on the CPU), mixed precision, gradient accumulation and checkpointing, EMA,
checkpoints a killed run resumes from exactly, validation images, metrics.

Exact resume: a checkpoint is taken between optimizer steps and holds the trained weights, the
optimizer and LR-scheduler states, the EMA, the step, and every process's random generator (noise,
timesteps, thresholds and dropout come from it; the data order is a pure function of the seed and
the position, `data.BucketBatches`). A resumed run therefore continues with the very numbers the
uninterrupted run would have used. Checkpoints are written into a temporary folder and renamed
into place once whole; only the trained tensors go in (the frozen base is read from its files).

Layout of LOG_DIR: ``checkpoints/step-NNNNNNN/``, ``metrics.jsonl`` (one JSON object per logged
step), ``validation/step-NNNNNNN/KEY.png`` (line art | result | final colour), ``tensorboard/``
when TensorBoard is installed, and the output file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .data import BucketBatches, ShardSamples, StreamSampler, collate
from .lora import file_identity, save_trained_file
from .recipe import Recipe

CHECKPOINT_STATE = "state.json"  # written last: a checkpoint folder without it is not whole


@dataclass
class TrainResult:
    output: Path | None  # None when stopped early (--stop-after)
    steps: int
    resumed_from: int
    final_loss: float | None
    log_dir: Path


def _mixed_precision(name: str) -> str:
    if name == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[name]


def _checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / CHECKPOINT_STATE).is_file())


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)[:, :, ::-1]
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    cv2.imwrite(str(temp), pixels)
    os.replace(temp, path)


class MetricsLog:
    """metrics.jsonl (and TensorBoard when its package is importable)."""

    def __init__(self, folder: Path, resumed_step: int, enabled: bool):
        self.path = folder / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():  # a killed run may have logged past its last checkpoint: drop those lines
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resumed_step]
            temp = self.path.with_name(f".{self.path.name}.tmp")
            temp.write_text("".join(line + "\n" for line in kept))
            os.replace(temp, self.path)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=resumed_step + 1)
        except ImportError:
            self.writer = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """A Rich progress line (loss, steps/s, ETA) on a terminal; plain lines otherwise."""

    def __init__(self, total: int, start: int, enabled: bool, every: int):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.every = every
        self.total = total
        self.bar = None
        if enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self.bar = RichProgress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=self.console)
            self.task = self.bar.add_task("train", total=total, completed=start, status="")
            self.bar.start()

    def update(self, step: int, loss: float, rate: float, gram: float | None) -> None:
        if not self.enabled:
            return
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        status = f"loss {loss:.4f}" + (f" gram {gram:.4f}" if gram is not None else "") + f"  {rate:.2f} steps/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, status=status)
        elif step % self.every == 0 or step == self.total:
            self.console.print(f"step {step}/{self.total}  {status}  ETA {_duration(eta)}", highlight=False)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def build_model(recipe: Recipe):
    """The family's training module: `switch.SwitchTraining`, or `xl.XLTraining` for xl/xlv2 (its
    UNet a diffusers UNet2DConditionModel with the SDXL config, where `gram.published_gram_blocks`
    finds the published blocks). Both have the same surface: ``trainable_named()``, ``trainable_parameters()``,
    ``draw(batch, generator, losses)``, ``forward(batch, draws, use_gram) -> {diffusion_loss,
    gram_loss}``, ``export() -> (tensors, kind)``, ``sample_images(...)``, ``prediction`` and
    ``reference_size``."""
    if recipe.model.family == "switch":
        from .switch import SwitchTraining, load_base

        parts, config, prediction, clip = load_base(recipe.model)
        gram = recipe.loss.gram_blocks if recipe.loss.gram_start_step is not None and recipe.loss.gram_weight > 0 else None
        return SwitchTraining(parts, config, prediction, clip, train=recipe.train, lora_rank=recipe.lora.rank,
                              lora_alpha=recipe.lora.alpha, lora_attentions=tuple(recipe.lora.attentions),
                              gram_blocks=gram, gradient_checkpointing=recipe.gradient_checkpointing)
    if recipe.model.family in ("xl", "xlv2"):
        from .xl import XLTraining, load_xl_base

        parts, config, prediction, clip, tagger = load_xl_base(recipe.model)
        gram = recipe.loss.gram_blocks if recipe.loss.gram_start_step is not None and recipe.loss.gram_weight > 0 else None
        return XLTraining(parts, config, prediction, clip, tagger, train=recipe.train, lora_rank=recipe.lora.rank,
                          lora_alpha=recipe.lora.alpha, lora_attentions=tuple(recipe.lora.attentions),
                          gram_blocks=gram, gradient_checkpointing=recipe.gradient_checkpointing,
                          split=recipe.loss.xl_split)
    raise ValueError(f"model.family {recipe.model.family!r} has no trainer yet")


def train(recipe: Recipe, *, stop_after: int | None = None, progress: bool = True,
          on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Run (or resume) the recipe. `stop_after`: stop right after that optimizer step as if the
    process were killed (no output file; a checkpoint only where one is due)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from diffusers.training_utils import EMAModel

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        AcceleratorState._reset_state(True)  # several runs in one process (tests) with their own settings
    accumulation = recipe.schedule.gradient_accumulation
    accelerator = Accelerator(mixed_precision=_mixed_precision(recipe.precision),
                              gradient_accumulation_steps=accumulation, step_scheduler_with_optimizer=False,
                              cpu=not torch.cuda.is_available())
    log_dir = Path(recipe.log_dir)
    checkpoint_dir = log_dir / "checkpoints"
    main = accelerator.is_main_process
    device = accelerator.device

    torch.manual_seed(recipe.schedule.seed)  # fresh adapters start the same in every run and process
    model = build_model(recipe)
    parameters = model.trainable_parameters()
    if not parameters:
        raise ValueError(f"train: {recipe.train} leaves nothing to train in this model")
    optimizer = torch.optim.AdamW(parameters, lr=recipe.schedule.learning_rate, betas=recipe.schedule.betas,
                                  weight_decay=recipe.schedule.weight_decay)
    warmup = recipe.schedule.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    ema = EMAModel(parameters, decay=recipe.ema.decay) if recipe.ema.enabled else None
    generator = torch.Generator().manual_seed(recipe.schedule.seed * 1000 + accelerator.process_index)

    # -- resume ----------------------------------------------------------------------------
    step = 0
    found = _checkpoints(checkpoint_dir)
    _check_same_run(log_dir, recipe, bool(found), main)
    if found:
        latest = found[-1]
        state = json.loads((latest / CHECKPOINT_STATE).read_text())
        from safetensors.torch import load_file

        trained = load_file(str(latest / "trained.safetensors"))
        named = model.trainable_named()
        if set(trained) != set(named):
            raise ValueError(f"checkpoint {latest} holds other weights than this recipe trains; use another log_dir")
        with torch.no_grad():
            for key, parameter in named.items():
                parameter.copy_(trained[key])
        optimizer.load_state_dict(torch.load(latest / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(latest / "scheduler.pt", weights_only=True))
        if ema is not None:
            ema.load_state_dict(torch.load(latest / "ema.pt", weights_only=True))
        rng = latest / f"rng-{accelerator.process_index}.pt"
        if not rng.is_file():
            raise ValueError(f"checkpoint {latest} was written by fewer processes; resume with as many processes")
        generator.set_state(torch.load(rng, weights_only=True))
        step = int(state["step"])
    resumed_from = step

    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    if ema is not None:
        ema.to(device)

    samples = ShardSamples(Path(recipe.dataset), "train", seed=recipe.schedule.seed,
                           reference_size=unwrapped.reference_size)
    batches = BucketBatches([s.size for s in samples.samples], recipe.schedule.batch_size, recipe.schedule.seed,
                            accelerator.process_index, accelerator.num_processes)
    loader = torch.utils.data.DataLoader(samples, batch_sampler=StreamSampler(batches, step * accumulation),
                                         collate_fn=collate, num_workers=recipe.workers)
    holdout = ShardSamples(Path(recipe.dataset), "holdout", seed=recipe.validation.seed,
                           reference_size=unwrapped.reference_size)

    metrics = MetricsLog(log_dir, resumed_from, main)
    total = recipe.schedule.steps
    display = Progress(total, step, progress and main, every=max(1, min(50, total // 20)))
    if resumed_from:
        display.note(f"resuming from step {resumed_from} ({found[-1]})")
    gram_start = recipe.loss.gram_start_step
    gram_weight = recipe.loss.gram_weight
    stopped = False
    last_loss = None
    started, step_at_start = time.perf_counter(), step
    iterator = iter(loader)
    try:
        while step < total:
            sums = {"diffusion_loss": 0.0, "gram_loss": 0.0}
            use_gram = gram_start is not None and gram_weight > 0 and step >= gram_start
            for _ in range(accumulation):
                batch = next(iterator)
                with accelerator.accumulate(model):
                    tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
                    draws = unwrapped.draw(batch, generator, recipe.loss).to(device)
                    out = model(tensors, draws, use_gram)
                    loss = out["diffusion_loss"] + gram_weight * out["gram_loss"]
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and recipe.schedule.max_grad_norm:
                        accelerator.clip_grad_norm_(parameters, recipe.schedule.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                for key in sums:
                    sums[key] += float(accelerator.reduce(out[key].detach(), "mean")) / accumulation
            scheduler.step()
            if ema is not None:
                ema.step(parameters)
            step += 1
            elapsed = time.perf_counter() - started
            rate = (step - step_at_start) / elapsed if elapsed > 0 else 0.0
            last_loss = sums["diffusion_loss"] + (gram_weight * sums["gram_loss"] if use_gram else 0.0)
            record = {"step": step, "loss": last_loss, "diffusion_loss": sums["diffusion_loss"],
                      "lr": scheduler.get_last_lr()[0], "steps_per_s": rate, "elapsed_s": elapsed}
            if use_gram:
                record["gram_loss"] = sums["gram_loss"]
            metrics.write(record)
            display.update(step, last_loss, rate, sums["gram_loss"] if use_gram else None)
            if on_step is not None:
                on_step(step, record)
            if step % recipe.checkpoints.every == 0 and step < total:
                _save_checkpoint(accelerator, checkpoint_dir, step, unwrapped, optimizer, scheduler, ema, generator,
                                 recipe.checkpoints.keep)
            if main and holdout.samples and recipe.validation.samples and (step % recipe.validation.every == 0 or step == total):
                _validate(unwrapped, holdout, recipe, step, log_dir, ema, parameters, metrics, device)
            if stop_after is not None and step >= stop_after and step < total:
                stopped = True
                break
    finally:
        display.close()
        metrics.close()
    accelerator.wait_for_everyone()
    if stopped:
        return TrainResult(None, step, resumed_from, last_loss, log_dir)
    output = Path(recipe.output or log_dir / f"{recipe.name}.safetensors")
    if main:
        if ema is not None and recipe.ema.for_output:
            ema.copy_to(parameters)
        tensors, kind = unwrapped.export()
        save_trained_file(output, tensors, kind, {
            "base_model": file_identity(Path(recipe.model.checkpoint)), "family": recipe.model.family,
            "train": recipe.train, "steps": step, "prediction": unwrapped.prediction, "recipe": recipe.name,
            "ema": bool(ema is not None and recipe.ema.for_output),
        })
        display.note(f"wrote {output} ({kind}, {len(tensors)} tensors)")
    accelerator.wait_for_everyone()
    return TrainResult(output, step, resumed_from, last_loss, log_dir)


# What must not change between a run and its resumption (the data position and the draws depend on them).
RUN_DEFINING = ("train", "dataset", "schedule.batch_size", "schedule.gradient_accumulation", "schedule.seed",
                "model.checkpoint", "model.family")


def _check_same_run(log_dir: Path, recipe: Recipe, resuming: bool, main: bool) -> None:
    data = recipe.model_dump(mode="json")

    def pick(values: dict) -> dict:
        out = {}
        for dotted in RUN_DEFINING:
            node: Any = values
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            out[dotted] = node
        return out

    record = log_dir / "run.json"
    if resuming and record.is_file():
        before = pick(json.loads(record.read_text()))
        changed = [f"{k}: {before[k]!r} -> {v!r}" for k, v in pick(data).items() if before[k] != v]
        if changed:
            raise ValueError(f"{log_dir} holds checkpoints of a run with other settings ({'; '.join(changed)}); "
                             "resume with the same settings, or give this run another log_dir")
    elif main:
        log_dir.mkdir(parents=True, exist_ok=True)
        temp = record.with_name(".run.json.tmp")
        temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(temp, record)


def _save_checkpoint(accelerator, folder: Path, step: int, model, optimizer, scheduler, ema, generator, keep: int) -> None:
    from safetensors.torch import save_file

    final = folder / f"step-{step:07d}"
    temp = folder / f".step-{step:07d}.tmp"
    if accelerator.is_main_process:
        if temp.exists():
            shutil.rmtree(temp)
        temp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(generator.get_state(), temp / f"rng-{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        tensors = {k: p.detach().float().cpu().contiguous() for k, p in model.trainable_named().items()}
        save_file(tensors, str(temp / "trained.safetensors"))
        torch.save(optimizer.state_dict(), temp / "optimizer.pt")
        torch.save(scheduler.state_dict(), temp / "scheduler.pt")
        if ema is not None:
            torch.save(ema.state_dict(), temp / "ema.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temp / CHECKPOINT_STATE).write_text(json.dumps({"step": step, "processes": accelerator.num_processes}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(temp, final)
        for old in _checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _validate(model, holdout: ShardSamples, recipe: Recipe, step: int, log_dir: Path, ema, parameters, metrics, device) -> None:
    """Validation images and the held-out diffusion loss at fixed draws, with the EMA weights
    when they are what the output will hold."""
    use_ema = ema is not None and recipe.ema.for_output
    if use_ema:
        ema.store(parameters)
        ema.copy_to(parameters)
    try:
        generator = torch.Generator().manual_seed(recipe.validation.seed)
        fixed = recipe.loss.model_copy(update={"reference_dropout": 0.0, "sketch_dropout": 0.0})
        losses = []
        folder = log_dir / "validation" / f"step-{step:07d}"
        for index in range(min(recipe.validation.samples, len(holdout))):
            batch = collate([holdout[(index, 0)]])
            tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            with torch.no_grad():
                draws = model.draw(batch, generator, fixed).to(device)
                losses.append(float(model(tensors, draws, False)["diffusion_loss"]))
                image = model.sample_images(tensors, steps=recipe.validation.steps, sampler=recipe.validation.sampler,
                                            reference_guidance=recipe.validation.reference_guidance,
                                            seed=recipe.validation.seed)[0]
            row = [batch["line"][0], image.cpu(), batch["color"][0]]
            _write_png(folder / f"{batch['key'][0]}.png", np.concatenate([t.permute(1, 2, 0).numpy() for t in row], axis=1))
        if losses:
            metrics.write({"step": step, "val_loss": sum(losses) / len(losses)})
    finally:
        if use_ema:
            ema.restore(parameters)
