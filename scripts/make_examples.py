"""Make the example inputs shipped in o3dcli/assets/examples/ (`o3d generate --examples`).

Each example is the input view (azimuth 0, elevation 0) of one procedural object
from o3d's own generator, rendered with Lambert shading at 256 px as straight
RGBA. Seeds 2,000,000+ are reserved for examples: the training data
(scripts/train_tiny.sh) and the synthetic benchmark use other ranges.

    python scripts/make_examples.py [--out o3dcli/assets/examples] [--n 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from o3dcli.synth.generate import SynthSettings, render_object

EXAMPLE_SEED0 = 2_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "o3dcli/assets/examples")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = SynthSettings(size=args.size, extra_views=0)
    for i in range(args.n):
        seed = EXAMPLE_SEED0 + i
        rgba = render_object(seed, settings)[4][0]  # view 0 = the input view
        path = args.out / f"synth_{seed}.png"
        Image.fromarray(rgba, "RGBA").save(path, optimize=True)
        print(f"{path}  ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
