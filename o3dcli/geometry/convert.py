"""Converters between other projects' camera conventions and ours (docs/design.md section 2).

Ours: world +Y up with objects facing +Z; OpenCV camera axes (x right, y down,
z forward); ``Cameras.c2w`` maps camera to world.

Published Objaverse / NeRF-synthetic style renders (Blender) store
``transform_matrix`` = camera-to-world with OpenGL camera axes (x right, y up,
z backwards) in Blender's Z-up world, plus ``camera_angle_x`` (horizontal field
of view, radians). Two changes take them to ours:

1. camera axes OpenGL -> OpenCV: flip the camera's y and z columns,
   c2w_cv = c2w_gl @ diag(1, -1, -1, 1);
2. world Z-up -> Y-up: (x, y, z)_blender -> (x, z, -y)_ours, so Blender's up
   (+Z) becomes our +Y and Blender's front view (-Y, what the "Front"
   viewport looks at) becomes our +Z. This is exactly the inverse of Blender's
   default OBJ/glTF import (Y-up file -> Z-up scene: (x, y, z) -> (x, -z, y)),
   so a mesh file imported into Blender and the cameras rendered there line up
   with the same file loaded by us and the converted cameras.

World-to-camera poses with OpenCV axes go through :func:`w2c_to_cameras`, with
``world`` mapping their world frame to ours. SyncDreamer's GSO evaluation poses
(elevation 30, 16 azimuths, distance 1.5) live in a Z-up world whose object
front faces +X (the camera at azimuth 0 sits on +X): ``XFRONT_ZUP_TO_YUP`` takes
them to ours, where they become exactly our orbit cameras at the same azimuths.
Checked against SyncDreamer's released renders of GSO CHICKEN_NESTING
(scripts/check_gso_cameras.py: mask IoU 1.0 in all 16 views).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from o3dcli.geometry.cameras import Cameras

# Point map (x, y, z) -> (x, z, -y): Blender/Z-up world to our +Y-up world.
ZUP_TO_YUP = torch.tensor(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
# Point map (x, y, z) -> (y, z, x): Z-up world with the front on +X (Zero123 / SyncDreamer
# object frame) to ours; +X (front) -> +Z, +Z (up) -> +Y. A proper rotation (det +1).
XFRONT_ZUP_TO_YUP = torch.tensor(
    [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
# OpenGL camera axes (y up, z back) <-> OpenCV (y down, z forward); its own inverse.
GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def transform_cameras(cameras: Cameras, world: Tensor) -> Cameras:
    """Cameras moved by a rigid world transform ``world`` [4, 4]: c2w' = world @ c2w.

    Apply the same transform to the scene points and every image stays the same.
    """
    world = torch.as_tensor(world, dtype=cameras.c2w.dtype, device=cameras.device)
    return Cameras(world @ cameras.c2w, cameras.fx, cameras.fy, cameras.cx, cameras.cy,
                   cameras.width, cameras.height)


def cameras_from_blender(
    transform_matrices, camera_angle_x: float, width: int, height: int, zup_to_yup: bool = True
) -> Cameras:
    """Cameras from Blender/NeRF-synthetic style poses.

    transform_matrices: [V, 4, 4] (or [V, 3, 4]) camera-to-world, OpenGL camera axes.
    camera_angle_x: horizontal field of view in radians (square pixels, centred
    principal point, as Blender writes them).
    zup_to_yup: the poses live in Blender's Z-up world (True for Objaverse renders).
    """
    c2w = _as_4x4(transform_matrices, "transform_matrices")
    c2w = c2w @ GL_TO_CV
    if zup_to_yup:
        c2w = ZUP_TO_YUP @ c2w
    v = c2w.shape[0]
    f = 0.5 * width / math.tan(0.5 * float(camera_angle_x))
    full = lambda x: torch.full((v,), float(x))  # noqa: E731
    return Cameras(c2w, full(f), full(f), full(width / 2), full(height / 2), width, height)


def cameras_to_blender(cameras: Cameras, yup_to_zup: bool = True) -> tuple[Tensor, float]:
    """The inverse of :func:`cameras_from_blender`: (transform_matrices [V, 4, 4], camera_angle_x).

    Blender's format has one horizontal field of view and a centred principal
    point, so cameras that differ from that cannot be written without loss and
    raise ValueError.
    """
    fx = cameras.fx.double()
    centred = torch.allclose(cameras.cx.double(), torch.full_like(fx, cameras.width / 2), atol=1e-3) and \
        torch.allclose(cameras.cy.double(), torch.full_like(fx, cameras.height / 2), atol=1e-3)
    if not centred or not torch.allclose(fx, cameras.fy.double(), rtol=1e-5) or \
            not torch.allclose(fx, fx[:1].expand_as(fx), rtol=1e-5):
        raise ValueError("Blender camera files need one focal length (fx == fy for all views) "
                         "and a centred principal point")
    c2w = cameras.c2w.float()
    if yup_to_zup:
        c2w = torch.linalg.inv(ZUP_TO_YUP.to(c2w)) @ c2w
    c2w = c2w @ GL_TO_CV.to(c2w)
    angle_x = 2.0 * math.atan(0.5 * cameras.width / float(fx[0]))
    return c2w, angle_x


def w2c_to_cameras(w2c, K, width: int, height: int, world=None) -> Cameras:
    """Cameras from world-to-camera poses with OpenCV camera axes.

    w2c: [V, 3, 4] or [V, 4, 4] ([R | t], x_cam = R x_world + t).
    K: [3, 3] shared or [V, 3, 3] per view, in pixels.
    world: optional [4, 4] rigid map from the poses' world frame to ours
        (ZUP_TO_YUP, XFRONT_ZUP_TO_YUP, ...); None keeps the frame.
    """
    w2c = _as_4x4(w2c, "w2c")
    c2w = torch.linalg.inv(w2c.double()).float()
    if world is not None:
        c2w = torch.as_tensor(world, dtype=torch.float32) @ c2w
    K = torch.as_tensor(K, dtype=torch.float32)
    if K.ndim == 2:
        K = K.expand(c2w.shape[0], 3, 3)
    if K.shape != (c2w.shape[0], 3, 3):
        raise ValueError(f"K must be [3,3] or [{c2w.shape[0]},3,3], got {tuple(K.shape)}")
    return Cameras(c2w, K[:, 0, 0].clone(), K[:, 1, 1].clone(), K[:, 0, 2].clone(), K[:, 1, 2].clone(),
                   width, height)


def _as_4x4(m, name: str) -> Tensor:
    m = torch.as_tensor(m, dtype=torch.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[-1] != 4 or m.shape[-2] not in (3, 4):
        raise ValueError(f"{name} must be [V,4,4] or [V,3,4], got {tuple(m.shape)}")
    if m.shape[-2] == 3:
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(m.shape[0], 1, 4)
        m = torch.cat([m, bottom], dim=1)
    return m
