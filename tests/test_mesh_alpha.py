"""Texture alpha (cut-outs and blended surfaces) through loading, merging, rendering, decimation
and export."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.geometry.cameras import orbit_cameras
from o3dcli.geometry.mesh import TriMesh
from o3dcli.io.export import save_mesh_glb, save_mesh_obj
from o3dcli.io.mesh import load_mesh
from o3dcli.io.mtl import alpha_mode_of
from o3dcli.render.mesh import render_mesh

pytestmark = pytest.mark.usefixtures("one_thread")

RED, BLUE = (220, 30, 30), (30, 30, 220)


def quad(z: float, u0: float, u1: float, half: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A square facing +Z at depth z, its UVs spanning u0..u1 (v 0..1)."""
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], np.float32)
    uv = np.array([[u0, 0], [u1, 0], [u1, 1], [u0, 1]], np.float32)
    return v, np.array([[0, 1, 2], [0, 2, 3]]), uv


def leaf_card(mode: str = "MASK", cutoff: float = 0.5) -> TriMesh:
    """One quad whose texture is see-through on its left half (alpha 0) and red on its right."""
    v, f, uv = quad(0.0, 0.0, 1.0)
    tex = np.zeros((8, 8, 4), np.uint8)
    tex[..., :3] = RED
    tex[:, 4:, 3] = 255
    if mode == "BLEND":
        tex[:, 4:, 3] = 128
    return TriMesh(v, f, uv=uv, texture=tex, alpha_mode=mode, alpha_cutoff=cutoff, double_sided=True)


def glb_materials(path) -> list[dict]:
    data = path.read_bytes()
    (length,) = struct.unpack("<I", data[12:16])
    return json.loads(data[20:20 + length])["materials"]


@pytest.mark.parametrize("mode", ["MASK", "BLEND"])
def test_alpha_survives_glb_and_obj_round_trips(tmp_path, gltf_validator, mode):
    card = leaf_card(mode, cutoff=0.3)
    glb = save_mesh_glb(tmp_path / "card.glb", card)
    material = glb_materials(glb)[0]
    assert material["alphaMode"] == mode and material["doubleSided"] is True
    assert material.get("alphaCutoff") == (0.3 if mode == "MASK" else None)  # glTF: MASK only
    report = gltf_validator(glb)
    assert report["errors"] == 0 and report["warnings"] == 0, report
    back = load_mesh(glb)
    assert (back.alpha_mode, back.double_sided) == (mode, True)
    assert back.alpha_cutoff == pytest.approx(0.3 if mode == "MASK" else 0.5)
    assert np.array_equal(back.texture, card.texture)

    obj = save_mesh_obj(tmp_path / "obj" / "card.obj", card)
    assert "map_d -imfchan m card.png" in obj.with_suffix(".mtl").read_text().splitlines()
    back = load_mesh(obj)
    assert back.alpha_mode == mode and back.double_sided  # MTL has no mode: read from the alpha itself
    assert np.array_equal(back.texture, card.texture)


def test_opaque_meshes_write_no_alpha(tmp_path):
    card = leaf_card().replace(alpha_mode="OPAQUE", double_sided=False)
    assert card.texture.shape == (8, 8, 3) and not card.has_alpha  # the alpha channel is dropped
    assert TriMesh(*quad(0, 0, 1)[:2], alpha_mode="MASK").alpha_mode == "OPAQUE"  # nothing to read it from
    material = glb_materials(save_mesh_glb(tmp_path / "o.glb", card))[0]
    assert material.get("alphaMode", "OPAQUE") == "OPAQUE" and not material.get("doubleSided", False)
    obj = save_mesh_obj(tmp_path / "o.obj", card)
    assert "map_d" not in obj.with_suffix(".mtl").read_text()
    with pytest.raises(ValueError, match="alpha_mode"):
        leaf_card(mode="CUTOUT")


def test_an_opaque_gltf_material_ignores_its_textures_alpha(tmp_path):
    import trimesh
    from PIL import Image

    v, f, uv = quad(0.0, 0.0, 1.0)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = RED  # alpha 0 everywhere, but the material says OPAQUE: glTF ignores alpha then
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(rgba))
    tm = trimesh.Trimesh(v, f, visual=trimesh.visual.TextureVisuals(uv=uv, material=material), process=False)
    (tmp_path / "opaque.glb").write_bytes(trimesh.Scene(tm).export(file_type="glb"))
    back = load_mesh(tmp_path / "opaque.glb")
    assert back.alpha_mode == "OPAQUE" and back.texture.shape == (8, 8, 3)
    assert (back.texture == RED).all()


def test_alpha_mode_of_tells_cutouts_from_gradients():
    cut = np.zeros((16, 16), np.uint8)
    cut[:, 8:] = 255
    cut[0, 0] = 128  # one soft texel does not make a cut-out blend
    assert alpha_mode_of(cut) == "MASK"
    assert alpha_mode_of(np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))) == "BLEND"


def test_obj_map_d_as_a_separate_greyscale_mask(tmp_path):
    from PIL import Image

    v, f, uv = quad(0.0, 0.0, 1.0)
    Image.fromarray(np.full((8, 8, 3), RED, np.uint8)).save(tmp_path / "colour.png")
    mask = np.zeros((4, 4), np.uint8)
    mask[:, 2:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")  # half the colour's size: resized to it
    (tmp_path / "card.mtl").write_text("newmtl leaf\nKd 1 1 1\nmap_Kd colour.png\nmap_d mask.png\n")
    lines = ["mtllib card.mtl"] + [f"v {a} {b} {c}" for a, b, c in v.tolist()]
    lines += [f"vt {a} {b}" for a, b in uv.tolist()] + ["usemtl leaf", "f 1/1 2/2 3/3", "f 1/1 3/3 4/4"]
    (tmp_path / "card.obj").write_text("\n".join(lines) + "\n")
    mesh = load_mesh(tmp_path / "card.obj")
    assert mesh.alpha_mode == "MASK" and mesh.texture.shape == (8, 8, 4)
    assert (mesh.texture[:, :3, 3] == 0).all() and (mesh.texture[:, 5:, 3] == 255).all()
    assert (mesh.texture[..., :3] == RED).all()


def two_layer_scene() -> TriMesh:
    """The leaf card in front (z = 0.2) of an opaque blue square (z = -0.2), in one mesh sharing a
    16 x 8 texture: the card samples its left half (see-through, then red), the square its right."""
    vf, ff, uvf = quad(0.2, 0.0, 0.5)
    vb, fb, uvb = quad(-0.2, 0.5, 1.0)
    tex = np.zeros((8, 16, 4), np.uint8)
    tex[:, :8, :3] = RED
    tex[:, 4:8, 3] = 255  # the card: left half see-through, right half red
    tex[:, 8:, :3] = BLUE
    tex[:, 8:, 3] = 255
    return TriMesh(np.concatenate([vf, vb]), np.concatenate([ff, fb + 4]), uv=np.concatenate([uvf, uvb]),
                   texture=tex, alpha_mode="MASK")


def test_renders_see_through_cutouts():
    scene = two_layer_scene()
    cams = orbit_cameras(0.0, 0.0, radius=2.0, fov_deg=40.0, size=32)  # on +Z, looking at the card
    r = render_mesh(scene, cams)
    left, right = (16, 11), (16, 21)  # (row, col) behind the card's see-through and red halves
    torch.testing.assert_close(r.rgb[0][:, left[0], left[1]], torch.tensor(BLUE, dtype=torch.float32) / 255)
    torch.testing.assert_close(r.rgb[0][:, right[0], right[1]], torch.tensor(RED, dtype=torch.float32) / 255)
    # the geometric maps follow the surface that is seen
    assert r.depth[0, 0, left[0], left[1]] == pytest.approx(2.2, abs=1e-4)
    assert r.depth[0, 0, right[0], right[1]] == pytest.approx(1.8, abs=1e-4)
    assert r.face_ids[0, left[0], left[1]] >= 2 and r.face_ids[0, right[0], right[1]] < 2
    # opaque, the same scene shows the card's (red) colour everywhere on it
    opaque = render_mesh(scene.replace(alpha_mode="OPAQUE"), cams)
    torch.testing.assert_close(opaque.rgb[0][:, left[0], left[1]], torch.tensor(RED, dtype=torch.float32) / 255)
    # a card alone: its see-through half is background with zero coverage
    alone = render_mesh(leaf_card(), cams, background=(0, 1, 0))
    assert alone.alpha[0, 0, left[0], left[1]] == 0 and alone.alpha[0, 0, right[0], right[1]] == 1
    torch.testing.assert_close(alone.rgb[0][:, left[0], left[1]], torch.tensor([0.0, 1.0, 0.0]))


def test_merging_parts_keeps_each_parts_alpha(tmp_path):
    import trimesh
    from PIL import Image

    def part(z, rgba, mode, cutoff, double=False):
        v, f, uv = quad(z, 0.0, 1.0)
        material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(rgba), alphaMode=mode,
                                                       alphaCutoff=cutoff, doubleSided=double)
        return trimesh.Trimesh(v, f, visual=trimesh.visual.TextureVisuals(uv=uv, material=material), process=False)

    card = np.zeros((8, 8, 4), np.uint8)
    card[..., :3] = RED
    card[..., 3] = 100  # ~0.39: drawn at cutoff 0.3, not at 0.5
    other = card.copy()
    other[..., :3] = BLUE
    opaque = np.full((4, 4, 4), 255, np.uint8)
    opaque[..., 3] = 0  # its alpha must not count: the material is OPAQUE
    scene = trimesh.Scene([part(0.2, card, "MASK", 0.3, double=True), part(0.0, other, "MASK", 0.5),
                           part(-0.2, opaque, "OPAQUE", None)])
    (tmp_path / "mixed.glb").write_bytes(scene.export(file_type="glb"))
    mesh = load_mesh(tmp_path / "mixed.glb")
    assert mesh.alpha_mode == "MASK" and mesh.alpha_cutoff == 0.5 and mesh.double_sided
    assert mesh.texture.shape[2] == 4
    # each cut-out was decided at its own threshold, then written as 0 or 255
    from o3dcli.render.mesh import MeshRaycaster

    rc = MeshRaycaster(mesh)
    centre = np.full((1, 3), 1 / 3, np.float32)
    alpha = {z: float(rc.surface_alpha(np.array([f]), centre)[0]) for z, f in ((0.2, 0), (0.0, 2), (-0.2, 4))}
    assert alpha == {0.2: 1.0, 0.0: 0.0, -0.2: 1.0}


def test_mesh_command_keeps_cutouts_when_decimating_and_rebaking(tmp_path, gltf_validator):
    from o3dcli.mesh.bake import bake_texture_from_mesh
    from o3dcli.mesh.config import MeshConfig
    from o3dcli.mesh.surface_gaussians import reference_shape
    from o3dcli.mesh.uv import unwrap_uv
    from o3dcli.mesh.cleanup import weld_vertices

    torus = reference_shape("torus", detail=2, soft=0.08)  # ~12k faces, textured
    rgb = torus.texture
    stripes = np.where((np.arange(rgb.shape[1]) // 16) % 2 == 0, 255, 0).astype(np.uint8)
    rgba = np.concatenate([rgb, np.broadcast_to(stripes, rgb.shape[:2])[..., None]], -1)
    source = torus.replace(texture=rgba, alpha_mode="MASK", double_sided=True)
    path = save_mesh_glb(tmp_path / "lattice.glb", source)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["mesh", str(path), "-d", "2000", "--formats", "glb,obj", "-o", str(out)])
    assert result.exit_code == 0, result.output
    mesh = load_mesh(out / "lattice" / "model.glb")
    assert len(mesh.faces) <= 2000 and mesh.alpha_mode == "MASK" and mesh.double_sided
    assert np.array_equal(mesh.texture, rgba)  # the texture-aware collapse keeps the image, alpha too
    report = gltf_validator(out / "lattice" / "model.glb")
    assert report["errors"] == 0 and report["warnings"] == 0, report
    assert load_mesh(out / "lattice" / "model.obj").alpha_mode == "MASK"
    # the re-bake (used when the collapse refuses a UV layout) bakes alpha as well as colour
    cfg = MeshConfig(target_faces=2000, texture_size=256)
    geometry = unwrap_uv(weld_vertices(source)[0], cfg)
    baked = bake_texture_from_mesh(geometry, source, cfg)
    assert baked.alpha_mode == "MASK" and baked.double_sided and baked.texture.shape == (256, 256, 4)
    cams = orbit_cameras([30.0] * 3, [0.0, 90.0, 180.0], radius=2.2, fov_deg=40.0, size=64)
    a, b = render_mesh(source, cams).alpha, render_mesh(baked, cams).alpha
    assert (a != b).float().mean() < 0.03  # the same see-through stripes
    solid = float(render_mesh(source.replace(alpha_mode="OPAQUE"), cams).alpha.mean())
    assert 0.3 * solid < float(a.mean()) < 0.9 * solid  # the stripes are holes, not the whole torus


def test_cached_meshes_keep_their_alpha(tmp_path):
    from o3dcli.stages import load_trimesh, save_trimesh

    card = leaf_card("BLEND", cutoff=0.3)
    save_trimesh(tmp_path / "mesh.npz", card)
    back = load_trimesh(tmp_path / "mesh.npz")
    assert (back.alpha_mode, back.alpha_cutoff, back.double_sided) == ("BLEND", pytest.approx(0.3), True)
    assert np.array_equal(back.texture, card.texture)


def test_a_decal_just_above_a_surface_does_not_punch_through_it():
    base_v, base_f, base_uv = quad(0.0, 0.5, 1.0)
    decal_v, decal_f, decal_uv = quad(5e-5, 0.0, 0.5)  # a decal 0.05 mm above its base
    tex = np.zeros((8, 16, 4), np.uint8)
    tex[:, :8, :3] = RED
    tex[:, 4:8, 3] = 255  # the decal: see-through left half
    tex[:, 8:, :3] = BLUE
    tex[:, 8:, 3] = 255
    scene = TriMesh(np.concatenate([decal_v, base_v]), np.concatenate([decal_f, base_f + 4]),
                    uv=np.concatenate([decal_uv, base_uv]), texture=tex, alpha_mode="MASK")
    r = render_mesh(scene, orbit_cameras(0.0, 0.0, radius=2.0, fov_deg=40.0, size=32), background=(0, 1, 0))
    torch.testing.assert_close(r.rgb[0][:, 16, 11], torch.tensor(BLUE, dtype=torch.float32) / 255)
    assert r.alpha[0, 0, 16, 11] == 1 and r.depth[0, 0, 16, 11] == pytest.approx(2.0, abs=1e-4)


def test_scaling_keeps_the_colour_under_transparent_texels():
    from o3dcli.geometry.mesh import scale_texture
    from o3dcli.mesh.config import MeshConfig
    from o3dcli.mesh.run import remesh_mesh

    tex = np.zeros((64, 64, 4), np.uint8)
    tex[..., :3] = (40, 180, 40)  # leaf green everywhere, as exporters bleed it under the holes
    tex[:, 32:, 3] = 255
    small = scale_texture(tex, 0.25)
    assert small.shape == (16, 16, 4)
    assert (small[..., :3] == (40, 180, 40)).all()  # premultiplied filtering made the left half black
    assert (small[:, :8, 3] == 0).all() and (small[:, 8:, 3] == 255).all()
    v, f, uv = quad(0.0, 0.0, 1.0)
    card = TriMesh(v, f, uv=uv, texture=tex, alpha_mode="MASK")
    fitted = remesh_mesh(card, MeshConfig(texture_size=16))  # --texture-size on a kept texture
    assert fitted.alpha_mode == "MASK" and np.array_equal(fitted.texture, small)


def write_card_obj(folder, colour, mask, mask_name="mask.png"):
    """A one-quad OBJ whose MTL names ``colour`` as map_Kd and ``mask`` (a PIL image) as map_d."""
    from PIL import Image

    v, f, uv = quad(0.0, 0.0, 1.0)
    Image.fromarray(colour).save(folder / "colour.png")
    mask.save(folder / mask_name)
    (folder / "card.mtl").write_text(f"newmtl leaf\nKd 1 1 1\nmap_Kd colour.png\nmap_d {mask_name}\n")
    lines = ["mtllib card.mtl"] + [f"v {a} {b} {c}" for a, b, c in v.tolist()]
    lines += [f"vt {a} {b}" for a, b in uv.tolist()] + ["usemtl leaf", "f 1/1 2/2 3/3", "f 1/1 3/3 4/4"]
    (folder / "card.obj").write_text("\n".join(lines) + "\n")
    return folder / "card.obj"


def test_map_d_sixteen_bit_opaque_and_broken_masks(tmp_path, caplog):
    from PIL import Image

    colour = np.full((4, 16, 3), RED, np.uint8)
    ramp = np.tile(np.arange(16, dtype=np.uint16) * 4369, (4, 1))  # 0 .. 65535 in 16 steps
    (tmp_path / "a").mkdir()
    mesh = load_mesh(write_card_obj(tmp_path / "a", colour, Image.fromarray(ramp)))
    assert mesh.texture.dtype == np.uint8 and mesh.alpha_mode == "BLEND"  # 16 bits scaled, not clipped at 255
    assert np.array_equal(mesh.texture[0, :, 3], np.arange(16) * 17)
    # a black-and-white mask saved as RGBA with an opaque alpha: its luminance is the mask
    bw = np.zeros((4, 16, 4), np.uint8)
    bw[:, 8:, :3] = 255
    bw[..., 3] = 255
    (tmp_path / "b").mkdir()
    mesh = load_mesh(write_card_obj(tmp_path / "b", colour, Image.fromarray(bw)))
    assert mesh.alpha_mode == "MASK" and (mesh.texture[:, :8, 3] == 0).all() and (mesh.texture[:, 8:, 3] == 255).all()
    # an all-opaque map_d changes nothing: no alpha, no forced double-siding
    (tmp_path / "c").mkdir()
    mesh = load_mesh(write_card_obj(tmp_path / "c", colour, Image.fromarray(np.full((4, 16), 255, np.uint8))))
    assert (mesh.alpha_mode, mesh.texture.shape, mesh.double_sided) == ("OPAQUE", (4, 16, 3), False)
    # an unreadable map_d is warned about and the mesh loads opaque, as with a missing one
    (tmp_path / "d").mkdir()
    obj = write_card_obj(tmp_path / "d", colour, Image.fromarray(bw))
    (tmp_path / "d" / "mask.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with caplog.at_level("WARNING"):
        mesh = load_mesh(obj)
    assert mesh.alpha_mode == "OPAQUE" and "mask.png cannot be read" in caplog.text


def test_obj_export_applies_the_cutoff_mtl_cannot_hold(tmp_path):
    card = leaf_card(cutoff=0.3)
    tex = card.texture.copy()
    tex[:, 4:, 3] = 100  # 0.39: drawn at cutoff 0.3
    card = card.replace(texture=tex)
    back = load_mesh(save_mesh_obj(tmp_path / "card.obj", card))
    assert back.alpha_mode == "MASK"
    assert (back.texture[:, 4:, 3] == 255).all() and (back.texture[:, :4, 3] == 0).all()
    glb = load_mesh(save_mesh_glb(tmp_path / "card.glb", card))  # the GLB keeps the values and the cutoff
    assert glb.alpha_cutoff == pytest.approx(0.3) and (glb.texture[:, 4:, 3] == 100).all()


def test_see_through_plain_colours_keep_their_alpha(tmp_path, caplog):
    # glass: a glTF material with a base colour factor whose alpha < 1 and no texture, and an OBJ
    # material with "d" (or "Tr") and no map_d
    import logging

    import trimesh

    v, f, _ = quad(0.0, 0.0, 1.0)
    glass = trimesh.Trimesh(v, f, process=False)
    glass.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial(
        baseColorFactor=[0, 0, 255, 100], alphaMode="BLEND"))
    opaque = trimesh.Trimesh(v + [0, 0, -0.5], f, process=False)
    opaque.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial(
        baseColorFactor=[255, 0, 0, 255]))
    trimesh.Scene([glass]).export(tmp_path / "glass.glb")
    trimesh.Scene([glass, opaque]).export(tmp_path / "window.glb")
    (tmp_path / "g.obj").write_text("mtllib g.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
                                    "usemtl glass\nf 1 2 3\nusemtl tinted\nf 1 3 4\n")
    (tmp_path / "g.mtl").write_text("newmtl glass\nKd 0 0 1\nd 0.4\nnewmtl tinted\nKd 0 1 0\nTr 0.75\n")

    def alpha_at_colour(mesh, rgb):
        texels = mesh.texture.reshape(-1, 4)
        return {int(a) for a in texels[(texels[:, :3] == rgb).all(1), 3]}

    mesh = load_mesh(tmp_path / "glass.glb")
    assert mesh.alpha_mode == "BLEND" and alpha_at_colour(mesh, (0, 0, 255)) == {100}
    mesh = load_mesh(tmp_path / "window.glb")
    assert mesh.alpha_mode == "BLEND"
    assert alpha_at_colour(mesh, (0, 0, 255)) == {100} and alpha_at_colour(mesh, (255, 0, 0)) == {255}
    mesh = load_mesh(tmp_path / "g.obj")
    assert mesh.alpha_mode == "BLEND"
    assert alpha_at_colour(mesh, (0, 0, 255)) == {102} and alpha_at_colour(mesh, (0, 255, 0)) == {64}
    # kept by o3d mesh in both formats
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["mesh", str(tmp_path / "window.glb"), "--formats", "glb,obj", "-o", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("model.glb", "model.obj"):
        back = load_mesh(out / "window" / name)
        assert back.alpha_mode == "BLEND" and alpha_at_colour(back, (0, 0, 255)) == {100}, name
    # "d 0" is read as opaque, with a warning (exporters that mix d and Tr up write it for opaque materials)
    (tmp_path / "g.mtl").write_text("newmtl glass\nKd 0 0 1\nd 0\nnewmtl tinted\nKd 0 1 0\n")
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mesh = load_mesh(tmp_path / "g.obj")
    assert not mesh.has_alpha and "d 0 makes the material fully transparent; read as opaque" in caplog.text
