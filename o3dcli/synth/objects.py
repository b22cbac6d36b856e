"""Procedural objects: 1-4 textured primitives joined into one TriMesh.

The first primitive stands roughly upright at the origin. Each later one is
attached to a random point on an earlier one's surface: its anchor (a point deep
inside it) is placed just outside that surface point, closer than its clearance,
so the two solids always overlap and the object reads as one thing. All
primitives share one texture atlas (one tile each). Everything is drawn from
``numpy.random.default_rng(seed)``, so a seed fully determines the object.
"""

from __future__ import annotations

import numpy as np

from o3dcli.geometry.mesh import TriMesh
from o3dcli.synth.primitives import (
    PRIMITIVE_KINDS,
    primitive_mesh,
    random_params,
    random_rotation,
    yaw_tilt_rotation,
)
from o3dcli.synth.textures import atlas_grid, build_atlas, random_texture_spec, tile_uv

MAX_PRIMITIVES = 4


def _surface_point(vertices: np.ndarray, faces: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An area-uniform random point on a triangle mesh and the unit normal of its face."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    k = rng.choice(len(faces), p=area / area.sum())
    a, b = rng.random(2)
    if a + b > 1.0:  # fold the sample back into the triangle
        a, b = 1.0 - a, 1.0 - b
    point = tri[k, 0] + a * (tri[k, 1] - tri[k, 0]) + b * (tri[k, 2] - tri[k, 0])
    return point, cross[k] / area[k]


def _draw_primitive(k: int, placed: list[dict], rng: np.random.Generator) -> dict:
    """Kind, shape, half-extents, rotation and translation of primitive ``k``."""
    kind = str(rng.choice(PRIMITIVE_KINDS))
    params = random_params(kind, rng)
    local = primitive_mesh(kind, params)
    if k == 0:
        base = rng.uniform(0.3, 0.6)
        half = base * rng.uniform(0.6, 1.4, size=3)
        if kind in ("sphere", "torus"):  # keep round things round-ish
            half = base * rng.uniform(0.85, 1.15, size=3)
        # mostly upright, like objects standing on a table
        tilt = rng.uniform(0.0, 0.25) if rng.random() < 0.7 else rng.uniform(0.0, np.pi)
        rotation = yaw_tilt_rotation(rng.uniform(0, 2 * np.pi), tilt, rng.uniform(0, 2 * np.pi))
        return {"kind": kind, "params": params, "local": local, "half_extents": half, "rotation": rotation,
                "translation": np.zeros(3), "parent": None}
    parent_index = int(rng.integers(0, len(placed)))
    parent = placed[parent_index]
    point, normal = _surface_point(parent["world_vertices"], parent["local"].faces, rng)
    half = parent["half_extents"].mean() * rng.uniform(0.35, 0.9) * rng.uniform(0.6, 1.4, size=3)
    rotation = random_rotation(rng)
    # the anchor stays inside the child with margin (clearance * smallest half-extent),
    # so pushing it out along the normal by less than that keeps the solids overlapping
    depth = rng.uniform(0.0, 0.6) * local.clearance * half.min()
    anchor_world = rotation @ (half * local.anchor)
    translation = point + depth * normal - anchor_world
    return {"kind": kind, "params": params, "local": local, "half_extents": half, "rotation": rotation,
            "translation": translation, "parent": parent_index}


def make_object(seed: int, tile_px: int = 128, max_primitives: int = MAX_PRIMITIVES) -> tuple[TriMesh, dict]:
    """The procedural object of ``seed``: a textured TriMesh in the unit box and its spec.

    The spec (JSON-friendly) lists each primitive's kind, shape params, half-extents,
    rotation, translation (before normalisation), parent, texture and atlas tile,
    and the face / vertex ranges it occupies in the mesh, plus the normalisation
    (``vertices_unit = (vertices - center) * scale``).
    """
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, max_primitives + 1))
    hue = float(rng.random())
    grid = atlas_grid(count)
    placed: list[dict] = []
    verts, faces, uvs, textures = [], [], [], []
    n_verts = n_faces = 0
    for k in range(count):
        prim = _draw_primitive(k, placed, rng)
        local = prim["local"]
        prim["world_vertices"] = (local.vertices * prim["half_extents"]) @ prim["rotation"].T + prim["translation"]
        prim["texture"] = random_texture_spec(rng, hue)
        prim["vertex_range"] = [n_verts, n_verts + len(local.vertices)]
        prim["face_range"] = [n_faces, n_faces + len(local.faces)]
        verts.append(prim["world_vertices"])
        faces.append(local.faces + n_verts)
        uvs.append(tile_uv(local.uv, k, grid, tile_px))
        textures.append(prim["texture"])
        n_verts += len(local.vertices)
        n_faces += len(local.faces)
        placed.append(prim)
    vertices = np.concatenate(verts)
    lo, hi = vertices.min(0), vertices.max(0)
    center, extent = (lo + hi) / 2.0, float((hi - lo).max())
    # normalise in float64, then TriMesh.normalized() is a near no-op on the float32 result
    mesh = TriMesh(
        vertices=((vertices - center) / extent).astype(np.float32),
        faces=np.concatenate(faces).astype(np.int32),
        uv=np.concatenate(uvs).astype(np.float32),
        texture=build_atlas(textures, tile_px),
    ).normalized()
    spec = {
        "seed": int(seed),
        "primitives": [
            {
                "kind": p["kind"], "params": p["params"],
                "half_extents": p["half_extents"].tolist(), "rotation": p["rotation"].tolist(),
                "translation": p["translation"].tolist(), "anchor": p["local"].anchor.tolist(),
                "parent": p["parent"], "texture": p["texture"], "atlas_tile": k,
                "vertex_range": p["vertex_range"], "face_range": p["face_range"],
            }
            for k, p in enumerate(placed)
        ],
        "atlas": {"grid": grid, "tile_px": tile_px},
        "normalization": {"center": center.tolist(), "scale": 1.0 / extent},
    }
    return mesh, spec


def signed_volume(mesh: TriMesh) -> float:
    """Signed enclosed volume (positive for closed meshes with outward counter-clockwise faces)."""
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)
