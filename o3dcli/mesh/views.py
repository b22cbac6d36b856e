"""Object bounds and the ring of views around it that meshing fuses and bakes from.

The views sit on a Fibonacci spiral over the whole sphere (even coverage, no
clustering at the poles), all looking at the centre of the object's bounds, at
the distance where its bounding sphere just fills the field of view. Their
renders (straight colour, alpha, z-depth) are kept for the last set of
Gaussians, so TSDF fusion and texture baking of one asset render once.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from o3dcli.geometry.cameras import Cameras, fov_to_focal, look_at_c2w
from o3dcli.geometry.gaussians import Gaussians

MIN_BOUNDS_OPACITY = 0.05
"""Gaussians fainter than this do not count when fitting the bounds (they rarely form surfaces)."""
FRAME_MARGIN = 1.05
"""The bounding sphere fills this fraction less than the full frame (a little air at the border)."""
_ALPHA_EPS = 1e-6


@dataclass(frozen=True)
class ObjectBounds:
    """Axis-aligned bounds lo [3], hi [3] (float64, world units), padded by the Gaussians' size."""

    lo: np.ndarray
    hi: np.ndarray

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2

    @property
    def extent(self) -> float:
        """The longest side."""
        return float((self.hi - self.lo).max())

    @property
    def radius(self) -> float:
        """Radius of the bounding sphere (half the diagonal)."""
        return float(np.linalg.norm(self.hi - self.lo) / 2)


def gaussian_bounds(gaussians: Gaussians, quantile: float = 0.001) -> ObjectBounds:
    """Robust bounds of the visible Gaussians: per-axis quantiles of their centres, padded by
    three standard deviations of a typical Gaussian (and 2% of the extent)."""
    means = gaussians.means.detach().float().cpu().numpy().astype(np.float64)
    if len(means) == 0:
        raise ValueError("cannot mesh an empty set of Gaussians")
    keep = gaussians.opacities.detach().float().cpu().numpy() >= MIN_BOUNDS_OPACITY
    pts = means[keep] if keep.sum() >= 4 else means
    lo, hi = np.quantile(pts, quantile, axis=0), np.quantile(pts, 1.0 - quantile, axis=0)
    sigma = float(np.median(gaussians.scales.detach().float().cpu().numpy().max(1)))
    pad = max(3.0 * sigma, 0.02 * float((hi - lo).max()), 1e-6)
    return ObjectBounds(lo - pad, hi + pad)


def fibonacci_directions(count: int) -> np.ndarray:
    """[count, 3] unit vectors spread evenly over the sphere (golden-angle spiral, +Y up)."""
    i = np.arange(count) + 0.5
    y = 1.0 - 2.0 * i / count
    r = np.sqrt(np.clip(1.0 - y * y, 0.0, 1.0))
    theta = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.sin(theta), y, r * np.cos(theta)], axis=1)


def fusion_distance(bounds: ObjectBounds, fov_deg: float) -> float:
    """How far from ``bounds``' centre the fusion cameras stand: its sphere fills the view, with a margin."""
    return FRAME_MARGIN * bounds.radius / math.sin(math.radians(fov_deg) / 2)


def fusion_cameras(bounds: ObjectBounds, views: int, size: int, fov_deg: float) -> Cameras:
    """``views`` square cameras of side ``size`` around ``bounds``, all looking at its centre."""
    dist = fusion_distance(bounds, fov_deg)
    eye = bounds.center + dist * fibonacci_directions(views)
    c2w = look_at_c2w(torch.tensor(eye, dtype=torch.float32), torch.tensor(bounds.center, dtype=torch.float32))
    f = torch.full((views,), fov_to_focal(fov_deg, size))
    c = torch.full((views,), size / 2)
    return Cameras(c2w, f, f.clone(), c, c.clone(), size, size)


@dataclass(frozen=True)
class FusionRenders:
    """Renders of the Gaussians from the fusion cameras (numpy, CPU).

    rgb: [V, H, W, 3] straight (un-premultiplied) colour, 0 where alpha is 0.
    alpha: [V, H, W] accumulated opacity.
    depth: [V, H, W] expected camera-z depth, 0 where alpha is 0.
    """

    cameras: Cameras
    bounds: ObjectBounds
    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray


_last: dict[str, FusionRenders] = {}  # one entry: the renders of the last Gaussians meshed


def _content_key(gaussians: Gaussians, *settings) -> str:
    h = hashlib.sha1(repr(settings).encode())
    for name in ("means", "scales", "quats", "opacities", "colors"):
        h.update(getattr(gaussians, name).detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fusion_renders(gaussians: Gaussians, views: int, size: int, fov_deg: float, quantile: float) -> FusionRenders:
    """Render ``gaussians`` from the fusion cameras (cached for the last set of Gaussians)."""
    from o3dcli.render.gaussians import render_gaussians

    key = _content_key(gaussians, views, size, fov_deg, quantile)
    if key in _last:
        return _last[key]
    bounds = gaussian_bounds(gaussians, quantile)
    cams = fusion_cameras(bounds, views, size, fov_deg)
    with torch.no_grad():
        # clip planes from the cameras' distance, not the renderer's fixed ones (made for the unit
        # box): a scene tens of units across sat beyond far = 100, a millimetre one before near
        dist = fusion_distance(bounds, fov_deg)
        out = render_gaussians(gaussians.detach(), cams, background=(0.0, 0.0, 0.0),
                               near=1e-3 * dist, far=dist + 4.0 * bounds.radius)
    alpha = out.alpha[:, 0].float().cpu().numpy()
    rgb = out.rgb.float().cpu().permute(0, 2, 3, 1).numpy()  # over black: premultiplied
    rgb = np.where(alpha[..., None] > _ALPHA_EPS, rgb / np.maximum(alpha, _ALPHA_EPS)[..., None], 0.0)
    depth = np.where(alpha > _ALPHA_EPS, out.depth[:, 0].float().cpu().numpy(), 0.0)
    renders = FusionRenders(cams.to("cpu"), bounds, np.clip(rgb, 0, 1).astype(np.float32),
                            alpha.astype(np.float32), depth.astype(np.float32))
    _last.clear()
    _last[key] = renders
    return renders
