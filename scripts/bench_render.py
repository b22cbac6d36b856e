"""Renderer benchmarks: time and peak memory per case, each case in a fresh process.

    PYTHONPATH=. python scripts/bench_render.py            # full table
    PYTHONPATH=. python scripts/bench_render.py --quick    # small cases, one run each

Gaussian part: the torch backend, forward and forward+backward, on scenes that
look like a trained reconstructor's output (a shell of small, fairly opaque
Gaussians around the origin) rather than random init blobs, which overstate the
cost (see docs/design.md section 6). Peak memory is the process's peak RSS
(``resource.getrusage``), measured in a fresh subprocess per case, next to the
RSS before the render so the rasterizer's own share is visible.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (N Gaussians, views, image side) per case
GAUSSIAN_CASES = [(1024, 8, 32), (4096, 8, 64), (65536, 8, 128), (65536, 1, 512)]
GAUSSIAN_CASES_QUICK = [(1024, 8, 32), (4096, 8, 64), (16384, 1, 256)]


def shell_gaussians(n: int, seed: int = 0, radius: float = 0.35):
    """N flat Gaussians tangent to a sphere, sized to just cover it, opacity ~0.8."""
    import torch

    from o3dcli.geometry.gaussians import Gaussians

    gen = torch.Generator().manual_seed(seed)
    normal = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    spacing = math.sqrt(4 * math.pi * radius**2 / n)
    scales = spacing * (0.4 + 0.4 * torch.rand(n, 3, generator=gen))
    scales[:, 2] = 0.1 * spacing  # thin along the normal, like a trained surface
    z = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3)
    # the quaternion taking +Z to the normal: (1 + z.n, z x n), normalised
    quats = torch.nn.functional.normalize(torch.cat([1 + normal[:, 2:3], torch.linalg.cross(z, normal)], -1), dim=-1)
    opac = 0.7 + 0.2 * torch.rand(n, generator=gen)
    return Gaussians(normal * radius, scales, quats, opac, normal * 0.5 + 0.5)


def _gaussian_worker(n: int, views: int, size: int, backward: bool, repeats: int, tile: int, threads: int) -> dict:
    """Runs inside the subprocess: one case, returns its timings and memory."""
    import resource

    import torch

    if threads:
        torch.set_num_threads(threads)
    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.render import render_gaussians

    g = shell_gaussians(n)
    azimuths = [0, 45, 90, 135, 180, 225, 270, 337.5][:views]
    cams = orbit_cameras(0.0, azimuths, size=size)
    leaves = [t.clone().requires_grad_(backward) for t in (g.means, g.scales, g.quats, g.opacities, g.colors)]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(repeats + 1):  # the first run warms up allocators and kernels
        start = time.perf_counter()
        gauss = type(g)(*leaves)
        out = render_gaussians(gauss, cams, backend="torch", features=gauss.means + 0.5, tile_size=tile)
        if backward:
            (out.rgb.mean() + out.features.mean() + out.depth.mean()).backward()
        times.append(time.perf_counter() - start)
    return {
        "seconds": min(times[1:]),
        "rss_before_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "coverage": float(out.alpha.mean()),
        "threads": torch.get_num_threads(),
    }


def bench_gaussians(quick: bool = False, tile: int = 4, repeats: int | None = None, threads: int = 0) -> list[dict]:
    """Rows of {renderer, case, pass, seconds, peak RSS}, one fresh process per row."""
    rows = []
    for n, views, size in GAUSSIAN_CASES_QUICK if quick else GAUSSIAN_CASES:
        for backward in (False, True):
            spec = {"n": n, "views": views, "size": size, "backward": backward, "tile": tile,
                    "repeats": repeats or (1 if quick else 3), "threads": threads}
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                capture_output=True, text=True, check=False, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": ""},
            )
            if proc.returncode != 0:
                raise RuntimeError(f"bench_render.py: case {spec} failed:\n{proc.stderr[-2000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({
                "renderer": f"gaussians/torch tile {tile}",
                "case": f"N={n:,} x {views} views x {size}^2",
                "pass": "fwd+bwd" if backward else "fwd",
                **result,
            })
    return rows


def print_table(rows: list[dict]) -> None:
    cols = [("renderer", "{}"), ("case", "{}"), ("pass", "{}"), ("seconds", "{:.3f}"),
            ("peak_rss_mb", "{:.0f}"), ("rss_before_mb", "{:.0f}"), ("coverage", "{:.3f}")]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text when rich is missing
        print(" | ".join(c for c, _ in cols))
        for r in rows:
            print(" | ".join(f.format(r[c]) for c, f in cols))
        return
    table = Table(title=f"renderer benchmarks ({rows[0]['threads'] if rows else '?'} torch threads)")
    for c, _ in cols:
        table.add_column(c, justify="left" if c in ("renderer", "case", "pass") else "right")
    for r in rows:
        table.add_row(*(f.format(r[c]) for c, f in cols))
    Console(width=120).print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small cases, one timed run each")
    parser.add_argument("--tile", type=int, default=4, help="torch rasterizer tile side in pixels")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (best is kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per case (0: torch's default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(_gaussian_worker(spec["n"], spec["views"], spec["size"], spec["backward"],
                                          spec["repeats"], spec["tile"], spec["threads"])))
        return
    print_table(bench_gaussians(args.quick, args.tile, args.repeats, args.threads))
    print_other_table(bench_mesh_raycaster(repeats=3 if args.quick else 10), bench_synth(3 if args.quick else 10))


def bench_mesh_raycaster(size: int = 512, repeats: int = 10) -> dict:
    """Frames per second of the open3d mesh ray caster at size^2 (a synthetic object, lambert, 1 view)."""
    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.render.mesh import MeshRaycaster
    from o3dcli.synth.objects import make_object

    mesh, _ = make_object(7)
    caster = MeshRaycaster(mesh)
    cam = orbit_cameras(15.0, 30.0, 1.7417, 39.6, size)
    caster.render(cam, shading="lambert")  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        caster.render(cam, shading="lambert")
        best = min(best, time.perf_counter() - t0)
    return {"faces": len(mesh.faces), "size": size, "seconds": best}


def bench_synth(n: int = 10, size: int = 128) -> dict:
    """Seconds per synthetic object (mesh + 8 generation + 4 extra views at size^2, written to disk)."""
    import tempfile

    from o3dcli.synth.generate import synthesize

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        synthesize(d, n, seed=10_000, size=size, extra_views=4)
        return {"objects": n, "size": size, "seconds": (time.perf_counter() - t0) / n}


def print_other_table(mesh: dict, synth: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="mesh ray caster and synthetic data")
    t.add_column("case")
    t.add_column("result", justify="right")
    t.add_row(f"ray caster {mesh['size']}^2, {mesh['faces']} faces, lambert", f"{1 / mesh['seconds']:.1f} frames/s ({1000 * mesh['seconds']:.1f} ms)")
    t.add_row(f"o3d data synth at {synth['size']}^2, 12 views", f"{synth['seconds']:.2f} s/object")
    Console().print(t)


if __name__ == "__main__":
    main()
