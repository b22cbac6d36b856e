"""Geometry metrics and alignment on shapes with known answers."""

import math

import numpy as np
import pytest
import torch

from o3dcli.eval.align import box_align, icp_align, rotation_to_quat, transform_gaussians, transform_mesh
from o3dcli.eval.geometry import (PointSet, gaussian_points, grid_around, sample_surface, surface_metrics,
                                  voxel_occupancy, volume_iou)
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.geometry.mesh import TriMesh

N = 20_000


def icosphere(radius: float) -> TriMesh:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return TriMesh(s.vertices, s.faces)


def box(lo, hi, drop_face: bool = False) -> TriMesh:
    import trimesh

    b = trimesh.creation.box(bounds=[lo, hi])
    faces = np.asarray(b.faces)
    if drop_face:  # an open box: remove the two triangles facing +Y
        n = np.asarray(b.face_normals)
        faces = faces[n[:, 1] < 0.9]
    return TriMesh(b.vertices, faces)


def plate(z: float) -> TriMesh:
    """The unit square [0, 1]^2 at height z, two triangles."""
    v = [[0, 0, z], [1, 0, z], [1, 1, z], [0, 1, z]]
    return TriMesh(v, [[0, 1, 2], [0, 2, 3]])


def test_a_mesh_against_itself_is_perfect():
    m = icosphere(0.5)
    s = sample_surface(m, N, seed=0)
    out = surface_metrics(s, sample_surface(m, N, seed=0))
    assert out["chamfer"] == 0.0 and out["normal_consistency"] == pytest.approx(1.0)
    assert out["fscore@0.02"] == out["fscore@0.05"] == out["fscore@0.1"] == 1.0
    assert volume_iou(m, m) == 1.0


def test_samples_are_uniform_on_the_surface_and_reproducible():
    m = box([-0.5, -0.25, -0.1], [0.5, 0.25, 0.1])
    a, b = sample_surface(m, N, seed=3), sample_surface(m, N, seed=3)
    assert np.array_equal(a.points, b.points)
    # share of samples on the two big faces (|z| = 0.1) = their share of the area: 2*0.5 / 1.3
    on_big = np.isclose(np.abs(a.points[:, 2]), 0.1).mean()
    assert on_big == pytest.approx(2 * 1.0 * 0.5 / (2 * (0.5 + 0.2 + 0.1)), abs=0.015)
    assert np.allclose(np.abs(a.normals[np.isclose(a.points[:, 2], 0.1)][:, 2]), 1.0)


def test_plate_shifted_by_d_has_chamfer_d():
    d = 0.05
    out = surface_metrics(sample_surface(plate(d), N, 1), sample_surface(plate(0.0), N, 2))
    # every nearest neighbour is d away along the normal (plus a sampling spacing of ~0.004 sideways)
    assert out["chamfer"] == pytest.approx(d, abs=0.001)
    assert out["chamfer_pred_to_gt"] == pytest.approx(out["chamfer_gt_to_pred"], abs=0.001)
    assert out["fscore@0.02"] == 0.0 and out["fscore@0.1"] == 1.0
    assert out["normal_consistency"] == pytest.approx(1.0)


def test_concentric_spheres():
    r, r2 = 0.45, 0.35
    gt, pred = icosphere(r), icosphere(r2)
    out = surface_metrics(sample_surface(pred, N, 0), sample_surface(gt, N, 0), thresholds=(0.05, 0.2))
    assert out["chamfer"] == pytest.approx(r - r2, abs=0.003)
    assert out["fscore@0.05"] == 0.0 and out["fscore@0.2"] == 1.0
    assert out["normal_consistency"] > 0.99
    assert volume_iou(pred, gt) == pytest.approx((r2 / r) ** 3, abs=0.01)  # 0.4705


def test_volume_of_overlapping_closed_parts_is_their_union():
    # two closed boxes overlapping in [-0.1, 0.1] along x: ray parity would call the overlap outside
    a = box([-0.4, -0.25, -0.25], [0.1, 0.25, 0.25])
    b = box([-0.1, -0.25, -0.25], [0.4, 0.25, 0.25])
    union = TriMesh(np.concatenate([a.vertices, b.vertices]), np.concatenate([a.faces, b.faces + len(a.vertices)]))
    grid = grid_around([union], 64)
    occ = voxel_occupancy(union, grid)
    c = grid.centers()
    inside = (np.abs(c[..., 0]) < 0.4) & (np.abs(c[..., 1]) < 0.25) & (np.abs(c[..., 2]) < 0.25)
    assert np.array_equal(occ, inside)  # exactly the voxel centres inside the union box
    assert occ.sum() * grid.h**3 == pytest.approx(0.8 * 0.5 * 0.5, rel=0.05)
    assert not occ[0].any() and not occ[-1].any()  # the one-voxel margin is outside
    assert volume_iou(union, box([-0.4, -0.25, -0.25], [0.4, 0.25, 0.25])) == pytest.approx(1.0, abs=0.02)


def test_open_mesh_has_no_inside():
    open_box = box([-0.3, -0.3, -0.3], [0.3, 0.3, 0.3], drop_face=True)
    assert not voxel_occupancy(open_box, grid_around([open_box], 32)).any()
    assert volume_iou(open_box, open_box, 32) is None


def test_gaussian_points_keep_opaque_means_and_shortest_axis_normals():
    q = torch.tensor([[1.0, 0, 0, 0], [math.cos(math.pi / 4), math.sin(math.pi / 4), 0, 0], [1.0, 0, 0, 0]])
    g = Gaussians(torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0]]),
                  torch.tensor([[0.1, 0.1, 0.01], [0.1, 0.1, 0.01], [0.1, 0.1, 0.1]]), q,
                  torch.tensor([0.9, 0.8, 0.2]), torch.rand(3, 3))
    ps = gaussian_points(g, 0.5)
    assert np.allclose(ps.points, [[0, 0, 0], [0.1, 0, 0]])
    # flat along local z; the second is turned 90 degrees about x, so its normal is world -y
    assert np.allclose(np.abs(ps.normals), [[0, 0, 1], [0, 1, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="opacity"):
        gaussian_points(g, 0.95)


def test_a_point_clouds_round_gaussians_have_no_normals_so_normal_consistency_is_not_scored():
    # their "shortest axis" was the first one, world x for all: NC measured the ground truth's
    # normals against x (0.46 for exact samples of the true surface) instead of saying n/a
    means = torch.from_numpy(sample_surface(icosphere(0.5), 2000, seed=1).points).float()
    n = len(means)  # as o3d reads a point-cloud PLY: round, opaque, unrotated
    round_ = Gaussians(means, torch.full((n, 3), 0.02), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                       torch.ones(n), torch.rand(n, 3))
    assert gaussian_points(round_, 0.5).normals is None
    metrics = surface_metrics(gaussian_points(round_, 0.5), sample_surface(icosphere(0.5), N, seed=2))
    assert metrics["normal_consistency"] is None and metrics["fscore@0.05"] > 0.99


def _similarity(scale, angle_deg, t):
    a = math.radians(angle_deg)
    r = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = scale * r, t
    return m


def test_icp_undoes_a_small_similarity():
    from o3dcli.synth.objects import make_object

    gt = make_object(1_000_002)[0]
    moved = transform_mesh(gt, _similarity(0.6, 4.0, [0.3, -0.1, 0.2]))
    ref = sample_surface(gt, N, 0)
    before = surface_metrics(sample_surface(moved, N, 0), ref)["chamfer"]
    al = icp_align(sample_surface(moved, N, 0), ref, moved.vertices)
    after = surface_metrics(sample_surface(transform_mesh(moved, al.matrix), N, 0), ref)["chamfer"]
    assert before > 0.05 and after < 0.002
    assert al.scale == pytest.approx(1 / 0.6, rel=0.01) and al.fitness > 0.99
    assert al.rotation_deg == pytest.approx(4.0, abs=0.5)
    # box alignment alone recovers scale and offset (no rotation): exact for an unrotated copy
    shifted = transform_mesh(gt, _similarity(2.0, 0.0, [1.0, 2.0, 3.0]))
    box_m = box_align(sample_surface(shifted, 100, 0), shifted.vertices).matrix
    assert np.allclose(transform_mesh(shifted, box_m).vertices, gt.vertices, atol=1e-6)


@pytest.mark.parametrize("angle", [0.0, 30.0, 179.0, 180.0])
def test_quaternion_of_rotations_and_transformed_gaussian_covariances(angle):
    rng = np.random.default_rng(int(angle))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = math.radians(angle)
    r = np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k  # Rodrigues
    w, x, y, z = rotation_to_quat(r)
    g0 = Gaussians(torch.zeros(1, 3), torch.ones(1, 3), torch.tensor([[w, x, y, z]], dtype=torch.float32),
                   torch.ones(1), torch.ones(1, 3))
    assert np.allclose(g0.rotation_matrices()[0].numpy(), r, atol=1e-5)
    g = Gaussians(torch.randn(5, 3), torch.rand(5, 3) + 0.1, torch.nn.functional.normalize(torch.randn(5, 4), dim=-1),
                  torch.rand(5), torch.rand(5, 3))
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = 1.5 * r, [0.1, 0.2, 0.3]
    moved = transform_gaussians(g, m)
    rt = torch.from_numpy(r).float()
    assert torch.allclose(moved.means, 1.5 * g.means @ rt.T + torch.tensor([0.1, 0.2, 0.3]), atol=1e-5)
    assert torch.allclose(moved.covariances(), 2.25 * rt @ g.covariances() @ rt.T, atol=1e-4)


def test_surface_metrics_need_points():
    with pytest.raises(ValueError):
        surface_metrics(PointSet(np.zeros((0, 3))), PointSet(np.zeros((3, 3))))


def test_kd_tree_queries_and_ray_casts_use_torchs_thread_count(monkeypatch):
    # under --jobs each process gets a share of the cores through torch's count; scipy and open3d
    # would each take every core otherwise (N processes, N times the cores' threads)
    import open3d as o3d
    import scipy.spatial

    from o3dcli.eval.geometry import voxel_occupancy
    from o3dcli.render.mesh import MeshRaycaster

    asked = []
    real_tree = scipy.spatial.cKDTree

    class Tree:
        def __init__(self, points):
            self.tree = real_tree(points)

        def query(self, points, workers=1):
            asked.append(("kd-tree", workers))
            return self.tree.query(points, workers=workers)

    real_scene = o3d.t.geometry.RaycastingScene

    def scene(nthreads=0):
        asked.append(("scene", nthreads))
        return real_scene(nthreads=nthreads)

    monkeypatch.setattr(scipy.spatial, "cKDTree", Tree)
    monkeypatch.setattr(o3d.t.geometry, "RaycastingScene", scene)
    previous = torch.get_num_threads()
    pool = getattr(o3d.utility, "set_max_threads", None)  # open3d's TBB pool (ICP, fusion): 0.20+
    torch.set_num_threads(1)
    try:
        if pool:
            pool(0)  # no bound: every core
        sphere = icosphere(0.5)
        points = sample_surface(sphere, 500)
        surface_metrics(points, points)
        voxel_occupancy(sphere, grid_around([sphere], res=16))
        assert MeshRaycaster(sphere)._threads == 1
        icp_align(points, points)
        if pool:
            assert o3d.utility.get_max_threads() == 1
            pool(0)
            from o3dcli.mesh.fusion import BLOCK, level_set_mesh

            ijk = np.indices((2 * BLOCK,) * 3).transpose(1, 2, 3, 0) - BLOCK + 0.5
            assert len(level_set_mesh(np.linalg.norm(ijk, axis=-1) - BLOCK / 2, np.zeros(3, int), 0.1).faces)
            assert o3d.utility.get_max_threads() == 1
    finally:
        torch.set_num_threads(previous)
        if pool:
            pool(0)
    assert sorted(set(asked)) == [("kd-tree", 1), ("scene", 1)] and len(asked) == 4


def test_nearest_queries_in_chunks_with_ctrl_c_held_until_each_ends(monkeypatch):
    # a Ctrl-C inside a query that runs on several threads killed eval with a segmentation fault
    # (scipy's workers wrote on into freed memory): it is acted on between chunks
    import signal

    from scipy.spatial import cKDTree

    from o3dcli.eval import geometry

    rng = np.random.default_rng(0)
    ref, pts = rng.random((500, 3)), rng.random((1000, 3))
    monkeypatch.setattr(geometry, "QUERY_CHUNK", 300)
    tree = cKDTree(ref)
    dist, index = geometry.nearest(tree, pts, 2)
    expected = tree.query(pts)
    assert np.array_equal(dist, expected[0]) and np.array_equal(index, expected[1])

    finished = []

    class Interrupted:  # Ctrl-C arrives while the second chunk's query runs
        def query(self, chunk, workers):
            if len(finished) == 1:
                signal.raise_signal(signal.SIGINT)
            finished.append(len(chunk))
            return tree.query(chunk, workers=workers)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            geometry.nearest(Interrupted(), pts, 2)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert finished == [300, 300]  # the query it came in was let finish; no later one started
