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

  python scripts/oracle_recon.py --limit 20 [--weights FILE] [--set mesh.carve_alpha=0.7 ...]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--weights", default=None, help="weights file (default: the preset's)")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="SECTION.KEY=VALUE")
    ap.add_argument("--threads", type=int, default=0)
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
    print(f"{'object':>16} | {'gauss F@.05':>11} {'P':>5} {'R':>5} | {'mesh F@.05':>10} {'P':>5} {'R':>5} {'CD':>6} | s")
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
        cells = []
        for kind, pts in (("gaussians", gaussian_points(g)), ("mesh", sample_surface(mesh, 100_000, seed=0))):
            m = surface_metrics(pts, gt_pts)
            p, r = precision_recall(pts.points, gt_pts.points, 0.05)
            rows[kind].append((m["fscore@0.05"], p, r, m["chamfer"]))
            cells.append((m["fscore@0.05"], p, r, m["chamfer"]))
        (gf, gp, gr, _), (mf, mp, mr, mcd) = cells
        print(f"{obj.name:>16} | {gf:11.3f} {gp:5.2f} {gr:5.2f} | {mf:10.3f} {mp:5.2f} {mr:5.2f} {mcd:6.3f} | {time.perf_counter() - start:.1f}")
    for kind, vals in rows.items():
        cols = list(zip(*vals))
        print(f"mean {kind:>10}: F@0.05 {statistics.fmean(cols[0]):.3f}  precision {statistics.fmean(cols[1]):.3f}  "
              f"recall {statistics.fmean(cols[2]):.3f}  Chamfer {statistics.fmean(cols[3]):.4f}")


if __name__ == "__main__":
    main()
