"""Benchmark the mesh stages: N Gaussians -> target faces with a textured UV atlas, per stage.

    python scripts/bench_mesh.py                      # 65,536 Gaussians -> 20,000 faces, 1024^2
    python scripts/bench_mesh.py --method tsdf --threads 1 --shape torus

Gaussians are sampled on a textured reference shape (o3dcli.mesh.surface_gaussians),
so the run also reports the Chamfer distance to the true surface. Prints one row per
stage (seconds) plus the total and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gaussians", type=int, default=65536)
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--method", choices=("opacity", "tsdf"), default="opacity")
    ap.add_argument("--shape", choices=("sphere", "torus", "box"), default="sphere")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the renders and the opacity splat)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from o3dcli.eval.geometry import sample_surface
    from o3dcli.io.export import export_mesh
    from o3dcli.mesh import bake, cleanup, fusion, uv, views
    from o3dcli.mesh.config import MeshConfig
    from o3dcli.mesh.surface_gaussians import reference_shape, surface_gaussians

    cfg = MeshConfig(method=args.method, target_faces=args.faces, texture_size=args.texture_size)
    source = reference_shape(args.shape, detail=2, soft=0.08)
    gaussians = surface_gaussians(source, args.gaussians, seed=0)
    times: dict[str, float] = {}

    def timed(name, fn, *a):
        start = time.perf_counter()
        out = fn(*a)
        times[name] = time.perf_counter() - start
        return out

    wall = time.perf_counter()
    if cfg.method == "tsdf":
        renders = timed("render", views.fusion_renders, gaussians, cfg.fusion_views, cfg.fusion_size,
                        cfg.fusion_fov_deg, cfg.bounds_quantile)
        raw = timed("fusion", fusion.tsdf_fuse, renders, cfg)
    else:
        raw = timed("fusion", fusion.opacity_surface, gaussians, cfg)
        timed("render", views.fusion_renders, gaussians, cfg.fusion_views, cfg.fusion_size,
              cfg.fusion_fov_deg, cfg.bounds_quantile)  # for the bake
    clean = timed("cleanup", lambda m: cleanup.fill_holes(cleanup.keep_main_components(m, cfg.min_component_ratio),
                                                          cfg.max_hole_edges), raw)
    small = timed("decimation", cleanup.simplify_mesh, clean, cfg)
    unwrapped = timed("unwrap", uv.unwrap_uv, small, cfg)
    textured = timed("bake", bake.bake_texture, unwrapped, gaussians, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        timed("export", export_mesh, textured, tmp, "model", cfg.formats)
    total = time.perf_counter() - wall
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(source.vertices), o3d.core.Tensor(source.faces.astype(np.uint32)))
    d1 = scene.compute_distance(o3d.core.Tensor(sample_surface(textured, 20000).points.astype(np.float32))).numpy()
    scene2 = o3d.t.geometry.RaycastingScene()
    scene2.add_triangles(o3d.core.Tensor(textured.vertices), o3d.core.Tensor(textured.faces.astype(np.uint32)))
    d2 = scene2.compute_distance(o3d.core.Tensor(sample_surface(source, 20000).points.astype(np.float32))).numpy()

    print(f"bench_mesh: {args.gaussians} Gaussians on a {args.shape} -> {args.faces} faces, "
          f"{args.texture_size}^2 texture, method {args.method}, {args.threads} torch thread(s)")
    print(f"{'stage':<12}{'seconds':>9}")
    for name in ("render", "fusion", "cleanup", "decimation", "unwrap", "bake", "export"):
        print(f"{name:<12}{times[name]:>9.2f}")
    print(f"{'total':<12}{total:>9.2f}")
    print(f"raw faces {len(raw.faces)}, final faces {len(textured.faces)}, vertices {len(textured.vertices)}")
    print(f"peak memory {peak_mib:.0f} MiB; chamfer to the true surface {(d1.mean() + d2.mean()) / 2:.5f}")


if __name__ == "__main__":
    main()
