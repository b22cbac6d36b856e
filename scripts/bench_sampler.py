"""Benchmark the recursive sampler: seconds per denoising step with and without 3D-aware feedback.

    python scripts/bench_sampler.py [--preset tiny] [--steps 10] [--threads 2] [--device cpu]

Each configuration runs in a fresh subprocess so its peak memory (max RSS, or
peak CUDA memory on a GPU) is its own. Weights are a seeded random init unless
the preset names trained weights: the timings do not depend on the weights'
values except through the rasterizer (random Gaussians are larger, so slower).
On a GPU, pass --preset ouroboros3d-svd-lgm --dtype float16 with the released
checkpoints set in the preset to time the published model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def run_case(preset: str, steps: int, feedback: bool, threads: int, device: str, dtype: str, sets: list[str]) -> dict:
    import resource
    import time

    import torch

    from o3dcli.config import load_config
    from o3dcli.diffusion.sampler import RecursiveSampler
    from o3dcli.models.build import build_models
    from o3dcli.stages import generation_cameras

    torch.set_num_threads(threads)
    cfg = load_config(preset, [f"diffusion.steps={steps}", f"diffusion.feedback={str(feedback).lower()}",
                               "diffusion.save_every=0", *sets])
    models = build_models(cfg, device, dtype)
    size = cfg.preprocess.size
    cams = generation_cameras(cfg, size).to(device)
    cond = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0)).to(device, next(models.model.parameters()).dtype)
    sampler = RecursiveSampler(models.model.denoiser, models.model.recon, models.codec, cfg.diffusion)
    sampler.sample(cond, cams, torch.Generator(device).manual_seed(0))  # warm-up (allocator, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    sampler.sample(cond, cams, torch.Generator(device).manual_seed(1))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"preset": preset, "feedback": feedback, "steps": steps, "seconds": seconds,
            "per_step": seconds / steps, "peak_mb": peak / 2**20, "device": device, "dtype": dtype, "threads": threads}


def main() -> None:
    ap = argparse.ArgumentParser(description="Time the recursive sampler with and without feedback.")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = ap.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(args.preset, args.steps, args.case == "on", args.threads, args.device, args.dtype, args.sets)))
        return
    rows = []
    for fb in ("off", "on"):
        cmd = [sys.executable, __file__, "--case", fb, "--preset", args.preset, "--steps", str(args.steps),
               "--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype]
        for s in args.sets:
            cmd += ["--set", s]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"case feedback={fb} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"recursive sampler, preset {args.preset}, {args.steps} steps, {args.device} {args.dtype}, {args.threads} threads")
    for col in ("feedback", "s/step", "s total", "peak MB"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row("on" if r["feedback"] else "off", f"{r['per_step']:.3f}", f"{r['seconds']:.2f}", f"{r['peak_mb']:.0f}")
    Console().print(t)
    off, on = rows[0]["per_step"], rows[1]["per_step"]
    print(f"feedback overhead: {100 * (on - off) / off:+.1f}% per step")


if __name__ == "__main__":
    main()
