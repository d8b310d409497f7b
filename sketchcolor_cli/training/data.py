"""The shards as torch data, in an order a resumed run reproduces exactly.

`ShardSamples` reads samples by offset from the tar shards (any worker, any process can read any
sample; shards on a shared disk serve every GPU). `BucketBatches` is the order: per epoch a
permutation seeded by (seed, epoch), samples grouped by bucket into full batches (one size per
batch), batches shuffled, then dealt to the processes in turn. Position n of the stream is a pure
function of (seed, n), so resuming is skipping n batches without reading them. Which stored
reference a sample shows is drawn from (seed, epoch, key): the data never touches the global RNG.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch

from .dataset import MemberIndex, decode_png, index_shard, read_manifest, read_member


@dataclass(frozen=True)
class SampleInfo:
    key: str
    size: tuple[int, int]  # (width, height)
    index: MemberIndex
    references: int


class ShardSamples(torch.utils.data.Dataset):
    """Samples of one split ('train' or 'holdout'); item (i, epoch) -> dict of float tensors."""

    def __init__(self, folder: Path, split: str = "train", seed: int = 0, reference_size: int = 224):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.seed = seed
        self.reference_size = reference_size
        infos: list[SampleInfo] = []
        for shard in self.manifest["shards"]:
            if shard["split"] != split:
                continue
            for key, member in sorted(index_shard(self.folder / shard["name"]).items()):
                meta = json.loads(read_member(member, "json"))
                refs = sum(1 for m in member.members if m.startswith("ref") and m.endswith(".png") and "mask" not in m)
                infos.append(SampleInfo(key, tuple(meta["size"]), member, refs))
        self.samples = infos

    def __len__(self) -> int:
        return len(self.samples)

    def keys(self) -> list[str]:
        return [s.key for s in self.samples]

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, torch.Tensor | str]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        info = self.samples[index]
        read = lambda ext: decode_png(read_member(info.index, ext), f"{info.index.shard}:{info.key}.{ext}")  # noqa: E731
        choice = random.Random(f"{self.seed}:{epoch}:{info.key}").randrange(max(1, info.references))
        size = (self.reference_size, self.reference_size)
        # References are stretched to a square, as upstream's CLIP preprocessing stretches them.
        reference = cv2.resize(read(f"ref{choice}.png"), size, interpolation=cv2.INTER_AREA)
        reference_mask = cv2.resize(read(f"ref{choice}mask.png"), size, interpolation=cv2.INTER_NEAREST)
        chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1) if a.ndim == 3 else a[None]))  # noqa: E731
        return {
            "key": info.key,
            "line": chw(read("line.png")),  # [3, H, W] in [0, 1], paper 1
            "color": chw(read("color.png")),  # [3, H, W] in [0, 1]
            "mask": chw(read("mask.png")),  # [1, H, W] in [0, 1], character 1
            "reference": chw(reference),  # [3, S, S] in [0, 1]
            "reference_mask": chw(reference_mask),  # [1, S, S]
        }


def collate(items: list[dict]) -> dict[str, torch.Tensor | list[str]]:
    out: dict = {"key": [i["key"] for i in items]}
    for name in ("line", "color", "mask", "reference", "reference_mask"):
        out[name] = torch.stack([i[name] for i in items])
    return out


class BucketBatches:
    """The infinite, deterministic stream of batches for one process (see the module docstring)."""

    def __init__(self, sizes: list[tuple[int, int]], batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.sizes = sizes
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world = rank, world
        by_bucket: dict[tuple[int, int], int] = {}
        for size in sizes:
            by_bucket[size] = by_bucket.get(size, 0) + 1
        self.per_epoch = sum(n // batch_size for n in by_bucket.values()) // world
        if self.per_epoch == 0:
            raise ValueError(f"no full batch of {batch_size} samples of one size per process "
                             f"(buckets: {by_bucket}, processes: {world}); lower schedule.batch_size")

    def epoch(self, epoch: int) -> list[list[tuple[int, int]]]:
        rng = random.Random(f"{self.seed}:order:{epoch}")
        order = list(range(len(self.sizes)))
        rng.shuffle(order)
        groups: dict[tuple[int, int], list[int]] = {}
        for index in order:
            groups.setdefault(self.sizes[index], []).append(index)
        batches = []
        for size in sorted(groups):
            members = groups[size]
            for start in range(0, len(members) - self.batch_size + 1, self.batch_size):
                batches.append([(i, epoch) for i in members[start : start + self.batch_size]])
        rng.shuffle(batches)
        return batches[self.rank :: self.world][: self.per_epoch]

    def stream(self, start: int = 0) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """(position, batch) from batch number `start` on, without reading what is skipped."""
        epoch, offset = divmod(start, self.per_epoch)
        position = start
        while True:
            for batch in self.epoch(epoch)[offset:]:
                yield position, batch
                position += 1
            epoch, offset = epoch + 1, 0


class StreamSampler(torch.utils.data.Sampler):
    """`BucketBatches.stream` as a DataLoader batch sampler (infinite)."""

    def __init__(self, batches: BucketBatches, start: int):
        self.batches = batches
        self.start = start

    def __iter__(self):
        for _, batch in self.batches.stream(self.start):
            yield batch

    def __len__(self) -> int:  # infinite; DataLoader asks only for progress displays
        return 2**62
