"""mesh.texture_format: JPEG textures in GLB, OBJ and USDZ (PNG kept wherever there is alpha)."""

from __future__ import annotations

import dataclasses
import io
import re
import zipfile

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.config import ConfigError, load_config
from o3dcli.geometry.mesh import TriMesh
from o3dcli.io.export import export_mesh, save_mesh_glb
from o3dcli.io.mesh import load_mesh
from o3dcli.mesh.config import MeshConfig
from o3dcli.mesh.surface_gaussians import reference_shape
from test_mesh_export import accessor, read_glb


def textured_torus(size: int = 256) -> TriMesh:
    """A UV-mapped torus with a smooth texture and a little noise, like a baked one."""
    mesh = reference_shape("torus")
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx)], -1) * 200 + 20
    rgb += np.random.default_rng(0).normal(0, 4, rgb.shape)
    uv = (mesh.vertices[:, [0, 1]] - mesh.vertices[:, [0, 1]].min(0)) / np.ptp(mesh.vertices[:, [0, 1]], 0)
    return TriMesh(mesh.vertices, mesh.faces, uv=uv, texture=rgb.clip(0, 255).astype(np.uint8))


def glb_image(path) -> tuple[str, bytes]:
    doc, blob = read_glb(path)
    image = doc["images"][0]
    view = doc["bufferViews"][image["bufferView"]]
    return image["mimeType"], blob[view.get("byteOffset", 0):view.get("byteOffset", 0) + view["byteLength"]]


def test_jpeg_glb_passes_the_khronos_validator(tmp_path, gltf_validator):
    jpg = save_mesh_glb(tmp_path / "jpg.glb", textured_torus(), texture_format="jpeg")
    report = gltf_validator(jpg)  # it checks the image's bytes against its mimeType too
    assert report.get("errors") == 0 and report.get("warnings") == 0, report


def test_jpeg_glb_is_smaller_and_keeps_geometry_and_colours(tmp_path):
    mesh = textured_torus()
    png = save_mesh_glb(tmp_path / "png.glb", mesh)
    jpg = save_mesh_glb(tmp_path / "jpg.glb", mesh, texture_format="jpeg", jpeg_quality=90)
    mime, data = glb_image(jpg)
    assert mime == "image/jpeg" and data[:3] == b"\xff\xd8\xff"
    assert glb_image(png)[0] == "image/png" and len(read_glb(jpg)[0]["images"]) == 1
    assert Image.open(io.BytesIO(data)).size == (256, 256)  # the texture, not trimesh's stand-in
    assert jpg.stat().st_size < png.stat().st_size
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64)
    assert np.abs(decoded - mesh.texture).mean() < 4.0  # quality 90: close to the texture
    # the buffer views were laid out again: every accessor still reads the same numbers
    (doc_p, blob_p), (doc_j, blob_j) = read_glb(png), read_glb(jpg)
    float_accessors = [i for i, a in enumerate(doc_p["accessors"]) if a["componentType"] == 5126]
    assert len(float_accessors) >= 3  # positions, normals, UVs
    for i in float_accessors:
        assert np.array_equal(accessor(doc_p, blob_p, i), accessor(doc_j, blob_j, i))
    back = load_mesh(jpg)
    assert np.allclose(back.vertices, mesh.vertices) and np.abs(back.texture.astype(float) - mesh.texture).mean() < 4.0
    low = save_mesh_glb(tmp_path / "low.glb", mesh, texture_format="jpeg", jpeg_quality=40)
    assert low.stat().st_size < jpg.stat().st_size  # the quality setting is used


def test_jpeg_obj_and_usdz(tmp_path):
    mesh = textured_torus()
    names = [p.name for p in export_mesh(mesh, tmp_path, formats=("obj", "usdz"), texture_format="jpeg", name="model")]
    assert names == ["model.obj", "model.mtl", "model.jpg", "model.usdz"]
    assert "map_Kd model.jpg" in (tmp_path / "model.mtl").read_text()
    assert not (tmp_path / "model.png").exists()
    assert np.abs(load_mesh(tmp_path / "model.obj").texture.astype(float) - mesh.texture).mean() < 4.0
    with zipfile.ZipFile(tmp_path / "model.usdz") as z:
        texture = z.namelist()[1]
        assert re.fullmatch(r"texture_[0-9a-f]{12}\.jpg", texture) and z.read(texture)[:3] == b"\xff\xd8\xff"
    pytest.importorskip("pxr")
    from pxr import Usd
    from test_usdz import shader_input, validation_errors

    stage = Usd.Stage.Open(str(tmp_path / "model.usdz"))
    asset = shader_input(stage, "/model/Materials/model/texture", "file").Get()
    assert asset.resolvedPath.endswith(f"model.usdz[{texture}]")  # the layer names the JPEG, found inside
    assert validation_errors(tmp_path / "model.usdz") == []


def test_textures_with_alpha_stay_png(tmp_path):
    mesh = textured_torus(64)
    alpha = np.full((64, 64, 1), 255, np.uint8)
    alpha[:, :32] = 0
    cutout = dataclasses.replace(mesh, texture=np.concatenate([mesh.texture, alpha], -1), alpha_mode="MASK")
    names = [p.name for p in export_mesh(cutout, tmp_path, formats=("glb", "obj", "usdz"), texture_format="jpeg")]
    assert "model.png" in names and "model.jpg" not in names
    assert glb_image(tmp_path / "model.glb")[0] == "image/png"
    with zipfile.ZipFile(tmp_path / "model.usdz") as z:
        assert re.fullmatch(r"texture_[0-9a-f]{12}\.png", z.namelist()[1])


def test_config_cache_key_and_command(tmp_path):
    for bad in ({"texture_format": "webp"}, {"jpeg_quality": 0}, {"jpeg_quality": 101}):
        with pytest.raises(ConfigError, match="mesh." + next(iter(bad))):
            MeshConfig(**bad).check()
    from o3dcli.stages import export_key_extra

    cfg = load_config("tiny")
    cfg.mesh.texture_format = "jpeg"
    assert export_key_extra(cfg) == {"texture_format": "jpeg", "jpeg_quality": 90}
    cfg.mesh.formats = ("stl",)  # no texture in an STL: its cached file stays valid
    assert export_key_extra(cfg) == {"stl_size_mm": 100.0}
    # switching o3d mesh's texture format replaces the other format's texture file
    save_mesh_glb(tmp_path / "torus.glb", textured_torus(64))
    out = tmp_path / "out"
    for fmt, present, gone in (("jpeg", "model.jpg", "model.png"), ("png", "model.png", "model.jpg")):
        res = CliRunner().invoke(app, ["mesh", str(tmp_path / "torus.glb"), "--formats", "glb,obj", "--set",
                                       f"mesh.texture_format={fmt}", "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert (out / "torus" / present).is_file() and not (out / "torus" / gone).exists()
