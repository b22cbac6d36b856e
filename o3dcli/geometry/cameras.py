"""A batch of pinhole cameras and orbit construction.

Conventions (docs/design.md section 2): world is right-handed, +Y up, objects face +Z.
Camera axes are OpenCV's: x right, y down, z forward. ``c2w`` maps camera
coordinates to world coordinates; gsplat's ``viewmats`` are its inverse.
Orbit azimuth 0 puts the camera on +Z looking at the origin and grows
counter-clockwise seen from above (azimuth 90 is on +X); positive elevation is
above the object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


def fov_to_focal(fov_deg: float, size: int) -> float:
    """Focal length in pixels for a field of view ``fov_deg`` spanning ``size`` pixels."""
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2.0)


@dataclass(frozen=True)
class Cameras:
    """A batch of V pinhole cameras sharing one image size.

    c2w: [V, 4, 4] float32, OpenCV camera axes.
    fx, fy, cx, cy: [V] float32, in pixels (pixel centres at integer + 0.5).
    """

    c2w: Tensor
    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.c2w.ndim != 3 or self.c2w.shape[-2:] != (4, 4):
            raise ValueError(f"c2w must be [V,4,4], got {tuple(self.c2w.shape)}")
        v = self.c2w.shape[0]
        for name in ("fx", "fy", "cx", "cy"):
            t = getattr(self, name)
            if t.shape != (v,):
                raise ValueError(f"{name} must be [{v}], got {tuple(t.shape)}")

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        return Cameras(
            self.c2w[idx], self.fx[idx], self.fy[idx], self.cx[idx], self.cy[idx],
            self.width, self.height,
        )

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def to(self, device) -> "Cameras":
        return Cameras(
            self.c2w.to(device), self.fx.to(device), self.fy.to(device),
            self.cx.to(device), self.cy.to(device), self.width, self.height,
        )

    def viewmats(self) -> Tensor:
        """World-to-camera matrices [V, 4, 4] (what gsplat calls ``viewmats``)."""
        return torch.linalg.inv(self.c2w)

    def K(self) -> Tensor:
        """Intrinsic matrices [V, 3, 3]."""
        v = len(self)
        k = torch.zeros(v, 3, 3, dtype=self.c2w.dtype, device=self.device)
        k[:, 0, 0] = self.fx
        k[:, 1, 1] = self.fy
        k[:, 0, 2] = self.cx
        k[:, 1, 2] = self.cy
        k[:, 2, 2] = 1.0
        return k

    @property
    def centers(self) -> Tensor:
        """Camera centres in world space [V, 3]."""
        return self.c2w[:, :3, 3]

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras at another image size (intrinsics scaled)."""
        sx, sy = width / self.width, height / self.height
        return Cameras(self.c2w, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    @staticmethod
    def cat(cams: Sequence["Cameras"]) -> "Cameras":
        w, h = cams[0].width, cams[0].height
        if any(c.width != w or c.height != h for c in cams):
            raise ValueError("cannot concatenate cameras of different image sizes")
        return Cameras(
            torch.cat([c.c2w for c in cams]), torch.cat([c.fx for c in cams]),
            torch.cat([c.fy for c in cams]), torch.cat([c.cx for c in cams]),
            torch.cat([c.cy for c in cams]), w, h,
        )


def look_at_c2w(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None,
                pole_up: Tensor | None = None) -> Tensor:
    """Camera-to-world matrices [V, 4, 4] for cameras at ``eye`` [V, 3] looking at ``target``.

    OpenCV axes: z = forward (towards the target), x = forward x up (right),
    y = forward x right (down). When forward is parallel to ``up`` (a camera at a
    pole), ``pole_up`` ([3] or [V, 3]; default the world -Z axis) is used as up
    instead, so the poles are well defined.
    """
    eye = torch.as_tensor(eye, dtype=torch.float32)
    if eye.ndim == 1:
        eye = eye[None]
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target, dtype=torch.float32).expand_as(eye)
    up_t = torch.tensor([0.0, 1.0, 0.0]) if up is None else torch.as_tensor(up, dtype=torch.float32)
    up_t = up_t.to(eye.device).expand_as(eye).clone()
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    parallel = torch.linalg.cross(forward, up_t).norm(dim=-1) < 1e-6
    pole_t = torch.tensor([0.0, 0.0, -1.0]) if pole_up is None else torch.as_tensor(pole_up, dtype=torch.float32)
    up_t[parallel] = pole_t.to(eye.device).expand_as(eye)[parallel]
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up_t), dim=-1)
    down = torch.linalg.cross(forward, right)
    c2w = torch.eye(4, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = down
    c2w[:, :3, 2] = forward
    c2w[:, :3, 3] = eye
    return c2w


def orbit_positions(elevations, azimuths, radius) -> Tensor:
    """Camera centres [V, 3] on an orbit (degrees; see the module docstring)."""
    el = torch.deg2rad(torch.as_tensor(elevations, dtype=torch.float64))
    az = torch.deg2rad(torch.as_tensor(azimuths, dtype=torch.float64))
    el, az = torch.broadcast_tensors(el, az)
    r = torch.as_tensor(radius, dtype=torch.float64)
    pos = torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1)
    return (pos * r.reshape(-1, 1) if r.ndim else pos * r).float()


def orbit_pole_up(elevations, azimuths) -> Tensor:
    """Up vectors [V, 3] for orbit cameras at a pole (elevation +-90 degrees), where +Y is no help:
    the limit of the image's up direction as the elevation nears the pole at that azimuth, so the
    view still turns with the azimuth (a turntable seen from straight above spins): the horizontal
    direction away from the camera's side above the object, towards it below. At elevation +90,
    azimuth 0 that is -Z, the fixed fallback of `look_at_c2w`."""
    el = torch.as_tensor(elevations, dtype=torch.float64)
    az = torch.deg2rad(torch.as_tensor(azimuths, dtype=torch.float64))
    el, az = torch.broadcast_tensors(el, az)
    s = torch.where(el > 0, -1.0, 1.0).to(torch.float64)
    # + 0.0 turns -0.0 into 0.0, so elevation +90 azimuth 0 stays bit-identical to the -Z fallback
    return (torch.stack([s * torch.sin(az), torch.zeros_like(az), s * torch.cos(az)], -1) + 0.0).float().reshape(-1, 3)


def orbit_cameras(
    elevations,
    azimuths,
    radius: float = 1.7417,
    fov_deg: float = 39.6,
    size: int | tuple[int, int] = 256,
) -> Cameras:
    """Cameras on an orbit around the origin, all looking at it.

    elevations, azimuths: degrees, scalars or [V] sequences (broadcast together).
    fov_deg: field of view across the image height (and width: square pixels,
    the focal length is taken from the height).
    size: image side, or (width, height).
    """
    w, h = (size, size) if isinstance(size, int) else size
    eye = orbit_positions(elevations, azimuths, radius)
    c2w = look_at_c2w(eye, pole_up=orbit_pole_up(elevations, azimuths))
    v = c2w.shape[0]
    f = fov_to_focal(fov_deg, h)
    full = lambda x: torch.full((v,), float(x))  # noqa: E731
    return Cameras(c2w, full(f), full(f), full(w / 2), full(h / 2), w, h)
