"""Flat 3D Gaussians sampled on a mesh surface: known ground truth for meshing tests and benchmarks.

Each Gaussian is a disk lying in its triangle's plane (two tangent scales of about
the sample spacing, a thin normal scale) coloured by the mesh at its centre, so
the set renders like the mesh and meshing it should give the mesh back.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from o3dcli.geometry.gaussians import Gaussians
from o3dcli.geometry.mesh import TriMesh


def surface_gaussians(
    mesh: TriMesh,
    count: int,
    seed: int = 0,
    coverage: float = 1.0,
    thickness: float = 0.05,
    opacity: float = 0.95,
) -> Gaussians:
    """``count`` Gaussians at area-uniform random points of ``mesh``.

    coverage: tangent standard deviation as a multiple of the mean sample spacing
        sqrt(area / count) (about 1 closes the gaps between random points).
    thickness: normal standard deviation as a multiple of the spacing.
    opacity: every Gaussian's opacity.
    """
    from scipy.spatial.transform import Rotation

    from o3dcli.render.mesh import MeshRaycaster

    gen = torch.Generator().manual_seed(seed)
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    probs = torch.from_numpy(areas / areas.sum())
    face = torch.multinomial(probs, count, replacement=True, generator=gen).numpy()
    r = torch.rand(count, 2, generator=gen, dtype=torch.float64).numpy()
    s = np.sqrt(r[:, 0])  # uniform over the triangle (Osada et al. 2002)
    bary = np.stack([1 - s, s * (1 - r[:, 1]), s * r[:, 1]], 1)
    points = np.einsum("nk,nkc->nc", bary, tri[face])
    normal = mesh.face_normals()[face].astype(np.float64)
    helper = np.where(np.abs(normal[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    t1 = np.cross(normal, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(normal, t1)
    rot = np.stack([t1, t2, normal], axis=2)  # columns: local x, y, z (z = normal)
    quat_xyzw = Rotation.from_matrix(rot).as_quat()
    quats = np.concatenate([quat_xyzw[:, 3:], quat_xyzw[:, :3]], 1)
    spacing = math.sqrt(areas.sum() / count)
    scales = np.tile([coverage * spacing, coverage * spacing, thickness * spacing], (count, 1))
    colors = MeshRaycaster(mesh).surface_color(face, bary.astype(np.float32))
    f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return Gaussians(f32(points), f32(scales), f32(quats), torch.full((count,), float(opacity)), f32(colors))


REFERENCE_SHAPES = ("sphere", "torus", "box")


def quadrant_texture(size: int = 256, soft: float = 0.0) -> np.ndarray:
    """[size, size, 3] uint8 test texture: smooth colour waves, the top-right and bottom-left
    quadrants darkened (so mirrored or flipped UVs show), and a plain border band so a
    box face's colours meet its neighbours' without a jump. ``soft`` > 0 ramps the
    quadrant and border edges over that width (in UV units) instead of a hard step."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size  # row 0 is the top (v = 1)
    tex = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * x), 0.5 + 0.4 * np.cos(2 * np.pi * y), 0.3 + 0.4 * x * y], -1)
    step = lambda d: np.clip(0.5 + d / soft, 0, 1) if soft > 0 else (d > 0).astype(np.float64)  # noqa: E731
    sx, sy = step(x - 0.5), step(y - 0.5)
    quadrant = sx * (1 - sy) + sy * (1 - sx)  # 1 where exactly one of x, y is past the middle
    tex *= (1 - 0.5 * quadrant)[..., None]
    border = 1 - step(np.minimum(np.minimum(x, 1 - x), np.minimum(y, 1 - y)) - 0.12)
    tex = tex * (1 - border[..., None]) + np.array([0.8, 0.7, 0.3]) * border[..., None]
    return (tex * 255 + 0.5).astype(np.uint8)


def reference_shape(kind: str, detail: int = 1, texture_size: int = 256, soft: float = 0.0) -> TriMesh:
    """A textured test mesh inside the unit box: "sphere" (radius 0.5), "torus" (outer
    radius 0.5, tube 0.15) or "box" (1 x 0.6 x 0.8), with ``quadrant_texture(texture_size, soft)``."""
    from o3dcli.synth.primitives import box_mesh, sphere_mesh, torus_mesh

    if kind == "sphere":
        prim = sphere_mesh(48 * detail, 24 * detail)
    elif kind == "torus":
        prim = torus_mesh(0.3, 64 * detail, 24 * detail)
    elif kind == "box":
        prim = box_mesh()
    else:
        raise ValueError(f"unknown reference shape {kind!r}: choose from {', '.join(REFERENCE_SHAPES)}")
    scale = np.array([1.0, 0.6, 0.8]) if kind == "box" else np.ones(3)
    return TriMesh(prim.vertices * 0.5 * scale, prim.faces, uv=prim.uv, texture=quadrant_texture(texture_size, soft))


def splatter_gaussians(
    mesh: TriMesh,
    size: int = 128,
    depth_noise: float = 0.0,
    seed: int = 0,
    footprint: float = 1.5,
    background_opacity: float = 0.02,
    noise_cells: int = 0,
) -> Gaussians:
    """A stand-in for a reconstructor's output in the published model's form (LGM's splatter
    images): one Gaussian per pixel of 4 views (azimuth 0/90/180/270, elevation 0, the published
    cameras) of ``size`` x ``size`` pixels, 4 * size^2 in all.

    A pixel whose ray hits ``mesh`` puts a round Gaussian (standard deviation ``footprint`` times
    the pixel's footprint at that depth, opacity 0.95, the surface's colour) on the hit, moved
    along the ray by normal noise of standard deviation ``depth_noise`` times the mesh's largest
    side: each view's surface then lies a little in front of or behind the others', as a
    network's predicted depths do: independent per pixel, or with ``noise_cells`` > 0 a smooth
    field per view (noise on a ``noise_cells`` x ``noise_cells`` grid, interpolated; a whole view's
    surface then bends away from the others'). A pixel that misses puts a faint Gaussian (opacity uniform in
    [0, ``background_opacity``]) at a random depth along its ray, within the mesh's bounding sphere.
    """
    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.geometry.rays import pixel_rays
    from o3dcli.render.mesh import MeshRaycaster

    gen = torch.Generator().manual_seed(seed)
    cams = orbit_cameras(0.0, [0.0, 90.0, 180.0, 270.0], size=size)
    origins, dirs = (t.reshape(-1, 3) for t in pixel_rays(cams))
    caster = MeshRaycaster(mesh)
    hits = caster.cast_rays(origins, dirs)
    hit = hits.hit
    n = len(origins)
    extent = float((mesh.vertices.max(0) - mesh.vertices.min(0)).max())
    depth = torch.where(hit, hits.t, torch.zeros(()))
    if noise_cells > 0:
        coarse = torch.randn(4, 1, noise_cells, noise_cells, generator=gen)
        err = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        err = (err / err.std()).reshape(-1)
    else:
        err = torch.randn(n, generator=gen)
    depth = depth + depth_noise * extent * err * hit
    # misses: a random depth between the near and far planes of the bounding sphere
    centre_dist = origins.norm(dim=-1)
    radius = 0.5 * float(np.linalg.norm(mesh.vertices.max(0) - mesh.vertices.min(0)))
    far_t = centre_dist - radius + 2 * radius * torch.rand(n, generator=gen)
    depth = torch.where(hit, depth, far_t)
    means = origins + depth[:, None] * dirs
    focal = float(cams.fy[0])
    sigma = footprint * depth.clamp_min(1e-3) / focal
    colors = np.full((n, 3), 0.5, np.float32)
    if hit.any():
        colors[hit.numpy()] = caster.surface_color(hits.face_ids[hit].numpy(), hits.barycentrics[hit].numpy())
    opacity = torch.where(hit, torch.full((n,), 0.95), background_opacity * torch.rand(n, generator=gen))
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    return Gaussians(means.float(), sigma[:, None].expand(n, 3).float().contiguous(), quats, opacity.float(),
                     torch.from_numpy(colors))
