"""STL export (3D printing) and STL input, and the export stage's key for format-only settings."""

from __future__ import annotations


import numpy as np
import pytest
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.config import ConfigError, load_config
from o3dcli.geometry.mesh import TriMesh
from o3dcli.io.export import export_mesh, save_mesh_glb, save_mesh_stl
from o3dcli.io.mesh import load_mesh
from o3dcli.mesh.config import MeshConfig

# a box 0.2 wide (x), 0.6 tall (y), 0.4 deep (z), off the origin, faces wound counter-clockwise outwards
LO, HI = np.array([0.1, -0.3, -0.1]), np.array([0.3, 0.3, 0.3])
BOX_FACES = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                      [2, 3, 7], [2, 7, 6], [1, 2, 6], [1, 6, 5], [0, 4, 7], [0, 7, 3]])


def box() -> TriMesh:
    corners = np.array([[x, y, z] for z in (0, 1) for (x, y) in ((0, 0), (1, 0), (1, 1), (0, 1))], np.float64)
    return TriMesh(LO + corners * (HI - LO), BOX_FACES, material_color=(0.8, 0.2, 0.2))


def read_stl(path) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """Header, normals [F, 3], triangles [F, 3, 3] and attribute words [F] of a binary STL, read by hand."""
    data = path.read_bytes()
    count = int(np.frombuffer(data, "<u4", 1, 80)[0])
    assert len(data) == 84 + 50 * count  # nothing more, nothing less
    rec = np.frombuffer(data, np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]), count, 84)
    return data[:80], rec["n"].astype(np.float64), rec["v"].astype(np.float64), rec["a"]


def signed_volume(tri: np.ndarray) -> float:
    return float(np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def test_stl_is_z_up_millimetres_standing_on_the_plate(tmp_path):
    mesh = box()
    header, normals, tri, attr = read_stl(save_mesh_stl(tmp_path / "box.stl", mesh, size_mm=120.0))
    assert not header.startswith(b"solid")  # readers take such a file for the text form
    assert len(tri) == 12 and (attr == 0).all()
    # our +Y up becomes +Z up, our front (+Z) faces -Y: (x, y, z) -> (x, -z, y); the longest side
    # (y, 0.6) becomes 120 mm; centred in x and y, standing on z = 0
    x, y, z = mesh.vertices[mesh.faces].astype(np.float64).transpose(2, 0, 1)
    turned = np.stack([x, -z, y], axis=-1) * (120.0 / 0.6)
    lo, hi = turned.reshape(-1, 3).min(0), turned.reshape(-1, 3).max(0)
    turned -= [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]]
    assert np.allclose(tri, turned, atol=1e-4)
    assert np.allclose(tri.reshape(-1, 3).min(0), [-20, -40, 0], atol=1e-4)
    assert np.allclose(tri.reshape(-1, 3).max(0), [20, 40, 120], atol=1e-4)
    # facet normals: unit, and pointing out of the box
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    outward = tri.mean(1) - [0, 0, 60]
    assert (np.einsum("fi,fi->f", normals, outward) > 0).all()
    assert signed_volume(tri) == pytest.approx(40 * 80 * 120, rel=1e-5)  # closed, wound outwards


def test_stl_reads_back_in_other_tools_and_round_trips_through_load_mesh(tmp_path):
    import trimesh

    mesh = box()
    path = save_mesh_stl(tmp_path / "box.stl", mesh)  # default: 100 mm
    other = trimesh.load(str(path), file_type="stl")
    assert other.is_watertight and other.volume == pytest.approx((100 / 3) * 100 * (200 / 3), rel=1e-5)
    # o3d reads an STL as Z-up (auto), joining the facets' corners: the box again, in o3d's frame
    back = load_mesh(path)
    assert len(back.vertices) == 8 and len(back.faces) == 12
    expected = (mesh.vertices - mesh.vertices.min(0)) / 0.6
    got = (back.vertices - back.vertices.min(0)) / 0.1  # millimetres read as metres: 100 mm is 0.1
    assert np.allclose(np.sort(got, axis=0), np.sort(expected, axis=0), atol=1e-5)
    tri = back.vertices[back.faces].astype(np.float64)
    assert signed_volume(tri) > 0  # still wound outwards
    as_y = load_mesh(path, up="y")  # keeps the file's axes: the 100 mm side stays along z
    assert as_y.vertices[:, 2].max() - as_y.vertices[:, 2].min() == pytest.approx(0.1, abs=1e-7)
    # some CAD tools start a binary STL's header with "solid", as the text form does: its size tells
    cad = tmp_path / "cad.stl"
    cad.write_bytes(b"solid SolidWorks part".ljust(80, b" ") + path.read_bytes()[80:])
    assert len(load_mesh(cad).faces) == 12
    padded = tmp_path / "padded.stl"  # bytes after the last facet (some exporters pad): ignored
    padded.write_bytes(path.read_bytes() + b"\x00" * 10)
    assert np.array_equal(load_mesh(padded).vertices, back.vertices)
    text = tmp_path / "text.stl"
    text.write_text(trimesh.exchange.stl.export_stl_ascii(other))
    assert len(load_mesh(text).vertices) == 8 and len(load_mesh(text).faces) == 12


def test_stl_refuses_what_cannot_be_printed(tmp_path):
    # (non-finite vertices: refused by every writer, tests/test_mesh_export.py)
    flat = TriMesh(np.zeros((3, 3)), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="no extent"):
        save_mesh_stl(tmp_path / "point.stl", flat)
    assert not list(tmp_path.iterdir())
    for size in (-5.0, float("nan"), 2e6):
        with pytest.raises(ConfigError, match="mesh.stl_size_mm"):
            MeshConfig(stl_size_mm=size).check()
    MeshConfig(stl_size_mm=0.0).check()  # 0: the mesh's own size


def test_stl_from_both_commands_and_export_mesh(tmp_path):
    names = [p.name for p in export_mesh(box(), tmp_path / "a", formats=("glb", "stl"), stl_size_mm=50.0)]
    assert names == ["model.glb", "model.stl"]
    assert read_stl(tmp_path / "a" / "model.stl")[2][..., 2].max() == pytest.approx(50.0)
    save_mesh_glb(tmp_path / "box.glb", box())
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "box.glb"), "--formats", "glb,stl", "--set",
                                   "mesh.stl_size_mm=30", "-o", str(out)])
    assert res.exit_code == 0, res.output
    _, _, tri, _ = read_stl(out / "box" / "model.stl")
    assert tri[..., 2].max() == pytest.approx(30.0, abs=1e-4)
    # an STL is an input too (Z-up): meshed to a GLB that stands up like the box did
    res = CliRunner().invoke(app, ["mesh", str(out / "box" / "model.stl"), "--formats", "glb", "-o", str(tmp_path / "o2")])
    assert res.exit_code == 0, res.output
    glb = load_mesh(tmp_path / "o2" / "box" / "model.glb")
    extent = glb.vertices.max(0) - glb.vertices.min(0)
    assert np.allclose(extent / extent.max(), (HI - LO) / 0.6, atol=1e-4)  # y the tallest again
    assert load_config(out / "box" / "config.yaml").mesh.stl_size_mm == 30.0


def test_o3d_mesh_keeps_an_stl_parts_size_and_place_and_reads_its_millimetres_as_such(tmp_path):
    # a 40 x 20 x 30 mm part at x 100..140 mm: decimated to an STL it came out 100 mm long and
    # centred, and its GLB 40 metres long
    import trimesh

    part = trimesh.creation.box(extents=(40, 20, 30))
    part.apply_translation((120, 10, 15))  # x 100..140, y 0..20, z 0..30: Z up, in millimetres
    (tmp_path / "part.stl").write_bytes(part.export(file_type="stl"))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "part.stl"), "--formats", "glb,stl", "-o", str(out)])
    assert res.exit_code == 0, res.output
    _, _, tri, _ = read_stl(out / "part" / "model.stl")
    corners = tri.reshape(-1, 3)
    np.testing.assert_allclose(corners.min(0), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(corners.max(0), [140, 20, 30], atol=1e-3)
    glb = load_mesh(out / "part" / "model.glb")
    np.testing.assert_allclose(glb.vertices.max(0) - glb.vertices.min(0), [0.04, 0.03, 0.02], atol=1e-6)  # Y up, metres
    assert load_config(out / "part" / "config.yaml").mesh.stl_size_mm == 0.0  # recorded as made
    # an OBJ's unit is anyone's guess (this one is in millimetres): its STL is made 100 mm long
    (tmp_path / "part.obj").write_text(part.export(file_type="obj"))
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "part.obj"), "--formats", "stl", "-o", str(tmp_path / "o2")])
    assert res.exit_code == 0, res.output
    corners = read_stl(tmp_path / "o2" / "part" / "model.stl")[2].reshape(-1, 3)
    assert (corners.max(0) - corners.min(0)).max() == pytest.approx(100.0, abs=1e-3)


def test_naming_the_default_preset_leaves_an_stl_its_size_and_a_preset_that_sets_one_scales_it(tmp_path):
    # -p tiny (the default) made a 20 x 20 x 40 mm part 50 x 50 x 100 mm: any preset given counted as
    # setting mesh.stl_size_mm, though tiny sets none
    import trimesh

    part = trimesh.creation.box(extents=(20, 20, 40))
    (tmp_path / "part.stl").write_bytes(part.export(file_type="stl"))
    (tmp_path / "print.yaml").write_text("base: tiny\nmesh:\n  stl_size_mm: 80\n")
    for preset, longest in ((None, 40.0), ("tiny", 40.0), (str(tmp_path / "print.yaml"), 80.0)):
        out = tmp_path / f"out-{longest}-{preset is None}"
        res = CliRunner().invoke(app, ["mesh", str(tmp_path / "part.stl"), "--formats", "stl", "-o", str(out),
                                       *(["-p", preset] if preset else [])])
        assert res.exit_code == 0, res.output
        corners = read_stl(out / "part" / "model.stl")[2].reshape(-1, 3)
        assert (corners.max(0) - corners.min(0)).max() == pytest.approx(longest, abs=1e-3), preset


def test_export_key_holds_format_settings_only_for_the_formats_asked_for(monkeypatch):
    from o3dcli.stages import export_key_extra

    cfg = load_config("tiny")
    assert export_key_extra(cfg) == {}  # glb, obj: the cache keys of earlier runs still match
    cfg.mesh.formats = ("glb", "stl")
    cfg.mesh.stl_size_mm = 80.0
    assert export_key_extra(cfg) == {"stl_size_mm": 80.0}
    cfg.mesh.formats = ("usdz",)
    for installed in (True, False):  # the USDZ's layer is binary with usd-core, text without
        monkeypatch.setattr("o3dcli.io.usdz.usd_available", lambda installed=installed: installed)
        assert export_key_extra(cfg) == {"usd_binary": installed}


def test_a_stage_is_recomputed_when_its_key_extra_changes(tmp_path):
    from PIL import Image

    from o3dcli.inputs import collect_inputs
    from o3dcli.naming import assign_names
    from o3dcli.pipeline import BatchRunner, run_batch
    from o3dcli.batch_types import Stage

    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "red.png")
    extra, runs = {"v": 1}, []

    def stage_run(ctx):
        runs.append(dict(extra))
        (ctx.work_dir / "x.txt").write_text(str(extra["v"]))
        return {}

    stage = Stage("touch", 1, (), stage_run, publish={"x.txt": "x.txt"}, key_extra=lambda config: dict(extra))
    out = tmp_path / "out"
    out.mkdir()
    for value in (1, 1, 2, 1):
        extra["v"] = value
        runner = BatchRunner(out, load_config("tiny"), [stage])
        run_batch(assign_names(collect_inputs([tmp_path / "red.png"]), out), runner, show_progress=False)
        assert (out / "red" / "x.txt").read_text() == str(value)
    assert runs == [{"v": 1}, {"v": 2}]  # the second and the last run found theirs in the cache


def test_a_seam_split_mesh_is_watertight_and_an_open_one_is_warned_about(tmp_path, caplog):
    # meshes from o3d's pipeline have UV seams (vertices split where charts meet): joined by position,
    # the STL is still closed; an open surface is written with a warning naming the file
    import logging

    import trimesh

    from o3dcli.io.export import open_edges
    from o3dcli.mesh.surface_gaussians import reference_shape
    from o3dcli.mesh.uv import unwrap_uv

    torus = unwrap_uv(reference_shape("torus"), MeshConfig(texture_size=256))
    assert len(torus.vertices) > len(np.unique(torus.vertices, axis=0))  # seams split vertices
    assert open_edges(torus) == (0, 0)
    with caplog.at_level(logging.WARNING, logger="o3d"):
        path = save_mesh_stl(tmp_path / "torus.stl", torus)
    assert caplog.text == ""
    assert trimesh.load(str(path), file_type="stl").is_watertight
    plane = TriMesh(np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]), np.array([[0, 1, 2], [0, 2, 3]]))
    with caplog.at_level(logging.WARNING, logger="o3d"):
        save_mesh_stl(tmp_path / "plane.stl", plane)
    assert "plane.stl: not watertight (4 open edges, 0 edges shared by more than two faces)" in caplog.text
