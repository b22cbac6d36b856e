"""Views of an asset for people: turntable frames and a fixed multi-view grid."""

from __future__ import annotations

import math

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
    extent = float((hi - lo).max())
    # a set with (almost) no spread of its own, one Gaussian or points at one place, is drawn as wide
    # as its Gaussians: dividing by its spread made them fill the frame
    size = float(g.scales.float().amax(1).median()) * 6 if len(g.means) else 0.0
    extent = max(extent, size) if math.isfinite(size) else extent
    extent = extent if extent > 1e-8 else 1.0
    centre = (lo + hi) / 2
    return Gaussians((g.means - centre) / extent, g.scales / extent, g.quats, g.opacities, g.colors)


FIT_RADIUS = 0.55
"""Bounding-sphere radius a normalised asset is shrunk to (when larger) for the views made for people:
the default orbit (distance 1.7417, fov 39.6) sees a sphere of radius up to 0.59 whole, while the
unit box's corners are 0.87 from its centre."""
FAINTEST_SEEN = 0.02
"""A splat's opacity below which fitting it in view leaves it out: 2 % of the background's colour
(5 of 255 levels)."""
MESH_PIXELS_AT_ONCE = 1 << 22
"""Pixels of the mesh views `render_asset` casts at once (about 270 MB of maps)."""
UNTEXTURED_GREY = 0.7
"""Display colour of a mesh with no texture, vertex colours or material colour (white on white
would hide it)."""


def fit_in_view(asset: Gaussians | TriMesh) -> Gaussians | TriMesh:
    """A normalised asset scaled down about the origin until its bounding sphere (for Gaussians: of
    the visible ones, each as far as its opacity reaches FAINTEST_SEEN, ignoring the farthest 0.5%) has
    radius FIT_RADIUS, so no view cuts it off."""
    import dataclasses

    if isinstance(asset, Gaussians):
        keep = asset.opacities > 0.05 if (asset.opacities > 0.05).sum() >= 8 else torch.ones_like(asset.opacities, dtype=torch.bool)
        # a splat reaches past its centre, along its widest axis, to where its opacity falls under
        # FAINTEST_SEEN: sigma * sqrt(2 ln(opacity / FAINTEST_SEEN)), 2.8 sigma for an opaque one
        opacity = asset.opacities[keep].float().clamp_min(FAINTEST_SEEN)
        reach = asset.scales[keep].float().amax(1) * torch.sqrt(2 * torch.log(opacity / FAINTEST_SEEN))
        norms = asset.means[keep].float().norm(dim=1) + reach
        r = float(torch.quantile(norms, 0.995)) if len(norms) > 200 else float(norms.max())
        s = min(1.0, FIT_RADIUS / max(r, 1e-8))
        return Gaussians(asset.means * s, asset.scales * s, asset.quats, asset.opacities, asset.colors)
    r = float(np.linalg.norm(asset.vertices, axis=1).max()) if len(asset.vertices) else 0.0
    s = min(1.0, FIT_RADIUS / max(r, 1e-8))
    return dataclasses.replace(asset, vertices=(asset.vertices * s).astype(np.float32))


def render_asset(asset: Gaussians | TriMesh, cameras: Cameras, background=(1.0, 1.0, 1.0),
                 normalize: bool = True) -> Tensor:
    """RGB [V, 3, H, W] of a Gaussian set or a mesh (meshes lit with Lambert + ambient). With
    `normalize`, the asset is moved into the unit box and shrunk to fit every orbit view whole."""
    if isinstance(asset, Gaussians):
        from o3dcli.render.gaussians import render_gaussians

        g = fit_in_view(normalize_gaussians(asset)) if normalize else asset
        with torch.no_grad():
            return render_gaussians(g.to(cameras.device), cameras, background).rgb.clamp(0, 1)
    import dataclasses

    from o3dcli.render.mesh import MeshRaycaster

    mesh = fit_in_view(asset.normalized()) if normalize else asset
    if mesh.texture is None and mesh.vertex_colors is None and float(np.min(mesh.material_color)) >= 0.95:
        mesh = dataclasses.replace(mesh, material_color=np.full(3, UNTEXTURED_GREY, np.float32))
    caster = MeshRaycaster(mesh)
    # views in groups of at most MESH_PIXELS_AT_ONCE pixels, each group's colour kept and its other
    # maps (depth, normals, points, face ids: 64 bytes a pixel) let go: 8 views at 4096 px held 17 GB
    per = max(1, MESH_PIXELS_AT_ONCE // (cameras.height * cameras.width))
    return torch.cat([caster.render(cameras[i: i + per], background=background, shading="lambert").rgb.clamp(0, 1)
                      for i in range(0, len(cameras), per)])


def turntable_frames(asset, n_frames: int = 36, size: int = 256, elevation: float = 15.0,
                     background=(1.0, 1.0, 1.0), chunk: int = 8) -> np.ndarray:
    """[T, H, W, 3] uint8 frames of the asset turning once."""
    from o3dcli.io.media import to_uint8

    cams = turntable_cameras(n_frames, size, elevation)
    frames = [to_uint8(render_asset(asset, cams[i: i + chunk], background)) for i in range(0, n_frames, chunk)]
    return np.concatenate(frames)
