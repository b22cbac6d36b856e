"""Views of an asset for people: turntable frames and a fixed multi-view grid."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from o3dcli.geometry.cameras import Cameras, orbit_cameras
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.geometry.mesh import TriMesh


def turntable_cameras(n_frames: int, size: int, elevation: float = 15.0, radius: float = 1.7417,
                      fov_deg: float = 39.6) -> Cameras:
    """`n_frames` cameras on a full circle starting at the front (azimuth 0)."""
    az = torch.arange(n_frames, dtype=torch.float64) * (360.0 / n_frames)
    return orbit_cameras(torch.full_like(az, elevation), az, radius, fov_deg, size)


def normalize_gaussians(g: Gaussians, min_opacity: float = 0.05) -> Gaussians:
    """Move and scale Gaussians into the unit box (bounds from the 0.5/99.5 percentiles of the
    visible Gaussians, so a few far floaters do not shrink the object)."""
    vis = g.means[g.opacities > min_opacity] if (g.opacities > min_opacity).sum() >= 8 else g.means
    lo = torch.quantile(vis.float(), 0.005, dim=0) if len(vis) > 200 else vis.min(0).values
    hi = torch.quantile(vis.float(), 0.995, dim=0) if len(vis) > 200 else vis.max(0).values
    extent = float((hi - lo).max().clamp_min(1e-8))
    centre = (lo + hi) / 2
    return Gaussians((g.means - centre) / extent, g.scales / extent, g.quats, g.opacities, g.colors)


def render_asset(asset: Gaussians | TriMesh, cameras: Cameras, background=(1.0, 1.0, 1.0),
                 normalize: bool = True) -> Tensor:
    """RGB [V, 3, H, W] of a Gaussian set or a mesh (meshes lit with Lambert + ambient)."""
    if isinstance(asset, Gaussians):
        from o3dcli.render.gaussians import render_gaussians

        g = normalize_gaussians(asset) if normalize else asset
        with torch.no_grad():
            return render_gaussians(g.to(cameras.device), cameras, background).rgb.clamp(0, 1)
    from o3dcli.render.mesh import render_mesh

    mesh = asset.normalized() if normalize else asset
    return render_mesh(mesh, cameras, background=background, shading="lambert").rgb.clamp(0, 1)


def turntable_frames(asset, n_frames: int = 36, size: int = 256, elevation: float = 15.0,
                     background=(1.0, 1.0, 1.0), chunk: int = 8) -> np.ndarray:
    """[T, H, W, 3] uint8 frames of the asset turning once."""
    from o3dcli.io.media import to_uint8

    cams = turntable_cameras(n_frames, size, elevation)
    frames = [to_uint8(render_asset(asset, cams[i: i + chunk], background)) for i in range(0, n_frames, chunk)]
    return np.concatenate(frames)
