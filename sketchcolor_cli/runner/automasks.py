"""`sketchcolor masks`: a cut's masks computed once, written as images artists can inspect and
correct, never over the artists' own mask files.

Per frame: the sketch mask of the published method (ISNet on the line art, see
`engines.diffusion.auxiliary.masks`), thresholded at `masks.threshold` (upstream's sketch-mask
threshold, 0.05) and written white-on-black where `masks.auto` points. It is one foreground per
frame, not one per character: telling characters apart stays the artists' job (their masks in the
manifest). `run` gives the computed foreground to the one character of a frame that has no mask of
its own, or shares it among several such characters minus what the artists' masks claim.

Per reference sheet, when `masks.reference_model` is set: the reference mask (ISNet, or an
RMBG-2.0 / BiRefNet ONNX export), dilated and binarised as upstream, written where
`masks.references` points.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sketchcolor_cli.errors import ManifestError, Problem
from sketchcolor_cli.frames.sequence import find_sequence, sequence_path
from sketchcolor_cli.manifest.resolve import ResolvedCut
from sketchcolor_cli.plan import cut_frames, reference_mask_path
from sketchcolor_cli.runner.progress import Reporter


@dataclass
class MasksSummary:
    cut: str
    sketch_model: str = ""
    reference_model: str = ""
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # the file exists (run with --overwrite to redo)
    failed: dict[int, str] = field(default_factory=dict)
    references_written: list[str] = field(default_factory=list)
    references_skipped: list[str] = field(default_factory=list)
    references_failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.references_failed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = {str(k): v for k, v in self.failed.items()}
        return data


def _model_problem(message: str, field_name: str, hint: str) -> ManifestError:
    return ManifestError([Problem(message, field=field_name, hint=hint)])


def artists_files(cut: ResolvedCut, frames: list[int]) -> dict[Path, str]:
    """Every file the manifest names as an input (masks, line art, sheets), with the field naming it."""
    manifest = cut.manifest
    named: dict[Path, str] = {}
    patterns = [(f"characters.{i}.masks", c.masks) for i, c in enumerate(manifest.characters) if c.masks]
    if manifest.background.masks:
        patterns.append(("background.masks", manifest.background.masks))
    for field_name, pattern in patterns:
        for frame in frames:
            named[sequence_path(pattern, cut.cut_dir, frame).resolve()] = field_name
    for index, character in enumerate(manifest.characters):
        for number, sheet in enumerate(character.references):
            for path in (sheet.image, sheet.line):
                if path:
                    named[cut.path(path).resolve()] = f"characters.{index}.references.{number}"
    return named


def _refuse_artists_files(targets: dict[Path, str], protected: dict[Path, str], field_name: str) -> None:
    """Stop before anything is written when a target is a file the manifest names as an input."""
    for target, what in targets.items():
        owner = protected.get(target.resolve())
        if owner is not None:
            raise ManifestError([Problem(
                f"the {what} would be written to {target}, which `{owner}` names as an input; computed masks "
                "never replace the artists' files", field=field_name,
                hint=f"point {field_name} at a folder of its own, e.g. masks/auto/")])  # fmt: skip


def compute_masks(
    cut: ResolvedCut,
    reporter: Reporter,
    *,
    selection: list[int] | None = None,
    overwrite: bool = False,
    references: bool = True,
) -> MasksSummary:
    """Compute and write the cut's masks (those whose files exist are kept unless `overwrite`)."""
    from sketchcolor_cli.engines.diffusion.auxiliary.masks import describe_net, mask_to_image, open_mask_model, sketch_mask
    from sketchcolor_cli.frames.images import ImageError, read_rgba16, write_image

    settings = cut.manifest.masks
    started = time.perf_counter()
    summary = MasksSummary(cut=cut.name)
    if not settings.sketch_model:
        raise _model_problem("masks.sketch_model is not set", "masks.sketch_model",
                             "name a local ISNet file (.onnx or .safetensors) under `masks:` in the manifest "
                             "or a preset, or give --sketch-model")  # fmt: skip
    sequence = find_sequence(cut.manifest.frames.source, cut.cut_dir)
    frames = cut_frames(cut, sequence)
    if selection is not None:
        wanted = set(selection)
        frames = [f for f in frames if f in wanted]
    protected = artists_files(cut, frames)
    protected.update({path.resolve(): "frames.source" for path in sequence.frames.values()})
    targets = {frame: sequence_path(settings.auto, cut.cut_dir, frame) for frame in frames}
    reference_targets: dict[Path, tuple[str, int, Path]] = {}
    if references and settings.reference_model:
        for character in cut.manifest.characters:
            for number, sheet in enumerate(character.references, start=1):
                target = reference_mask_path(cut, character.name, number)
                reference_targets[target] = (character.name, number, cut.path(sheet.image))
    _refuse_artists_files({t: f"mask of frame {f}" for f, t in targets.items()}, protected, "masks.auto")
    _refuse_artists_files({t: f"mask of reference {c}.{n}" for t, (c, n, _) in reference_targets.items()}, protected,
                          "masks.references")  # fmt: skip

    # Both models open before anything is written, so a bad file stops the command at once.
    net = open_mask_model(cut.path(settings.sketch_model), field="masks.sketch_model", family="isnet",
                          device=settings.device)  # fmt: skip
    summary.sketch_model = describe_net(net)
    reference_net = _reference_net(cut, summary) if reference_targets else None
    reporter.start(f"{cut.name} masks", len(targets))
    try:
        for frame, target in targets.items():
            if target.is_file() and not overwrite:
                summary.skipped.append(frame)
                reporter.frame(frame, "skipped", "exists")
                continue
            line_path = sequence.frames.get(frame)
            if line_path is None:
                summary.failed[frame] = f"no line art for frame {frame}"
                reporter.frame(frame, "failed", summary.failed[frame])
                continue
            try:
                soft = sketch_mask(net, read_rgba16(line_path, what=f"line art of frame {frame}"), settings.sketch_fit)
                write_image(target, mask_to_image(soft > settings.threshold), bit_depth=8,
                            metadata={"frame": frame, "mask_model": Path(settings.sketch_model).name,
                                      "mask_threshold": settings.threshold})  # fmt: skip
            except (ImageError, OSError, ValueError) as error:
                summary.failed[frame] = str(error)
                reporter.frame(frame, "failed", str(error))
                continue
            summary.written.append(frame)
            reporter.frame(frame, "done")
        if reference_net is not None:
            _reference_masks(cut, reference_net, reference_targets, summary, overwrite, reporter)
    finally:
        reporter.finish()
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _reference_family(model_path: Path, configured: str) -> str:
    if configured != "auto":
        return configured
    return "isnet" if model_path.suffix.lower() == ".safetensors" else "rmbg"


def _reference_net(cut: ResolvedCut, summary: MasksSummary) -> Any:
    from sketchcolor_cli.engines.diffusion.auxiliary.masks import describe_net, open_mask_model

    settings = cut.manifest.masks
    model_path = cut.path(settings.reference_model)
    family = _reference_family(model_path, settings.reference_model_type)
    net = open_mask_model(model_path, field="masks.reference_model", family=family, device=settings.device)
    summary.reference_model = f"{describe_net(net)}, {family}"
    return net


def _reference_masks(cut, net, targets, summary: MasksSummary, overwrite: bool, reporter: Reporter) -> None:
    from sketchcolor_cli.engines.diffusion.auxiliary.masks import mask_to_image, reference_mask
    from sketchcolor_cli.frames.images import ImageError, read_rgba16, write_image

    settings = cut.manifest.masks
    model_path = cut.path(settings.reference_model)
    family = _reference_family(model_path, settings.reference_model_type)
    for target, (character, number, image_path) in targets.items():
        label = f"{character}.{number}"
        if target.is_file() and not overwrite:
            summary.references_skipped.append(label)
            continue
        try:
            mask = reference_mask(net, read_rgba16(image_path, what=f"reference {label}"), family)
            write_image(target, mask_to_image(mask), bit_depth=8,
                        metadata={"reference": str(image_path), "mask_model": model_path.name})  # fmt: skip
        except (ImageError, OSError, ValueError) as error:
            reporter.message(f"reference {label}: {error}")
            summary.references_failed[label] = str(error)
            continue
        summary.references_written.append(label)
