"""USDZ export: the package layout Pixar's specification asks for, read back and validated
with the USD library itself (usd-core, in the dev extra)."""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.geometry.mesh import TriMesh
from o3dcli.io.export import export_mesh, save_mesh_glb
from o3dcli.io.usdz import save_mesh_usdz
from o3dcli.mesh.config import MeshConfig
from test_mesh_export import quadrant_plane

pxr = pytest.importorskip("pxr", reason="usd-core is not installed (pip install -e '.[dev]')")
from pxr import Usd, UsdGeom, UsdShade  # noqa: E402


def validation_errors(path) -> list[str]:
    """Every error USD's registered validators (stage metadata, packaging, shading, geometry)
    report for the file."""
    from pxr import UsdValidation

    stage = Usd.Stage.Open(str(path))
    registry = UsdValidation.ValidationRegistry()
    validators = [registry.GetOrLoadValidatorByName(m.name) for m in registry.GetAllValidatorMetadata()]
    errors = UsdValidation.ValidationContext(validators).Validate(stage)
    return [f"{e.GetName()}: {e.GetMessage()}" for e in errors]


def data_offsets(path) -> dict[str, int]:
    """Where each stored file's data starts in the archive, read from its local header."""
    raw = path.read_bytes()
    out = {}
    for info in zipfile.ZipFile(path).infolist():
        name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
        out[info.filename] = info.header_offset + 30 + name_len + extra_len
    return out


def shader_input(stage, path, name):
    return UsdShade.Shader(stage.GetPrimAtPath(path)).GetInput(name)


@pytest.mark.parametrize("binary", [False, True], ids=["usda", "usdc"])
def test_textured_usdz_layout_geometry_texture_and_material(tmp_path, binary):
    mesh = quadrant_plane()
    path = save_mesh_usdz(tmp_path / "model.usdz", mesh, binary=binary)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file
    archive = zipfile.ZipFile(path)
    layer = "model.usdc" if binary else "model.usda"
    texture = archive.infolist()[1].filename
    assert [i.filename for i in archive.infolist()] == [layer, texture]  # the layer first
    assert re.fullmatch(r"texture_[0-9a-f]{12}\.png", texture)  # named by its bytes (see below)
    assert archive.read(layer).startswith(b"PXR-USDC" if binary else b"#usda 1.0")
    assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
    assert all(offset % 64 == 0 for offset in data_offsets(path).values())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(archive.read(texture)))), mesh.texture)

    assert validation_errors(path) == []
    stage = Usd.Stage.Open(str(path))
    assert stage.GetDefaultPrim().GetPath() == "/model"
    assert UsdGeom.GetStageUpAxis(stage) == "Y" and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    geom = UsdGeom.Mesh(stage.GetPrimAtPath("/model/mesh"))
    np.testing.assert_allclose(np.asarray(geom.GetPointsAttr().Get()), mesh.vertices, atol=1e-6)
    assert np.array_equal(np.asarray(geom.GetFaceVertexIndicesAttr().Get()).reshape(-1, 3), mesh.faces)
    assert set(geom.GetFaceVertexCountsAttr().Get()) == {3}
    assert geom.GetSubdivisionSchemeAttr().Get() == "none"  # a polygon mesh, not a subdivision cage
    st = UsdGeom.PrimvarsAPI(geom).GetPrimvar("st")
    assert st.GetInterpolation() == "vertex"
    np.testing.assert_allclose(np.asarray(st.Get()), mesh.uv, atol=1e-6)  # both origins bottom-left: no flip
    np.testing.assert_allclose(np.asarray(geom.GetExtentAttr().Get()), [mesh.vertices.min(0), mesh.vertices.max(0)],
                               atol=1e-6)
    assert geom.GetDoubleSidedAttr().Get() is False
    material, _ = UsdShade.MaterialBindingAPI(geom.GetPrim()).ComputeBoundMaterial()
    assert material.GetPath() == "/model/Materials/model"
    surface = material.ComputeSurfaceSource()[0]
    assert surface.GetIdAttr().Get() == "UsdPreviewSurface"
    assert surface.GetInput("metallic").Get() == 0 and surface.GetInput("roughness").Get() == 1
    assert not surface.GetInput("opacity")  # opaque: no opacity input
    source = surface.GetInput("diffuseColor").GetConnectedSources()[0][0]
    assert source.source.GetPath() == "/model/Materials/model/texture" and source.sourceName == "rgb"
    assert shader_input(stage, "/model/Materials/model/uv", "varname").Get() == "st"  # reads that primvar
    assert tuple(shader_input(stage, "/model/Materials/model/texture", "fallback").Get()) == (1, 1, 1, 1)
    asset = shader_input(stage, "/model/Materials/model/texture", "file").Get()
    assert asset.resolvedPath.endswith(f"model.usdz[{texture}]")  # found inside the package
    assert shader_input(stage, "/model/Materials/model/texture", "sourceColorSpace").Get() == "sRGB"


def test_each_texture_has_its_own_name_in_the_package(tmp_path):
    # Blender unpacks every USDZ's texture into one folder and reuses an image already loaded under
    # the same name: with one fixed name, a scene of several o3d assets showed the first one's texture
    mesh = quadrant_plane()
    other = dataclasses.replace(mesh, texture=np.ascontiguousarray(mesh.texture[::-1]))

    def texture_name(m, name):
        return zipfile.ZipFile(save_mesh_usdz(tmp_path / name, m)).infolist()[1].filename

    assert texture_name(mesh, "a.usdz") != texture_name(other, "b.usdz")
    assert texture_name(mesh, "a.usdz") == texture_name(mesh, "c.usdz")  # the same bytes: the same package


@pytest.mark.parametrize("mode", ["MASK", "BLEND"])
def test_texture_alpha_becomes_opacity(tmp_path, mode):
    mesh = quadrant_plane()
    rgba = np.concatenate([mesh.texture, np.full(mesh.texture.shape[:2] + (1,), 255, np.uint8)], 2)
    rgba[: len(rgba) // 2, :, 3] = 40
    mesh = dataclasses.replace(mesh, texture=rgba, alpha_mode=mode, alpha_cutoff=0.1)
    path = save_mesh_usdz(tmp_path / "m.usdz", mesh)
    assert validation_errors(path) == []
    stage = Usd.Stage.Open(str(path))
    surface = UsdShade.Shader(stage.GetPrimAtPath("/model/Materials/model/surface"))
    source = surface.GetInput("opacity").GetConnectedSources()[0][0]
    assert source.sourceName == "a"
    threshold = surface.GetInput("opacityThreshold")
    assert (threshold.Get() if threshold else None) == (0.5 if mode == "MASK" else None)
    archive = zipfile.ZipFile(path)
    png = np.asarray(Image.open(io.BytesIO(archive.read(archive.infolist()[1].filename))))
    assert png.shape[2] == 4 and np.array_equal(png[..., :3], rgba[..., :3])
    # a cut-out's alpha is cut at its cutoff in the texture itself (40 >= 0.1 * 255: kept), so
    # renderers that ignore the threshold show the same; a blend keeps its alpha as it is
    assert np.array_equal(png[..., 3], np.full_like(rgba[..., 3], 255) if mode == "MASK" else rgba[..., 3])


def test_double_sided_meshes_get_their_back_faces(tmp_path):
    """Quick Look ignores doubleSided: the back faces are written out, reversed, on their own
    vertices with turned normals."""
    mesh = dataclasses.replace(quadrant_plane(), double_sided=True)
    stage = Usd.Stage.Open(str(save_mesh_usdz(tmp_path / "d.usdz", mesh)))
    geom = UsdGeom.Mesh(stage.GetPrimAtPath("/model/mesh"))
    n, f = len(mesh.vertices), len(mesh.faces)
    faces = np.asarray(geom.GetFaceVertexIndicesAttr().Get()).reshape(-1, 3)
    assert np.array_equal(faces[:f], mesh.faces) and np.array_equal(faces[f:], mesh.faces[:, ::-1] + n)
    points, normals = np.asarray(geom.GetPointsAttr().Get()), np.asarray(geom.GetNormalsAttr().Get())
    np.testing.assert_allclose(points[n:], points[:n])
    np.testing.assert_allclose(normals[n:], -normals[:n])
    np.testing.assert_allclose(np.asarray(UsdGeom.PrimvarsAPI(geom).GetPrimvar("st").Get())[n:], mesh.uv, atol=1e-6)
    assert geom.GetDoubleSidedAttr().Get() is False


def test_bad_meshes_are_refused_and_packages_are_reproducible(tmp_path):
    mesh = quadrant_plane()
    bad = mesh.vertices.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="vertices are not all finite"):
        save_mesh_usdz(tmp_path / "nan.usdz", dataclasses.replace(mesh, vertices=bad))
    assert not (tmp_path / "nan.usdz").exists()
    a = save_mesh_usdz(tmp_path / "a.usdz", mesh).read_bytes()
    assert save_mesh_usdz(tmp_path / "b.usdz", mesh).read_bytes() == a


def test_vertex_colours_and_material_colour(tmp_path):
    plane = quadrant_plane()
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32)
    path = save_mesh_usdz(tmp_path / "v.usdz", TriMesh(plane.vertices, plane.faces, vertex_colors=colours), binary=False)
    assert [i.filename for i in zipfile.ZipFile(path).infolist()] == ["model.usda"]
    assert validation_errors(path) == []
    stage = Usd.Stage.Open(str(path))
    geom = UsdGeom.Mesh(stage.GetPrimAtPath("/model/mesh"))
    np.testing.assert_allclose(np.asarray(UsdGeom.PrimvarsAPI(geom).GetPrimvar("displayColor").Get()), colours)
    surface = UsdShade.Shader(stage.GetPrimAtPath("/model/Materials/model/surface"))
    reader = surface.GetInput("diffuseColor").GetConnectedSources()[0][0].source
    assert UsdShade.Shader(reader.GetPrim()).GetInput("varname").Get() == "displayColor"
    np.testing.assert_allclose(surface.GetInput("diffuseColor").Get(), colours.mean(0), atol=1e-6)  # for Quick Look

    path = save_mesh_usdz(tmp_path / "c.usdz", TriMesh(plane.vertices, plane.faces, material_color=(0.2, 0.5, 0.9)))
    assert validation_errors(path) == []
    stage = Usd.Stage.Open(str(path))
    surface = UsdShade.Shader(stage.GetPrimAtPath("/model/Materials/model/surface"))
    np.testing.assert_allclose(surface.GetInput("diffuseColor").Get(), (0.2, 0.5, 0.9), atol=1e-6)


def test_binary_layer_only_with_usd_installed(tmp_path, monkeypatch):
    """usd-core installed: the package's layer is binary (usdc); without it, text (usda); asking
    for binary without it is a clear error. Both hold the same scene."""
    mesh = quadrant_plane()
    auto = save_mesh_usdz(tmp_path / "auto.usdz", mesh)
    assert zipfile.ZipFile(auto).namelist()[0] == "model.usdc"
    monkeypatch.setitem(sys.modules, "pxr", None)  # as if usd-core were not installed
    text = save_mesh_usdz(tmp_path / "text.usdz", mesh)
    assert zipfile.ZipFile(text).namelist()[0] == "model.usda"
    with pytest.raises(ValueError, match="usd-core"):
        save_mesh_usdz(tmp_path / "x.usdz", mesh, binary=True)
    monkeypatch.undo()
    a, b = (Usd.Stage.Open(str(p)) for p in (auto, text))
    for prim in ("/model/mesh", "/model/Materials/model/texture"):
        pa, pb = a.GetPrimAtPath(prim), b.GetPrimAtPath(prim)
        assert [x.GetName() for x in pa.GetAttributes()] == [x.GetName() for x in pb.GetAttributes()]
        for attr in pa.GetAttributes():
            va, vb = attr.Get(), pb.GetAttribute(attr.GetName()).Get()
            assert (str(va) == str(vb)) if attr.GetName() == "inputs:file" else va == vb, attr.GetName()


def test_validation_catches_a_broken_package(tmp_path):
    """The check above can fail: the same files in an ordinary (unaligned) zip are refused."""
    good = save_mesh_usdz(tmp_path / "good.usdz", quadrant_plane())
    bad = tmp_path / "bad.usdz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert any(o % 64 for o in data_offsets(bad).values())
    assert validation_errors(bad)


def test_usdz_is_a_format_of_export_config_and_both_commands(tmp_path):
    mesh = quadrant_plane()
    names = [p.name for p in export_mesh(mesh, tmp_path / "a", formats=("glb", "usdz"))]
    assert names == ["model.glb", "model.usdz"]
    MeshConfig(formats=("usdz",)).check()
    assert MeshConfig().formats == ("glb", "obj")  # opt-in
    out = tmp_path / "out"
    save_mesh_glb(tmp_path / "plane.glb", mesh)
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "plane.glb"), "--formats", "glb,usdz", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "plane").iterdir()) == ["config.yaml", "model.glb", "model.usdz", "o3d-asset.json"]
    assert validation_errors(out / "plane" / "model.usdz") == []
    # asked for glb only next time: the usdz it no longer asks for goes
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "plane.glb"), "--formats", "glb", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert not (out / "plane" / "model.usdz").exists()


def test_generate_formats_shortcut(tmp_path):
    image = np.zeros((64, 64, 4), np.uint8)
    image[16:48, 16:48] = (200, 40, 40, 255)
    Image.fromarray(image, "RGBA").save(tmp_path / "red.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["generate", str(tmp_path / "red.png"), "-o", str(out), "--formats", "glb, USDZ",
                                   "--stop-after", "preprocess", "--no-progress"])
    assert res.exit_code == 0, res.output
    from o3dcli.config import load_config

    assert load_config(out / "red" / "config.yaml").mesh.formats == ("glb", "usdz")
    res = CliRunner().invoke(app, ["generate", str(tmp_path / "red.png"), "-o", str(out), "--formats", "glb,fbx"])
    assert res.exit_code == 2 and "mesh.formats" in res.output


@pytest.mark.parametrize("name, prim", [("green apple", "green_apple"), ("3d-scan.v2", "_3d_scan_v2"), ("椅子", "model")])
def test_the_default_prim_and_material_are_named_after_the_asset(tmp_path, name, prim):
    # prim names allow ASCII letters, digits and "_" only, and no digit first
    path = save_mesh_usdz(tmp_path / "model.usdz", quadrant_plane(), binary=True, name=name)
    stage = Usd.Stage.Open(str(path))
    assert stage.GetDefaultPrim().GetPath() == f"/{prim}"
    geom = UsdGeom.Mesh(stage.GetPrimAtPath(f"/{prim}/mesh"))
    material = UsdShade.MaterialBindingAPI(geom.GetPrim()).ComputeBoundMaterial()[0]
    assert material.GetPath() == f"/{prim}/Materials/{prim}"
    assert validation_errors(path) == []
