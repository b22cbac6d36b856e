"""Benchmark `o3d generate` end to end (preprocess -> diffusion -> mesh -> bake -> export).

    python scripts/bench_generate.py [--preset tiny] [--images DIR] [--threads 2] [--jobs 2]

Runs one `o3d generate` command over the images (default: the shipped examples)
into a fresh folder and reports seconds per image per stage (from
o3d-report.json: what computing each stage took), the wall time per image
including start-up and model loading (with --jobs N, of the N processes together:
the batch's throughput), and the peak RSS of the largest process (with --jobs N,
each process holds its own model: the total is about N times that). Targets for
the shipped tiny model on 2 CPU cores: <= 30 s per image end to end, peak RSS <= 2 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--images", type=Path, default=Path(__file__).resolve().parents[1] / "o3dcli/assets/examples")
    ap.add_argument("--threads", type=int, default=0, help="runtime.threads (0 = torch's default)")
    ap.add_argument("--jobs", type=int, default=1, help="o3d generate --jobs")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "o3dcli", "generate", str(args.images), "-o", out, "--preset", args.preset,
               "--no-progress", "--set", f"runtime.threads={args.threads}", "--jobs", str(args.jobs)]
        for s in args.sets:
            cmd += ["--set", s]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            sys.exit(f"generate failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        items = json.loads((Path(out) / "o3d-report.json").read_text())["items"]
    from rich.console import Console
    from rich.table import Table

    stages = list(items[0]["timings"])
    t = Table(title=f"o3d generate, preset {args.preset}, {len(items)} images, {args.jobs} process(es)")
    t.add_column("stage")
    t.add_column("mean s/image", justify="right")
    for s in stages:
        t.add_row(s, f"{sum(i['timings'][s] for i in items) / len(items):.2f}")
    per_item = sum(sum(i["timings"].values()) for i in items) / len(items)
    t.add_row("[bold]all stages", f"[bold]{per_item:.2f}")
    t.add_row("wall incl. start-up and model load", f"{wall / len(items):.2f}")
    t.add_row("peak RSS of the largest process (MB)", f"{peak_mb:.0f}")
    Console().print(t)


if __name__ == "__main__":
    main()
