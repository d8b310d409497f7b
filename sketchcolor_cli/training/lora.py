"""Low-rank adapters for the LoRA-only variant, and the files training writes.

Two kinds of safetensors file, told apart by the metadata key ``sketchcolor:kind``:

* ``lora``: plain low-rank updates of linear layers, ``PART.MODULE.lora_down.weight`` [r, in],
  ``PART.MODULE.lora_up.weight`` [out, r] and ``PART.MODULE.alpha`` (a scalar);
  ``W <- W + strength * (alpha / r) * up @ down``.
* ``weights``: trained tensors of the model itself (the switch model's fg/bg LoRA weights,
  threshold embedder and ClusterTransformer; or whole parts: xl's unet, sketch_encoder, proj),
  ``PART.KEY`` as in the part's state dict; ``W <- W_base + strength * (W_file - W_base)`` (strength 1: the trained weights).

Metadata also names the base model (``sketchcolor:base_model``, its file size) and the family.
Applying a file checks every key and shape first and names those that do not fit, so a file made
for another base model is refused before anything changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

KIND_KEY = "sketchcolor:kind"
SHOWN = 12


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * up(down(x))``; `up` starts at zero (the model is unchanged at step 0)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base
        self.rank = rank
        self.alpha = float(alpha if alpha is not None else rank)
        self.lora_down = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device)
        nn.init.normal_(self.lora_down.weight, std=1.0 / rank)  # upstream's LoRA init
        nn.init.zeros_(self.lora_up.weight)

    @property
    def weight(self) -> torch.Tensor:  # code that reads `to_q.weight.dtype` keeps working
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.lora_up(self.lora_down(x.to(self.lora_down.weight.dtype)))
        return self.base(x) + update.to(x.dtype) * (self.alpha / self.rank)


LORA_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


def inject_lora(unet: nn.Module, rank: int, alpha: float | None = None,
                attentions: Iterable[str] = ("attn1", "attn2")) -> list[str]:
    """Wrap the q/k/v/out projections of the UNet's attentions in `LoRALinear`; returns their paths."""
    wanted = tuple(attentions)
    found = [(name, module) for name, module in unet.named_modules() if name.rsplit(".", 1)[-1] in wanted]
    targets = []
    for name, module in found:
        for projection in LORA_PROJECTIONS:
            try:
                layer = module.get_submodule(projection)
            except AttributeError:
                continue
            if not isinstance(layer, nn.Linear):
                continue
            parent_path, _, leaf = projection.rpartition(".")
            parent = module.get_submodule(parent_path) if parent_path else module
            wrapped = LoRALinear(layer, rank, alpha)
            if leaf.isdigit():
                parent[int(leaf)] = wrapped
            else:
                setattr(parent, leaf, wrapped)
            targets.append(f"{name}.{projection}")
    if not targets:
        raise ValueError(f"no {'/'.join(wanted)} projections found in the UNet")
    return targets


def lora_state(part: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA tensors of one part, under file keys."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"{part}.{name}.lora_down.weight"] = module.lora_down.weight.detach().float().cpu().contiguous()
            out[f"{part}.{name}.lora_up.weight"] = module.lora_up.weight.detach().float().cpu().contiguous()
            out[f"{part}.{name}.alpha"] = torch.tensor(module.alpha)
    return out


def save_trained_file(path: Path, tensors: dict[str, torch.Tensor], kind: str, metadata: dict[str, Any]) -> Path:
    """Write atomically (temp file, then rename) with `kind` and `metadata` (values made strings)."""
    from safetensors.torch import save_file

    if kind not in ("lora", "weights"):
        raise ValueError(f"kind must be lora or weights, not {kind!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {KIND_KEY: kind, **{f"sketchcolor:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}}
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(temp), metadata=meta)
    os.replace(temp, path)
    return path


class TrainedFileMismatch(ValueError):
    """A LoRA or weights file that does not fit the base model; names the keys and shapes."""

    def __init__(self, path: Path, base: str, missing: list[str], mismatched: list[str]):
        self.missing, self.mismatched = missing, mismatched
        parts = []
        for label, keys in (("not in the base model", missing), ("of another shape", mismatched)):
            if keys:
                shown = ", ".join(keys[:SHOWN]) + (f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        trained_for = f" It was trained on {base}." if base else ""
        super().__init__(f"{path} does not fit this base model ({'; '.join(parts)}).{trained_for} "
                         "Use the base model it was trained on (engine.diffusion.model), or train one for this model")


def read_trained_file(path: Path) -> tuple[dict[str, torch.Tensor], str, dict[str, str]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} not found; give the .safetensors file `sketchcolor train` wrote")
    if path.suffix != ".safetensors":
        raise ValueError(f"LoRA file {path}: only .safetensors files are loaded")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    kind = metadata.get(KIND_KEY)
    if kind not in ("lora", "weights"):
        raise ValueError(f"{path} is not a file written by `sketchcolor train` (no {KIND_KEY} metadata)")
    return tensors, kind, metadata


def _lora_updates(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        for suffix in (".lora_down.weight", ".lora_up.weight", ".alpha"):
            if key.endswith(suffix):
                modules.setdefault(key[: -len(suffix)], {})[suffix] = tensor
                break
        else:
            raise ValueError(f"unexpected key {key} in a LoRA file")
    updates = {}
    for name, found in modules.items():
        if ".lora_down.weight" not in found or ".lora_up.weight" not in found:
            raise ValueError(f"LoRA module {name}: needs both lora_down and lora_up")
        down, up = found[".lora_down.weight"], found[".lora_up.weight"]
        alpha = float(found[".alpha"]) if ".alpha" in found else float(down.shape[0])
        updates[name] = (down, up, alpha)
    return updates


def _target(parts: dict[str, nn.Module], dotted: str) -> tuple[str, str]:
    part, _, rest = dotted.partition(".")
    return part, rest


def apply_trained_file(parts: dict[str, nn.Module], path: Path, strength: float = 1.0) -> dict[str, Any]:
    """Change `parts` in place by the file at `path`; returns {kind, tensors, base_model}. Every key
    and shape is checked before any weight changes."""
    path = Path(path)
    tensors, kind, metadata = read_trained_file(path)
    base = metadata.get("sketchcolor:base_model", "")
    missing: list[str] = []
    mismatched: list[str] = []
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []  # (parameter, new value)
    if kind == "lora":
        for name, (down, up, alpha) in sorted(_lora_updates(tensors).items()):
            part, module_path = _target(parts, name)
            module = None
            if part in parts:
                try:
                    module = parts[part].get_submodule(module_path)
                except AttributeError:
                    module = None
            if isinstance(module, LoRALinear):
                module = module.base
            if not isinstance(module, nn.Linear):
                missing.append(f"{name} (a linear layer)")
                continue
            expected = (module.out_features, module.in_features)
            if up.shape[0] != expected[0] or down.shape[1] != expected[1] or up.shape[1] != down.shape[0]:
                mismatched.append(f"{name}: up {tuple(up.shape)} @ down {tuple(down.shape)} vs layer {expected[::-1]} -> {expected[0]}")
                continue
            delta = (up.float() @ down.float()) * (alpha / down.shape[0]) * strength
            plan.append((module.weight, module.weight.detach().float() + delta.to(module.weight.device)))
    else:
        for key, value in sorted(tensors.items()):
            part, inner = _target(parts, key)
            state = dict(parts[part].named_parameters()) if part in parts else {}
            buffers = dict(parts[part].named_buffers()) if part in parts else {}
            target = state.get(inner, buffers.get(inner))
            if target is None:
                missing.append(key)
                continue
            if tuple(target.shape) != tuple(value.shape):
                mismatched.append(f"{key} {tuple(value.shape)} (model: {tuple(target.shape)})")
                continue
            current = target.detach().float()
            plan.append((target, current + strength * (value.float().to(current.device) - current)))
    if missing or mismatched:
        raise TrainedFileMismatch(path, base, missing, mismatched)
    with torch.no_grad():
        for target, value in plan:
            target.copy_(value.to(target.dtype))
    return {"kind": kind, "tensors": len(plan), "base_model": base}


def merge_into_folder(folder: Path, lora: Path, strength: float = 1.0) -> dict[str, Any]:
    """Merge a LoRA/weights file into a folder written by `sketchcolor convert` (rewrites the
    changed parts' weight files atomically, records the merge in ``merged_loras.json``)."""
    from safetensors.torch import save_file

    from sketchcolor_cli.engines.diffusion.loading.convert import WEIGHTS_NAME, load_converted
    from sketchcolor_cli.engines.diffusion.loading.xl_convert import is_xl_folder, load_xl_converted

    folder = Path(folder)
    if is_xl_folder(folder):
        # xl/xlv2: the folder's UNet is stored without xlv2's background LoRA (merged at load), so
        # the trained file merges into the same weights it was trained on.
        parts, _, _ = load_xl_converted(folder)
    else:
        parts, _ = load_converted(folder)
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in parts.items()}
    result = apply_trained_file(parts, lora, strength)
    for name, module in parts.items():
        state = module.state_dict()
        if all(torch.equal(state[k], before[name][k]) for k in state):
            continue
        target = folder / name / WEIGHTS_NAME
        temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        save_file({k: v.contiguous() for k, v in state.items()}, str(temp), metadata={"format": "pt"})
        os.replace(temp, target)
    record = folder / "merged_loras.json"
    merged = json.loads(record.read_text()) if record.is_file() else []
    merged.append({"file": str(lora), "strength": strength, "kind": result["kind"], "base_model": result["base_model"]})
    record.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    return result


def file_identity(path: Path) -> str:
    """How the metadata names a base model: file name and size (hashing GBs would cost minutes)."""
    path = Path(path)
    if path.is_dir():
        return f"{path.name}/ (converted folder)"
    return f"{path.name} ({path.stat().st_size} bytes)"
