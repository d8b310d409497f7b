"""Finished cuts -> a training set, and the check of one (no torch here).

A training sample is one frame of a finished cut: its line art and its final colour at one of
the model's training sizes (an aspect bucket), the union of its characters' masks, and a few
references the paired branch may see: model sheets of the frame's characters or OTHER frames of
the cut in which one of them appears, never the frame itself nor its close neighbours (which are
nearly the target: the model would learn to copy shapes, not colours).

Layout of a dataset folder::

    DATASET/dataset.json                 schema version, buckets, shards, counts, held-out keys
    DATASET/shards/train-00000.tar       WebDataset-style: files sharing a key are one sample
    DATASET/shards/holdout-00000.tar     fixed held-out samples (validation images)

Each sample ``KEY`` is ``KEY.line.png`` (RGB, paper white), ``KEY.color.png`` (RGB over white),
``KEY.mask.png`` (grey, 255 = character), ``KEY.refN.png`` and ``KEY.refNmask.png`` (the stored
references and their foreground masks) and ``KEY.json`` (where it came from, its bucket, all its
valid references). The whole folder is written beside the target and renamed into place, so a
killed build leaves no half dataset.

Masks come from the manifests (``characters[].masks``). Cuts without masks can take the
automatic masks that ``sketchcolor masks`` wrote (``--masks auto``, read from ``masks.auto``), or
the whole frame counts as foreground, as the diffusion engine does at inference.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np

from sketchcolor_cli.errors import Problem
from sketchcolor_cli.plan import computed_mask_path

DATASET_SCHEMA_VERSION = 1
MANIFEST_NAME = "dataset.json"
SHARDS_DIR = "shards"
# Members of one sample; the extension is everything after the key's first dot (WebDataset rule).
REQUIRED_MEMBERS = ("line.png", "color.png", "mask.png", "json")

# Published training sizes: switch (SD2.1) at 512 px, xl at 1024^2 area from 736x1312 to 1312x736.
XL_BUCKETS = [(1024, 1024), (1056, 992), (992, 1056), (1088, 960), (960, 1088), (1120, 928), (928, 1120),
              (1152, 896), (896, 1152), (1184, 864), (864, 1184), (1216, 832), (832, 1216), (1248, 800),
              (800, 1248), (1280, 768), (768, 1280), (1312, 736), (736, 1312)]


# -- buckets and placement ------------------------------------------------------------------


def aspect_buckets(resolution: int, step: int = 64, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(width, height) sizes, multiples of `step`, of about resolution^2 pixels, from square to
    `max_ratio`: 512 -> 512x512, 576x448, 448x576, 640x384, ... (SD-style aspect buckets)."""
    area = resolution * resolution
    buckets = {(resolution, resolution)}
    width = resolution + step
    while True:
        height = int(area / width) // step * step
        if height < step or width / height > max_ratio:
            break
        buckets.add((width, height))
        buckets.add((height, width))
        width += step
    return sorted(buckets, key=lambda wh: (abs(np.log(wh[0] / wh[1])), -wh[0]))


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    aspect = np.log(width / height)
    return min(buckets, key=lambda wh: abs(np.log(wh[0] / wh[1]) - aspect))


@dataclass(frozen=True)
class Placement:
    """How a frame sits in its bucket: scaled to fit, centred, the rest padded (as inference pads)."""

    width: int
    height: int
    left: int
    top: int
    inner_w: int
    inner_h: int

    @classmethod
    def fit(cls, width: int, height: int, bucket: tuple[int, int]) -> "Placement":
        bw, bh = bucket
        scale = min(bw / width, bh / height)
        inner_w, inner_h = max(1, round(width * scale)), max(1, round(height * scale))
        return cls(bw, bh, (bw - inner_w) // 2, (bh - inner_h) // 2, inner_w, inner_h)

    def place(self, image: np.ndarray, fill: float, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        resized = cv2.resize(image, (self.inner_w, self.inner_h), interpolation=interpolation)
        if resized.ndim == 2 and image.ndim == 3:
            resized = resized[:, :, None]
        out = np.full((self.height, self.width) + image.shape[2:], fill, dtype=np.float32)
        out[self.top : self.top + self.inner_h, self.left : self.left + self.inner_w] = resized
        return out


def over_white(image: np.ndarray) -> np.ndarray:
    """H x W x 4 uint16 straight alpha -> H x W x 3 float32 in [0, 1] over white paper."""
    rgba = image.astype(np.float32) / 65535.0
    alpha = rgba[:, :, 3:4]
    return rgba[:, :, :3] * alpha + (1.0 - alpha)


def foreground_of_reference(image: np.ndarray, dilate_px: int = 11) -> np.ndarray:
    """The reference's foreground (H x W float32 0/1) exactly as the engine computes it at
    inference (`engines.diffusion.imaging.reference_mask`), so training sees what inference does."""
    from sketchcolor_cli.engines.diffusion.imaging import reference_mask

    return reference_mask(image, dilate_px)[0]


def _png(array: np.ndarray) -> bytes:
    """float [0, 1] H x W (x 3 RGB) -> 8-bit PNG bytes."""
    pixels = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if pixels.ndim == 3:
        pixels = pixels[:, :, ::-1]  # OpenCV writes BGR
    ok, data = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def decode_png(data: bytes, what: str) -> np.ndarray:
    """PNG bytes -> float32 [0, 1], H x W x 3 RGB or H x W grey."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError(f"{what}: not a readable PNG")
    if pixels.ndim == 3:
        pixels = pixels[:, :, :3][:, :, ::-1]
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    return np.ascontiguousarray(pixels, dtype=np.float32) / scale


# -- what a cut offers --------------------------------------------------------------------


@dataclass
class FramePair:
    cut: str
    frame: int
    line: Path
    color: Path
    masks: dict[str, Path]  # character -> mask file
    characters: tuple[str, ...]
    computed_mask: Path | None = None  # where `sketchcolor masks` writes this frame's foreground

    @property
    def key(self) -> str:
        return sample_key(self.cut, self.frame)


@dataclass
class SheetRef:
    character: str
    image: Path


def sample_key(cut: str, frame: int) -> str:
    # WebDataset keys end at the first dot; keep them to letters, digits, '-' and '_'.
    return re.sub(r"[^A-Za-z0-9_-]", "_", cut) + f"-{frame:06d}"


@dataclass
class CutPairs:
    name: str
    manifest: Path
    pairs: list[FramePair]
    sheets: list[SheetRef]
    problems: list[Problem] = field(default_factory=list)


def collect_pairs(target: Path, color: str | None = None) -> CutPairs:
    """The frames of one cut that have both line art and a final colour version.

    The colour frames are the manifest's ``keys.source`` unless `color` (a pattern relative to the
    cut folder, e.g. 'truth/color/####.png') is given."""
    from sketchcolor_cli.frames.sequence import SequenceError, find_sequence, sequence_path
    from sketchcolor_cli.frames.spec import parse_frame_spec
    from sketchcolor_cli.manifest.resolve import load_cut

    cut = load_cut(target)
    manifest = cut.manifest
    problems: list[Problem] = []
    line_sequence = find_sequence(manifest.frames.source, cut.cut_dir)
    pattern = color or (manifest.keys.source if manifest.keys else None)
    if pattern is None:
        problems.append(Problem(
            "the cut names no final colour frames", file=cut.manifest_path, field="keys",
            hint="add `keys: {source: color/####.png}` to the manifest, or pass --color 'color/####.png'"))
        return CutPairs(cut.name, cut.manifest_path, [], [], problems)
    try:
        colour_sequence = find_sequence(pattern, cut.cut_dir)
    except SequenceError as error:
        problems.append(Problem(str(error), file=cut.manifest_path, field="keys.source",
                                hint="point it (or --color) at the finished colour frames"))
        return CutPairs(cut.name, cut.manifest_path, [], [], problems)
    appears = {c.name: (set(parse_frame_spec(c.frames)) if c.frames else None) for c in manifest.characters}
    frames = sorted(set(parse_frame_spec(manifest.frames.range))) if manifest.frames.range else sorted(line_sequence.frames)
    pairs = []
    for frame in frames:
        line = line_sequence.frames.get(frame)
        colour = colour_sequence.frames.get(frame)
        if line is None or colour is None:
            missing, have = ("line art", colour) if line is None else ("colour", line)
            problems.append(Problem(
                f"frame {frame}: {missing} is missing, so it is left out", file=have, warning=True,
                hint=f"add the {missing} frame, or ignore this if the frame was never finished"))
            continue
        present = tuple(n for n, where in appears.items() if where is None or frame in where)
        masks = {c.name: sequence_path(c.masks, cut.cut_dir, frame) for c in manifest.characters
                 if c.masks and c.name in present}
        pairs.append(FramePair(cut.name, frame, line, colour, masks, present, computed_mask_path(cut, frame)))
    sheets = [SheetRef(c.name, cut.path(r.image)) for c in manifest.characters for r in c.references]
    return CutPairs(cut.name, cut.manifest_path, pairs, sheets, problems)


def valid_references(pair: FramePair, cut: CutPairs, frame_gap: int) -> list[dict[str, Any]]:
    """Model sheets of the frame's characters, and other frames of the cut sharing a character
    at least `frame_gap` frames away; never the frame itself. A cut without characters offers
    its other frames."""
    refs: list[dict[str, Any]] = []
    characters = set(pair.characters)
    for sheet in cut.sheets:
        if sheet.character in characters:
            refs.append({"kind": "sheet", "character": sheet.character, "source": str(sheet.image)})
    for other in cut.pairs:
        if other.frame == pair.frame or abs(other.frame - pair.frame) < frame_gap:
            continue
        if characters and not characters & set(other.characters):
            continue
        refs.append({"kind": "frame", "key": other.key, "frame": other.frame, "source": str(other.color)})
    return refs


# -- alignment of line and colour -----------------------------------------------------------


def ink_map(line_rgb: np.ndarray) -> np.ndarray:
    """Darkness of the line art (1 - luminance), float32."""
    return 1.0 - line_rgb @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def alignment_offset(line_rgb: np.ndarray, colour_rgb: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, response): the shift that best lays the colour's edges on the line art's ink, by
    phase correlation. A finished frame drawn on its line art gives (0, 0)."""
    ink = ink_map(line_rgb)
    grey = colour_rgb @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    edges = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    # The colour's own dark lines and its region edges both sit on the ink.
    colour_lines = np.maximum(1.0 - grey, np.clip(edges, 0, 1))
    window = cv2.createHanningWindow(ink.shape[::-1], cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(ink.astype(np.float32), colour_lines.astype(np.float32), window)
    return float(dx), float(dy), float(response)


MAX_SHIFT_PX = 1.5


def check_pair(line: np.ndarray, colour: np.ndarray, line_path: Path, colour_path: Path) -> Problem | None:
    """A problem when the colour frame does not lie on its line art (size or position)."""
    if line.shape[:2] != colour.shape[:2]:
        return Problem(
            f"colour is {colour.shape[1]}x{colour.shape[0]} but its line art {line_path.name} is "
            f"{line.shape[1]}x{line.shape[0]}", file=colour_path,
            hint="export the colour at the line art's size (same canvas), or fix the pairing")
    small = Placement.fit(line.shape[1], line.shape[0], (256, 256))
    dx, dy, response = alignment_offset(small.place(over_white(line), 1.0), small.place(over_white(colour), 1.0))
    scale = max(line.shape[:2]) / 256
    if response > 0.05 and max(abs(dx), abs(dy)) * scale > MAX_SHIFT_PX * max(1.0, scale / 2):
        return Problem(
            f"colour is shifted by about ({round(dx * scale):+d}, {round(dy * scale):+d}) px from its line art "
            f"{line_path.name}", file=colour_path,
            hint="re-export the colour on the line art's canvas (same registration), or leave the frame out")
    return None


# -- building -------------------------------------------------------------------------------


@dataclass
class BuildOptions:
    resolution: int = 512  # bucket area resolution^2 (switch: 512, xl: 1024)
    step: int = 64  # bucket sides are multiples of this
    buckets: list[tuple[int, int]] | None = None  # explicit (w, h) list; default from resolution/step
    shard_samples: int = 256  # samples per shard
    holdout: int = 2  # fixed held-out samples for validation images
    reference_gap: int = 4  # frames closer than this to the target are not its references
    max_references: int = 4  # reference images stored per sample
    reference_size: int = 512  # long side of stored references
    masks: str = "manifest"  # manifest | auto | none
    seed: int = 0
    color: str | None = None  # colour pattern overriding the manifests' keys


@dataclass
class BuildReport:
    path: Path
    samples: int
    holdout: int
    buckets: dict[str, int]
    problems: list[Problem]
    skipped: int


def _read(path: Path) -> np.ndarray:
    from sketchcolor_cli.frames.images import read_rgba16

    return read_rgba16(path)


def _frame_mask(pair: FramePair, line: np.ndarray, colour: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """Union of the frame's character masks (H x W float32) and where it came from."""
    from sketchcolor_cli.runner.inputs import read_mask

    shape = line.shape[:2]
    if pair.masks and mode != "none":
        union = np.zeros(shape, dtype=bool)
        for name, path in pair.masks.items():
            union |= read_mask(path, shape, f"{name} mask")
        return union.astype(np.float32), "manifest"
    if mode == "auto":
        computed = pair.computed_mask
        if computed is None or not computed.is_file():
            raise ValueError(f"{pair.cut} frame {pair.frame}: no computed mask at {computed}; run "
                             f"`sketchcolor masks` on the cut first, or build with --masks none")
        return read_mask(computed, shape, "computed mask").astype(np.float32), "auto"
    return np.ones(shape, dtype=np.float32), "whole frame"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # same inputs, same bytes
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _reference_image(source: Path, size: int, cache: dict) -> tuple[bytes, bytes]:
    if source not in cache:
        image = _read(source)
        h, w = image.shape[:2]
        placement = Placement.fit(w, h, (max(1, round(w * size / max(h, w))), max(1, round(h * size / max(h, w)))))
        rgb = placement.place(over_white(image), 1.0)
        mask = placement.place(foreground_of_reference(image), 0.0, cv2.INTER_NEAREST)
        cache[source] = (_png(rgb), _png(mask))
    return cache[source]


def build_dataset(cuts: Iterable[Path], out: Path, options: BuildOptions | None = None, *,
                  overwrite: bool = False, progress: Callable[[str], None] | None = None) -> BuildReport:
    """Write the training set for `cuts` to `out` (see the module docstring)."""
    options = options or BuildOptions()
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another folder or pass --overwrite")
    buckets = [tuple(b) for b in options.buckets] if options.buckets else aspect_buckets(options.resolution, options.step)
    problems: list[Problem] = []
    gathered = [collect_pairs(Path(c), options.color) for c in cuts]
    for cut in gathered:
        problems += cut.problems
    names = Counter(c.name for c in gathered)
    twice = sorted(n for n, k in names.items() if k > 1)
    if twice:
        raise ValueError(f"two cuts share the name {', '.join(twice)}; give them distinct `name:` in their manifests")

    temp = out.parent / f".{out.name}.building-{os.getpid()}"
    if temp.exists():
        shutil.rmtree(temp)
    (temp / SHARDS_DIR).mkdir(parents=True)
    rng = random.Random(options.seed)
    all_pairs = [(cut, pair) for cut in gathered for pair in cut.pairs]
    # Held-out samples: spread over the cuts, fixed by the seed.
    order = list(range(len(all_pairs)))
    rng.shuffle(order)
    holdout = set(order[: min(options.holdout, max(0, len(all_pairs) - 1))])

    writers: dict[str, tuple[tarfile.TarFile | None, int, int]] = {}
    shards: list[dict[str, Any]] = []
    counts: Counter = Counter()
    holdout_keys: list[str] = []
    skipped = 0
    reference_cache: dict[Path, tuple[bytes, bytes]] = {}

    def writer(split: str) -> tarfile.TarFile:
        tar, index, used = writers.get(split, (None, 0, 0))
        if tar is not None and used >= options.shard_samples:
            tar.close()
            tar, index = None, index + 1
        if tar is None:
            name = f"{split}-{index:05d}.tar"
            tar = tarfile.open(temp / SHARDS_DIR / name, "w", format=tarfile.USTAR_FORMAT)
            shards.append({"name": f"{SHARDS_DIR}/{name}", "split": split, "samples": 0})
            used = 0
        writers[split] = (tar, index, used + 1)
        return tar

    for position, (cut, pair) in enumerate(all_pairs):
        if progress:
            progress(f"{pair.key} ({position + 1}/{len(all_pairs)})")
        try:
            line, colour = _read(pair.line), _read(pair.color)
        except Exception as error:  # noqa: BLE001 - an unreadable file is reported, the rest goes on
            problems.append(Problem(f"frame {pair.frame}: {error}", file=pair.color, hint="re-export the file, or leave the frame out"))
            skipped += 1
            continue
        problem = check_pair(line, colour, pair.line, pair.color)
        if problem is not None:
            problems.append(problem)
            skipped += 1
            continue
        try:
            mask, mask_source = _frame_mask(pair, line, colour, options.masks)
        except Exception as error:  # noqa: BLE001
            problems.append(Problem(f"frame {pair.frame}: {error}", file=next(iter(pair.masks.values()), pair.line),
                                    hint="fix or remove the mask, or build with --masks none"))
            skipped += 1
            continue
        references = valid_references(pair, cut, options.reference_gap)
        if not references:
            problems.append(Problem(
                f"frame {pair.frame} has no valid reference (no model sheet of its characters, no other frame "
                f"{options.reference_gap}+ frames away)", file=pair.color, warning=True,
                hint="add a model sheet to the character in the manifest, or lower --reference-gap"))
            skipped += 1
            continue
        h, w = line.shape[:2]
        bucket = nearest_bucket(w, h, buckets)
        placement = Placement.fit(w, h, bucket)
        stored = list(references)
        random.Random(f"{options.seed}:{pair.key}").shuffle(stored)
        stored = stored[: options.max_references]
        split = "holdout" if position in holdout else "train"
        tar = writer(split)
        _add(tar, f"{pair.key}.line.png", _png(placement.place(over_white(line), 1.0)))
        _add(tar, f"{pair.key}.color.png", _png(placement.place(over_white(colour), 1.0)))
        _add(tar, f"{pair.key}.mask.png", _png(placement.place(mask, 0.0, cv2.INTER_LINEAR)))
        for index, ref in enumerate(stored):
            image, ref_mask = _reference_image(Path(ref["source"]), options.reference_size, reference_cache)
            _add(tar, f"{pair.key}.ref{index}.png", image)
            _add(tar, f"{pair.key}.ref{index}mask.png", ref_mask)
        meta = {
            "key": pair.key, "cut": pair.cut, "frame": pair.frame, "size": list(bucket),
            "source": {"line": str(pair.line), "color": str(pair.color), "size": [w, h],
                       "masks": {n: str(p) for n, p in pair.masks.items()}},
            "mask_source": mask_source, "characters": list(pair.characters),
            "references": references, "stored_references": [r.get("key", r["source"]) for r in stored],
        }
        _add(tar, f"{pair.key}.json", json.dumps(meta, sort_keys=True).encode())
        shards[_last(shards, split)]["samples"] += 1
        counts[f"{bucket[0]}x{bucket[1]}"] += split == "train"
        if split == "holdout":
            holdout_keys.append(pair.key)
    for tar, _, _ in writers.values():
        if tar is not None:
            tar.close()
    for shard in shards:
        shard["sha256"] = _sha256(temp / shard["name"])
        shard["bytes"] = (temp / shard["name"]).stat().st_size
    trained = sum(s["samples"] for s in shards if s["split"] == "train")
    if trained == 0:  # nothing to train on: write nothing, the problems say why
        shutil.rmtree(temp, ignore_errors=True)
        return BuildReport(out, 0, len(holdout_keys), {}, problems, skipped)
    manifest = {
        "schema_version": DATASET_SCHEMA_VERSION,
        "kind": "sketchcolor-training-set",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "resolution": options.resolution,
        "buckets": [list(b) for b in buckets],
        "samples": {"train": trained, "holdout": len(holdout_keys)},
        "bucket_counts": dict(sorted(counts.items())),
        "holdout": holdout_keys,
        "shards": shards,
        "cuts": [{"name": c.name, "manifest": str(c.manifest), "pairs": len(c.pairs)} for c in gathered],
        "options": {k: v for k, v in options.__dict__.items() if k != "buckets"},
        "members": {"line": "line.png", "color": "color.png", "mask": "mask.png", "meta": "json",
                    "reference": "refN.png", "reference_mask": "refNmask.png"},
    }
    (temp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    _move_into_place(temp, out)
    return BuildReport(out, trained, len(holdout_keys), dict(counts), problems, skipped)


def _last(shards: list[dict], split: str) -> int:
    return max(i for i, s in enumerate(shards) if s["split"] == split)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _move_into_place(temp: Path, out: Path) -> None:
    """Rename the finished folder to `out`; an older dataset there goes only once the new one is in place."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(temp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- reading and checking -------------------------------------------------------------------


class DatasetError(ValueError):
    """The dataset folder cannot be used; the message names the file and what to do."""


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    file = path / MANIFEST_NAME if path.is_dir() else path
    if not file.is_file():
        raise DatasetError(f"{file}: no dataset manifest; build one with `sketchcolor dataset build CUT... -o {path}`")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{file}: unreadable ({error}); build the dataset again") from None
    version = data.get("schema_version")
    if version != DATASET_SCHEMA_VERSION:
        raise DatasetError(f"{file}: schema_version {version!r}; this sketchcolor reads {DATASET_SCHEMA_VERSION}. "
                           "Build the dataset again with this version")
    return data


@dataclass
class MemberIndex:
    """Where each member of each sample lies in the shards (for random access by offset)."""

    shard: Path
    members: dict[str, tuple[int, int]]  # extension -> (offset, size)


def index_shard(path: Path) -> dict[str, MemberIndex]:
    samples: dict[str, MemberIndex] = {}
    with tarfile.open(path, "r") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, _, extension = Path(info.name).name.partition(".")
            samples.setdefault(key, MemberIndex(path, {})).members[extension] = (info.offset_data, info.size)
    return samples


def read_member(index: MemberIndex, extension: str) -> bytes:
    offset, size = index.members[extension]
    with open(index.shard, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


@dataclass
class CheckReport:
    path: Path
    samples: dict[str, int]
    buckets: dict[str, int]
    cuts: dict[str, int]
    characters: dict[str, int]
    references: dict[str, int]  # stored references per sample: min / max
    bytes: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not any(not p.warning for p in self.problems)


def check_dataset(path: Path, *, decode: bool = True) -> CheckReport:
    """Every shard readable and matching its digest, every sample whole, images of the stated
    size, references never the target; counts per bucket, cut and character."""
    path = Path(path)
    manifest = read_manifest(path)
    problems: list[Problem] = []
    samples: Counter = Counter()
    buckets: Counter = Counter()
    cuts: Counter = Counter()
    characters: Counter = Counter()
    ref_counts: list[int] = []
    total_bytes = 0
    rebuild = f"build it again: sketchcolor dataset build ... -o {path} --overwrite"
    for shard in manifest.get("shards", []):
        file = path / shard["name"]
        if not file.is_file():
            problems.append(Problem("shard is missing", file=file, hint=f"copy it back, or {rebuild}"))
            continue
        total_bytes += file.stat().st_size
        if shard.get("sha256") and _sha256(file) != shard["sha256"]:
            problems.append(Problem("shard's contents differ from when it was written (truncated or altered)",
                                    file=file, hint=f"copy it again from the source, or {rebuild}"))
            continue
        try:
            index = index_shard(file)
        except (tarfile.TarError, OSError) as error:
            problems.append(Problem(f"shard is unreadable: {error}", file=file, hint=rebuild))
            continue
        if len(index) != shard.get("samples"):
            problems.append(Problem(f"shard holds {len(index)} samples, the manifest says {shard.get('samples')}",
                                    file=file, hint=rebuild))
        for key, member in sorted(index.items()):
            where = f"{file}:{key}"
            missing = [m for m in REQUIRED_MEMBERS if m not in member.members]
            if missing:
                problems.append(Problem(f"sample {key} lacks {', '.join(missing)}", file=file,
                                        hint=f"the pair was not written whole; {rebuild}"))
                continue
            try:
                meta = json.loads(read_member(member, "json"))
            except json.JSONDecodeError:
                problems.append(Problem(f"sample {key}: its json is unreadable", file=file, hint=rebuild))
                continue
            samples[shard["split"]] += 1
            size = tuple(meta.get("size", ()))
            buckets[f"{size[0]}x{size[1]}" if len(size) == 2 else "?"] += 1
            cuts[meta.get("cut", "?")] += 1
            for name in meta.get("characters", []):
                characters[name] += 1
            stored = sorted(int(m[3:-4]) for m in member.members if re.fullmatch(r"ref\d+\.png", m))
            ref_counts.append(len(stored))
            if not stored:
                problems.append(Problem(f"sample {key} has no stored reference", file=file,
                                        hint="add model sheets to the manifest, or lower --reference-gap, and build again"))
            own = meta.get("source", {}).get("color")
            if any(r.get("key") == key or r.get("source") == own for r in meta.get("references", [])):
                problems.append(Problem(f"sample {key} lists itself as a reference", file=file,
                                        hint=f"the target must never be its own reference; {rebuild}"))
            if not decode:
                continue
            decoded: dict[str, np.ndarray] = {}
            for extension, channels in (("line.png", 3), ("color.png", 3), ("mask.png", 1)):
                try:
                    image = decode_png(read_member(member, extension), f"{where}.{extension}")
                except ValueError as error:
                    problems.append(Problem(str(error), file=file, hint=rebuild))
                    continue
                got = (image.shape[1], image.shape[0])
                if got != size or (image.ndim == 3) != (channels == 3):
                    problems.append(Problem(f"sample {key}: {extension} is {got[0]}x{got[1]}, the sample says "
                                            f"{size[0]}x{size[1]}", file=file, hint=rebuild))
                    continue
                decoded[extension] = image
            if "line.png" in decoded and "color.png" in decoded:
                dx, dy, response = alignment_offset(decoded["line.png"], decoded["color.png"])
                if response > 0.05 and max(abs(dx), abs(dy)) > MAX_SHIFT_PX:
                    source = meta.get("source", {}).get("color", "its colour frame")
                    problems.append(Problem(
                        f"sample {key}: colour is shifted by about ({round(dx):+d}, {round(dy):+d}) px from its line art",
                        file=file, hint=f"fix {source} (same canvas as its line art) and build again"))
            for ref in stored:
                for extension in (f"ref{ref}.png", f"ref{ref}mask.png"):
                    if extension not in member.members:
                        problems.append(Problem(f"sample {key} lacks {extension}", file=file, hint=rebuild))
                        continue
                    try:
                        decode_png(read_member(member, extension), f"{where}.{extension}")
                    except ValueError as error:
                        problems.append(Problem(str(error), file=file, hint=rebuild))
    expected = manifest.get("samples", {})
    for split in ("train", "holdout"):
        if samples[split] != expected.get(split, 0):
            problems.append(Problem(f"{samples[split]} {split} samples found, the manifest says {expected.get(split, 0)}",
                                    file=path / MANIFEST_NAME, hint=rebuild))
    if samples["train"] == 0:
        problems.append(Problem("no training samples", file=path / MANIFEST_NAME,
                                hint="give cuts whose frames have a final colour version (keys or --color)"))
    if manifest.get("samples", {}).get("holdout", 0) == 0:
        problems.append(Problem("no held-out samples: training will make no validation images", warning=True,
                                file=path / MANIFEST_NAME, hint="build with --holdout 2"))
    refs = {"min": min(ref_counts), "max": max(ref_counts)} if ref_counts else {"min": 0, "max": 0}
    return CheckReport(path, dict(samples), dict(buckets), dict(cuts), dict(characters), refs, total_bytes, problems)
