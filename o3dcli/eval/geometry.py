"""Geometry metrics of the o3d evaluation protocol: Chamfer distance, F-score, normal
consistency (on surface samples) and volume IoU (on a voxel grid).

Units: the ground-truth mesh is normalised to the unit box (longest side 1), so
every distance is a fraction of the object's size. Distances are Euclidean (L2,
not squared). Nearest neighbours come from ``scipy.spatial.cKDTree``; ray casts
for the voxel grid from open3d's ``RaycastingScene``; the connected components
of the grid from ``scipy.sparse.csgraph``. Only the glue is written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from o3dcli.geometry.mesh import TriMesh

DEFAULT_THRESHOLDS = (0.02, 0.05, 0.1)
QUERY_CHUNK = 16384
"""Points per nearest-neighbour query: Ctrl-C and SIGTERM are held while one runs (see `nearest`)."""


def nearest(tree, points: np.ndarray, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """`tree.query(points, workers=workers)` (distances, indices), QUERY_CHUNK points at a time with
    Ctrl-C and SIGTERM held during each: interrupted inside a query that runs on several threads,
    scipy's workers go on writing into freed memory and the process dies of a segmentation fault
    (exit 139, no "interrupted") instead of stopping as it says."""
    from o3dcli.publish import signals_deferred

    dist, index = np.empty(len(points)), np.empty(len(points), np.intp)
    for start in range(0, len(points), QUERY_CHUNK):
        with signals_deferred():
            dist[start:start + QUERY_CHUNK], index[start:start + QUERY_CHUNK] = tree.query(
                points[start:start + QUERY_CHUNK], workers=workers)
    return dist, index


@dataclass(frozen=True)
class PointSet:
    """Points on a surface: points [N, 3] float64 and unit normals [N, 3] (or None)."""

    points: np.ndarray
    normals: np.ndarray | None = None


def sample_surface(mesh: TriMesh, n: int, seed: int = 0) -> PointSet:
    """``n`` points uniform over the surface area (triangle picked with probability
    proportional to its area, then a uniform point inside it) with their face normals.
    The same mesh, n and seed give the same points."""
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("cannot sample the surface of a mesh with zero area")
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(area)
    face = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(area) - 1)
    u, v = rng.random(n), rng.random(n)
    fold = u + v > 1  # reflect into the triangle: uniform over its area
    u[fold], v[fold] = 1 - u[fold], 1 - v[fold]
    t = tri[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    normals = cross[face] / np.maximum(area[face], 1e-300)[:, None]
    return PointSet(points, normals)


def gaussian_points(gaussians, min_opacity: float = 0.5) -> PointSet:
    """Surface samples of a Gaussian set that has no mesh: the means of the Gaussians with
    opacity > ``min_opacity``; a normal is each Gaussian's shortest axis (a flat Gaussian's
    normal; its sign is irrelevant because normal consistency uses |cos|). No normals (normal
    consistency n/a) when most of them are round (shortest axis over FLAT_RATIO of the longest),
    as a point cloud's Gaussians are: their "shortest axis" is whichever comes first."""
    import torch

    keep = gaussians.opacities > min_opacity
    if int(keep.sum()) == 0:
        raise ValueError(f"no Gaussian has opacity > {min_opacity}: no surface to measure")
    g = gaussians[keep]
    low, high = g.scales.min(dim=1).values, g.scales.max(dim=1).values
    if float((low < FLAT_RATIO * high).double().mean()) < 0.5:
        return PointSet(g.means.double().numpy(), None)
    rot = g.rotation_matrices().double()
    axis = g.scales.argmin(dim=1)
    normals = rot[torch.arange(len(g)), :, axis]  # column = that local axis in world space
    return PointSet(g.means.double().numpy(), normals.numpy())


FLAT_RATIO = 0.9
"""A Gaussian whose shortest axis is under this share of its longest has that axis for a normal."""


def surface_metrics(pred: PointSet, gt: PointSet, thresholds=DEFAULT_THRESHOLDS) -> dict[str, float | None]:
    """Chamfer distance, F-score and normal consistency between two point sets.

    With d(p, S) the distance from p to the nearest point of set S:
    - ``chamfer_pred_to_gt`` (accuracy) = mean over pred points of d(p, GT);
    - ``chamfer_gt_to_pred`` (completeness) = mean over GT points of d(g, pred);
    - ``chamfer`` = the mean of the two (a surface offset along its normals by a gap d scores d);
    - ``fscore@t`` = 2 P R / (P + R) with precision P = share of pred points with
      d(p, GT) < t and recall R = share of GT points with d(g, pred) < t (0 if both are 0);
    - ``normal_consistency`` = the mean of the two one-sided means of |n_p . n_q|,
      q the nearest neighbour of p in the other set (None without normals).
    """
    from scipy.spatial import cKDTree

    from o3dcli.jobs import library_threads

    if len(pred.points) == 0 or len(gt.points) == 0:
        raise ValueError("surface metrics need non-empty point sets")
    threads = library_threads()
    d_pg, i_pg = nearest(cKDTree(gt.points), pred.points, threads)
    d_gp, i_gp = nearest(cKDTree(pred.points), gt.points, threads)
    acc, comp = float(d_pg.mean()), float(d_gp.mean())
    out: dict[str, float | None] = {"chamfer": (acc + comp) / 2, "chamfer_pred_to_gt": acc, "chamfer_gt_to_pred": comp}
    for t in thresholds:
        p, r = float((d_pg < t).mean()), float((d_gp < t).mean())
        out[fscore_key(t)] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    if pred.normals is not None and gt.normals is not None:
        a = np.abs(np.einsum("ij,ij->i", pred.normals, gt.normals[i_pg])).mean()
        b = np.abs(np.einsum("ij,ij->i", gt.normals, pred.normals[i_gp])).mean()
        out["normal_consistency"] = float((a + b) / 2)
    else:
        out["normal_consistency"] = None
    return out


def fscore_key(t: float) -> str:
    return f"fscore@{t:g}"


# ---------------------------------------------------------------------------------- volume IoU

@dataclass(frozen=True)
class VoxelGrid:
    """res^3 voxels of side ``h`` whose first centre is ``origin + h / 2``."""

    origin: np.ndarray
    h: float
    res: int

    def centers(self) -> np.ndarray:
        """[res, res, res, 3] voxel centres, indexed [i, j, k] along x, y, z."""
        c = self.origin[None] + (np.arange(self.res)[:, None] + 0.5) * self.h
        return np.stack(np.meshgrid(c[:, 0], c[:, 1], c[:, 2], indexing="ij"), axis=-1)


def grid_around(meshes: list[TriMesh], res: int = 64) -> VoxelGrid:
    """A cubic grid over the union of the meshes' bounding boxes, ``res`` voxels a side,
    with the boxes' longest side spanning res - 2 voxels: one empty voxel of margin on
    every side, so the grid's border is outside every mesh."""
    lo = np.min([m.vertices.min(0) for m in meshes], axis=0).astype(np.float64)
    hi = np.max([m.vertices.max(0) for m in meshes], axis=0).astype(np.float64)
    side = float((hi - lo).max())
    if side <= 0:
        raise ValueError("cannot build a voxel grid around meshes of zero extent")
    h = side / (res - 2)
    return VoxelGrid((lo + hi) / 2 - res * h / 2, h, res)


def voxel_occupancy(mesh: TriMesh, grid: VoxelGrid) -> np.ndarray:
    """[res, res, res] bool: which voxel centres lie inside the mesh.

    Inside = not reachable from the grid's border. Neighbouring centres (6-connected)
    are linked unless the segment between them crosses the mesh (one ray cast per
    link); the component holding the border is outside, every other centre inside.
    This is exact for closed meshes, including unions of overlapping closed parts
    (where ray parity would call the overlap "outside") and self-intersections; an
    open mesh is closed up to the voxel size (gaps narrower than a voxel block the
    fill, wider ones let it in, so a sheet or a cup with a hole has no inside).
    """
    import open3d as o3d
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from o3dcli.jobs import library_threads

    threads = library_threads()
    res = grid.res
    centers = grid.centers().astype(np.float32)
    idx = np.arange(res**3).reshape(res, res, res)
    scene = o3d.t.geometry.RaycastingScene(nthreads=threads)
    scene.add_triangles(o3d.core.Tensor(mesh.vertices), o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    src, dst = [], []
    for axis in range(3):
        lo_sl = [slice(None)] * 3
        hi_sl = [slice(None)] * 3
        lo_sl[axis], hi_sl[axis] = slice(0, res - 1), slice(1, res)
        origins = centers[tuple(lo_sl)].reshape(-1, 3)
        step = np.zeros((len(origins), 3), np.float32)
        step[:, axis] = grid.h  # t is in units of |dir|: t <= 1 means the mesh lies between the centres
        t = scene.cast_rays(o3d.core.Tensor(np.concatenate([origins, step], 1)), nthreads=threads)["t_hit"].numpy()
        free = ~(t <= 1.0)
        src.append(idx[tuple(lo_sl)].reshape(-1)[free])
        dst.append(idx[tuple(hi_sl)].reshape(-1)[free])
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(res**3, res**3))
    _, labels = connected_components(graph, directed=False)
    return (labels != labels[0]).reshape(res, res, res)  # voxel (0, 0, 0) is in the empty margin


def volume_iou(pred: TriMesh, gt: TriMesh, res: int = 64) -> float | None:
    """|inside(pred) and inside(gt)| / |inside(pred) or inside(gt)| on a res^3 grid over both
    meshes (:func:`grid_around`, :func:`voxel_occupancy`). None when neither has an inside."""
    grid = grid_around([pred, gt], res)
    a, b = voxel_occupancy(pred, grid), voxel_occupancy(gt, grid)
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else None


def finite_or_none(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
