"""Exported normals: hard edges kept (crease angle, `o3dcli.io.normals`), the same in glb, obj and
usdz; smooth surfaces and UV seams as smooth as before."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.errors import ConfigError
from o3dcli.geometry.mesh import TriMesh
from o3dcli.io.export import export_mesh, save_mesh_glb
from o3dcli.io.normals import split_at_creases
from o3dcli.mesh.config import MeshConfig
from o3dcli.mesh.surface_gaussians import reference_shape
from test_mesh_export import accessor, read_glb


def box() -> TriMesh:
    """A unit cube on 8 shared corners (as trimesh makes it), counter-clockwise outward faces."""
    import trimesh

    b = trimesh.creation.box()
    return TriMesh(b.vertices, b.faces, material_color=(0.8, 0.8, 0.8))


def face_normals(vertices, faces) -> np.ndarray:
    tri = np.asarray(vertices, np.float64)[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def corner_normals_of_glb(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    doc, blob = read_glb(path)
    prim = doc["meshes"][0]["primitives"][0]
    pos = accessor(doc, blob, prim["attributes"]["POSITION"])
    nrm = accessor(doc, blob, prim["attributes"]["NORMAL"])
    ia = doc["accessors"][prim["indices"]]
    view = doc["bufferViews"][ia["bufferView"]]
    dtype = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[ia["componentType"]]
    idx = np.frombuffer(blob, dtype, ia["count"], view.get("byteOffset", 0) + ia.get("byteOffset", 0))
    faces = idx.reshape(-1, 3).astype(np.int64)
    return pos, faces, nrm


def test_a_box_keeps_flat_faces_in_glb_obj_and_usdz(tmp_path, gltf_validator):  # noqa: F811
    mesh = box()
    files = export_mesh(mesh, tmp_path, formats=("glb", "obj", "usdz"), name="model")
    pos, faces, nrm = corner_normals_of_glb(tmp_path / "model.glb")
    assert len(pos) == 24  # each corner split three ways, one vertex per face it touches
    np.testing.assert_allclose(nrm[faces], np.repeat(face_normals(pos, faces)[:, None], 3, 1), atol=1e-6)
    report = gltf_validator(tmp_path / "model.glb")
    assert report.get("errors") == 0 and report.get("warnings") == 0, report

    # the OBJ: the same 8 positions, a vn per (corner, face), each face's corners naming its own normal
    lines = (tmp_path / "model.obj").read_text().splitlines()
    v = np.array([[float(x) for x in ln.split()[1:4]] for ln in lines if ln.startswith("v ")])
    vn = np.array([[float(x) for x in ln.split()[1:4]] for ln in lines if ln.startswith("vn ")])
    corners = [[c.split("/") for c in ln.split()[1:]] for ln in lines if ln.startswith("f ")]
    f_v = np.array([[int(c[0]) - 1 for c in f] for f in corners])
    f_vn = np.array([[int(c[2]) - 1 for c in f] for f in corners])
    assert len(v) == 8 and len(vn) == 24 and all(c[1] == "" for f in corners for c in f)
    np.testing.assert_allclose(vn[f_vn], np.repeat(face_normals(v, f_v)[:, None], 3, 1), atol=1e-6)
    import trimesh  # another reader takes the file as valid, normals and all

    tm = trimesh.load(tmp_path / "model.obj", process=False, force="mesh")
    assert len(tm.faces) == 12 and np.allclose(np.abs(tm.vertex_normals).max(1), 1.0, atol=1e-5)

    pytest.importorskip("pxr", reason="usd-core is not installed")
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.Open(str([f for f in files if f.suffix == ".usdz"][0]))
    geom = UsdGeom.Mesh(stage.GetPrimAtPath("/model/mesh"))
    points, normals = np.asarray(geom.GetPointsAttr().Get()), np.asarray(geom.GetNormalsAttr().Get())
    usd_faces = np.asarray(geom.GetFaceVertexIndicesAttr().Get()).reshape(-1, 3)
    assert len(points) == 24
    np.testing.assert_allclose(normals[usd_faces], np.repeat(face_normals(points, usd_faces)[:, None], 3, 1),
                               atol=1e-6)


def test_crease_angle_ends_smooth_everywhere_and_flat_everywhere():
    from o3dcli.mesh.fusion import vertex_normals

    mesh = box()
    smooth, normals, source = split_at_creases(mesh, 180.0)  # as o3d wrote every mesh before
    assert len(smooth.vertices) == 8 and np.array_equal(source, np.arange(8))
    np.testing.assert_allclose(normals, vertex_normals(mesh), atol=1e-6)  # corner averages (+-0.816, +-0.408, ...)
    flat, normals, _ = split_at_creases(mesh, 0.0)
    assert len(flat.vertices) == 36
    # a hexagonal prism's sides meet at exactly 60 degrees: a crease at 60, smooth just above
    import trimesh

    hexagon = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=6)
    prism = TriMesh(hexagon.vertices, hexagon.faces)
    assert len(split_at_creases(prism, 60.0)[0].vertices) > len(split_at_creases(prism, 61.0)[0].vertices)


def test_smooth_surfaces_and_uv_seams_are_not_split():
    from o3dcli.mesh.cleanup import weld_vertices
    from o3dcli.mesh.fusion import vertex_normals

    torus = reference_shape("torus")  # textured: UV seams on vertices of one position
    welded, old_to_new = weld_vertices(torus)
    assert len(welded.vertices) < len(torus.vertices)
    split, normals, source = split_at_creases(torus, MeshConfig.crease_angle_deg)
    assert np.array_equal(source, np.arange(len(torus.vertices)))  # nothing split
    np.testing.assert_allclose(normals, vertex_normals(welded)[old_to_new], atol=1e-5)  # seams invisible
    np.testing.assert_array_equal(split.uv, torus.uv)
    np.testing.assert_array_equal(split.faces, torus.faces)


def test_crease_angle_is_a_checked_mesh_setting(tmp_path):
    with pytest.raises(ConfigError, match="crease_angle_deg"):
        MeshConfig(crease_angle_deg=200).check()
    # `o3d mesh` of box GLBs, flat-shaded (36 vertices) and on 8 shared corners (as a GLB without
    # normals may be): flat faces by default, and --set makes the shared corners smooth again
    flat_src = save_mesh_glb(tmp_path / "flat.glb", box(), crease_angle_deg=0)
    shared_src = save_mesh_glb(tmp_path / "shared.glb", box(), crease_angle_deg=180)
    for src, setting, flat in ((flat_src, [], True), (shared_src, [], True),
                               (shared_src, ["--set", "mesh.crease_angle_deg=180"], False)):
        out = tmp_path / f"o{len(setting)}"
        result = CliRunner().invoke(app, ["mesh", str(src), "--formats", "glb", "-o", str(out)] + setting)
        assert result.exit_code == 0, result.output
        pos, faces, nrm = corner_normals_of_glb(out / src.stem / "model.glb")
        assert np.allclose(nrm[faces], np.repeat(face_normals(pos, faces)[:, None], 3, 1), atol=1e-5) is flat
