"""External check of o3d's camera and mesh conventions against SyncDreamer's GSO renders.

Renders a Google Scanned Objects mesh with o3d's ray caster at the 16 poses that
SyncDreamer's evaluation example ships (cameras.json: OpenCV world-to-camera
[R|t], K) and compares the silhouettes with the alpha of its RGBA renders.

The conversion chain that reproduces them (found with this script):
- mesh: ``load_mesh(<GSO folder>)`` maps the Z-up GSO file to our +Y-up world,
  (x, y, z) -> (x, z, -y), then ``.normalized()`` (bounding-box centre at the
  origin, longest side 1: SyncDreamer's unit-box rule);
- cameras: ``w2c_to_cameras(w2c, K, 256, 256, world=XFRONT_ZUP_TO_YUP)``, i.e.
  SyncDreamer's world is Z-up with the object's front on +X; the result equals
  ``orbit_cameras(30, 22.5 * i, 1.5, fov 2 atan(128 / 280))``, so SyncDreamer's
  view i is our orbit azimuth 22.5 i.

Usage: PYTHONPATH=. python scripts/check_gso_cameras.py [GSO_OBJECT_DIR] [VIEWS_DIR] [--min-iou 0.97]
Exit status 1 when a view's IoU is below the threshold.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from o3dcli.geometry.cameras import orbit_cameras
from o3dcli.geometry.convert import XFRONT_ZUP_TO_YUP, w2c_to_cameras
from o3dcli.io.mesh import load_mesh
from o3dcli.render.mesh import render_mesh

DATA = Path("/work/shared/data/gso")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("object_dir", nargs="?", default=DATA / "CHICKEN_NESTING", type=Path)
    ap.add_argument("views_dir", nargs="?", default=DATA / "CHICKEN_NESTING_syncdreamer_views", type=Path)
    ap.add_argument("--min-iou", type=float, default=0.97)
    args = ap.parse_args(argv)

    meta = json.loads((args.views_dir / "cameras.json").read_text())
    pngs = sorted(args.views_dir.glob("[0-9][0-9][0-9].png"))
    gt = np.stack([np.asarray(Image.open(p).convert("RGBA"))[..., 3] > 127 for p in pngs])
    h, w = gt.shape[1:]
    cams = w2c_to_cameras(meta["w2c"], meta["K"], w, h, world=XFRONT_ZUP_TO_YUP)

    # the converted poses are our plain orbit at SyncDreamer's elevation/azimuths/distance
    fov = math.degrees(2 * math.atan(0.5 * h / float(meta["K"][1][1])))
    orbit = orbit_cameras(np.degrees(meta["elevation_rad"]), np.degrees(meta["azimuth_rad"]),
                          torch.tensor(meta["distance"]), fov, (w, h))
    pose_err = float((orbit.c2w - cams.c2w).abs().max())

    mesh = load_mesh(args.object_dir).normalized()
    alpha = render_mesh(mesh, cams).alpha[:, 0].numpy() > 0.5
    ious = [mask_iou(alpha[i], gt[i]) for i in range(len(pngs))]
    print(f"{args.object_dir.name}: {len(mesh.faces)} faces, {len(pngs)} views {w}x{h}, "
          f"fov {fov:.3f} deg, max |c2w - orbit_cameras| = {pose_err:.2e}")
    for i, (p, iou) in enumerate(zip(pngs, ious)):
        az = math.degrees(meta["azimuth_rad"][i])
        print(f"  view {p.stem}  azimuth {az:6.1f}  IoU {iou:.4f}  {'ok' if iou >= args.min_iou else 'FAIL'}")
    print(f"min IoU {min(ious):.4f}, mean {np.mean(ious):.4f} (threshold {args.min_iou})")
    return 0 if min(ious) >= args.min_iou else 1


if __name__ == "__main__":
    sys.exit(main())
