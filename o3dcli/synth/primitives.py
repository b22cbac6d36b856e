"""Closed primitive meshes with their own UV layouts, in a local frame.

Every primitive fits the local box [-1, 1]^3 (before its per-axis half-extents
are applied), has counter-clockwise outward faces and UVs in [0, 1]^2 (origin
bottom-left). Round shapes are surfaces of revolution about local +Y: a profile
curve (radius, height) from bottom to top swept around the axis, u = angle / 2 pi,
v = arc length along the profile; the seam duplicates vertices so UVs stay
continuous. The box maps the whole [0, 1]^2 onto each face.

Hand-written: generating textured primitives with our own UV layouts is a few
lines of numpy; trimesh's creation helpers give no UVs for most of these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIMITIVE_KINDS = ("box", "sphere", "cylinder", "cone", "torus", "capsule")


@dataclass(frozen=True)
class PrimitiveMesh:
    """A closed primitive in its local frame.

    vertices: [N, 3] float64; faces: [M, 3] int64 (counter-clockwise seen from outside);
    uv: [N, 2] float64 in [0, 1]; anchor: (3,) a local point deep inside the solid
    (the centre, or a point on a torus's core circle); clearance: distance from the
    anchor to the surface in local units, for axis-aligned unit half-extents.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    anchor: np.ndarray
    clearance: float


def revolve(radius: np.ndarray, height: np.ndarray, segments: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sweep the profile (radius[i], height[i]), ordered bottom to top, around +Y.

    Rows with radius 0 are poles: their quads collapse to single triangles.
    Returns vertices [R*(S+1), 3], faces, uv.
    """
    radius, height = np.asarray(radius, np.float64), np.asarray(height, np.float64)
    rows, cols = len(radius), segments + 1
    theta = np.linspace(0.0, 2.0 * np.pi, cols)
    theta[-1] = 0.0  # the seam column repeats column 0 exactly (same positions, u = 1)
    # x = r cos, z = r sin makes (d profile) x (d theta) point outwards for a bottom-to-top profile
    verts = np.stack([
        radius[:, None] * np.cos(theta)[None, :],
        np.broadcast_to(height[:, None], (rows, cols)),
        radius[:, None] * np.sin(theta)[None, :],
    ], axis=-1).reshape(-1, 3)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(radius), np.diff(height)))])
    uv = np.stack(np.meshgrid(np.linspace(0.0, 1.0, cols), arc / arc[-1]), axis=-1).reshape(-1, 2)
    faces = []
    for i in range(rows - 1):
        j = np.arange(segments)
        a, b, c, d = i * cols + j, (i + 1) * cols + j, (i + 1) * cols + j + 1, i * cols + j + 1
        if radius[i + 1] > 0:  # (a, b, c) collapses when the upper row is a pole
            faces.append(np.stack([a, b, c], -1))
        if radius[i] > 0:  # (a, c, d) collapses when the lower row is a pole
            faces.append(np.stack([a, c, d], -1))
    return verts, np.concatenate(faces).astype(np.int64), uv


def box_mesh() -> PrimitiveMesh:
    """Cube [-1, 1]^3; each face shows the whole texture tile."""
    # (normal, u axis, v axis) with u x v = normal, so the corner order below is counter-clockwise
    frames = [((1, 0, 0), (0, 0, -1), (0, 1, 0)), ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),
              ((0, 1, 0), (1, 0, 0), (0, 0, -1)), ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
              ((0, 0, 1), (1, 0, 0), (0, 1, 0)), ((0, 0, -1), (-1, 0, 0), (0, 1, 0))]
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float64)
    verts, uvs, faces = [], [], []
    for k, (n, u, v) in enumerate(frames):
        n, u, v = (np.asarray(x, np.float64) for x in (n, u, v))
        verts.append(n + corners[:, :1] * u + corners[:, 1:] * v)
        uvs.append((corners + 1.0) / 2.0)
        faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + 4 * k)
    return PrimitiveMesh(np.concatenate(verts), np.concatenate(faces), np.concatenate(uvs), np.zeros(3), 1.0)


def sphere_mesh(segments: int = 32, rings: int = 16) -> PrimitiveMesh:
    phi = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)
    r = np.cos(phi)
    r[[0, -1]] = 0.0
    v, f, uv = revolve(r, np.sin(phi), segments)
    return PrimitiveMesh(v, f, uv, np.zeros(3), 1.0)


def cylinder_mesh(segments: int = 32) -> PrimitiveMesh:
    """Radius 1, height -1..1, flat caps (v: bottom cap 0-0.25, side 0.25-0.75, top cap)."""
    v, f, uv = revolve([0.0, 1.0, 1.0, 0.0], [-1.0, -1.0, 1.0, 1.0], segments)
    return PrimitiveMesh(v, f, uv, np.zeros(3), 1.0)


def cone_mesh(segments: int = 32) -> PrimitiveMesh:
    """Base radius 1 at y = -1, apex at y = +1."""
    v, f, uv = revolve([0.0, 1.0, 0.5, 0.0], [-1.0, -1.0, 0.0, 1.0], segments)
    # from the centre the nearest surface is the slanted side: distance 1 / sqrt(5)
    return PrimitiveMesh(v, f, uv, np.zeros(3), 1.0 / np.sqrt(5.0))


def torus_mesh(minor: float = 0.3, segments: int = 32, rings: int = 16) -> PrimitiveMesh:
    """Torus around +Y with outer radius 1 and tube radius ``minor`` (< 0.5)."""
    major = 1.0 - minor
    phi = np.linspace(-np.pi, np.pi, rings + 1)  # starts on the inner equator, goes under and round
    r, y = major + minor * np.cos(phi), minor * np.sin(phi)
    r[-1], y[-1] = r[0], y[0]
    v, f, uv = revolve(r, y, segments)
    return PrimitiveMesh(v, f, uv, np.array([major, 0.0, 0.0]), minor)


def capsule_mesh(radius: float = 0.5, segments: int = 32, rings: int = 8) -> PrimitiveMesh:
    """Cylinder of radius ``radius`` with hemispherical ends, height -1..1."""
    half = 1.0 - radius
    phi = np.linspace(-np.pi / 2, 0.0, rings + 1)
    r = np.concatenate([radius * np.cos(phi), radius * np.cos(phi[::-1])])
    y = np.concatenate([-half + radius * np.sin(phi), half - radius * np.sin(phi[::-1])])
    r[[0, -1]] = 0.0
    v, f, uv = revolve(r, y, segments)
    return PrimitiveMesh(v, f, uv, np.zeros(3), radius)


def primitive_mesh(kind: str, params: dict | None = None) -> PrimitiveMesh:
    """The local mesh of ``kind`` (one of PRIMITIVE_KINDS) with its shape ``params``."""
    params = params or {}
    builders = {"box": box_mesh, "sphere": sphere_mesh, "cylinder": cylinder_mesh, "cone": cone_mesh,
                "torus": torus_mesh, "capsule": capsule_mesh}
    if kind not in builders:
        raise ValueError(f"unknown primitive {kind!r}; expected one of {PRIMITIVE_KINDS}")
    return builders[kind](**params)


def random_params(kind: str, rng: np.random.Generator) -> dict:
    """Shape parameters drawn for ``kind`` (JSON-friendly floats)."""
    if kind == "torus":
        return {"minor": float(rng.uniform(0.15, 0.4))}
    if kind == "capsule":
        return {"radius": float(rng.uniform(0.3, 0.7))}
    return {}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (from a normalised Gaussian quaternion)."""
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def yaw_tilt_rotation(yaw: float, tilt: float, tilt_axis: float) -> np.ndarray:
    """Rotation about +Y by ``yaw`` then a tilt by ``tilt`` about a horizontal axis (radians)."""
    c, s = np.cos(yaw), np.sin(yaw)
    ry = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    ax = np.array([np.cos(tilt_axis), 0.0, np.sin(tilt_axis)])
    k = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
    rt = np.eye(3) + np.sin(tilt) * k + (1 - np.cos(tilt)) * (k @ k)  # Rodrigues
    return rt @ ry
