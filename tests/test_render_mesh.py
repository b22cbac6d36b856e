"""Mesh ray-casting renderer against analytic cases, and the GSO/SyncDreamer conversion chain."""

import math

import numpy as np
import torch

from o3dcli.geometry.cameras import Cameras, orbit_cameras
from o3dcli.geometry.convert import XFRONT_ZUP_TO_YUP, ZUP_TO_YUP, w2c_to_cameras
from o3dcli.geometry.mesh import TriMesh
from o3dcli.render.mesh import MeshRaycaster, render_mesh


def unit_cube(**kw) -> TriMesh:
    import trimesh

    box = trimesh.creation.box((1.0, 1.0, 1.0))
    return TriMesh(box.vertices, box.faces, **kw)


def quad(size=1.0, **kw) -> TriMesh:
    """A square in the z = 0 plane facing +Z, uv (0, 0) at its bottom-left (-x, -y) corner."""
    h = size / 2
    verts = [[-h, -h, 0], [h, -h, 0], [h, h, 0], [-h, h, 0]]
    uv = [[0, 0], [1, 0], [1, 1], [0, 1]]
    return TriMesh(np.array(verts), np.array([[0, 1, 2], [0, 2, 3]]), uv=np.array(uv), **kw)


def projected_hull_area(points: np.ndarray, cams: Cameras) -> tuple[float, float]:
    """Exact silhouette area and perimeter (pixels) of a convex solid: hull of its projected corners."""
    from scipy.spatial import ConvexHull

    w2c = cams.viewmats()[0].double().numpy()
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    k = cams.K()[0].double().numpy()
    pix = pc @ k.T
    hull = ConvexHull(pix[:, :2] / pix[:, 2:])
    return hull.volume, hull.area  # in 2D: area, perimeter


def test_cube_silhouette_matches_projected_area():
    cube = unit_cube()
    cams = orbit_cameras(25.0, 35.0, radius=3.0, fov_deg=40.0, size=64)
    area, perimeter = projected_hull_area(cube.vertices.astype(np.float64), cams)
    hard = render_mesh(cube, cams)
    assert set(hard.alpha.unique().tolist()) == {0.0, 1.0}
    assert abs(hard.alpha.sum().item() - area) < 0.5 * perimeter
    soft = render_mesh(cube, cams, ssaa=4)
    assert abs(soft.alpha.sum().item() - area) < 0.1 * perimeter  # supersampling converges
    assert ((soft.alpha > 0) & (soft.alpha < 1)).any() and soft.alpha.max() == 1  # fractional edges


def test_cube_depth_normals_points_ccm_face_ids():
    cube = unit_cube()
    cams = orbit_cameras(0.0, 0.0, radius=3.0, fov_deg=30.0, size=33)
    r = render_mesh(cube, cams, background=(0.0, 0.0, 0.0))
    hit = r.alpha[0, 0] > 0
    # seen head-on only the front face z = 0.5 shows, a fronto-parallel plane: constant z-depth 2.5
    torch.testing.assert_close(r.depth[0, 0, 16, 16], torch.tensor(2.5))
    torch.testing.assert_close(r.depth[0, 0][hit], torch.full((int(hit.sum()),), 2.5))
    assert (r.depth[0, 0][~hit] == 0).all()
    torch.testing.assert_close(r.normals[0, :, hit], torch.tensor([[0.0], [0.0], [1.0]]).expand(3, int(hit.sum())))
    torch.testing.assert_close(r.points[0, 2, hit], torch.full((int(hit.sum()),), 0.5))
    # the front square spans f * 1 / 2.5 pixels
    side = cams.fx.item() / 2.5
    assert abs(hit.sum().item() - side**2) < 4 * side
    ccm = r.ccm[0]
    torch.testing.assert_close(ccm[:, hit], (r.points[0, :, hit] + 0.5).clamp(0, 1))
    torch.testing.assert_close(ccm[:, ~hit], torch.full_like(ccm[:, ~hit], 0.5))
    fid = r.face_ids[0]
    assert (fid[~hit] == -1).all() and (fid[hit] >= 0).all()
    front = torch.from_numpy(cube.face_normals())[fid[hit]]
    torch.testing.assert_close(front, torch.tensor([0.0, 0.0, 1.0]).expand_as(front))


def test_generic_view_depth_is_z_depth_and_normals_face_camera():
    cube = unit_cube()
    cams = orbit_cameras(30.0, 50.0, radius=2.5, fov_deg=45.0, size=40)
    r = render_mesh(cube, cams)
    hit = r.alpha[0, 0] > 0
    pts = r.points[0][:, hit].T  # [N, 3]
    assert np.allclose(pts.abs().max(1).values.numpy(), 0.5, atol=1e-5)  # on the cube's surface
    w2c = cams.viewmats()[0]
    z = pts @ w2c[2, :3] + w2c[2, 3]
    torch.testing.assert_close(r.depth[0, 0][hit], z, atol=1e-5, rtol=0)
    n = r.normals[0][:, hit].T
    to_cam = cams.centers[0] - pts
    assert ((n * to_cam).sum(1) > 0).all()
    torch.testing.assert_close(n.norm(dim=1), torch.ones(len(n)))


def test_textured_quad_quadrants_pin_uv_origin():
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:4, :4] = [255, 0, 0]  # image top-left: red
    tex[:4, 4:] = [0, 255, 0]  # top-right: green
    tex[4:, :4] = [0, 0, 255]  # bottom-left: blue
    tex[4:, 4:] = [255, 255, 0]  # bottom-right: yellow
    cams = orbit_cameras(0.0, 0.0, radius=2.0, fov_deg=30.0, size=32)  # on +Z, looking at the quad
    rgb = render_mesh(quad(texture=tex), cams).rgb[0]
    # probe inside each image quadrant (the quad covers the middle of the image)
    probes = {(12, 12): [1, 0, 0], (12, 19): [0, 1, 0], (19, 12): [0, 0, 1], (19, 19): [1, 1, 0]}
    for (row, col), color in probes.items():
        torch.testing.assert_close(rgb[:, row, col], torch.tensor(color, dtype=torch.float32))


def test_bilinear_texture_lookup_between_texel_centres():
    from o3dcli.render.mesh import sample_texture

    tex = torch.tensor([[[0.0], [1.0]]])  # 1 x 2 texture: black | white
    uv = torch.tensor([[0.25, 0.5], [0.5, 0.5], [0.75, 0.5], [0.0, 0.5], [1.25, 0.5]])
    out = sample_texture(tex, uv)[:, 0]
    torch.testing.assert_close(out, torch.tensor([0.0, 0.5, 1.0, 0.0, 0.0]))  # 1.25 repeats to 0.25


def test_vertex_colors_interpolate_barycentrically():
    verts = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.0, 0.5, 0]])
    tri = TriMesh(verts, np.array([[0, 1, 2]]), vertex_colors=np.eye(3))
    cams = orbit_cameras(0.0, 0.0, radius=2.0, fov_deg=40.0, size=24)
    r = render_mesh(tri, cams)
    hit = r.alpha[0, 0] > 0
    p = r.points[0][:2, hit].T.double().numpy()  # hit x, y
    # reference barycentrics solved from the hit points, independent of the ray caster's
    a = np.array([[verts[1, 0] - verts[0, 0], verts[2, 0] - verts[0, 0]],
                  [verts[1, 1] - verts[0, 1], verts[2, 1] - verts[0, 1]]])
    l12 = np.linalg.solve(a, (p - verts[0, :2]).T).T
    bary = np.column_stack([1 - l12.sum(1), l12])
    np.testing.assert_allclose(r.rgb[0][:, hit].T.numpy(), bary, atol=1e-4)


def test_lambert_follows_cosine_and_background():
    white = quad(size=4.0).replace(uv=None)
    cams = orbit_cameras(0.0, [0.0, 60.0], radius=2.0, fov_deg=20.0, size=17)
    r = render_mesh(white, cams, shading="lambert", ambient=0.3, background=(0.0, 0.5, 0.0))
    centre = r.rgb[:, :, 8, 8]  # the centre ray is the camera axis, at 0 and 60 deg to the normal
    torch.testing.assert_close(centre[0], torch.ones(3))
    torch.testing.assert_close(centre[1], torch.full((3,), 0.3 + 0.7 * 0.5), atol=1e-5, rtol=0)
    unlit = render_mesh(white, cams)
    torch.testing.assert_close(unlit.rgb[:, :, 8, 8], torch.ones(2, 3))
    side = render_mesh(white, cams[:1], shading="lambert", light_dir=(1.0, 0.0, 0.0), ambient=0.2)
    torch.testing.assert_close(side.rgb[0, :, 8, 8], torch.full((3,), 0.2))  # light in the plane: ambient only
    empty = render_mesh(white, orbit_cameras(0.0, 180.0, radius=2.0, fov_deg=20.0, size=9).resized(9, 9))
    assert empty.alpha.sum() == 81  # back side is seen too (no culling), with normals turned to the camera
    torch.testing.assert_close(empty.normals[0, :, 4, 4], torch.tensor([0.0, 0.0, -1.0]))


def test_empty_mesh_and_reused_raycaster():
    cams = orbit_cameras(10.0, [0.0, 90.0], radius=3.0, size=16)
    none = render_mesh(TriMesh(np.zeros((0, 3)), np.zeros((0, 3))), cams, background=(0.2, 0.3, 0.4))
    assert none.alpha.sum() == 0 and (none.face_ids == -1).all()
    torch.testing.assert_close(none.rgb[:, :, 5, 5], torch.tensor([[0.2, 0.3, 0.4]] * 2))
    caster = MeshRaycaster(unit_cube(material_color=(0.1, 0.2, 0.3)))
    a, b = caster.render(cams), render_mesh(caster, cams)
    torch.testing.assert_close(a.rgb, b.rgb)
    assert a.rgb.shape == (2, 3, 16, 16) and a.face_ids.dtype == torch.int64
    hit = a.alpha[:, 0] > 0
    torch.testing.assert_close(a.rgb.permute(0, 2, 3, 1)[hit], torch.tensor([0.1, 0.2, 0.3]).expand(int(hit.sum()), 3))


# --- the conversion chain found against SyncDreamer's GSO renders (scripts/check_gso_cameras.py) ---

def syncdreamer_w2c(elevation_deg, azimuths_deg, distance):
    """SyncDreamer's evaluation poses: Z-up world, camera at (cos e cos a, cos e sin a, sin e) * d
    looking at the origin, OpenCV axes, up = +Z. Reproduces the shipped cameras.json (views 0, 1
    are pinned in test_geometry)."""
    e = math.radians(elevation_deg)
    out = []
    for a in map(math.radians, azimuths_deg):
        eye = np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)]) * distance
        fwd = -eye / np.linalg.norm(eye)
        right = np.cross(fwd, [0, 0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        rot = np.stack([right, down, fwd])  # rows: camera axes in world coordinates
        out.append(np.concatenate([rot, -rot @ eye[:, None]], 1))
    return torch.tensor(np.array(out), dtype=torch.float32)


def test_syncdreamer_pose_formula_matches_shipped_poses():
    # view 1 (azimuth 22.5 deg) of SyncDreamer's shipped GSO cameras.json, copied as data
    shipped = torch.tensor([
        [-0.38268351554870605, 0.9238795042037964, -4.474470927107177e-08, 1.0829043262106097e-07],
        [0.4619397819042206, 0.19134172797203064, -0.866025447845459, 3.041122553781861e-08],
        [-0.8001031279563904, -0.3314136266708374, -0.5, 1.499999967364353]])
    torch.testing.assert_close(syncdreamer_w2c(30, [22.5], 1.5)[0], shipped, atol=1e-6, rtol=0)


def test_gso_conversion_chain_reproduces_syncdreamer_silhouettes(tmp_path):
    """A Z-up GSO-style object rendered the way SyncDreamer's data were made (mesh normalised to
    the unit box and turned +90 deg about Z, found against the real renders) must give the same
    silhouettes as o3d's chain: load_mesh (Z-up -> Y-up) + normalized() + XFRONT_ZUP_TO_YUP poses."""
    import trimesh

    from o3dcli.io.mesh import load_mesh

    tall = trimesh.creation.box((0.3, 0.2, 0.8))  # Z-up file: tall along z
    nose = trimesh.creation.box((0.3, 0.1, 0.1))
    nose.apply_translation([0.25, 0.0, 0.2])  # sticks out towards file +x
    tail = trimesh.creation.box((0.1, 0.2, 0.1))
    tail.apply_translation([0.0, -0.2, -0.3])  # and a smaller one towards -y: no mirror symmetry
    obj = trimesh.util.concatenate([tall, nose, tail])
    (tmp_path / "meshes").mkdir()
    obj.export(tmp_path / "meshes" / "model.obj")
    (tmp_path / "model.config").write_text("<model/>")

    azimuths = [0.0, 67.5, 135.0, 202.5, 270.0]
    w2c = syncdreamer_w2c(30.0, azimuths, 1.5)
    K = [[70.0, 0, 32.0], [0, 70.0, 32.0], [0, 0, 1]]  # SyncDreamer's f = 280 at 256 px, at 64 px

    file_mesh = TriMesh(obj.vertices, obj.faces).normalized()
    x, y, z = file_mesh.vertices.T
    syncdreamer_world = file_mesh.replace(vertices=np.stack([-y, x, z], 1))  # +90 deg about Z
    reference = render_mesh(syncdreamer_world, w2c_to_cameras(w2c, K, 64, 64)).alpha

    ours = load_mesh(tmp_path).normalized()
    cams = w2c_to_cameras(w2c, K, 64, 64, world=XFRONT_ZUP_TO_YUP)
    alpha = render_mesh(ours, cams).alpha
    assert reference.sum() > 1000
    assert (alpha != reference).sum() <= 3  # identical up to rays grazing an edge
    # and they are our plain orbit cameras at the same azimuths
    orbit = orbit_cameras(30.0, azimuths, 1.5, math.degrees(2 * math.atan(32 / 70)), 64)
    torch.testing.assert_close(cams.c2w, orbit.c2w, atol=1e-5, rtol=0)
    # a plain Z-up -> Y-up pose map (no front turn) does not reproduce them
    wrong = render_mesh(ours, w2c_to_cameras(w2c, K, 64, 64, world=ZUP_TO_YUP)).alpha
    iou = ((wrong > 0) & (reference > 0)).sum() / ((wrong > 0) | (reference > 0)).sum()
    assert iou < 0.9


def test_many_views_rendered_in_chunks_match_one_pass(monkeypatch):
    import o3dcli.render.mesh as mesh_render

    cube = unit_cube(vertex_colors=np.random.default_rng(0).random((8, 3)))
    cams = orbit_cameras(20.0, [0.0, 120.0, 240.0], radius=3.0, size=16)
    whole = render_mesh(cube, cams, ssaa=2)
    monkeypatch.setattr(mesh_render, "_MAX_RAYS", 100)
    chunked = render_mesh(cube, cams, ssaa=2)
    for name in ("rgb", "alpha", "depth", "normals", "ccm", "face_ids", "points"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name))
    assert whole.rgb.shape == (3, 3, 16, 16)


def test_cast_rays_hits_misses_and_barycentrics():
    caster = MeshRaycaster(unit_cube())
    origins = torch.tensor([[0.1, 0.2, 5.0], [3.0, 3.0, 3.0], [0.0, 0.0, 0.0]])
    dirs = torch.tensor([[0.0, 0.0, -2.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    hits = caster.cast_rays(origins, dirs)
    torch.testing.assert_close(hits.t[0], torch.tensor(2.25))  # 4.5 units at |d| = 2
    assert torch.isinf(hits.t[1]) and hits.face_ids[1] == -1 and not hits.hit[1]
    torch.testing.assert_close(hits.points[0], torch.tensor([0.1, 0.2, 0.5]))
    torch.testing.assert_close(hits.points[2], torch.tensor([0.5, 0.0, 0.0]))  # from inside: the +x wall
    # the barycentric weights rebuild the hit point from the triangle's corners
    corners = torch.from_numpy(caster.mesh.vertices[caster.mesh.faces[hits.face_ids[[0, 2]]]])
    torch.testing.assert_close((hits.barycentrics[[0, 2], :, None] * corners).sum(1), hits.points[[0, 2]])
