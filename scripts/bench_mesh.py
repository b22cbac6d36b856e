"""Benchmark the mesh stages: N Gaussians -> target faces with a textured UV atlas, per stage.

    python scripts/bench_mesh.py                      # 65,536 Gaussians -> 20,000 faces, 1024^2
    python scripts/bench_mesh.py --method tsdf --threads 1 --shape torus
    python scripts/bench_mesh.py --gaussians 1024 --split 64   # a rough, foam-like set of 65,536
    python scripts/bench_mesh.py --ply assets/synth_2000001/gaussians.ply --split 64   # rougher still
    python scripts/bench_mesh.py --splatter 0.02 --noise-cells 8 --shape box   # the published model's form

Gaussians are sampled on a textured reference shape (o3dcli.mesh.surface_gaussians),
so the run also reports the Chamfer distance to the true surface; `--ply` takes any 3DGS PLY
instead (an asset's: `o3d generate --examples -o assets` makes some). `--split K` replaces each
Gaussian by K smaller ones scattered inside it (its shape's spread, sizes divided by K^(1/3)):
a noisy field with gaps, whose surface comes out crumpled, for the mesh stages' worst case.
`--splatter NOISE` builds the Gaussians in the form the published model's reconstructor (LGM)
outputs: one per pixel of 4 views of 128 px (o3dcli.mesh.surface_gaussians.splatter_gaussians),
their depths off by NOISE times the object's size, per pixel or (`--noise-cells`) smoothly per view.
Prints one row per stage (seconds) plus the total and the process's peak resident memory, and
how rough the result is (the median angle between neighbouring faces' normals).
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
    ap.add_argument("--method", choices=("opacity", "carve", "tsdf"), default="opacity")
    ap.add_argument("--shape", choices=("sphere", "torus", "box"), default="sphere")
    ap.add_argument("--ply", help="a 3DGS PLY to mesh instead of Gaussians on --shape")
    ap.add_argument("--splatter", type=float, default=None, metavar="NOISE",
                    help="Gaussians in the published model's form instead (one per pixel of 4 views of 128 px), "
                         "their depths off by this fraction of the object's size (standard deviation)")
    ap.add_argument("--noise-cells", type=int, default=0, metavar="K",
                    help="with --splatter: a smooth depth error per view (a K x K grid of noise, interpolated) "
                         "instead of an independent one per pixel")
    ap.add_argument("--split", type=int, default=1, help="replace each Gaussian by this many smaller ones inside it")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the renders and the opacity splat)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from o3dcli.io.export import export_mesh
    from o3dcli.mesh import bake, cleanup, fusion, uv, views
    from o3dcli.mesh.config import MeshConfig
    from o3dcli.mesh.surface_gaussians import reference_shape, splatter_gaussians, surface_gaussians

    cfg = MeshConfig(method=args.method, target_faces=args.faces, texture_size=args.texture_size)
    source = reference_shape(args.shape, detail=2, soft=0.08)
    if args.ply:
        from o3dcli.io.ply import load_gaussians

        source, gaussians = None, load_gaussians(args.ply)
    elif args.splatter is not None:
        gaussians = splatter_gaussians(source, depth_noise=args.splatter, seed=0, noise_cells=args.noise_cells)
    else:
        gaussians = surface_gaussians(source, args.gaussians, seed=0)
    gaussians = split_gaussians(gaussians, args.split)
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
        raw = timed("fusion", fusion.carve_surface if cfg.method == "carve" else fusion.opacity_surface, gaussians, cfg)
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

    split = f" split {args.split} ways ({len(gaussians)})" if args.split > 1 else ""
    where = f"from {args.ply}" if args.ply else f"on a {args.shape}"
    if args.splatter is not None and not args.ply:
        where = (f"splatter images of a {args.shape}, depth noise {args.splatter:g}"
                 + (f" smooth over {args.noise_cells}^2 cells" if args.noise_cells else " per pixel"))
    count = len(gaussians) // args.split if args.ply or args.splatter is not None else args.gaussians
    print(f"bench_mesh: {count} Gaussians{split} {where} -> {args.faces} faces, "
          f"{args.texture_size}^2 texture, method {args.method}, {args.threads} torch thread(s)")
    print(f"{'stage':<12}{'seconds':>9}")
    for name in ("render", "fusion", "cleanup", "decimation", "unwrap", "bake", "export"):
        print(f"{name:<12}{times[name]:>9.2f}")
    print(f"{'total':<12}{total:>9.2f}")
    print(f"raw faces {len(raw.faces)}, final faces {len(textured.faces)}, vertices {len(textured.vertices)} "
          f"({len(textured.vertices) / len(small.vertices):.2f} per vertex before the unwrap: UV seams); "
          f"median angle between neighbouring faces {median_fold_deg(small):.1f} deg")
    print(f"peak memory {peak_mib:.0f} MiB" + ("" if source is None else
                                               f"; chamfer to the true surface {chamfer(textured, source):.5f}"))


def chamfer(mesh, source) -> float:
    """The mean of the two mean distances between 20,000 points sampled on each surface and the other."""
    import open3d as o3d

    from o3dcli.eval.geometry import sample_surface

    def mean_distance(points_of, to) -> float:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(to.vertices.astype(np.float32)), o3d.core.Tensor(to.faces.astype(np.uint32)))
        points = sample_surface(points_of, 20000).points.astype(np.float32)
        return float(scene.compute_distance(o3d.core.Tensor(points)).numpy().mean())

    return (mean_distance(mesh, source) + mean_distance(source, mesh)) / 2


def split_gaussians(gaussians, k: int):
    """Each Gaussian replaced by `k` smaller ones: centres drawn from it (seed 0), sizes divided by
    k^(1/3), its rotation, opacity and colour kept."""
    if k <= 1:
        return gaussians
    from o3dcli.geometry.gaussians import Gaussians

    gen = torch.Generator().manual_seed(0)
    offsets = torch.randn(len(gaussians), k, 3, generator=gen) * gaussians.scales[:, None]
    means = gaussians.means[:, None] + torch.einsum("nij,nkj->nki", gaussians.rotation_matrices(), offsets)
    each = lambda t: t.repeat_interleave(k, 0)  # noqa: E731
    return Gaussians(means.reshape(-1, 3), each(gaussians.scales) / k ** (1 / 3), each(gaussians.quats),
                     each(gaussians.opacities), each(gaussians.colors))


def median_fold_deg(mesh) -> float:
    """The median angle between the normals of faces sharing an edge, in degrees (a smooth surface
    at 20,000 faces: a few degrees)."""
    v, f = mesh.vertices.astype(np.float64), mesh.faces
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-30
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    face = np.tile(np.arange(len(f)), 3)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edges, face = edges[order], face[order]
    pair = (edges[1:] == edges[:-1]).all(1)
    cos = (n[face[:-1][pair]] * n[face[1:][pair]]).sum(1)
    return float(np.degrees(np.median(np.arccos(np.clip(cos, -1.0, 1.0)))))


if __name__ == "__main__":
    main()
