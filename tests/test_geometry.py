"""Rays, Plucker coordinates, relative poses and camera-convention converters."""

import math

import pytest
import torch

from o3dcli.geometry.cameras import Cameras, look_at_c2w, orbit_cameras
from o3dcli.geometry.convert import (
    GL_TO_CV, XFRONT_ZUP_TO_YUP, ZUP_TO_YUP, cameras_from_blender, cameras_to_blender,
    transform_cameras, w2c_to_cameras,
)
from o3dcli.geometry.rays import camera_ray_directions, pixel_rays, plucker_rays, relative_to

# Two of the 16 world-to-camera poses shipped with SyncDreamer's GSO evaluation example
# (views 0 and 1: elevation 30 deg, azimuth 0 and 22.5 deg, distance 1.5), copied as data.
SYNCDREAMER_W2C = [
    [[9.997044969622948e-08, 1.0, -4.214684778958144e-08, -9.825528244464123e-08],
     [0.5, -9.997044969622948e-08, -0.8660253882408142, 1.4901161193847656e-08],
     [-0.8660253882408142, 4.214684778958144e-08, -0.5, 1.4999999338069117]],
    [[-0.38268351554870605, 0.9238795042037964, -4.474470927107177e-08, 1.0829043262106097e-07],
     [0.4619397819042206, 0.19134172797203064, -0.866025447845459, 3.041122553781861e-08],
     [-0.8001031279563904, -0.3314136266708374, -0.5, 1.499999967364353]],
]
SYNCDREAMER_K = [[280.0, 0.0, 128.0], [0.0, 280.0, 128.0], [0.0, 0.0, 1.0]]


def random_cameras(v=3, w=7, h=5, seed=0) -> Cameras:
    g = torch.Generator().manual_seed(seed)
    eye = torch.randn(v, 3, generator=g) * 2
    c2w = look_at_c2w(eye, torch.randn(v, 3, generator=g) * 0.1)
    rnd = lambda lo, hi: lo + (hi - lo) * torch.rand(v, generator=g)  # noqa: E731
    return Cameras(c2w, rnd(5, 9), rnd(5, 9), rnd(2, 5), rnd(1, 4), w, h)


def test_pixel_rays_project_back_to_pixel_centres():
    cams = random_cameras()
    origins, dirs = pixel_rays(cams)
    assert origins.shape == dirs.shape == (3, 5, 7, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(3, 5, 7))
    torch.testing.assert_close(origins, cams.centers[:, None, None].expand_as(origins))
    # a point along each ray, projected with K [R|t], lands on (u + 0.5, v + 0.5)
    p = origins + 1.7 * dirs
    w2c = cams.viewmats()
    pc = torch.einsum("vij,vhwj->vhwi", w2c[:, :3, :3], p) + w2c[:, None, None, :3, 3]
    pix = torch.einsum("vij,vhwj->vhwi", cams.K(), pc)
    uv = pix[..., :2] / pix[..., 2:]
    vv, uu = torch.meshgrid(torch.arange(5) + 0.5, torch.arange(7) + 0.5, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([uu, vv], -1).expand_as(uv), atol=1e-4, rtol=0)


def test_camera_ray_directions_have_unit_camera_z():
    cams = random_cameras()
    d = camera_ray_directions(cams)
    z_axis = cams.c2w[:, :3, 2]
    torch.testing.assert_close((d * z_axis[:, None, None]).sum(-1), torch.ones(3, 5, 7))


def test_plucker_moment_orthogonal_and_invariant_along_ray():
    cams = random_cameras()
    pl = plucker_rays(cams)
    assert pl.shape == (3, 6, 5, 7)
    d, m = pl[:, :3], pl[:, 3:]
    torch.testing.assert_close((d * m).sum(1), torch.zeros(3, 5, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(3, 5, 7))
    # any point on the ray gives the same moment: (o + s d) x d = o x d
    p = cams.centers[:, :, None, None] + 2.5 * d
    torch.testing.assert_close(torch.linalg.cross(p, d, dim=1), m, atol=1e-5, rtol=0)


def test_ray_through_principal_point_is_forward_axis():
    c2w = look_at_c2w(torch.tensor([[1.0, 2.0, 3.0]]))
    cams = Cameras(c2w, torch.tensor([10.0]), torch.tensor([12.0]), torch.tensor([2.5]), torch.tensor([1.5]), 5, 3)
    _, dirs = pixel_rays(cams)
    torch.testing.assert_close(dirs[0, 1, 2], c2w[0, :3, 2])  # pixel (u=2, v=1) centre = (cx, cy)
    torch.testing.assert_close(dirs[0, 1, 2], -torch.nn.functional.normalize(torch.tensor([1.0, 2.0, 3.0]), dim=0))


def test_orbit_azimuth_90_on_plus_x_and_elevation_above():
    cams = orbit_cameras([0.0, 30.0, 0.0], [90.0, 0.0, 0.0], radius=2.0)
    torch.testing.assert_close(cams.centers[0], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.centers[1], torch.tensor([0.0, 1.0, math.sqrt(3.0)]), atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.centers[2], torch.tensor([0.0, 0.0, 2.0]), atol=1e-6, rtol=0)


def test_orbit_cameras_at_a_pole_turn_with_the_azimuth():
    # at elevation exactly +-90 the fallback up was world -Z whatever the azimuth: every view of a
    # turntable from straight above was the same picture (o3d render --elevation 90)
    azimuths = [0.0, 45.0, 90.0, 180.0, 270.0, 315.0]
    for pole in (90.0, -90.0):
        at = orbit_cameras(pole, azimuths, radius=2.0)
        near = orbit_cameras(pole * (1 - 1e-6), azimuths, radius=2.0)  # not at the pole: +Y is the up
        torch.testing.assert_close(at.c2w, near.c2w, atol=1e-4, rtol=0)  # the limit, not a jump
        right = at.c2w[:, :3, 0]
        az = torch.deg2rad(torch.tensor(azimuths))
        torch.testing.assert_close(right, torch.stack([torch.cos(az), torch.zeros_like(az), -torch.sin(az)], 1),
                                   atol=1e-6, rtol=0)
    # the pole camera at azimuth 0 is unchanged (up -Z), bit for bit, as is any camera off the poles
    top = orbit_cameras(90.0, 0.0).c2w[0]
    assert top[:3, 0].tolist() == [1.0, 0.0, 0.0] and top[:3, 1].tolist()[2] == 1.0
    torch.testing.assert_close(look_at_c2w(torch.tensor([[0.0, 2.0, 0.0]]))[0, :3, 1], torch.tensor([0.0, 0.0, 1.0]))


def test_relative_to_reference_is_identity_and_keeps_relative_poses():
    cams = random_cameras(v=4)
    rel = relative_to(cams, ref_index=2)
    torch.testing.assert_close(rel.c2w[2], torch.eye(4), atol=1e-5, rtol=0)
    for i, j in [(0, 1), (3, 0)]:
        a = torch.linalg.inv(cams.c2w[i]) @ cams.c2w[j]
        b = torch.linalg.inv(rel.c2w[i]) @ rel.c2w[j]
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    # Plucker rays of the relative cameras are the world rays seen from camera 2's frame
    pl, pl_rel = plucker_rays(cams), plucker_rays(rel)
    inv = torch.linalg.inv(cams.c2w[2])
    d = torch.einsum("ij,vjhw->vihw", inv[:3, :3], pl[:, :3])
    torch.testing.assert_close(d, pl_rel[:, :3], atol=1e-5, rtol=0)


def test_blender_front_camera_is_our_azimuth_zero():
    # Blender front view: camera on -Y looking at the origin along +Y, Blender up +Z.
    # OpenGL axes: x right = +X, y up = +Z, z back = -Y.
    c2w_gl = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -3], [0, 1, 0, 0], [0, 0, 0, 1]])
    cams = cameras_from_blender(c2w_gl[None], math.radians(40.0), 64, 48)
    ref = orbit_cameras(0.0, 0.0, radius=3.0, fov_deg=40.0, size=64)  # fov over the width here (square)
    torch.testing.assert_close(cams.c2w, ref.c2w, atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.fx, torch.tensor([32.0 / math.tan(math.radians(20.0))]))
    assert cams.fx == cams.fy and cams.cx.item() == 32 and cams.cy.item() == 24
    # Blender top camera (on +Z looking down) sits above our object
    top = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]])
    torch.testing.assert_close(cameras_from_blender(top[None], 0.8, 8, 8).centers[0], torch.tensor([0.0, 2.0, 0.0]))


def test_blender_round_trip():
    m = random_cameras(v=4, w=8, h=6).c2w
    cams = cameras_from_blender(m, 0.7, 8, 6)
    back, angle = cameras_to_blender(cams)
    torch.testing.assert_close(back, m, atol=1e-5, rtol=0)
    assert angle == pytest.approx(0.7)
    back_y, _ = cameras_to_blender(cameras_from_blender(m, 0.7, 8, 6, zup_to_yup=False), yup_to_zup=False)
    torch.testing.assert_close(back_y, m, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="principal point"):
        cameras_to_blender(random_cameras())


def test_axis_maps_are_rotations_with_the_documented_images():
    for m in (ZUP_TO_YUP, XFRONT_ZUP_TO_YUP):
        torch.testing.assert_close(m[:3, :3] @ m[:3, :3].T, torch.eye(3))
        assert torch.det(m[:3, :3]) == pytest.approx(1.0)
    torch.testing.assert_close(ZUP_TO_YUP[:3, :3] @ torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, -2.0]))
    torch.testing.assert_close(XFRONT_ZUP_TO_YUP[:3, :3] @ torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 3.0, 1.0]))
    torch.testing.assert_close(GL_TO_CV @ GL_TO_CV, torch.eye(4))


def test_syncdreamer_poses_are_our_orbit_at_same_azimuths():
    cams = w2c_to_cameras(SYNCDREAMER_W2C, SYNCDREAMER_K, 256, 256, world=XFRONT_ZUP_TO_YUP)
    fov = math.degrees(2 * math.atan(128 / 280))
    ref = orbit_cameras(30.0, [0.0, 22.5], radius=1.5, fov_deg=fov, size=256)
    torch.testing.assert_close(cams.c2w, ref.c2w, atol=1e-5, rtol=0)
    torch.testing.assert_close(cams.fx, ref.fx)
    # without the world map the poses are SyncDreamer's own: Z-up, view 0 on +X
    raw = w2c_to_cameras(SYNCDREAMER_W2C, SYNCDREAMER_K, 256, 256)
    torch.testing.assert_close(raw.centers[0], torch.tensor([1.5 * math.cos(math.pi / 6), 0, 0.75]), atol=1e-5, rtol=0)


def test_w2c_to_cameras_inverts_and_takes_per_view_K():
    cams = random_cameras(v=2)
    K = cams.K()
    back = w2c_to_cameras(cams.viewmats()[:, :3], K, cams.width, cams.height)
    torch.testing.assert_close(back.c2w, cams.c2w, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.K(), K)
    moved = transform_cameras(cams, ZUP_TO_YUP)
    torch.testing.assert_close(moved.centers, cams.centers @ ZUP_TO_YUP[:3, :3].T)
    with pytest.raises(ValueError, match="K must be"):
        w2c_to_cameras(cams.viewmats(), torch.eye(3).expand(3, 3, 3), 7, 5)
