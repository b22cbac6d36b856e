"""Per-pixel camera rays and Plucker coordinates (docs/design.md section 2).

Rays go through pixel centres: pixel (u, v) covers [u, u+1) x [v, v+1), so its
centre is (u + 0.5, v + 0.5) in the same pixel frame as ``cx, cy``.
Plucker coordinates of a ray with origin o and unit direction d are (d, o x d):
the moment o x d is the same for every point on the ray, which is what makes it
a camera-independent description of the ray for the denoiser's conditioning.
"""

from __future__ import annotations

import torch
from torch import Tensor

from o3dcli.geometry.cameras import Cameras


def camera_ray_directions(cameras: Cameras) -> Tensor:
    """Directions [V, H, W, 3] in world space scaled so their camera-z component is 1.

    With this scaling a ray parameter t equals the z-depth along the camera axis,
    which the mesh renderer uses to read depth straight from the hit distance.
    """
    dev, dt = cameras.device, cameras.c2w.dtype
    u = torch.arange(cameras.width, device=dev, dtype=dt) + 0.5
    v = torch.arange(cameras.height, device=dev, dtype=dt) + 0.5
    x = (u[None, None, :] - cameras.cx[:, None, None]) / cameras.fx[:, None, None]  # [V,1,W]
    y = (v[None, :, None] - cameras.cy[:, None, None]) / cameras.fy[:, None, None]  # [V,H,1]
    x, y = torch.broadcast_tensors(x, y)
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [V,H,W,3], OpenCV axes
    rot = cameras.c2w[:, :3, :3]
    return torch.einsum("vij,vhwj->vhwi", rot, d_cam)


def pixel_rays(cameras: Cameras) -> tuple[Tensor, Tensor]:
    """World-space rays through every pixel centre.

    Returns origins [V, H, W, 3] (the camera centres, repeated) and unit
    directions [V, H, W, 3].
    """
    dirs = torch.nn.functional.normalize(camera_ray_directions(cameras), dim=-1)
    origins = cameras.centers[:, None, None, :].expand_as(dirs)
    return origins, dirs


def plucker_rays(cameras: Cameras) -> Tensor:
    """Plucker ray maps [V, 6, H, W]: channels 0-2 the unit direction d, 3-5 the moment o x d."""
    origins, dirs = pixel_rays(cameras)
    moment = torch.linalg.cross(origins, dirs, dim=-1)
    return torch.cat([dirs, moment], dim=-1).permute(0, 3, 1, 2).contiguous()


def relative_to(cameras: Cameras, ref_index: int = 0) -> Cameras:
    """The cameras expressed in the frame of camera ``ref_index``: c2w_ref^-1 @ c2w_i.

    The reference camera becomes the identity (at the origin, looking down +z),
    so conditioning built from these poses depends only on the views' relative
    placement, not on where the world frame happens to be.
    """
    ref_inv = torch.linalg.inv(cameras.c2w[ref_index])
    return Cameras(
        ref_inv[None] @ cameras.c2w, cameras.fx, cameras.fy, cameras.cx, cameras.cy,
        cameras.width, cameras.height,
    )
