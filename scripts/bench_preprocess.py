"""Preprocessing benchmark: time and peak memory for large photos, each case in a fresh process.

    PYTHONPATH=. python scripts/bench_preprocess.py            # 12, 24 and 48 MP
    PYTHONPATH=. python scripts/bench_preprocess.py --quick    # 4 and 12 MP

Each case is a JPEG made here (a striped object on a studio-like gradient background,
camera-like noise) at a phone camera's frame size, with the object large (its height 80 %
of the frame's) or small (20 %). One case runs what `o3d generate`'s preprocess stage runs
(`preprocess_image` with the built-in matting, the preset's input size and the 1,024 px photo
crop for the texture) in a fresh subprocess, so peak RSS (``resource.getrusage``) is that
case's own; the RSS before the call (Python, numpy, torch, Pillow, scipy imported) is shown
beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (megapixels, width, height): 4:3 frames of common camera sizes
FRAMES = {4: (2304, 1728), 12: (4032, 3024), 24: (5664, 4248), 48: (8064, 6048)}


def make_photo(path: Path, width: int, height: int, object_fraction: float, seed: int = 0) -> None:
    """A striped ellipse (its height `object_fraction` of the frame's) on a vignetted grey sweep."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ry = object_fraction * height / 2
    rx = 0.7 * ry
    out = np.empty((height, width, 3), np.uint8)
    for y0 in range(0, height, 512):  # in bands, so making the photo stays small next to the measured run
        yy, xx = np.mgrid[y0:min(height, y0 + 512), 0:width].astype(np.float32)
        u, v = (xx - width / 2) / width, (yy - height / 2) / height
        grey = 0.82 + 0.08 * u - 0.3 * (u * u + v * v)
        inside = ((xx - width / 2) / rx) ** 2 + ((yy - height / 2) / ry) ** 2 <= 1.0
        stripes = (xx // max(4, width // 200)) % 2
        colour = np.where(stripes[..., None] > 0, [0.85, 0.45, 0.12], [0.5, 0.2, 0.05])
        band = np.where(inside[..., None], colour, grey[..., None])
        band += rng.normal(0, 0.01, band.shape)
        out[y0:y0 + band.shape[0]] = (np.clip(band, 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(out).save(path, quality=92)


def _worker(path: str, size: int) -> dict:
    """Runs inside the subprocess: one preprocess call, returns its time and memory."""
    import importlib
    import resource

    importlib.import_module("torch")  # generate has it loaded before preprocessing: counted in rss_before

    from o3dcli.config import PreprocessConfig
    from o3dcli.preprocess import preprocess_image
    from o3dcli.stages import PHOTO_SIZE

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    prep = preprocess_image(path, PreprocessConfig(size=size, foreground_ratio=0.8), PHOTO_SIZE)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": before, "matting": prep.matting, "crop_side": prep.crop_box[2] - prep.crop_box[0]}


def bench(megapixels: list[int], size: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in megapixels:
            width, height = FRAMES[mp]
            for label, fraction in (("large", 0.8), ("small", 0.2)):
                path = Path(tmp) / f"{mp}mp-{label}.jpg"
                # The photo is made in a process of its own too: Linux carries a process's peak
                # RSS over into the children it forks, so this one stays small.
                _run({"make": [str(path), width, height, fraction]}, f"making the {mp} MP photo")
                result = _run({"path": str(path), "size": size}, f"case {mp} MP {label}")
                rows.append({"photo": f"{width} x {height} ({mp} MP)", "object": label, **result})
    return rows


def _run(spec: dict, what: str) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    cols = [("photo", "{}"), ("object", "{}"), ("crop_side", "{}"), ("seconds", "{:.2f}"),
            ("peak_rss_mb", "{:.0f}"), ("rss_before_mb", "{:.0f}")]
    from rich.console import Console
    from rich.table import Table

    table = Table(title="preprocess (built-in matting, input view + 1,024 px photo crop), one process per case")
    for c, _ in cols:
        table.add_column(c, justify="left" if c in ("photo", "object") else "right")
    for r in rows:
        table.add_row(*(f.format(r[c]) for c, f in cols))
    Console(width=120).print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 and 12 MP only")
    parser.add_argument("--size", type=int, default=32, help="model input side (the tiny preset's: 32)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        if "make" in spec:
            make_photo(Path(spec["make"][0]), *spec["make"][1:])
            print(json.dumps({}))
        else:
            print(json.dumps(_worker(spec["path"], spec["size"])))
        return
    print_table(bench([4, 12] if args.quick else [12, 24, 48], args.size))


if __name__ == "__main__":
    main()
