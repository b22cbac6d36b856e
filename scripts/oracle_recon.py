"""How good can the meshes get with perfect views? The reconstructor fed ground-truth views.

For the first N objects of the synthetic benchmark (the held-out seeds `o3d eval` uses),
the ground truth is rendered at the preset's generation cameras exactly as the training
data is (o3d data synth: Lambert headlight, 2x2 supersampling, then area-downsampled to
the model's size), reconstructed at noise level 0, meshed with the preset's mesh settings
and scored against the ground-truth surface (unit-box units, 100,000 points a side, as
o3d eval). This is the ceiling the diffusion model's views are measured against: the
gap between this table and `o3d eval --benchmark synthetic` is what the generated views
lose. The mesh is cut to the input view's outline as in o3d generate (mesh.input_silhouette).
Rows: "gaussians" = the Gaussian centres with opacity > 0.5; "mesh" = the mesh.

`--floor` adds the other end of the scale: what the input view's outline alone gives, with no
model at all. A fixed solid (a cube, a ball, or a ball squashed to half depth along the input
camera's axis, all filling the unit box) is cut to the ground-truth outline of view 0 and
meshed exactly as o3d generate meshes. A model whose meshes do not beat these rows has not
learnt shape beyond the silhouette it was given.

  python scripts/oracle_recon.py --limit 20 [--floor] [--weights FILE] [--set mesh.carve_alpha=0.7 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def precision_recall(pred: np.ndarray, gt: np.ndarray, t: float) -> tuple[float, float]:
    from scipy.spatial import cKDTree

    p = float((cKDTree(gt).query(pred, workers=-1)[0] < t).mean())
    r = float((cKDTree(pred).query(gt, workers=-1)[0] < t).mean())
    return p, r


PRIORS = ("cube", "ball", "half-depth ball")


def prior_gaussians(kind: str, n: int = 12):
    """Opaque grey Gaussians on an n^3 grid filling a solid in the unit box: "cube" (all of it), "ball"
    (radius 0.5), "half-depth ball" (the ball squashed to half along z, the input camera's axis)."""
    from o3dcli.geometry.gaussians import Gaussians

    ax = (torch.arange(n) + 0.5) / n - 0.5
    p = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    if kind == "ball":
        p = p[p.norm(dim=1) <= 0.5]
    elif kind == "half-depth ball":
        p = p[(p * torch.tensor([1.0, 1.0, 2.0])).norm(dim=1) <= 0.5]
    elif kind != "cube":
        raise ValueError(f"unknown prior {kind!r}; expected one of {', '.join(PRIORS)}")
    k = len(p)
    return Gaussians(p, torch.full((k, 3), 0.75 / n), torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(k, 1),
                     torch.ones(k), torch.full((k, 3), 0.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--weights", default=None, help="weights file (default: the preset's)")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="SECTION.KEY=VALUE")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--floor", action="store_true",
                    help="also mesh fixed solids cut to the input outline (no model): the silhouette-only floor")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from o3dcli.config import load_config
    from o3dcli.eval.benchmarks import synthetic_objects
    from o3dcli.eval.geometry import gaussian_points, sample_surface, surface_metrics
    from o3dcli.mesh.fusion import gaussians_to_mesh
    from o3dcli.models.build import build_models
    from o3dcli.render.mesh import render_mesh
    from o3dcli.stages import generation_cameras, input_silhouettes
    from o3dcli.synth.generate import SynthSettings
    from o3dcli.train.data import composite, resize_rgba

    sets = list(args.sets) + ([f"model.weights={args.weights}"] if args.weights else [])
    cfg = load_config(args.preset, sets)
    model = build_models(cfg, "cpu").model.eval()
    size = cfg.preprocess.size
    synth = SynthSettings()
    render_size = 2 * size  # the training data's renders are area-downsampled like this
    rig_full = generation_cameras(cfg, render_size)
    rig = generation_cameras(cfg, size)

    rows = {"gaussians": [], "mesh": []}
    floors = {f"floor, {k}": [] for k in PRIORS} if args.floor else {}
    print(f"{'object':>16} | {'gauss F@.05':>11} {'P':>5} {'R':>5} | {'mesh F@.05':>10} {'P':>5} {'R':>5} {'CD':>6} | s"
          + "".join(f" | {k}" for k in floors))
    for obj in synthetic_objects(limit=args.limit):
        start = time.perf_counter()
        gt = obj.load()
        out = render_mesh(gt, rig_full, background=(0.0, 0.0, 0.0), shading=synth.shading,
                          ambient=synth.ambient, ssaa=synth.ssaa)
        alpha = out.alpha.float()
        rgb = torch.where(alpha > 0, out.rgb.float() / alpha.clamp_min(1e-8), torch.ones_like(out.rgb.float()))
        views = resize_rgba(torch.cat([rgb.clamp(0, 1), alpha], 1), size)
        with torch.no_grad():
            g = model.recon(composite(views, cfg.preprocess.background)[None], rig, 0.0)[0]
        gt_pts = sample_surface(gt, 100_000, seed=0)
        # the input view's outline, as o3d generate cuts with (mesh.input_silhouette)
        sil = input_silhouettes(views[0], cfg) if cfg.mesh.input_silhouette else None
        mesh = gaussians_to_mesh(g, cfg.mesh, silhouettes=sil)

        def score(pts):  # (F@0.05, precision, recall, Chamfer) against the ground-truth surface
            m = surface_metrics(pts, gt_pts)
            return (m["fscore@0.05"], *precision_recall(pts.points, gt_pts.points, 0.05), m["chamfer"])

        for kind, pts in (("gaussians", gaussian_points(g)), ("mesh", sample_surface(mesh, 100_000, seed=0))):
            rows[kind].append(score(pts))
        (gf, gp, gr, _), (mf, mp, mr, mcd) = rows["gaussians"][-1], rows["mesh"][-1]
        seconds = time.perf_counter() - start
        floor_cells = ""
        for kind, prior in zip(floors, PRIORS):
            solid = gaussians_to_mesh(prior_gaussians(prior), cfg.mesh, silhouettes=input_silhouettes(views[0], cfg))
            floors[kind].append(score(sample_surface(solid, 100_000, seed=0)))
            floor_cells += f" | {floors[kind][-1][0]:.3f}"
        print(f"{obj.name:>16} | {gf:11.3f} {gp:5.2f} {gr:5.2f} | {mf:10.3f} {mp:5.2f} {mr:5.2f} {mcd:6.3f} | {seconds:.1f}"
              + floor_cells)
    for kind, vals in {**rows, **floors}.items():
        cols = list(zip(*vals))
        print(f"mean {kind:>10}: F@0.05 {statistics.fmean(cols[0]):.3f}  precision {statistics.fmean(cols[1]):.3f}  "
              f"recall {statistics.fmean(cols[2]):.3f}  Chamfer {statistics.fmean(cols[3]):.4f}")


if __name__ == "__main__":
    main()
