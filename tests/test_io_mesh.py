"""Mesh loaders: OBJ (+MTL, texture, GSO layout), GLB via trimesh, PLY, errors."""

import logging
import sys

import numpy as np
import pytest
from PIL import Image

from o3dcli.io.mesh import MeshLoadError, load_mesh

# Two triangles sharing the edge (v2, v3); v2 carries a different texcoord in each face (a UV seam).
SEAM_OBJ = """# seam test
mtllib quad.mtl
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
vt 0.0 0.0
vt 1.0 0.0
vt 1.0 1.0
vt 0.0 1.0
vt 0.5 0.5
vn 0 0 1
usemtl tex
f 1/1/1 2/2/1 3/3/1
f 1/1/1 3/5/1 4/4/1
"""
QUAD_TEXTURE = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]]], np.uint8)


def corner_table(mesh):
    """{(position, uv) for every face corner}: what the OBJ faces said, independent of vertex order."""
    return {(tuple(mesh.vertices[i].round(4)), tuple(mesh.uv[i].round(4))) for i in mesh.faces.reshape(-1)}


def write_textured_obj(folder, mtl_texture="quad.png", texture_at="quad.png"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "quad.obj").write_text(SEAM_OBJ)
    (folder / "quad.mtl").write_text(f"newmtl tex\nKd 0.2 0.4 0.6\nmap_Kd {mtl_texture}\n")
    if texture_at:
        Image.fromarray(QUAD_TEXTURE).save(folder / texture_at)
    return folder / "quad.obj"


def test_obj_mtl_texture_and_uv_seam_split(tmp_path):
    mesh = load_mesh(write_textured_obj(tmp_path))
    assert mesh.has_texture
    np.testing.assert_array_equal(mesh.texture, QUAD_TEXTURE)
    # 4 positions but 5 distinct (position, texcoord) pairs: vertex 3 is split at the seam
    assert len(mesh.vertices) == 5 and len(mesh.faces) == 2
    expected = {((0, 0, 0), (0, 0)), ((1, 0, 0), (1, 0)), ((1, 1, 0), (1, 1)),
                ((1, 1, 0), (0.5, 0.5)), ((0, 1, 0), (0, 1))}
    assert corner_table(mesh) == expected
    # winding kept: both faces face +Z
    np.testing.assert_allclose(mesh.face_normals(), [[0, 0, 1], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(mesh.material_color, [0.2, 0.4, 0.6])


def test_obj_missing_texture_falls_back_to_kd(tmp_path):
    mesh = load_mesh(write_textured_obj(tmp_path, texture_at=None))
    assert mesh.texture is None and not mesh.has_texture
    assert len(mesh.uv) == 5  # the file's UVs stay, for a texture supplied later
    np.testing.assert_allclose(mesh.material_color, [0.2, 0.4, 0.6])


def test_an_obj_texture_its_faces_cannot_use_is_said(tmp_path, caplog):
    # a texture with no vt lines was dropped, and faces without vt took the corner colour, unsaid
    folder = tmp_path / "none"
    path = write_textured_obj(folder)
    path.write_text("\n".join(ln for ln in SEAM_OBJ.splitlines() if not ln.startswith("vt"))
                    .replace("/1/", "//").replace("/2/", "//").replace("/3/", "//").replace("/4/", "//")
                    .replace("/5/", "//"))
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mesh = load_mesh(path)
    assert not mesh.has_texture
    assert "texture quad.png is not used: the faces of its material have no texture coordinates (vt)" in caplog.text
    caplog.clear()
    path = write_textured_obj(tmp_path / "half")
    lines = SEAM_OBJ.splitlines()
    last = next(i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith("f "))
    lines[last] = "f " + " ".join(c.split("/")[0] for c in lines[last].split()[1:])  # one face without vt
    path.write_text("\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mesh = load_mesh(path)
    assert mesh.has_texture
    assert "1 of the 2 triangles textured with quad.png have no texture coordinates (vt)" in caplog.text
    caplog.clear()
    load_mesh(write_textured_obj(tmp_path / "whole"))
    assert "texture coordinates" not in caplog.text


def test_obj_polygons_negative_indices_and_vertex_colors(tmp_path):
    p = tmp_path / "poly.obj"
    p.write_text("v 0 0 0 1 0 0\nv 1 0 0 0 1 0\nv 1 1 0 0 0 1\nv 0 1 0 1 1 1\nf -4//1 -3//1 -2//1 -1//1\n")
    mesh = load_mesh(p)
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3]])  # fan triangulation, no split
    np.testing.assert_allclose(mesh.vertex_colors, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    assert mesh.area() == pytest.approx(1.0)


def test_obj_two_plain_materials_become_vertex_colors(tmp_path):
    (tmp_path / "m.mtl").write_text("newmtl red\nKd 1 0 0\nnewmtl blue\nKd 0 0 1\n")
    p = tmp_path / "two.obj"
    p.write_text("mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\n"
                 "usemtl red\nf 1 2 3\nusemtl blue\nf 2 4 3\n")
    mesh = load_mesh(p)
    colors = mesh.vertex_colors[mesh.faces]  # [F, 3 corners, 3]
    np.testing.assert_allclose(colors[0], [[1, 0, 0]] * 3)
    np.testing.assert_allclose(colors[1], [[0, 0, 1]] * 3)


def test_obj_textured_and_plain_materials_share_an_atlas(tmp_path):
    from o3dcli.render.mesh import sample_texture
    import torch

    write_textured_obj(tmp_path)
    p = tmp_path / "mixed.obj"
    (tmp_path / "quad.mtl").write_text("newmtl tex\nmap_Kd quad.png\nnewmtl plain\nKd 0 1 1\n")
    p.write_text(SEAM_OBJ.replace("f 1/1/1 3/5/1 4/4/1", "usemtl plain\nf 1/1/1 3/5/1 4/4/1"))
    mesh = load_mesh(p)
    assert mesh.has_texture
    # texel centres of the original texture, looked up through the remapped UVs
    tex = torch.from_numpy(mesh.texture).float() / 255
    corners = mesh.faces[0]
    bary_centre_of_red = torch.tensor([[0.25, 0.75]])  # uv of the top-left (red) texel centre
    uv0 = torch.from_numpy(mesh.uv[corners])  # textured face: (0,0), (1,0), (1,1) remapped
    # map uv (0.25, 0.75) through the affine remap read off the face's corners
    a, b, c = uv0
    target = a + (b - a) * bary_centre_of_red[0, 0] + (c - b) * bary_centre_of_red[0, 1]
    np.testing.assert_allclose(sample_texture(tex, target[None])[0].numpy(), [1, 0, 0], atol=1e-6)
    plain_uv = torch.from_numpy(mesh.uv[mesh.faces[1]])
    np.testing.assert_allclose(sample_texture(tex, plain_uv).numpy(), [[0, 1, 1]] * 3, atol=1e-6)


def test_gso_folder_layout_with_and_without_texture(tmp_path):
    obj = tmp_path / "OBJ" / "meshes"
    write_textured_obj(obj, mtl_texture="texture.png", texture_at=None)
    (tmp_path / "OBJ" / "model.sdf").write_text("<sdf/>")
    (obj / "quad.obj").rename(obj / "model.obj")
    no_tex = load_mesh(tmp_path / "OBJ")
    assert no_tex.texture is None
    np.testing.assert_allclose(no_tex.material_color, [0.2, 0.4, 0.6])
    # GSO meshes are Z-up: (x, y, z) -> (x, z, -y); "y" keeps the file's coordinates
    raw = load_mesh(obj / "model.obj", up="y")
    np.testing.assert_allclose(no_tex.vertices, raw.vertices[:, [0, 2, 1]] * [1, 1, -1])
    assert raw.vertices[:, 2].max() == 0 and no_tex.vertices[:, 1].max() == 0
    textures = tmp_path / "OBJ" / "materials" / "textures"
    textures.mkdir(parents=True)
    Image.fromarray(QUAD_TEXTURE).save(textures / "texture.png")
    with_tex = load_mesh(tmp_path / "OBJ")
    np.testing.assert_array_equal(with_tex.texture, QUAD_TEXTURE)
    assert with_tex.uv is not None and len(with_tex.vertices) == 5


def test_glb_texture_scene_transforms_and_vertex_colors(tmp_path):
    import trimesh

    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(QUAD_TEXTURE))
    quad = trimesh.Trimesh(verts, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
                           process=False)
    quad.export(tmp_path / "quad.glb")
    mesh = load_mesh(tmp_path / "quad.glb")
    np.testing.assert_array_equal(mesh.texture, QUAD_TEXTURE)
    assert corner_table(mesh) == {(tuple(v), tuple(t)) for v, t in zip(verts, uv)}

    colored = trimesh.Trimesh(verts, faces, vertex_colors=[[255, 0, 0, 255]] * 4, process=False)
    scene = trimesh.Scene()
    shift = np.eye(4)
    shift[:3, 3] = [10, 0, 0]
    scene.add_geometry(colored, node_name="a", geom_name="a")
    scene.add_geometry(colored.copy(), node_name="b", geom_name="b", transform=shift)
    scene.export(tmp_path / "two.glb")
    merged = load_mesh(tmp_path / "two.glb")
    assert len(merged.faces) == 4
    np.testing.assert_allclose(merged.bounds()[1], [11, 1, 0], atol=1e-6)  # node transform applied
    np.testing.assert_allclose(merged.vertex_colors, np.tile([1, 0, 0], (8, 1)), atol=1e-6)


def test_glb_vertex_colours_beside_a_material(tmp_path):
    """Blender writes COLOR_0 together with a material: the colours load, times the base colour factor."""
    import trimesh

    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    material = trimesh.visual.material.PBRMaterial(baseColorFactor=[255, 255, 128, 255], doubleSided=True)
    visual = trimesh.visual.TextureVisuals(material=material)
    visual.vertex_attributes["color"] = np.array([[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]], np.uint8)
    trimesh.Trimesh(verts, [[0, 1, 2]], visual=visual, process=False).export(tmp_path / "blender.glb")
    mesh = load_mesh(tmp_path / "blender.glb")
    np.testing.assert_allclose(mesh.vertex_colors, np.diag([1.0, 1.0, 128 / 255]), atol=1e-6)
    assert mesh.double_sided


def test_glb_base_color_factor_without_texture(tmp_path):
    import trimesh

    material = trimesh.visual.material.PBRMaterial(baseColorFactor=[0.0, 0.5, 1.0, 1.0])
    box = trimesh.creation.box()
    box.visual = trimesh.visual.TextureVisuals(material=material)
    box.export(tmp_path / "box.glb")
    mesh = load_mesh(tmp_path / "box.glb")
    assert mesh.texture is None and mesh.vertex_colors is None
    np.testing.assert_allclose(mesh.material_color, [0, 0.5, 1], atol=1 / 255)
    assert mesh.area() == pytest.approx(6.0)


def test_ply_vertex_colors(tmp_path):
    p = tmp_path / "tri.ply"
    p.write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nelement face 1\n"
        "property list uchar int vertex_indices\nend_header\n"
        "0 0 0 255 0 0\n1 0 0 0 255 0\n0 1 0 0 0 255\n3 0 1 2\n"
    )
    mesh = load_mesh(p)
    np.testing.assert_allclose(mesh.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2]])
    np.testing.assert_allclose(mesh.vertex_colors, np.eye(3))


def test_ply_texture_keeps_its_colours(tmp_path):
    # a PLY naming its texture (MeshLab's and Metashape's `comment TextureFile`, UVs per vertex):
    # the texture came out at 40 % (trimesh's default grey material colour multiplied it)
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:4], texture[4:] = (240, 240, 240), (250, 200, 0)
    Image.fromarray(texture).save(tmp_path / "tex.png")
    p = tmp_path / "tri.ply"
    p.write_text(
        "ply\nformat ascii 1.0\ncomment TextureFile tex.png\nelement vertex 3\nproperty float x\n"
        "property float y\nproperty float z\nproperty float s\nproperty float t\nelement face 1\n"
        "property list uchar int vertex_indices\nend_header\n"
        "0 0 0 0.1 0.1\n1 0 0 0.9 0.1\n0 1 0 0.1 0.9\n3 0 1 2\n"
    )
    mesh = load_mesh(p)
    assert mesh.texture is not None and {tuple(c) for c in mesh.texture.reshape(-1, 3)} == {(240, 240, 240),
                                                                                             (250, 200, 0)}


def test_a_byte_order_mark_and_capitals_are_read(tmp_path):
    # Windows Notepad starts a file with a UTF-8 byte-order mark: the OBJ's first line (mtllib) and the
    # MTL's first material were lost; an ASCII STL in capitals was taken for a broken binary one
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(tmp_path / "t.png")
    bom = b"\xef\xbb\xbf"
    (tmp_path / "m.mtl").write_bytes(bom + b"newmtl m\nKd 1 1 1\nmap_Kd t.png\n")
    (tmp_path / "m.obj").write_bytes(bom + b"mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\n"
                                     b"usemtl m\nf 1/1 2/2 3/3\n")
    (tmp_path / "v.obj").write_bytes(bom + b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    mesh = load_mesh(tmp_path / "m.obj")
    assert mesh.texture is not None and (mesh.texture == 200).all()
    assert len(load_mesh(tmp_path / "v.obj").vertices) == 3
    (tmp_path / "caps.stl").write_text(
        "SOLID PART\nFACET NORMAL 0 0 1\nOUTER LOOP\nVERTEX 0 0 0\nVERTEX 1 0 0\nVERTEX 0 1 0\nENDLOOP\n"
        "ENDFACET\nENDSOLID PART\n")
    assert len(load_mesh(tmp_path / "caps.stl", up="y").faces) == 1


def test_a_usemtl_its_mtl_does_not_define_is_said(tmp_path, caplog):
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(tmp_path / "t.png")
    (tmp_path / "m.mtl").write_text("newmtl Brick\nKd 1 1 1\nmap_Kd t.png\nnewmtl Stone\nKd 0.5 0.5 0.5\n")
    faces = "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nusemtl {}\nf 1/1 2/2 3/3\n"
    (tmp_path / "case.obj").write_text("mtllib m.mtl\n" + faces.format("brick"))
    (tmp_path / "none.obj").write_text("mtllib m.mtl\n" + faces.format("glass"))
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mesh = load_mesh(tmp_path / "case.obj")  # differs only in case (an MTL edited on Windows): used
        assert mesh.texture is not None and (mesh.texture == 200).all()
        assert "usemtl brick: no such material" in caplog.text and "using Brick" in caplog.text
        caplog.clear()
        assert load_mesh(tmp_path / "none.obj").texture is None
        assert "usemtl glass: no such material in its MTL files (they define Brick, Stone)" in caplog.text


def test_gltf_files_named_by_percent_encoded_uris_and_a_missing_texture(tmp_path, caplog):
    # glTF writes URIs percent-encoded (`box%20tex.png`); trimesh looked them up as they are: the
    # texture was dropped without a word, the buffer not found
    import json

    from o3dcli.io.export import _glb_chunks, glb_bytes
    from test_mesh_export import quadrant_plane

    plane = quadrant_plane()
    doc, binary = _glb_chunks(glb_bytes(plane))
    view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    (tmp_path / "tex dir").mkdir()
    (tmp_path / "tex dir" / "box tex.png").write_bytes(
        binary[view.get("byteOffset", 0):view.get("byteOffset", 0) + view["byteLength"]])
    (tmp_path / "my buffer.bin").write_bytes(binary)
    doc["buffers"][0]["uri"] = "my%20buffer.bin"
    doc["images"][0] = {"uri": "tex%20dir/box%20tex.png", "mimeType": "image/png"}
    (tmp_path / "enc.gltf").write_text(json.dumps(doc))
    mesh = load_mesh(tmp_path / "enc.gltf")
    assert mesh.texture is not None and mesh.texture.shape == plane.texture.shape
    doc["images"][0]["uri"] = "gone.png"
    (tmp_path / "gone.gltf").write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="o3d"):
        load_mesh(tmp_path / "gone.gltf")
    assert f"texture {tmp_path / 'gone.png'} not found" in caplog.text


@pytest.mark.parametrize("kind", ["obj", "glb"])
def test_textures_up_to_16k_are_read_and_larger_ones_refused_naming_the_file(tmp_path, monkeypatch, caplog, kind):
    # Pillow refuses images over 89.5 MP as decompression bombs: a photogrammetry mesh's 16K texture
    # (268 MP) failed the input. Scaled down here: Pillow's limit under the texture, o3d's over it.
    from PIL import Image

    import o3dcli.io.mesh as mesh_io
    from o3dcli.io.export import save_mesh_glb, save_mesh_obj
    from test_mesh_export import quadrant_plane

    plane = quadrant_plane()
    path = (save_mesh_obj if kind == "obj" else save_mesh_glb)(tmp_path / f"m.{kind}", plane)
    pixels = plane.texture.shape[0] * plane.texture.shape[1]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels // 4)  # Pillow's default, scaled
    monkeypatch.setattr(mesh_io, "TEXTURE_MAX_PIXELS", pixels)
    assert np.array_equal(load_mesh(path).texture, plane.texture)
    assert Image.MAX_IMAGE_PIXELS == pixels // 4  # put back
    monkeypatch.setattr(mesh_io, "TEXTURE_MAX_PIXELS", pixels // 4)
    if kind == "obj":
        with pytest.raises(MeshLoadError, match=f"{path}: .*texture"):
            load_mesh(path)
    else:  # trimesh drops an image it cannot open: said, the mesh loaded without it
        with caplog.at_level(logging.WARNING, logger="o3d"):
            assert load_mesh(path).texture is None
        assert f"{path}: its textures cannot be read (damaged, or larger than 16K)" in caplog.text


def test_gltf_material_parts_o3d_does_not_keep_are_said(tmp_path, caplog):
    from o3dcli.io.export import _glb_chunks, _glb_pack, glb_bytes
    from test_mesh_export import quadrant_plane

    glb = glb_bytes(quadrant_plane())
    with caplog.at_level(logging.WARNING, logger="o3d"):
        (tmp_path / "ours.glb").write_bytes(glb)
        load_mesh(tmp_path / "ours.glb")  # o3d's own material: base colour, metallic 0, roughness 1
        assert "carries over the base colour" not in caplog.text
        doc, binary = _glb_chunks(glb)
        material = doc["materials"][0]
        material["normalTexture"] = {"index": 0}
        material["emissiveFactor"] = [1, 0.5, 0]
        material["pbrMetallicRoughness"].update(metallicFactor=1.0, roughnessFactor=0.3)
        (tmp_path / "metal.glb").write_bytes(_glb_pack(doc, binary))
        assert load_mesh(tmp_path / "metal.glb").texture is not None
    assert ("o3d carries over the base colour (and its alpha) only: emission, metallic 1, normal maps, "
            "roughness 0.3 are not kept") in caplog.text
    # unlit and glass materials, and samplers: an unlit scan came out shaded, glass opaque, pixel art
    # blurred, unsaid
    caplog.clear()
    doc, binary = _glb_chunks(glb)
    doc["materials"][0]["extensions"] = {"KHR_materials_unlit": {}, "KHR_materials_sheen": {}}
    doc["samplers"] = [{"wrapS": 33648, "magFilter": 9728}]
    for texture in doc["textures"]:
        texture["sampler"] = 0
    (tmp_path / "unlit.glb").write_bytes(_glb_pack(doc, binary))
    with caplog.at_level(logging.WARNING, logger="o3d"):
        load_mesh(tmp_path / "unlit.glb")
    assert ("only: KHR_materials_sheen, nearest-pixel texture filtering, texture wrap modes (mirrored or clamped; "
            "o3d's textures repeat), unlit shading (KHR_materials_unlit) are not kept") in caplog.text


@pytest.mark.parametrize("turn", range(3))
def test_concave_polygons_are_triangulated_inside_their_outline(tmp_path, turn):
    # an L-shaped prism with six-cornered caps: the fan from the first corner spilled outside the L
    # (cap area 4 instead of 3); the same along each axis, and the outline starting at any corner
    outline = np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]], np.float64)
    for start in range(6):
        ring = np.roll(outline, -start, axis=0)
        v = np.concatenate([np.c_[ring, np.zeros(6)], np.c_[ring, np.ones(6)]])
        v = np.roll(v, turn, axis=1)  # the caps facing z, x or y
        sides = [f"f {i + 1} {(i + 1) % 6 + 1} {(i + 1) % 6 + 7} {i + 7}" for i in range(6)]
        lines = [f"v {a} {b} {c}" for a, b, c in v] + ["f 6 5 4 3 2 1", "f 7 8 9 10 11 12"] + sides
        (tmp_path / "l.obj").write_text("\n".join(lines) + "\n")
        mesh = load_mesh(tmp_path / "l.obj")
        tri = mesh.vertices[mesh.faces].astype(np.float64)
        area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum() / 2
        assert area == pytest.approx(3 + 3 + 2 * 4), (start, turn)  # two caps of 3, sides 8 long, 1 high
        volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
        assert volume == pytest.approx(3.0), (start, turn)  # closed, wound outwards


def test_ear_clipping_covers_stars_keyholes_and_repeated_corners_exactly():
    from o3dcli.io.obj import _ear_clip

    def covered(ring):
        pts = np.c_[np.asarray(ring, np.float64), np.zeros(len(ring))]
        tris = _ear_clip(pts, np.array([0.0, 0.0, 1.0]))
        assert tris is not None and len(tris) == len(ring) - 2
        t = pts[tris]
        signed = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])[:, 2] / 2
        assert (signed >= -1e-12).all()  # every triangle turned as the polygon
        return signed.sum()

    n = 300
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = np.where(np.arange(n) % 2 == 0, 1.0, 0.5)  # a gear's cap: every other corner reflex
    star = np.c_[radius * np.cos(angle), radius * np.sin(angle)]
    assert covered(star) == pytest.approx(0.5 * abs(np.dot(star[:, 0], np.roll(star[:, 1], -1))
                                                   - np.dot(star[:, 1], np.roll(star[:, 0], -1))))
    # a square with a square hole, joined by a bridge whose corners repeat: 16 - 4
    assert covered([(0, 0), (4, 0), (4, 4), (0, 4), (0, 0), (1, 1), (1, 3), (3, 3), (3, 1), (1, 1)]) == pytest.approx(12)
    assert covered([(0, 0), (2, 0), (2, 1), (1, 1), (1, 1), (1, 2), (0, 2)]) == pytest.approx(3)  # a corner twice


def test_a_polygon_that_cannot_be_clipped_keeps_its_fan_and_is_said(tmp_path, monkeypatch, caplog):
    import o3dcli.io.obj as obj

    monkeypatch.setattr(obj, "_ear_clip", lambda points, normal: None)  # as for a polygon crossing itself
    (tmp_path / "l.obj").write_text("v 0 0 0\nv 2 0 0\nv 2 1 0\nv 1 1 0\nv 1 2 0\nv 0 2 0\nf 3 4 5 6 1 2\n")
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mesh = load_mesh(tmp_path / "l.obj")
    assert len(mesh.faces) == 4
    assert "1 polygon(s) cross themselves and cannot be triangulated inside their outline" in caplog.text


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.obj", None, "no such file"),
        ("empty.obj", "", "empty file .0 bytes."),
        ("comment.obj", "# nothing but a comment\n", "no faces"),
        ("text.obj", "v 0 0 0\nf 1 2 3\n", "outside the 1 defined"),
        ("bad.obj", "v 0 0 0\nv 0 zero 0\nf 1 2 1\n", "line 2"),
        ("badface.obj", "v 0 0 0\nf 1 1\n", "line 2"),
        ("junk.glb", b"\x00\x01 not a glb", "not a GLB file .it does not start with glTF's magic bytes"),
        ("text.glb", '{"asset": {"version": "2.0"}}', "a .gltf .text. file named .glb"),
        ("cut.glb", b"glTF" + (2).to_bytes(4, "little") + (900).to_bytes(4, "little") + (40).to_bytes(4, "little")
         + b"JSON" + b"{}" * 20, "truncated GLB file .60 bytes; its header says 900."),
        ("old.glb", b"glTF" + (1).to_bytes(4, "little") + (20).to_bytes(4, "little") + b"\x00" * 8,
         "GLB version 1; o3d reads glTF 2.0"),
        ("zero.glb", b"", "empty file .0 bytes."),
        ("cloud.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                      "property float z\nend_header\n0 0 0\n", "no triangles"),
        ("mesh.fbx", "Kaydara FBX Binary", "unsupported mesh format"),
        ("empty.stl", "solid x\nendsolid x\n", "no triangles"),
        ("short.stl", b"\x00" * 30, "shorter than a binary STL's 84-byte header"),
        ("cut.stl", b"\x00" * 80 + (5).to_bytes(4, "little") + b"\x00" * 60, "truncated binary STL: its header counts 5"),
        ("solidcut.stl", b"solid part".ljust(80) + (5).to_bytes(4, "little") + b"\x00" * 60, "truncated binary STL"),
        ("nan.stl", b"\x00" * 80 + (1).to_bytes(4, "little") + np.full(12, np.nan, "<f4").tobytes() + b"\x00\x00",
         "non-finite"),
    ],
)
def test_bad_files_raise_mesh_load_error_naming_the_file(tmp_path, name, content, message):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        p.write_text(content)
    with pytest.raises(MeshLoadError, match=message) as err:
        load_mesh(p)
    assert name in str(err.value)


def test_folder_without_a_mesh_is_an_error(tmp_path):
    with pytest.raises(MeshLoadError, match="no mesh file"):
        load_mesh(tmp_path)


def test_obj_mixed_corner_patterns_tabs_and_mixed_polygons(tmp_path):
    p = tmp_path / "mixed.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv\t0 1 0\nv 2 0 0\nvt 0 0\nvt\t1 0\nvt 1 1\n"
                 "f 1/1 2/2 3/3 4\nf 2//1 5//1 3//1\n")
    mesh = load_mesh(p)
    assert len(mesh.faces) == 3  # a quad fanned into two triangles plus one triangle
    assert mesh.area() == pytest.approx(1.5)
    # corners 1/1, 2/2, 3/3 keep their texcoords; corners without one, and the //vn ones, get (0, 0)
    assert corner_table(mesh) == {((0, 0, 0), (0, 0)), ((1, 0, 0), (1, 0)), ((1, 1, 0), (1, 1)),
                                  ((0, 1, 0), (0, 0)), ((1, 0, 0), (0, 0)), ((2, 0, 0), (0, 0)),
                                  ((1, 1, 0), (0, 0))}


def test_a_missing_mtl_or_texture_loads_with_a_warning_naming_it(tmp_path, caplog):
    import logging

    obj = "mtllib model.mtl\nusemtl m\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.obj").write_text(obj)
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mesh = load_mesh(tmp_path / "a" / "model.obj")
    assert len(mesh.faces) == 1 and "material library model.mtl is missing" in caplog.text
    caplog.clear()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.obj").write_text(obj)
    (tmp_path / "b" / "model.mtl").write_text("newmtl m\nKd 0.2 0.4 0.6\nmap_Kd textures/skin.png\n")
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mesh = load_mesh(tmp_path / "b" / "model.obj")
    assert "texture textures/skin.png not found" in caplog.text
    assert mesh.texture is None and np.allclose(mesh.material_color, [0.2, 0.4, 0.6])


def test_asset_paths_a_folder_with_one_mesh_an_empty_file_and_z_up(tmp_path):
    import trimesh

    from o3dcli.io.assets import AssetError, load_asset, resolve_asset_path

    (tmp_path / "chair").mkdir()
    trimesh.creation.box((0.2, 0.4, 1.0)).export(tmp_path / "chair" / "chair.obj")  # tall along z
    assert resolve_asset_path(tmp_path / "chair") == tmp_path / "chair" / "chair.obj"
    lo, hi = load_asset(tmp_path / "chair").bounds()
    assert np.allclose(hi - lo, [0.2, 0.4, 1.0], atol=1e-5)
    lo, hi = load_asset(tmp_path / "chair", up="z").bounds()  # z-up file: its height becomes y
    assert np.allclose(hi - lo, [0.2, 1.0, 0.4], atol=1e-5)
    (tmp_path / "empty.glb").write_bytes(b"")
    with pytest.raises(AssetError, match="empty file"):
        load_asset(tmp_path / "empty.glb")
    trimesh.creation.box().export(tmp_path / "chair" / "other.obj")
    with pytest.raises(AssetError, match="holds 2 asset files"):
        resolve_asset_path(tmp_path / "chair")


def _sample(texture, uv):
    """Nearest texel of an [H, W, 3] texture at UVs [N, 2] (origin bottom-left, repeating)."""
    h, w = texture.shape[:2]
    uv = uv - np.floor(uv)
    x = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    y = np.clip(((1 - uv[:, 1]) * h).astype(int), 0, h - 1)
    return texture[y, x].astype(int)


def test_merged_scene_keeps_repeating_textures_and_vertex_colours(tmp_path):
    # a floor whose UVs repeat its texture 3 times, a crate with another texture and a vertex-coloured
    # part in one GLB: the atlas used to wrap the floor's UVs per vertex (scrambling faces that cross a
    # repeat) and paint the vertex-coloured part one mean colour
    import trimesh
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    floor_tex, crate_tex = (rng.integers(0, 256, (5, 5, 3)).astype(np.uint8) for _ in range(2))
    floor = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1]], [[0, 2, 1], [0, 3, 2]], process=False)
    floor_uv = np.array([[0.15, 0.2], [2.55, 0.35], [2.8, 2.9], [0.3, 2.65]])  # face centres off texel edges
    def material(texture):  # factor 1 (trimesh's default material would multiply the texture by 0.4)
        return trimesh.visual.material.PBRMaterial(baseColorTexture=PILImage.fromarray(texture),
                                                   baseColorFactor=[255, 255, 255, 255])

    floor.visual = trimesh.visual.TextureVisuals(uv=floor_uv, material=material(floor_tex))
    crate = trimesh.creation.box((0.3, 0.3, 0.3))
    crate.apply_translation((0.5, 0.2, 0.5))  # floating: only the floor lies at y = 0
    crate.visual = trimesh.visual.TextureVisuals(uv=rng.uniform(0, 1, (len(crate.vertices), 2)),
                                                 material=material(crate_tex))
    ball = trimesh.creation.icosphere(subdivisions=1, radius=0.1)
    ball.apply_translation((0.2, 0.5, 0.2))
    vc = np.where(ball.vertices[:, 1:2] > 0.5, [255, 0, 0, 255], [0, 255, 0, 255]).astype(np.uint8)
    ball.visual = trimesh.visual.ColorVisuals(ball, vertex_colors=vc)
    trimesh.Scene([floor, crate, ball]).export(tmp_path / "scene.glb")
    mesh = load_mesh(tmp_path / "scene.glb")
    assert mesh.has_texture
    # find each part's faces by position: the floor at y = 0, the ball above y = 0.38
    centroids = mesh.vertices[mesh.faces].mean(1)
    face_uv = mesh.uv[mesh.faces].mean(1)
    on_floor = np.abs(mesh.vertices[mesh.faces][:, :, 1]).max(1) < 1e-6
    assert on_floor.sum() == 2
    # the floor's colour at its faces' centres is its texture's at the original (repeating) UVs
    ref_uv = {tuple(np.round(p, 4)): t for p, t in zip(floor.vertices, floor_uv)}
    for f in np.nonzero(on_floor)[0]:
        orig = np.mean([ref_uv[tuple(np.round(mesh.vertices[v], 4))] for v in mesh.faces[f]], 0)
        assert np.array_equal(_sample(mesh.texture, face_uv[f:f + 1])[0], _sample(floor_tex, orig[None])[0])
    ball_faces = centroids[:, 1] > 0.38
    colours = _sample(mesh.texture, face_uv[ball_faces])
    top = centroids[ball_faces, 1] > 0.55
    assert (colours[top] == [255, 0, 0]).all() and (colours[centroids[ball_faces, 1] < 0.45] == [0, 255, 0]).all()


def _tiled_floor_scene(path, quads: int, repeats: int):
    """A GLB: a floor of quads x quads quads whose UVs run 0..repeats (a texture repeated that often,
    its corners on whole numbers when quads == repeats) beside a crate with another texture.
    Returns the floor's texture and a function: positions [N, 3] -> the floor's UVs there."""
    import trimesh
    from PIL import Image as PILImage

    rng = np.random.default_rng(2)
    floor_tex, crate_tex = (rng.integers(0, 256, (7, 7, 3)).astype(np.uint8) for _ in range(2))
    g = np.linspace(0.0, 1.0, quads + 1)
    x, z = np.meshgrid(g, g, indexing="ij")
    idx = np.arange((quads + 1) ** 2).reshape(quads + 1, quads + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    verts = np.stack([x.ravel(), np.zeros(x.size), z.ravel()], 1)
    floor = trimesh.Trimesh(verts, faces, process=False)
    uv = np.stack([x.ravel(), z.ravel()], 1) * repeats

    def material(texture):
        return trimesh.visual.material.PBRMaterial(baseColorTexture=PILImage.fromarray(texture),
                                                   baseColorFactor=[255, 255, 255, 255])

    floor.visual = trimesh.visual.TextureVisuals(uv=uv, material=material(floor_tex))
    crate = trimesh.creation.box((0.3, 0.3, 0.3))
    crate.apply_translation((0.5, 0.3, 0.5))
    crate.visual = trimesh.visual.TextureVisuals(uv=rng.uniform(0, 1, (len(crate.vertices), 2)),
                                                 material=material(crate_tex))
    trimesh.Scene([floor, crate]).export(path)
    from scipy.spatial import cKDTree

    return floor_tex, lambda points: uv[cKDTree(verts).query(points)[1]]


def test_a_texture_repeated_more_than_the_atlas_tiles_keeps_every_face_right(tmp_path, caplog):
    # a floor tiling its texture 12 times, its corners on whole numbers, beside another material:
    # each face's UVs were wrapped corner by corner, sending u = 3.0 to 0 while its face's other
    # corners stayed near 3: the face sampled the texture backwards
    from o3dcli.io.mesh_merge import MAX_REPEAT

    assert MAX_REPEAT < 12
    floor_tex, uv_at = _tiled_floor_scene(tmp_path / "floor.glb", 12, 12)
    with caplog.at_level("WARNING", logger="o3d"):
        mesh = load_mesh(tmp_path / "floor.glb")
    assert "cross the edge of a repeat" not in caplog.text
    on_floor = np.abs(mesh.vertices[mesh.faces][:, :, 1]).max(1) < 1e-6
    assert on_floor.sum() == 2 * 12 * 12
    weights = np.array([[1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1], [0.1, 0.15, 0.75]])
    for f in np.flatnonzero(on_floor):
        orig = uv_at(mesh.vertices[mesh.faces[f]])
        assert np.array_equal(_sample(mesh.texture, weights @ mesh.uv[mesh.faces[f]]),
                              _sample(floor_tex, weights @ orig)), f
    # one quad spanning all 12 repeats cannot be shown by one texture: said, with the count
    caplog.clear()
    _tiled_floor_scene(tmp_path / "one.glb", 1, 12)
    with caplog.at_level("WARNING", logger="o3d"):
        load_mesh(tmp_path / "one.glb")
    assert "2 of its 2 faces cross the edge of a repeat" in caplog.text


def test_many_textures_pack_into_a_squarish_atlas_that_keeps_each_parts_colours(tmp_path):
    import trimesh
    from PIL import Image as PILImage

    rng = np.random.default_rng(1)
    parts, textures = [], []
    for i in range(5):
        tex = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
        quad = trimesh.Trimesh([[i, 0, 0], [i + 0.8, 0, 0], [i + 0.8, 0.8, 0], [i, 0.8, 0]], [[0, 1, 2], [0, 2, 3]],
                               process=False)
        mat = trimesh.visual.material.PBRMaterial(baseColorTexture=PILImage.fromarray(tex),
                                                  baseColorFactor=[255, 255, 255, 255])
        quad.visual = trimesh.visual.TextureVisuals(uv=[[0.1, 0.1], [0.9, 0.15], [0.85, 0.9], [0.2, 0.8]], material=mat)
        parts.append(quad)
        textures.append(tex)
    trimesh.Scene(parts).export(tmp_path / "five.glb")
    mesh = load_mesh(tmp_path / "five.glb")
    h, w = mesh.texture.shape[:2]
    assert max(h, w) <= 2 * min(h, w)  # rows, not a 5-tile strip
    uv_of = {(0.1, 0.1): 0, (0.9, 0.15): 1, (0.85, 0.9): 2, (0.2, 0.8): 3}
    orig_uv = np.array(list(uv_of))
    for f in mesh.faces:
        i = int(mesh.vertices[f[0], 0] + 0.1)  # which quad (they sit at x = 0, 1, 2, ...)
        local = [int(round((mesh.vertices[v, 0] - i) / 0.8)) * 1 + 2 * int(round(mesh.vertices[v, 1] / 0.8))
                 for v in f]
        corner = {0: 0, 1: 1, 3: 2, 2: 3}  # (x, y) bits -> the quad's vertex index
        orig = orig_uv[[corner[c] for c in local]].mean(0)
        assert np.array_equal(_sample(mesh.texture, mesh.uv[f].mean(0)[None])[0], _sample(textures[i], orig[None])[0])


def test_unrepeat_ignores_float_noise_and_scales_before_tiling():
    from o3dcli.geometry.mesh import TriMesh
    from o3dcli.io.mesh_merge import MAX_TILE_SIDE, _unrepeat

    tex = np.zeros((64, 32, 3), np.uint8)
    verts, faces = np.zeros((3, 3), np.float32), np.array([[0, 1, 2]])
    noisy = TriMesh(verts, faces, uv=np.array([[0.0, 0.0], [1.0000001, 0.0], [0.5, 1.0000001]]), texture=tex)
    out = _unrepeat(noisy)  # not a second repeat: same texture, UVs in [0, 1]
    assert out.texture.shape == tex.shape and out.uv.max() <= 1.0 and out.uv.min() >= 0.0
    big = TriMesh(verts, faces, uv=np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]]),
                  texture=np.zeros((1024, 1024, 3), np.uint8))
    out = _unrepeat(big)  # 8 x 8 repeats of 1024 px: scaled to fit MAX_TILE_SIDE before tiling
    assert max(out.texture.shape[:2]) <= MAX_TILE_SIDE and np.allclose(out.uv.max(0), [1.0, 1.0])


def test_mtl_texture_scale_and_offset_options(tmp_path):
    from PIL import Image

    from o3dcli.io.mtl import _map_options

    scale, offset = _map_options("-clamp on -s 2 3 1 -bm 0.5 -o 0.25 -imfchan m".split())
    assert scale.tolist() == [2.0, 3.0] and offset.tolist() == [0.25, 0.0]
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "t.png")
    (tmp_path / "m.mtl").write_text("newmtl a\nmap_Kd -s 2 2 -o 0.5 0.25 t.png\n")
    (tmp_path / "m.obj").write_text("mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\n"
                                    "usemtl a\nf 1/1 2/2 3/3\n")
    mesh = load_mesh(tmp_path / "m.obj")
    by_vertex = {tuple(v): tuple(t) for v, t in zip(mesh.vertices.tolist(), mesh.uv.tolist())}
    assert by_vertex == {(0, 0, 0): (0.5, 0.25), (1, 0, 0): (2.5, 0.25), (0, 1, 0): (0.5, 2.25)}


def test_usd_without_usd_core_says_how_to_get_it(tmp_path, monkeypatch):
    path = tmp_path / "thing.usda"
    path.write_text('#usda 1.0\ndef Mesh "m" {}\n')
    monkeypatch.setitem(sys.modules, "pxr", None)  # as if usd-core were not installed
    with pytest.raises(MeshLoadError, match=r'thing.usda: reading USD needs .*pip install "o3dcli\[usd\]"'):
        load_mesh(path)


def test_faces_on_non_finite_vertices_are_left_out_with_a_warning(tmp_path, caplog):
    import logging

    p = tmp_path / "broken.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv nan 0 5\nvt 0 0\nvt 1 0\nvt inf 1\n"
                 "f 1/1 2/2 3/3\nf 1/1 3/3 4/1\nf 2/2 5/1 3/3\n")
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mesh = load_mesh(p)
    assert "broken.obj: 1 of " in caplog.text and "the 1 faces that use them are left out" in caplog.text
    assert "texture coordinate values are not finite" in caplog.text
    assert len(mesh.faces) == 2 and np.isfinite(mesh.vertices).all() and np.isfinite(mesh.uv).all()
    assert mesh.area() == pytest.approx(1.0) and np.allclose(mesh.bounds()[1], [1, 1, 0])
    p.write_text("v nan 0 0\nv 1 0 0\nv 1 1 0\nf 1 2 3\n")
    with pytest.raises(MeshLoadError, match="broken.obj: every face has a vertex with non-finite coordinates"):
        load_mesh(p)


@pytest.mark.parametrize("statement, file_name", [
    ("map_Kd my tex.png", "my tex.png"),  # a name with a space: not its last word
    ("map_kd tex2.png", "tex2.png"),  # keywords in any case
    ("MAP_KD -s 1 1 1 -o 0 0 -bm 0.5 -clamp on -blendu on -mm 0 1 -t 0 0 -texres 512 -imfchan r -type sphere "
     "Material #25.jpg", "Material #25.jpg"),  # every option with its arguments, then a name with '#'
    ("map_Kd textures\\skin.png", "textures/skin.png"),  # a Windows exporter's relative path
    ("map_Kd C:\\Users\\me\\My Textures\\wood.png", "wood.png"),  # an absolute one, found by its base name
    ("map_Kd -foo on leaf.png", "leaf.png"),  # an option nobody documents: the last word still finds it
    ("map_Kd Bark.PNG", "bark.png"),  # copied from Windows, where the case did not matter
])
def test_mtl_texture_names_keywords_and_options(tmp_path, caplog, statement, file_name):
    import logging

    (tmp_path / file_name).parent.mkdir(exist_ok=True)
    Image.fromarray(QUAD_TEXTURE).save(tmp_path / file_name, format="PNG")
    (tmp_path / "a.mtl").write_text(f"newmtl m\nKd 0.2 0.2 0.2\n{statement}\n")
    (tmp_path / "a.obj").write_text("mtllib a.mtl\nusemtl m\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\n"
                                    "f 1/1 2/2 3/3\n")
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mesh = load_mesh(tmp_path / "a.obj")
    assert mesh.has_texture and "not found" not in caplog.text
    np.testing.assert_array_equal(mesh.texture, QUAD_TEXTURE)


def test_mtl_colour_and_opacity_statements_in_any_case_and_form(tmp_path, caplog):
    import logging

    from o3dcli.io.mtl import read_mtl

    (tmp_path / "a.mtl").write_text(
        "newmtl grey one\nKD 0.5\nD 0.25 # see-through\n"  # one Kd number is grey; a comment after d
        "newmtl xyz\nKd 0.1 0.2 0.3\nKd xyz 0.1 0.2 0.3\nTR 0.75\n"  # CIE XYZ: skipped, the RGB kept
        "newmtl spectral\nKd spectral leaf.rfl 1.0\nd -halo 0.5\n")
    with caplog.at_level(logging.WARNING, logger="o3d"):
        mats = read_mtl(tmp_path / "a.mtl", tmp_path / "a.obj")
    assert sorted(mats) == ["grey one", "spectral", "xyz"]
    assert mats["grey one"]["Kd"].tolist() == [0.5, 0.5, 0.5] and mats["grey one"]["d"] == 0.25
    np.testing.assert_allclose(mats["xyz"]["Kd"], [0.1, 0.2, 0.3])
    assert mats["xyz"]["d"] == pytest.approx(0.25)
    assert "Kd" not in mats["spectral"] and mats["spectral"]["d"] == 0.5
    assert "'Kd spectral leaf.rfl 1.0' is not an RGB colour" in caplog.text


def test_a_mesh_too_far_from_the_origin_for_32_bit_positions_is_refused_naming_the_file(tmp_path):
    # a 2 m part in survey coordinates (5,000 km out) came out blocky, or flat, or with no faces
    faces = "f 1 2 4\nf 1 4 3\nf 5 7 8\nf 5 8 6\nf 1 5 6\nf 1 6 2\nf 3 4 8\nf 3 8 7\nf 1 3 7\nf 1 7 5\nf 2 6 8\nf 2 8 4\n"
    # a 2 m part 100 m out, a 1 cm bolt 60 m out (a BIM scene's part: about 2,600 float steps across)
    for size, offset, usable in ((2.0, 100.0, True), (0.01, 60.0, True), (2.0, 5e6, False)):
        lines = [f"v {x + offset} {y} {z + offset}" for x in (0, size) for y in (0, size) for z in (0, size)]
        path = tmp_path / f"part-{offset:g}.obj"
        path.write_text("\n".join(lines) + "\n" + faces)
        if usable:
            mesh = load_mesh(path)
            np.testing.assert_allclose(np.ptp(mesh.vertices, axis=0), [size] * 3, rtol=1e-3)
        else:
            with pytest.raises(MeshLoadError, match=r"part-5e\+06.obj: its positions lie up to 5e\+06 from the origin"):
                load_mesh(path)


def test_another_mesh_format_named_obj_is_said_to_be_one(tmp_path):
    from o3dcli.io.export import glb_bytes
    from test_mesh_export import quadrant_plane

    (tmp_path / "scan.obj").write_bytes(glb_bytes(quadrant_plane()))
    with pytest.raises(MeshLoadError, match=r"scan.obj: the file holds no faces \(a binary glTF \(GLB\) file named "
                                            r"\.obj\? Rename it \.glb\)"):
        load_mesh(tmp_path / "scan.obj")
    (tmp_path / "notes.obj").write_text("just some notes\n")
    with pytest.raises(MeshLoadError, match=r"notes.obj: the file holds no faces \(is it an OBJ file\?\)"):
        load_mesh(tmp_path / "notes.obj")
