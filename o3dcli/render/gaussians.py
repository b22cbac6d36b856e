"""Render 3D Gaussians to images: gsplat on CUDA, a tiled pure-PyTorch splatter anywhere.

Both backends compute the same thing (EWA splatting, 3DGS-style front-to-back
alpha compositing; see ``_raster_torch`` for the numerical choices, which follow
gsplat 1.5.3): per pixel centre (u + 0.5, v + 0.5),

    alpha_i = min(0.999, o_i exp(-d^T Sigma2d_i^-1 d / 2)),  skipped if < 1/255,
    w_i     = alpha_i prod_{j<i} (1 - alpha_j)   (Gaussians sorted by camera z),
    alpha   = sum_i w_i,
    rgb     = sum_i w_i c_i + (1 - alpha) background,
    depth   = sum_i w_i z_i / max(alpha, 1e-10)  (camera z, 0 where alpha == 0),
    features= sum_i w_i f_i                       (NOT composited over anything),

where Sigma2d = J W Sigma W^T J^T + 0.3 I (a 0.3 px^2 low-pass dilation).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from o3dcli.geometry.cameras import Cameras
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.render import _raster_torch as rt

BACKENDS = ("auto", "torch", "gsplat")
DEPTH_EPS = 1e-10  # as gsplat's "ED" mode, so both backends give the same depth


@dataclass(frozen=True)
class GaussianRender:
    """Rendered views, V views of H x W pixels.

    rgb: [V,3,H,W] colour composited over the background.
    alpha: [V,1,H,W] accumulated opacity sum_i w_i.
    depth: [V,1,H,W] expected camera-z depth sum_i w_i z_i / max(alpha, 1e-10);
        0 where alpha == 0.
    features: [V,F,H,W] raw weighted sums sum_i w_i f_i of the per-Gaussian
        ``features`` (not composited over a background: do ``f + (1 - alpha) bg``
        yourself), or None when none were asked for.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    features: Tensor | None


def select_backend(device, backend: str = "auto") -> str:
    """The backend to use for tensors on ``device``.

    "auto": "gsplat" for CUDA tensors when gsplat's kernels load (`gsplat_problem`), otherwise
    "torch" (with a warning, once, on CUDA).
    "gsplat" on a non-CUDA device is a ValueError (gsplat has only CUDA kernels).
    """
    if backend not in BACKENDS:
        raise ValueError(f"render_gaussians: unknown backend {backend!r}; choose one of {BACKENDS}")
    is_cuda = torch.device(device).type == "cuda"
    if backend == "gsplat" and not is_cuda:
        raise ValueError(
            f"render_gaussians: backend 'gsplat' needs CUDA tensors, got device {str(device)!r}; "
            "use backend='torch' (or 'auto') on this device"
        )
    if backend != "auto":
        return backend
    if not is_cuda:
        return "torch"  # never import gsplat here: it may try to JIT-build its CUDA code
    problem = gsplat_problem()
    if problem is None:
        return "gsplat"
    global _gsplat_warned
    if not _gsplat_warned:
        _gsplat_warned = True
        import logging

        logging.getLogger("o3d").warning(f"rendering with the torch splatter, slower: {problem}")
    return "torch"


_gsplat_warned = False


@functools.lru_cache(maxsize=None)
def gsplat_problem() -> str | None:
    """Why gsplat's CUDA kernels cannot be used here, None when they can (checked once per process).

    `import gsplat` loads none of its compiled code: the wheel is pure Python and builds its
    kernels the first time they are needed (minutes, with the CUDA toolkit's compiler; then
    cached on the machine). Without a toolkit it prints a note and leaves the kernels None, so
    every render would fail; a toolkit that does not match torch's CUDA fails the build. This
    loads (or builds) them up front, so that "auto" falls back to the torch splatter instead."""
    try:
        import gsplat  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken install is as good as missing
        return f"gsplat does not import ({type(e).__name__}: {e})"
    try:
        from gsplat.cuda._backend import _C
    except Exception as e:  # noqa: BLE001 - the build's own errors (RuntimeError, subprocess errors, ...)
        return f"gsplat's CUDA kernels failed to build or load ({type(e).__name__}: {e})"
    if _C is None:
        return "gsplat found no CUDA toolkit (nvcc) to build its kernels with"
    return None


def render_gaussians(
    gaussians: Gaussians,
    cameras: Cameras,
    background: Sequence[float] | Tensor = (1.0, 1.0, 1.0),
    backend: str = "auto",
    features: Tensor | None = None,
    near: float = 0.01,
    far: float = 100.0,
    tile_size: int = 4,
    eps2d: float = rt.EPS2D,
    max_pairs: int = 1 << 21,
) -> GaussianRender:
    """Render N Gaussians into every camera of ``cameras``.

    background: RGB [3] composited behind ``rgb`` (white by default).
    features: optional [N,F] per-Gaussian values rendered like colours (e.g. the
        CCM, ``means + 0.5``), returned as raw weighted sums.
    near, far: Gaussians whose camera z is outside (near, far) are culled.
    tile_size, max_pairs: torch backend only, tile side in pixels and the most
        (pixel, Gaussian) pairs handled at once (bounds memory); gsplat uses
        its own 16 px tiles.
    eps2d: low-pass dilation added to the 2D covariance diagonal, px^2.
    Differentiable w.r.t. the Gaussians' tensors and ``features`` on both backends.
    """
    dev, dt = gaussians.means.device, gaussians.means.dtype
    cameras = cameras.to(dev)
    bg = torch.as_tensor(background, dtype=dt, device=dev).reshape(-1)
    if bg.numel() != 3:
        raise ValueError(f"render_gaussians: background must have 3 values, got {bg.numel()}")
    if features is not None:
        if features.ndim != 2 or features.shape[0] != len(gaussians):
            raise ValueError(
                f"render_gaussians: features must be [N,F] with N={len(gaussians)}, got {list(features.shape)}"
            )
        features = features.to(device=dev, dtype=dt)
    if select_backend(dev, backend) == "gsplat":
        return _render_gsplat(gaussians, cameras, bg, features, near, far, eps2d)
    return _render_torch(gaussians, cameras, bg, features, near, far, tile_size, eps2d, max_pairs)


MAX_TILE_ENTRIES = 1 << 24
"""The most (tile, Gaussian) list entries the torch backend bins at once (about 100 bytes each
while they are sorted: 1.7 GB). Views are binned and composited in groups under it, and a view that
alone is over it (large Gaussians on a fine tile grid: 65,536 Gaussians of a barely trained
reconstructor, each over a tenth of a 512 px view, are 10^9 entries of 4 px tiles) gets coarser
tiles (up to 64 px), which change only how pixels are grouped."""


def _render_torch(g, cams, bg, features, near, far, tile, eps2d, max_pairs) -> GaussianRender:
    v, n, w, h = len(cams), len(g), cams.width, cams.height
    dt = g.means.dtype
    viewmats, ks = cams.viewmats().to(dt), cams.K().to(dt)
    means2d, conics, depths, radii, valid = rt.project_gaussians(
        g.means, g.rotation_matrices() * g.scales[:, None, :], g.opacities, viewmats, ks, w, h, near, far, eps2d
    )
    # per (view, Gaussian) channels: colour, camera z, extra features
    chans = [g.colors.expand(v, -1, -1), depths[..., None]]
    if features is not None:
        chans.append(features.expand(v, -1, -1))
    feats = torch.cat(chans, -1)
    parts = []
    for views, view_tile in _view_groups(means2d, radii, valid, w, h, tile, MAX_TILE_ENTRIES):
        vg = v if isinstance(views, slice) else len(views)
        bins = rt.bin_tiles(means2d[views], radii[views], depths[views], valid[views], w, h, view_tile)
        parts.append(rt.composite(
            means2d[views].reshape(vg * n, 2), conics[views].reshape(vg * n, 3), g.opacities.expand(vg, n).reshape(-1),
            feats[views].reshape(vg * n, feats.shape[-1]), bins, vg, w, h, view_tile, max_pairs,
        ))
    summed, alpha = parts[0] if len(parts) == 1 else (torch.cat(views) for views in zip(*parts))  # one group: no copy
    rgb = summed[:, :3] + (1.0 - alpha) * bg.reshape(1, 3, 1, 1)
    depth = summed[:, 3:4] / alpha.clamp(min=DEPTH_EPS)
    return GaussianRender(rgb, alpha, depth, summed[:, 4:] if features is not None else None)


@torch.no_grad()
def _tile_entries(means2d, radii, valid, width, height, tile) -> Tensor:
    """[V] how many (tile, Gaussian) entries `bin_tiles` would make for each view."""
    keep, _, span = rt.tile_boxes(means2d, radii, valid, width, height, tile)
    return (span[..., 0] * span[..., 1] * keep).sum(-1)


def _view_groups(means2d, radii, valid, width, height, tile, max_entries):
    """Consecutive views binned together ([view indices], tile side), each group's entries under
    `max_entries` where a view alone allows it (else that view alone, its tiles doubled until it
    does, up to 64 px)."""
    entries = _tile_entries(means2d, radii, valid, width, height, tile).tolist()
    if sum(entries) <= max_entries:
        return [(slice(None), tile)]
    groups: list = []
    current: list[int] = []
    total = 0
    for i, e in enumerate(entries):
        if e > max_entries:
            if current:
                groups.append((current, tile))
                current, total = [], 0
            view_tile = tile
            while e > max_entries and view_tile < 64:
                view_tile *= 2
                e = int(_tile_entries(means2d[i:i + 1], radii[i:i + 1], valid[i:i + 1], width, height, view_tile)[0])
            groups.append(([i], view_tile))
            continue
        if current and total + e > max_entries:
            groups.append((current, tile))
            current, total = [], 0
        current.append(i)
        total += e
    if current:
        groups.append((current, tile))
    return groups


def _render_gsplat(g, cams, bg, features, near, far, eps2d) -> GaussianRender:
    try:
        from gsplat import rasterization  # CUDA path only: importing may JIT-build kernels
    except ImportError as exc:
        raise ImportError("render_gaussians: backend 'gsplat' needs the gsplat package (pip install gsplat)") from exc
    v, f32 = len(cams), torch.float32
    n_feat = 0 if features is None else features.shape[1]
    colors = g.colors if features is None else torch.cat([g.colors, features], -1)
    # zero background for the feature channels keeps them raw sums; gsplat adds
    # a zero background for its depth channel itself
    bgs = torch.cat([bg, bg.new_zeros(n_feat)]).to(f32).expand(v, -1).contiguous()
    out, alpha, _ = rasterization(
        g.means.to(f32).contiguous(), g.quats.to(f32).contiguous(), g.scales.to(f32).contiguous(),
        g.opacities.to(f32).contiguous(), colors.to(f32).contiguous(),
        cams.viewmats().to(f32).contiguous(), cams.K().to(f32).contiguous(), cams.width, cams.height,
        near_plane=near, far_plane=far, eps2d=eps2d, backgrounds=bgs, render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    out = out.permute(0, 3, 1, 2).to(g.means.dtype)  # [V,3+F+1,H,W]; "ED" depth is the last channel
    return GaussianRender(
        rgb=out[:, :3], alpha=alpha.permute(0, 3, 1, 2).to(g.means.dtype), depth=out[:, -1:],
        features=out[:, 3:3 + n_feat] if features is not None else None,
    )
