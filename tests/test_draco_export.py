"""mesh.draco: GLBs with Draco-compressed geometry (KHR_draco_mesh_compression)."""

from __future__ import annotations

import numpy as np
import pytest

from o3dcli.config import ConfigError, load_config
from o3dcli.geometry.mesh import TriMesh
from o3dcli.io.export import DRACO_BITS, save_mesh_glb
from o3dcli.io.mesh import load_mesh
from o3dcli.mesh.config import MeshConfig
from test_mesh_export import QUADRANTS, front_quadrant_colors, quadrant_plane, read_glb
from test_texture_format import glb_image, textured_torus

pytest.importorskip("DracoPy")


def test_draco_glb_layout_validator_and_round_trip(tmp_path, gltf_validator, draco_decoding):
    mesh = textured_torus()
    plain = save_mesh_glb(tmp_path / "plain.glb", mesh)
    path = save_mesh_glb(tmp_path / "draco.glb", mesh, draco=True)
    report = gltf_validator(path)  # the validator checks the layout, not the Draco data (it says so)
    assert report.get("errors") == 0 and report.get("warnings") == 0, report
    doc, blob = read_glb(path)
    assert "KHR_draco_mesh_compression" in doc["extensionsRequired"]  # no reader can skip it
    prim = doc["meshes"][0]["primitives"][0]
    ext = prim["extensions"]["KHR_draco_mesh_compression"]
    assert sorted(ext["attributes"]) == ["NORMAL", "POSITION", "TEXCOORD_0"]
    for i in [prim["indices"], *prim["attributes"].values()]:  # decoded from the Draco data only
        assert "bufferView" not in doc["accessors"][i]
    assert doc["accessors"][prim["indices"]]["count"] == 3 * len(mesh.faces)
    image = glb_image(plain)[1]
    assert glb_image(path)[1] == image  # the texture untouched
    assert path.stat().st_size - len(image) < 0.5 * (plain.stat().st_size - len(image))  # the rest: under half
    # decoded with another reader (trimesh + DracoPy): the same vertices, to the quantisation step
    back = load_mesh(path)
    step = np.ptp(mesh.vertices, axis=0).max() / 2 ** DRACO_BITS["POSITION"]
    assert len(back.faces) == len(mesh.faces)
    assert np.abs(back.vertices - mesh.vertices).max() <= step
    assert np.abs(back.uv - mesh.uv).max() <= 1.0 / 2 ** DRACO_BITS["TEXCOORD_0"]
    bounds = doc["accessors"][prim["attributes"]["POSITION"]]  # the decoded positions' bounds, exactly
    assert np.allclose(bounds["min"], back.vertices.min(0), atol=1e-6) and np.allclose(bounds["max"], back.vertices.max(0), atol=1e-6)


def test_draco_keeps_texture_orientation_vertex_colours_and_jpeg(tmp_path, draco_decoding):
    assert front_quadrant_colors(load_mesh(save_mesh_glb(tmp_path / "q.glb", quadrant_plane(), draco=True))) == QUADRANTS
    plane = quadrant_plane()
    colours = (plane.vertices + 0.5).clip(0, 1)
    coloured = save_mesh_glb(tmp_path / "c.glb", TriMesh(plane.vertices, plane.faces, vertex_colors=colours), draco=True)
    assert "COLOR_0" in read_glb(coloured)[0]["meshes"][0]["primitives"][0]["extensions"]["KHR_draco_mesh_compression"]["attributes"]
    assert np.allclose(load_mesh(coloured).vertex_colors, colours, atol=1 / 255)
    both = save_mesh_glb(tmp_path / "j.glb", textured_torus(), texture_format="jpeg", draco=True)
    assert glb_image(both)[0] == "image/jpeg" and glb_image(both)[1][:3] == b"\xff\xd8\xff"


def test_draco_config_key_and_missing_library(monkeypatch):
    from o3dcli.stages import export_key_extra

    cfg = load_config("tiny")
    cfg.mesh.draco = True
    assert export_key_extra(cfg) == {"draco": True}
    cfg.mesh.formats = ("obj",)  # only the GLB is compressed
    assert export_key_extra(cfg) == {}
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "DracoPy" else real(name, *a))
    with pytest.raises(ConfigError, match=r'mesh.draco needs DracoPy: pip install "o3dcli\[draco\]"'):
        MeshConfig(draco=True).check()
    MeshConfig().check()  # off: nothing needed


@pytest.mark.parametrize("colouring", ["texture", "vertex_colors", "material"])
def test_accessors_declare_what_the_draco_data_decodes_to(tmp_path, colouring):
    # readers (three.js's DRACOLoader, Blender) decode each attribute to its accessor's componentType,
    # type and normalized flag: they must agree with the data, and the bounds must be the decoded ones
    import DracoPy

    mesh = textured_torus(64)
    if colouring == "vertex_colors":
        mesh = TriMesh(mesh.vertices, mesh.faces, vertex_colors=(mesh.vertices + 0.5).clip(0, 1))
    elif colouring == "material":
        mesh = TriMesh(mesh.vertices, mesh.faces, material_color=(0.2, 0.5, 0.9))
    doc, blob = read_glb(save_mesh_glb(tmp_path / "m.glb", mesh, draco=True))
    prim = doc["meshes"][0]["primitives"][0]
    ext = prim["extensions"]["KHR_draco_mesh_compression"]
    view = doc["bufferViews"][ext["bufferView"]]
    decoded = DracoPy.decode(blob[view["byteOffset"]:view["byteOffset"] + view["byteLength"]])
    by_id = {a["unique_id"]: np.asarray(a["data"]) for a in decoded.attributes}
    kinds = {5121: np.uint8, 5125: np.uint32, 5126: np.float32}
    widths = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
    for name, unique_id in ext["attributes"].items():
        accessor, values = doc["accessors"][prim["attributes"][name]], by_id[unique_id]
        assert values.dtype == kinds[accessor["componentType"]], name
        assert values.shape == (accessor["count"], widths[accessor["type"]]), name
        assert accessor.get("normalized", False) == (name == "COLOR_0"), name
        if "min" in accessor:
            assert accessor["min"] == values.min(0).tolist() and accessor["max"] == values.max(0).tolist(), name
    indices = doc["accessors"][prim["indices"]]
    assert indices["count"] == decoded.faces.size and np.asarray(decoded.faces).dtype == kinds[indices["componentType"]]


def test_an_old_dracopy_is_refused_before_any_work(monkeypatch):
    import DracoPy

    monkeypatch.setattr(DracoPy, "encode", lambda points, faces=None, quantization_bits=14: b"")
    with pytest.raises(ConfigError, match=r"mesh.draco needs DracoPy 2.2 or later"):
        MeshConfig(draco=True).check()
