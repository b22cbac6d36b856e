"""The input photo projected onto the baked texture (mesh.input_weight, mesh.mirror_weight)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from o3dcli.config import PreprocessConfig, load_config
from o3dcli.geometry.cameras import orbit_cameras
from o3dcli.mesh.bake import InputView, bake_texture
from o3dcli.mesh.config import MeshConfig
from o3dcli.mesh.surface_gaussians import reference_shape, surface_gaussians
from o3dcli.mesh.uv import unwrap_uv
from o3dcli.preprocess import preprocess_image
from o3dcli.render.mesh import render_mesh
from o3dcli.stages import generation_cameras, input_view

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = MeshConfig(texture_size=256, fusion_views=8, fusion_size=64)
RED, BLUE, GREY = (0.9, 0.1, 0.1), (0.1, 0.1, 0.9), (0.5, 0.5, 0.5)


def grey_ball():
    """A sphere of radius 0.5 with UVs, and grey Gaussians on its surface."""
    sphere = reference_shape("sphere")
    grey = sphere.replace(texture=np.full((8, 8, 3), 128, np.uint8))
    return unwrap_uv(sphere.replace(texture=None, uv=None), CFG), surface_gaussians(grey, 4096, seed=0)


def two_tone_photo(size: int = 64) -> np.ndarray:
    """The ball as generation camera 0 sees it: its left half red, its right half blue (straight
    RGBA [4, S, S]); the alpha is the ball's silhouette from that camera."""
    mesh, _ = grey_ball()
    cams = generation_cameras(load_config("tiny"), size)[:1]
    alpha = render_mesh(mesh, cams).alpha[0, 0].numpy()
    rgba = np.zeros((4, size, size), np.float32)
    rgba[:3, :, : size // 2] = np.array(RED, np.float32)[:, None, None]
    rgba[:3, :, size // 2:] = np.array(BLUE, np.float32)[:, None, None]
    rgba[3] = alpha
    return rgba


def colour_at(mesh, azimuth: float, row: int, col: int, size: int = 64) -> np.ndarray:
    cams = orbit_cameras(0.0, azimuth, radius=1.7417, fov_deg=39.6, size=size)
    return render_mesh(mesh, cams).rgb[0][:, row, col].numpy()


def test_the_photo_colours_what_its_camera_sees_and_nothing_else():
    mesh, gaussians = grey_ball()
    view = input_view(torch.from_numpy(two_tone_photo()), load_config("tiny"))
    plain = bake_texture(mesh, gaussians, CFG)
    baked = bake_texture(mesh, gaussians, CFG, input_view=view)
    assert np.allclose(colour_at(plain, 0.0, 32, 20), GREY, atol=0.06)  # from the Gaussians only
    # seen head-on by the photo's camera: its colours, left red and right blue
    assert np.allclose(colour_at(baked, 0.0, 32, 20), RED, atol=0.08)
    assert np.allclose(colour_at(baked, 0.0, 32, 44), BLUE, atol=0.08)
    # the far side, which the photo does not show, keeps the generated (grey) colour
    assert np.allclose(colour_at(baked, 180.0, 32, 32), GREY, atol=0.06)
    # weight 0 is the plain bake, bit for bit
    off = bake_texture(mesh, gaussians, dataclasses.replace(CFG, input_weight=0.0), input_view=view)
    assert np.array_equal(off.texture, plain.texture)


def test_mirror_projection_paints_the_far_side_as_the_mirror_image():
    mesh, gaussians = grey_ball()
    view = input_view(torch.from_numpy(two_tone_photo()), load_config("tiny"))
    baked = bake_texture(mesh, gaussians, dataclasses.replace(CFG, mirror_weight=1.0), input_view=view)
    # seen from behind, the object's left (-x, red in the photo) is on the image's right
    assert np.allclose(colour_at(baked, 180.0, 32, 44), RED, atol=0.08)
    assert np.allclose(colour_at(baked, 180.0, 32, 20), BLUE, atol=0.08)
    assert np.allclose(colour_at(baked, 0.0, 32, 20), RED, atol=0.08)  # the front is unchanged


def test_photo_occluded_by_the_mesh_itself_is_not_projected():
    """A texel behind another part of the mesh (seen from the photo's camera) does not take the
    photo's colour: a small ball hidden behind the big one stays grey."""
    big, _ = grey_ball()
    small = reference_shape("sphere")
    small = small.replace(vertices=small.vertices * 0.3 + np.array([0.0, 0.0, -0.8], np.float32), texture=None, uv=None)
    from o3dcli.geometry.mesh import TriMesh

    both = TriMesh(np.concatenate([big.vertices, small.vertices]),
                   np.concatenate([big.faces, small.faces + len(big.vertices)]))
    both = unwrap_uv(both, CFG)
    grey = both.replace(texture=np.full((8, 8, 3), 128, np.uint8))
    gaussians = surface_gaussians(grey, 4096, seed=0)
    view = InputView(generation_cameras(load_config("tiny"), 64)[:1], two_tone_photo())
    baked = bake_texture(both, gaussians, CFG, input_view=view)
    from o3dcli.render.mesh import MeshRaycaster

    # the hidden ball's side that faces the photo's camera, left of centre (red, were it seen)
    rc = MeshRaycaster(baked)
    hit = rc.cast_rays(torch.tensor([[-0.05, 0.0, -0.6]]), torch.tensor([[0.0, 0.0, -1.0]]))
    assert int(hit.face_ids[0]) >= len(big.faces)  # on the small ball
    colour = rc.surface_color(hit.face_ids.numpy(), hit.barycentrics.numpy())[0]
    assert np.allclose(colour, GREY, atol=0.08), colour
    # the big ball's point in front of it, on the same line of sight, is red
    hit = rc.cast_rays(torch.tensor([[-0.05, 0.0, 2.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    assert np.allclose(rc.surface_color(hit.face_ids.numpy(), hit.barycentrics.numpy())[0], RED, atol=0.08)


def test_preprocess_prepares_the_same_crop_for_projection():
    yy, xx = np.mgrid[0:200, 0:300] + 0.5
    rgba = np.zeros((200, 300, 4), np.uint8)
    inside = (xx - 150) ** 2 / 80 ** 2 + (yy - 100) ** 2 / 50 ** 2 <= 1
    rgba[inside] = (220, 120, 30, 255)
    rgba[inside & (xx < 150), :3] = (30, 120, 220)
    cfg = PreprocessConfig(size=32)
    small = preprocess_image(rgba, cfg)
    assert small.rgba_projection is None  # only when asked for
    prep = preprocess_image(rgba, cfg, projection_size=256)
    assert prep.rgba_projection.shape == (4, 256, 256)
    down = torch.nn.functional.interpolate(prep.rgba_projection[None], size=(32, 32), mode="area")[0]
    assert (down[3] - prep.rgba[3]).abs().mean() < 0.02  # the same crop, finer
    both = (down[3] > 0.99) & (prep.rgba[3] > 0.99)
    assert (down[:3] - prep.rgba[:3]).abs()[:, both].mean() < 0.03


def test_asset_folder_input_photo_for_mesh_command(tmp_path):
    """`o3d mesh` on an asset folder projects its input.png (the 1024 px crop) and cuts the surface
    to its silhouette at the model's input size, as o3d generate does."""
    from PIL import Image

    from o3dcli.commands.mesh import asset_input_view, asset_silhouettes
    from o3dcli.config import dump_config

    cfg = load_config("tiny")
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[128:384, 160:352] = (200, 40, 40, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "input.png")
    view = asset_input_view(tmp_path, MeshConfig())
    assert view.rgba.shape == (4, 512, 512) and view.cameras.width == 512
    assert torch.allclose(view.cameras.c2w, generation_cameras(cfg, 512)[:1].c2w)
    sil = asset_silhouettes(tmp_path, MeshConfig())
    assert sil.alpha.shape == (1, 32, 32) and sil.cameras.width == 32  # cfg.preprocess.size
    box = np.zeros((32, 32), bool)
    box[8:24, 10:22] = True  # resampled as preprocessing resamples (Lanczos: edges ring a little)
    assert np.array_equal(sil.alpha[0] > 0.5, box) and sil.alpha.sum() == pytest.approx(16 * 12, rel=0.02)
    assert asset_input_view(tmp_path, dataclasses.replace(MeshConfig(), input_weight=0.0)) is None


def test_old_asset_small_input_png_warns(tmp_path, caplog):
    """An asset from before the 1024 px crop has an input.png at the model's input size: it is still
    projected (it is the true photo), with a warning naming the file and how to get the sharp one."""
    from PIL import Image

    from o3dcli.commands.mesh import asset_input_view
    from o3dcli.config import dump_config

    cfg = load_config("tiny")
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 10:22] = (200, 40, 40, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "input.png")
    with caplog.at_level("WARNING"):
        view = asset_input_view(tmp_path, MeshConfig())
    assert view.rgba.shape == (4, 32, 32)
    assert "input.png: only 32 px" in caplog.text and "o3d generate" in caplog.text
    caplog.clear()
    Image.fromarray(np.zeros((512, 512, 4), np.uint8), "RGBA").save(tmp_path / "input.png")
    with caplog.at_level("WARNING"):
        asset_input_view(tmp_path, MeshConfig())
    assert "only" not in caplog.text
