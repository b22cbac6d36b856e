"""Aligning a prediction to the ground truth before scoring: none, box, or ICP with scale.

``none`` scores the prediction where it is: in the protocol's camera frame (the
frame generation works in; view 0 looks from +Z). ``box`` moves the prediction's
bounding box to the unit box, as the GT's was (no rotation): for outputs that face
the right way but have their own scale and origin. ``icp`` first moves the
prediction's bounding box (of its surface samples) to the unit box, then runs
open3d's point-to-point ICP with scaling (Umeyama similarity per iteration) from
the identity, with the correspondence distance shrinking 0.1 -> 0.05 -> 0.02
(unit-box units), on at most 20,000 samples of each side. The resulting
similarity (pred -> GT frame) is applied to the prediction before every metric,
image metrics included, and reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from o3dcli.eval.geometry import PointSet
from o3dcli.geometry.mesh import TriMesh

ALIGN_METHODS = ("none", "box", "icp")
ICP_DISTANCES = (0.1, 0.05, 0.02)
ICP_MAX_POINTS = 20_000
ICP_ITERATIONS = 50


@dataclass(frozen=True)
class Alignment:
    """A similarity ``matrix`` [4, 4] (x -> s R x + t) taking the prediction into the GT frame."""

    method: str
    matrix: np.ndarray
    fitness: float | None = None
    """ICP: share of prediction samples with a GT sample within the last correspondence distance."""
    rmse: float | None = None
    """ICP: RMS distance of those correspondences."""

    @property
    def scale(self) -> float:
        return float(np.cbrt(np.linalg.det(self.matrix[:3, :3])))

    @property
    def rotation(self) -> np.ndarray:
        return self.matrix[:3, :3] / self.scale

    @property
    def rotation_deg(self) -> float:
        c = (np.trace(self.rotation) - 1) / 2
        return math.degrees(math.acos(float(np.clip(c, -1, 1))))

    def to_json(self) -> dict:
        return {"method": self.method, "scale": round(self.scale, 6), "rotation_deg": round(self.rotation_deg, 4),
                "translation": [round(float(x), 6) for x in self.matrix[:3, 3]],
                "matrix": [[round(float(x), 8) for x in row] for row in self.matrix],
                "fitness": self.fitness, "rmse": self.rmse}


IDENTITY = Alignment("none", np.eye(4))


def box_normalization(points: np.ndarray) -> np.ndarray:
    """[4, 4] similarity moving the points' bounding-box centre to the origin and its longest side to 1."""
    lo, hi = points.min(0), points.max(0)
    side = float((hi - lo).max())
    if side <= 0:
        raise ValueError("cannot normalise a prediction of zero extent")
    m = np.eye(4)
    m[:3, :3] /= side
    m[:3, 3] = -(lo + hi) / 2 / side
    return m


def box_align(pred: PointSet, bounds_points: np.ndarray | None = None) -> Alignment:
    """The box normalisation alone (of ``bounds_points``, e.g. a mesh's vertices, else of the samples)."""
    return Alignment("box", box_normalization(pred.points if bounds_points is None else np.asarray(bounds_points, np.float64)))


def _subsample(points: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(points) <= n:
        return points
    return points[np.random.default_rng(seed).choice(len(points), n, replace=False)]


def icp_align(pred: PointSet, gt: PointSet, bounds_points: np.ndarray | None = None, seed: int = 0) -> Alignment:
    """Box-normalise the prediction (the box of ``bounds_points``, e.g. a mesh's vertices, else of
    its samples), then ICP with scale onto the GT samples (see the module docstring)."""
    from o3dcli.jobs import open3d

    o3d = open3d()

    reg = o3d.pipelines.registration
    start = box_normalization(pred.points if bounds_points is None else np.asarray(bounds_points, np.float64))
    # the same subsample indices on both sides: a prediction identical to the GT stays put
    src = _subsample(transform_points(pred, start).points, ICP_MAX_POINTS, seed)
    tgt = _subsample(gt.points, ICP_MAX_POINTS, seed)
    pcd_src, pcd_tgt = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
    pcd_src.points = o3d.utility.Vector3dVector(src)
    pcd_tgt.points = o3d.utility.Vector3dVector(tgt)
    current = np.eye(4)
    result = None
    for dist in ICP_DISTANCES:
        result = reg.registration_icp(pcd_src, pcd_tgt, dist, current,
                                      reg.TransformationEstimationPointToPoint(with_scaling=True),
                                      reg.ICPConvergenceCriteria(max_iteration=ICP_ITERATIONS))
        current = np.asarray(result.transformation)
    return Alignment("icp", current @ start, float(result.fitness), float(result.inlier_rmse))


def transform_points(ps: PointSet, m: np.ndarray) -> PointSet:
    points = ps.points @ m[:3, :3].T + m[:3, 3]
    normals = None
    if ps.normals is not None:  # a similarity keeps normals' directions up to its rotation
        normals = ps.normals @ m[:3, :3].T
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
    return PointSet(points, normals)


def transform_mesh(mesh: TriMesh, m: np.ndarray) -> TriMesh:
    return mesh.replace(vertices=(mesh.vertices.astype(np.float64) @ m[:3, :3].T + m[:3, 3]).astype(np.float32))


def rotation_to_quat(r: np.ndarray) -> np.ndarray:
    """(w, x, y, z) unit quaternion of a rotation matrix [3, 3] (Shepperd's method: divide by the
    largest of the four candidates, so it is stable for every angle)."""
    t = np.trace(r)
    cands = [t, r[0, 0], r[1, 1], r[2, 2]]
    k = int(np.argmax(cands))
    if k == 0:
        w = math.sqrt(1 + t) / 2
        q = [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)]
    elif k == 1:
        x = math.sqrt(1 + r[0, 0] - r[1, 1] - r[2, 2]) / 2
        q = [(r[2, 1] - r[1, 2]) / (4 * x), x, (r[0, 1] + r[1, 0]) / (4 * x), (r[0, 2] + r[2, 0]) / (4 * x)]
    elif k == 2:
        y = math.sqrt(1 - r[0, 0] + r[1, 1] - r[2, 2]) / 2
        q = [(r[0, 2] - r[2, 0]) / (4 * y), (r[0, 1] + r[1, 0]) / (4 * y), y, (r[1, 2] + r[2, 1]) / (4 * y)]
    else:
        z = math.sqrt(1 - r[0, 0] - r[1, 1] + r[2, 2]) / 2
        q = [(r[1, 0] - r[0, 1]) / (4 * z), (r[0, 2] + r[2, 0]) / (4 * z), (r[1, 2] + r[2, 1]) / (4 * z), z]
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def transform_gaussians(g, m: np.ndarray):
    """Gaussians moved by the similarity m: means s R x + t, scales * s, rotations R q."""
    import torch

    from o3dcli.geometry.gaussians import Gaussians

    s = float(np.cbrt(np.linalg.det(m[:3, :3])))
    rot = m[:3, :3] / s
    dt = g.means.dtype
    means = g.means.double() @ torch.from_numpy(m[:3, :3]).T + torch.from_numpy(m[:3, 3])
    qr = torch.from_numpy(rotation_to_quat(rot))
    w1, x1, y1, z1 = qr.unbind(-1)
    w2, x2, y2, z2 = g.quats.double().unbind(-1)
    quats = torch.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                         w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)
    return Gaussians(means.to(dt), (g.scales.double() * s).to(dt), quats.to(dt), g.opacities, g.colors)
