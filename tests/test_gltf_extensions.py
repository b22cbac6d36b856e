"""glTF extensions on input meshes: Draco is decoded (with DracoPy), quantized and meshopt files
are refused by name, and texture transforms load with a warning."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from o3dcli.io.export import glb_bytes
from o3dcli.io.gltf_read import gltf_extensions
from o3dcli.io.mesh import MeshLoadError, load_mesh
from o3dcli.mesh.surface_gaussians import reference_shape


def with_json(glb: bytes, change) -> bytes:
    """The GLB with change(doc) applied to its JSON chunk (re-padded to 4 bytes)."""
    (length,) = struct.unpack("<I", glb[12:16])
    doc = json.loads(glb[20:20 + length])
    change(doc)
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    rest = glb[20 + length:]
    return b"glTF" + struct.pack("<II", 2, 12 + 8 + len(text) + len(rest)) + struct.pack("<I", len(text)) + b"JSON" \
        + text + rest


def test_draco_compressed_glb_loads_with_dracopy(tmp_path, draco_decoding):  # the dev extra: CI runs this
    import trimesh

    source = reference_shape("torus")
    scene = trimesh.load(trimesh.util.wrap_as_stream(glb_bytes(source)), file_type="glb", force="scene", process=False)
    path = tmp_path / "draco.glb"
    path.write_bytes(scene.export(file_type="glb", extension_draco=True))
    assert "KHR_draco_mesh_compression" in gltf_extensions(path)[1]
    mesh = load_mesh(path)
    assert len(mesh.faces) == len(source.faces) and mesh.has_texture
    assert np.abs(np.sort(mesh.vertices, 0) - np.sort(source.vertices, 0)).max() < 1e-3  # Draco quantizes


def test_draco_without_dracopy_is_a_clear_error_not_a_flat_mesh(tmp_path, monkeypatch):
    path = tmp_path / "draco.glb"
    path.write_bytes(with_json(glb_bytes(reference_shape("torus")), lambda d: d.update(
        extensionsUsed=["KHR_draco_mesh_compression"], extensionsRequired=["KHR_draco_mesh_compression"])))
    monkeypatch.setattr("o3dcli.io.gltf_read._has_dracopy", lambda: False)  # as if it were not installed
    with pytest.raises(MeshLoadError, match=r"draco\.glb: the mesh is Draco-compressed.*o3dcli\[draco\]"):
        load_mesh(path)


@pytest.mark.parametrize("ext", ["KHR_mesh_quantization", "EXT_meshopt_compression"])
def test_undecodable_extensions_are_refused_by_name(tmp_path, ext):
    path = tmp_path / "packed.glb"
    path.write_bytes(with_json(glb_bytes(reference_shape("box")), lambda d: d.update(
        extensionsUsed=[ext], extensionsRequired=[ext])))
    with pytest.raises(MeshLoadError, match=rf"packed\.glb: uses {ext} \(.*\), which o3d cannot decode"):
        load_mesh(path)


def test_texture_transform_is_applied_to_the_uvs(tmp_path, caplog):
    import math

    def add_transform(doc):
        doc["extensionsUsed"] = ["KHR_texture_transform"]
        info = doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]
        info["extensions"] = {"KHR_texture_transform": {"offset": [0.5, 0.25], "scale": [2.0, 3.0],
                                                        "rotation": math.pi / 2}}

    source = reference_shape("torus")
    path = tmp_path / "tiled.glb"
    path.write_bytes(with_json(glb_bytes(source), add_transform))
    with caplog.at_level("WARNING"):
        mesh = load_mesh(path)
    assert "KHR_texture_transform" not in caplog.text
    (tmp_path / "plain.glb").write_bytes(glb_bytes(source))
    plain = load_mesh(tmp_path / "plain.glb")
    assert np.allclose(mesh.vertices, plain.vertices)  # the same vertices in the same order
    # on glTF's UVs (v down): u' = sy * v + 0.5, v' = -sx * u + 0.25 for a quarter turn
    u, v = plain.uv[:, 0], 1.0 - plain.uv[:, 1]
    expected = np.stack([3.0 * v + 0.5, 1.0 - (-2.0 * u + 0.25)], 1)
    assert np.allclose(mesh.uv, expected, atol=1e-5)


def test_texture_transform_on_materials_without_unique_names_is_warned(tmp_path, caplog):
    def add_transform(doc):
        doc["extensionsUsed"] = ["KHR_texture_transform"]
        doc["materials"][0].pop("name", None)
        info = doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]
        info["extensions"] = {"KHR_texture_transform": {"scale": [2.0, 2.0]}}

    path = tmp_path / "tiled.glb"
    path.write_bytes(with_json(glb_bytes(reference_shape("torus")), add_transform))
    with caplog.at_level("WARNING"):
        mesh = load_mesh(path)
    assert mesh.has_texture
    assert "tiled.glb: uses KHR_texture_transform: texture offsets, scales and rotations are ignored" in caplog.text


def test_extension_lists_of_gltf_and_broken_files(tmp_path):
    (tmp_path / "a.gltf").write_text(json.dumps({"asset": {"version": "2.0"}, "extensionsUsed": ["KHR_lights_punctual"]}))
    assert gltf_extensions(tmp_path / "a.gltf") == ({"KHR_lights_punctual"}, set())
    (tmp_path / "b.glb").write_bytes(b"glTF\x02\x00\x00\x00")  # cut off: the reader reports it
    assert gltf_extensions(tmp_path / "b.glb") == (set(), set())
    with pytest.raises(MeshLoadError, match="b.glb"):
        load_mesh(tmp_path / "b.glb")


def test_draco_that_decodes_to_nothing_is_an_error(tmp_path, monkeypatch, draco_decoding):
    """An older trimesh (or a failing decoder) leaves every vertex at zero and only logs it."""
    import trimesh

    scene = trimesh.load(trimesh.util.wrap_as_stream(glb_bytes(reference_shape("box"))), file_type="glb",
                         force="scene", process=False)
    path = tmp_path / "draco.glb"
    path.write_bytes(scene.export(file_type="glb", extension_draco=True))
    real_load = trimesh.load

    def load_without_decoder(*args, **kwargs):  # what trimesh returns when its decoder fails
        loaded = real_load(*args, **kwargs)
        for geom in loaded.geometry.values():
            geom.vertices = np.zeros_like(geom.vertices)
        return loaded

    monkeypatch.setattr(trimesh, "load", load_without_decoder)
    with pytest.raises(MeshLoadError, match=r"draco\.glb: the Draco-compressed mesh could not be decoded"):
        load_mesh(path)
