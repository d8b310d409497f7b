"""Write the README demo cut `examples/walk/`: a synthetic character walking, with known truth.

    python examples/make_example_cut.py --out examples/walk

Twelve 512 x 512 frames of one character (the hero) walking, with red/blue hint lines and three
small line breaks per frame. No coloured key frame is written: the demo colours frame 1 from the
model sheet alone and carries the colours from frame to frame. The true colours sit in
`truth/` for scoring (`truth/regions.yaml` says which label is which region).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sketchcolor_cli.synthetic import make_cut  # noqa: E402

DEMO_SETTINGS = dict(
    name="walk",
    frames=12,
    size=(512, 512),
    seed=0,
    characters=1,
    hint_lines=True,
    gaps=3,
    key_frames=(),
    antialias=False,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent / "walk"
    parser.add_argument("--out", type=Path, default=default_out, help="cut folder to write (default examples/walk)")
    parser.add_argument("--seed", type=int, default=DEMO_SETTINGS["seed"], help="seed of the cut (default 0)")
    args = parser.parse_args(argv)
    truth = make_cut(args.out, **{**DEMO_SETTINGS, "seed": args.seed})
    files = [p for p in truth.root.rglob("*") if p.is_file() and "out" not in p.relative_to(truth.root).parts[:1]]
    total = sum(p.stat().st_size for p in files)
    width, height = truth.size
    print(
        f"wrote {truth.manifest}: {truth.frames} frames {width}x{height}, characters {', '.join(truth.characters)}, "
        f"{len(truth.regions)} regions, {len(files)} files, {total / 1e6:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
