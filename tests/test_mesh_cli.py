"""`o3d mesh` through Typer's CliRunner: foreign 3DGS PLYs, textured meshes, batches and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
import torch
import pytest
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.io.export import save_mesh_glb
from o3dcli.io.mesh import load_mesh
from o3dcli.io.ply import save_gaussians
from o3dcli.mesh.surface_gaussians import reference_shape, surface_gaussians
from test_mesh_pipeline import chamfer, render_psnr

SH_C0 = 0.28209479177387814


pytestmark = pytest.mark.usefixtures("one_thread")


def write_foreign_ply(path, gaussians) -> None:
    """A PLY as other 3DGS trainers write it: SH degree 3 (45 f_rest), quaternions scaled
    away from unit length, an extra property, logit opacity and log scales, and -Y up, as splat
    viewers take it (o3d's +Y-up Gaussians turned 180 degrees about Z)."""
    from o3dcli.io.assets import TURN_Z_180, _turned

    gaussians = _turned(gaussians, TURN_Z_180)
    n = len(gaussians)
    rng = np.random.default_rng(0)
    names = (["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{i}" for i in range(3)]
             + [f"f_rest_{i}" for i in range(45)] + ["opacity"] + [f"scale_{i}" for i in range(3)]
             + [f"rot_{i}" for i in range(4)] + ["filter_3D"])
    data = np.zeros(n, dtype=[(k, "<f4") for k in names])
    for i, k in enumerate("xyz"):
        data[k] = gaussians.means[:, i].numpy()
    for i in range(3):
        data[f"f_dc_{i}"] = (gaussians.colors[:, i].numpy() - 0.5) / SH_C0
        data[f"scale_{i}"] = np.log(gaussians.scales[:, i].numpy())
    for i in range(45):
        data[f"f_rest_{i}"] = rng.normal(0, 0.01, n)
    op = gaussians.opacities.numpy().clip(1e-4, 1 - 1e-4)
    data["opacity"] = np.log(op / (1 - op))
    quats = gaussians.quats.numpy() * rng.uniform(0.5, 3.0, (n, 1))  # unnormalised
    for i in range(4):
        data[f"rot_{i}"] = quats[:, i]
    header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % n
    header += "".join(f"property float {k}\n" for k in names) + "end_header\n"
    path.write_bytes(header.encode() + data.tobytes())


def test_foreign_gaussian_ply_meshes(tmp_path, gltf_validator):  # noqa: F811
    source = reference_shape("sphere", soft=0.08)
    ply = tmp_path / "scan.ply"
    write_foreign_ply(ply, surface_gaussians(source, 16384, seed=2))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["mesh", str(ply), "--decimate", "2000", "--texture-size", "256", "-o", str(out)])
    assert result.exit_code == 0, result.output
    files = {p.name for p in (out / "scan").iterdir()}
    assert files == {"model.glb", "model.obj", "model.mtl", "model.png", "config.yaml", "o3d-asset.json"}
    mesh = load_mesh(out / "scan" / "model.glb")
    assert 0 < len(mesh.faces) <= 2000 and mesh.texture.shape == (256, 256, 3)
    assert chamfer(mesh, source) <= 0.01
    assert render_psnr(mesh, source) >= 25.0
    report = gltf_validator(out / "scan" / "model.glb")
    assert report["errors"] == 0 and report["warnings"] == 0, report


def write_point_cloud(path, points: np.ndarray, colours: np.ndarray) -> None:
    """A binary PLY of points (x y z red green blue, no faces), as scanners and photogrammetry write."""
    data = np.zeros(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                        ("blue", "u1")])
    for i, k in enumerate("xyz"):
        data[k] = points[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        data[k] = np.round(np.clip(colours[:, i], 0, 1) * 255)
    header = "".join(["ply\nformat binary_little_endian 1.0\n", f"element vertex {len(points)}\n",
                      *(f"property float {k}\n" for k in "xyz"),
                      *(f"property uchar {k}\n" for k in ("red", "green", "blue")), "end_header\n"])
    Path(path).write_bytes(header.encode("ascii") + data.tobytes())


def test_a_coloured_point_cloud_is_meshed_and_textured(tmp_path):
    # a scan's point cloud was refused ("holds no triangles"); its points are now meshed as small
    # round Gaussians, here from a Z-up file (--up z)
    source = reference_shape("sphere", soft=0.08)
    sampled = surface_gaussians(source, 16384, seed=3)
    x, y, z = sampled.means.numpy().T
    cloud = tmp_path / "cloud.ply"
    write_point_cloud(cloud, np.stack([x, -z, y], 1), sampled.colors.numpy())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["mesh", str(cloud), "--up", "z", "-d", "2000", "--texture-size", "256",
                                      "--formats", "glb", "-o", str(out)])
    assert result.exit_code == 0, result.output
    mesh = load_mesh(out / "cloud" / "model.glb")
    assert 0 < len(mesh.faces) <= 2000 and mesh.has_texture
    assert chamfer(mesh, source) <= 0.01
    assert render_psnr(mesh, source) >= 25.0


def test_textured_mesh_is_decimated_keeping_its_texture(tmp_path):
    source = reference_shape("torus", detail=2, soft=0.08)  # ~12k faces
    path = save_mesh_glb(tmp_path / "ring.glb", source)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["mesh", str(path), "-d", "2000", "--formats", "glb", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "ring").iterdir()) == ["config.yaml", "model.glb", "o3d-asset.json"]
    mesh = load_mesh(out / "ring" / "model.glb")
    assert len(mesh.faces) <= 2000 < len(source.faces)
    assert np.array_equal(mesh.texture, source.texture)  # the texture-aware collapse keeps the image
    assert render_psnr(mesh, source) >= 25.0
    # --texture-size bounds a kept texture too (it was ignored for textured inputs)
    side = max(source.texture.shape[:2])
    result = CliRunner().invoke(app, ["mesh", str(path), "-d", "2000", "--formats", "glb", "--texture-size",
                                      str(side // 2), "-o", str(tmp_path / "small")])
    assert result.exit_code == 0, result.output
    small = load_mesh(tmp_path / "small" / "ring" / "model.glb")
    assert max(small.texture.shape[:2]) == side // 2 and render_psnr(small, source) >= 24.0
    # ...but a preset's texture_size (meant for baked textures) leaves it at its size, and --set bounds it
    preset = tmp_path / "small-bakes.yaml"
    preset.write_text(f"base: tiny\nmesh:\n  texture_size: {side // 4}\n")
    for extra, want in (([], side), (["--set", f"mesh.texture_size={side // 4}"], side // 4)):
        out = tmp_path / f"p{want}"
        result = CliRunner().invoke(app, ["mesh", str(path), "-d", "2000", "--formats", "glb", "-p", str(preset),
                                          *extra, "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert max(load_mesh(out / "ring" / "model.glb").texture.shape[:2]) == want


def test_asset_folder_remeshes_its_gaussians_and_batch_isolates_errors(tmp_path):
    source = reference_shape("box", soft=0.08)
    asset = tmp_path / "assets" / "crate"
    asset.mkdir(parents=True)
    save_gaussians(asset / "gaussians.ply", surface_gaussians(source, 8192, seed=4))
    save_mesh_glb(asset / "model.glb", reference_shape("sphere"))  # stale mesh: must not be used
    other = tmp_path / "other" / "crate"
    other.mkdir(parents=True)
    save_gaussians(other / "gaussians.ply", surface_gaussians(source, 8192, seed=5))
    broken = tmp_path / "broken.ply"
    broken.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\n")  # cut off in its header
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["mesh", str(asset), str(broken), str(other), "-d", "1000",
                                      "--texture-size", "128", "--formats", "obj", "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "broken.ply" in result.output and "end_header" in result.output
    # (.o3d/ holds the per-name locks, shared with o3d generate)
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {"crate", "crate-2", "o3d-mesh-report.json"}
    mesh = load_mesh(out / "crate" / "model.obj")
    assert len(mesh.faces) <= 1000 and chamfer(mesh, source) <= 0.01  # the box, not the stale sphere
    # the report has every input, in order, the failed one with its error
    report = json.loads((out / "o3d-mesh-report.json").read_text())
    assert report["summary"] == {"ok": 2, "failed": 1} and not report["interrupted"]
    items = report["items"]
    assert [(i["input"], i["name"], i["status"]) for i in items] == [
        (str((asset / "gaussians.ply").resolve()), "crate", "ok"), (str(broken.resolve()), "broken", "failed"),
        (str((other / "gaussians.ply").resolve()), "crate-2", "ok")]
    assert "end_header" in items[1]["error"] and "Error" in items[1]["traceback"]
    assert items[1]["outputs"] == [] and items[1]["mesh"] is None
    assert items[0]["mesh"]["faces"] == len(mesh.faces) and items[0]["mesh"]["texture"] == [128, 128]
    assert items[0]["mesh"]["watertight"] and items[0]["mesh"]["boundary_edges"] == 0
    assert list(items[0]["timings"]) == ["load", "fusion", "decimation", "unwrap", "bake", "export"]
    assert sorted(items[0]["outputs"]) == ["crate/config.yaml", "crate/model.mtl", "crate/model.obj",
                                           "crate/model.png", "crate/o3d-asset.json"]
    assert all((out / f).is_file() for f in items[0]["outputs"])


def test_ctrl_c_stops_the_batch_with_130_keeping_the_finished_inputs(tmp_path, monkeypatch):
    import o3dcli.commands.mesh as mesh_cmd

    meshes = []
    for name in ("a", "b", "c"):
        meshes.append(save_mesh_glb(tmp_path / f"{name}.glb", reference_shape("sphere")))
    real = mesh_cmd.mesh_one

    def mesh_then_ctrl_c(path, out_dir, mesh_cfg, cfg, **kw):
        if Path(path).stem == "b":
            raise KeyboardInterrupt
        return real(path, out_dir, mesh_cfg, cfg, **kw)

    monkeypatch.setattr(mesh_cmd, "mesh_one", mesh_then_ctrl_c)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["mesh", *map(str, meshes), "--formats", "glb", "-o", str(out)])
    assert res.exit_code == 130, res.output
    assert "interrupted" in res.output and "b.glb" in res.output
    assert (out / "a" / "model.glb").is_file() and not (out / "b").exists() and not (out / "c").exists()
    report = json.loads((out / "o3d-mesh-report.json").read_text())
    assert report["interrupted"] and [(i["name"], i["status"]) for i in report["items"]] == [
        ("a", "ok"), ("b", "interrupted"), ("c", "not-run")]
    assert report["summary"] == {"ok": 1, "interrupted": 1, "not-run": 1}


def test_usage_errors_exit_2(tmp_path):
    ply = tmp_path / "g.ply"
    save_gaussians(ply, surface_gaussians(reference_shape("sphere"), 100))
    result = CliRunner().invoke(app, ["mesh", str(ply), "--formats", "fbx", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "mesh.formats" in result.output
    result = CliRunner().invoke(app, ["mesh", str(ply), "--set", "nosuch.key=1", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nosuch.key" in result.output
    # a missing input is a usage error (a typo), found before anything runs
    result = CliRunner().invoke(app, ["mesh", str(ply), str(tmp_path / "missing.ply"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "missing.ply" in result.output and not (tmp_path / "o").exists()
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(app, ["mesh", str(ply), "-o", str(tmp_path / "afile")])
    assert result.exit_code == 2 and "not a folder" in result.output


def test_names_follow_the_asset_folder_never_overwrite_and_drop_stale_formats(tmp_path):
    for folder in ("a/crate", "b/crate"):
        (tmp_path / folder).mkdir(parents=True)
        save_gaussians(tmp_path / folder / "gaussians.ply", surface_gaussians(reference_shape("sphere"), 2000, seed=1))
    out = tmp_path / "out"
    opts = ["-d", "500", "--texture-size", "64", "--set", "mesh.resolution=32", "--set", "mesh.fusion_size=32",
            "-o", str(out)]
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "a/crate/gaussians.ply"), *opts])
    assert res.exit_code == 0, res.output
    assert (out / "crate" / "model.obj").is_file()
    first = (out / "crate" / "model.glb").read_bytes()
    # another input of the same name, in a later run: -2, the first one's files untouched
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "b/crate/gaussians.ply"), *opts])
    assert res.exit_code == 0, res.output
    assert (out / "crate-2" / "model.glb").is_file() and (out / "crate" / "model.glb").read_bytes() == first
    # each file's object and material are called after its folder (the files are written in a staging folder)
    for folder in ("crate", "crate-2"):
        assert f"o {folder}" in (out / folder / "model.obj").read_text().splitlines()
        assert load_mesh(out / folder / "model.glb") is not None
        assert f'"name":"{folder}"'.encode() in (out / folder / "model.glb").read_bytes()
    # the same input again, glb only: its own folder, and the obj it no longer asks for is gone
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "a/crate"), "--formats", "glb", *opts])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "crate").iterdir()) == ["config.yaml", "model.glb", "o3d-asset.json"]
    assert not (out / "crate-3").exists()


def test_a_result_file_edited_since_is_kept_when_the_folder_is_made_again(tmp_path):
    save_gaussians(tmp_path / "crate.ply", surface_gaussians(reference_shape("sphere"), 2000, seed=1))
    out = tmp_path / "out"
    opts = ["-d", "500", "--texture-size", "64", "--set", "mesh.resolution=32", "--set", "mesh.fusion_size=32",
            "-o", str(out)]
    assert CliRunner().invoke(app, ["mesh", str(tmp_path / "crate.ply"), *opts]).exit_code == 0
    obj = out / "crate" / "model.obj"
    obj.write_text(obj.read_text() + "# my fix\n")  # a mesh touched up in another tool, saved in place
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "crate.ply"), "-d", "400", *opts[2:]])
    assert res.exit_code == 0, res.output
    assert (out / "crate" / "model.edited.obj").read_text().endswith("# my fix\n")
    assert not obj.read_text().endswith("# my fix\n")
    said = " ".join(res.output.split())
    assert "model.obj was changed since o3d wrote it: the edit is kept as model.edited.obj" in said
    assert "(withmodel.edited.mtl,model.edited.png)" in "".join(said.split()), res.output
    report = json.loads((out / "o3d-mesh-report.json").read_text())["items"][0]
    assert any("model.edited.obj" in w for w in report["warnings"])
    edited = sorted(p.name for p in (out / "crate").iterdir() if ".edited" in p.name)
    # the other files left as o3d wrote them are not copied; the OBJ's own material and texture
    # are, as they were: the new model.mtl and model.png are another mesh's
    assert edited == ["model.edited.mtl", "model.edited.obj", "model.edited.png"]
    kept = load_mesh(out / "crate" / "model.edited.obj")
    assert kept.has_texture and "mtllib model.edited.mtl" in (out / "crate" / "model.edited.obj").read_text()
    # ...and when the next run drops the OBJ, the edit keeps its texture too (it lost it)
    obj.write_text(obj.read_text() + "# second fix\n")
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "crate.ply"), "--formats", "glb", *opts])
    assert res.exit_code == 0, res.output
    assert not obj.exists() and not (out / "crate" / "model.mtl").exists()
    second = out / "crate" / "model.edited-2.obj"
    assert second.read_text().endswith("# second fix\n") and load_mesh(second).has_texture
    assert "mtllib model.edited-2.mtl" in second.read_text()
    assert "map_Kd model.edited-2.png" in (out / "crate" / "model.edited-2.mtl").read_text()
    # the OBJ, its material and its texture all edited (a re-export from another tool): one set kept
    assert CliRunner().invoke(app, ["mesh", str(tmp_path / "crate.ply"), *opts]).exit_code == 0
    before = {p.name for p in (out / "crate").iterdir()}
    obj.write_text(obj.read_text() + "# third fix\n")
    (out / "crate" / "model.mtl").write_text((out / "crate" / "model.mtl").read_text() + "Ns 10\n")
    painted = np.asarray(Image.open(out / "crate" / "model.png")).copy()
    painted[:8, :8] = 255
    Image.fromarray(painted).save(out / "crate" / "model.png")
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "crate.ply"), "-d", "300", *opts[2:]])
    assert res.exit_code == 0, res.output
    assert {p.name for p in (out / "crate").iterdir()} - before == {
        "model.edited-3.obj", "model.edited-3.mtl", "model.edited-3.png"}, res.output
    assert "Ns 10" in (out / "crate" / "model.edited-3.mtl").read_text()
    assert "map_Kd model.edited-3.png" in (out / "crate" / "model.edited-3.mtl").read_text()
    assert np.array_equal(np.asarray(Image.open(out / "crate" / "model.edited-3.png")), painted)
    # the material and its texture edited, the OBJ not: the kept material names the kept texture (it
    # named model.png, the new asset's, or, with --formats glb, a file no longer there)
    before = {p.name for p in (out / "crate").iterdir()}
    (out / "crate" / "model.mtl").write_text((out / "crate" / "model.mtl").read_text() + "Ns 20\n")
    painted = np.asarray(Image.open(out / "crate" / "model.png")).copy()
    painted[-8:, -8:] = 0
    Image.fromarray(painted).save(out / "crate" / "model.png")
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "crate.ply"), "--formats", "glb", *opts])
    assert res.exit_code == 0, res.output
    assert {p.name for p in (out / "crate").iterdir()} - before == {"model.edited-4.mtl", "model.edited-4.png"}
    material = (out / "crate" / "model.edited-4.mtl").read_text()
    assert "Ns 20" in material and "map_Kd model.edited-4.png" in material, material
    assert np.array_equal(np.asarray(Image.open(out / "crate" / "model.edited-4.png")), painted)


def test_an_edit_is_kept_when_the_input_moved_and_a_crafted_record_reads_nothing_outside(tmp_path):
    import os

    (tmp_path / "a").mkdir()
    save_gaussians(tmp_path / "a" / "crate.ply", surface_gaussians(reference_shape("sphere"), 2000, seed=1))
    out = tmp_path / "out"
    opts = ["-d", "500", "--texture-size", "64", "--set", "mesh.resolution=32", "--set", "mesh.fusion_size=32",
            "-o", str(out)]
    assert CliRunner().invoke(app, ["mesh", str(tmp_path / "a" / "crate.ply"), *opts]).exit_code == 0
    obj = out / "crate" / "model.obj"
    obj.write_text(obj.read_text() + "# my fix\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "crate.ply").rename(tmp_path / "b" / "crate.ply")  # moved: the same asset still
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "b" / "crate.ply"), "-d", "400", *opts[2:]])
    assert res.exit_code == 0, res.output
    assert (out / "crate" / "model.edited.obj").read_text().endswith("# my fix\n")
    assert not (out / "crate-2").exists()
    # o3d-asset.json is a user's file too: a record naming a file through a link out of the folder
    # (or a file that is not o3d's) is not read, and the folder is published as ever
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "outside", out / "crate" / "lnk")
    (out / "crate" / "notes.txt").write_text("mine")
    meta = json.loads((out / "crate" / "o3d-asset.json").read_text())
    meta["files"].update({"lnk/secret.txt": "0" * 64, "notes.txt": "0" * 64})
    (out / "crate" / "o3d-asset.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "b" / "crate.ply"), "-d", "300", *opts[2:]])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "crate").iterdir() if ".edited" in p.name) == [
        "model.edited.mtl", "model.edited.obj", "model.edited.png"]  # the edited OBJ with its material
    assert os.path.islink(out / "crate" / "lnk") and (out / "crate" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["secret.txt"]


def test_a_mesh_file_takes_its_name_before_the_files_given_beside_it(tmp_path):
    """`o3d mesh chair/*` on chair.mtl, chair.obj, chair.png: the OBJ's result was chair-2."""
    from o3dcli.io.export import save_mesh_obj

    folder = tmp_path / "chair"
    folder.mkdir()
    save_mesh_obj(folder / "chair.obj", reference_shape("box"))
    given = sorted(folder.iterdir())
    assert [p.name for p in given] == ["chair.mtl", "chair.obj", "chair.png"]
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["mesh", *map(str, given), "-d", "500", "--texture-size", "64", "-o", str(out)])
    assert res.exit_code == 1, res.output  # the .mtl and .png are not meshes
    assert (out / "chair" / "model.glb").is_file()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["chair", "o3d-mesh-report.json"]
    # a result an earlier run put under another name (the .mtl took `chair` then) keeps its folder
    (out / "chair").rename(out / "chair-2")
    res = CliRunner().invoke(app, ["mesh", *map(str, given), "-d", "500", "--texture-size", "64", "-o", str(out)])
    assert res.exit_code == 1, res.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["chair-2", "o3d-mesh-report.json"]


def test_set_overrides_the_mesh_section(tmp_path):
    from o3dcli.config import Config

    if not hasattr(Config(), "mesh"):
        pytest.skip("Config has no mesh section yet (the main session nests MeshConfig into Config)")
    ply = tmp_path / "g.ply"
    save_gaussians(ply, surface_gaussians(reference_shape("sphere"), 4096))
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["mesh", str(ply), "--set", "mesh.target_faces=500", "--set",
                                      "mesh.texture_size=64", "--formats", "glb", "-o", str(out)])
    assert result.exit_code == 0, result.output
    mesh = load_mesh(out / "g" / "model.glb")
    assert len(mesh.faces) <= 500 and mesh.texture.shape == (64, 64, 3)


def test_asset_folder_silhouette_comes_from_its_input_image_and_config(tmp_path):
    import dataclasses

    from PIL import Image

    from o3dcli.commands.mesh import asset_silhouettes
    from o3dcli.config import dump_config, load_config
    from o3dcli.mesh.config import MeshConfig
    from o3dcli.stages import generation_cameras

    asset = tmp_path / "chair"
    asset.mkdir()
    cfg = load_config("tiny", ["cameras.radius=2.5"])  # the asset's own rig, not the preset's
    (asset / "config.yaml").write_text(dump_config(cfg))
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[6:18, 4:12] = 255
    Image.fromarray(rgba, "RGBA").save(asset / "input.png")
    sil = asset_silhouettes(asset, MeshConfig())
    assert sil.alpha.shape == (1, 24, 24) and sil.alpha.sum() == 12 * 8
    assert sil.alpha[0, 6, 4] == 1.0 and sil.alpha[0, 5, 4] == 0.0
    expected = generation_cameras(cfg, 24)[:1]
    assert torch.allclose(sil.cameras.c2w, expected.c2w) and sil.cameras.width == 24
    assert float(sil.cameras.c2w[0, :3, 3].norm()) == pytest.approx(2.5)
    # off, a foreign PLY, or a folder without its input image: no silhouette
    assert asset_silhouettes(asset, dataclasses.replace(MeshConfig(), input_silhouette=False)) is None
    assert asset_silhouettes(asset / "gaussians.ply", MeshConfig()) is None
    (asset / "input.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="input.png"):
        asset_silhouettes(asset, MeshConfig())
    (asset / "input.png").unlink()
    assert asset_silhouettes(asset, MeshConfig()) is None


def test_an_assets_outline_is_the_one_o3d_generate_cut_its_mesh_with(tmp_path):
    # o3d mesh took the outline from input.png (the 1024 px crop) averaged down to the model's
    # size, where o3d generate cuts with the crop made from the source photo: up to 0.2 apart in
    # alpha, which cut a chair's legs off when re-meshed with the same settings
    import os
    import shutil

    from PIL import ImageDraw
    from safetensors.torch import save_file

    from o3dcli.commands.mesh import asset_silhouettes
    from o3dcli.config import dump_config, load_config
    from o3dcli.mesh.config import MeshConfig
    from o3dcli.preprocess import preprocess_image
    from o3dcli.stages import PHOTO_SIZE

    cfg = load_config("tiny")
    photo = Image.new("RGBA", (900, 900), (0, 0, 0, 0))
    draw = ImageDraw.Draw(photo)
    draw.rectangle((300, 200, 600, 500), fill=(200, 100, 50, 255))
    for k in range(6):  # thin legs: a pixel or two wide at the model's size
        draw.line((320 + 40 * k, 500, 310 + 45 * k, 780), fill=(90, 60, 30, 255), width=9)
    prepared = preprocess_image(np.asarray(photo), cfg.preprocess, PHOTO_SIZE)
    cut_with = prepared.rgba[3].numpy()
    from o3dcli.atomic import sha256_file

    asset, entry = tmp_path / "out" / "chair", tmp_path / "out" / ".o3d" / "items" / "chair" / "preprocess-0123"
    asset.mkdir(parents=True)
    (asset / "config.yaml").write_text(dump_config(cfg))

    def publish():  # the cache entry and the asset's input.png, hard-linked to it, as o3d generate leaves them
        shutil.rmtree(entry, ignore_errors=True)
        entry.mkdir(parents=True)
        Image.fromarray((prepared.rgba_projection.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8),
                        "RGBA").save(entry / "input.png")
        save_file({"rgba": prepared.rgba.contiguous()}, str(entry / "prepared.safetensors"))
        files = ["input.png", "prepared.safetensors"]
        (entry / "manifest.json").write_text(json.dumps({
            "complete": True, "files": files, "sizes": {f: (entry / f).stat().st_size for f in files},
            "sha256": {f: sha256_file(entry / f) for f in files}}))
        (asset / "input.png").unlink(missing_ok=True)
        os.link(entry / "input.png", asset / "input.png")
        (asset / "o3d-asset.json").write_text(json.dumps({"cache": ["diffusion-4567", "preprocess-0123"],
                                                          "files": {"input.png": sha256_file(asset / "input.png")}}))

    def close_to_it():  # input.png resampled as preprocessing resamples: within a few hundredths
        alpha = asset_silhouettes(asset, MeshConfig()).alpha[0]
        return np.abs(alpha - cut_with).max() < 0.05 and np.array_equal(alpha > 0.5, cut_with > 0.5)

    publish()  # the output folder still holds the asset's preprocessing: the very outline
    assert np.array_equal(asset_silhouettes(asset, MeshConfig()).alpha[0], cut_with)
    (entry / "prepared.safetensors").write_bytes(b"damaged")  # not what the entry's manifest records
    assert close_to_it()
    shutil.rmtree(entry.parent)  # pruned, or the asset copied elsewhere
    assert close_to_it()
    publish()  # input.png edited in place (the cache's hard-linked copy with it): the edit counts
    erased = np.asarray(Image.open(asset / "input.png")).copy()
    erased[erased.shape[0] // 3:, :, 3] = 0  # most of it rubbed out
    Image.fromarray(erased).save(asset / "input.png")
    assert os.path.samefile(asset / "input.png", entry / "input.png")
    assert asset_silhouettes(asset, MeshConfig()).alpha[0].sum() < 0.8 * cut_with.sum()


def test_an_asset_whose_settings_or_photo_are_unusable_is_meshed_from_its_gaussians_with_a_warning(tmp_path):
    # a config.yaml with a key this o3d does not know failed the asset, though only the photo's
    # outline and projection need it; a missing input.png was passed over without a word
    from PIL import Image

    from o3dcli.config import dump_config, load_config

    asset = tmp_path / "crate"
    asset.mkdir()
    save_gaussians(asset / "gaussians.ply", surface_gaussians(reference_shape("sphere"), 2000, seed=1))
    (asset / "o3d-asset.json").write_text("{}")
    (asset / "config.yaml").write_text(dump_config(load_config("tiny")).replace("mesh:\n", "mesh:\n  retired_key: 3\n", 1))
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = 255
    Image.fromarray(rgba, "RGBA").save(asset / "input.png")
    opts = ["-d", "500", "--texture-size", "64", "--set", "mesh.resolution=32", "--set", "mesh.fusion_size=32",
            "--formats", "glb"]
    for out, expected in (("a", "retired_key"), ("b", "no input.png")):
        if out == "b":
            (asset / "input.png").unlink()
        res = CliRunner().invoke(app, ["mesh", str(asset), *opts, "-o", str(tmp_path / out)])
        said = " ".join(res.output.split())
        assert res.exit_code == 0 and (tmp_path / out / "crate" / "model.glb").is_file(), res.output
        assert expected in said and "meshed from its Gaussians alone" in said, res.output
        assert said.count("meshed from its Gaussians alone") == 1, res.output  # once, though looked at twice
        report = json.loads((tmp_path / out / "o3d-mesh-report.json").read_text())
        assert any("Gaussians alone" in w for w in report["items"][0]["warnings"]), report
    # another 3DGS tool's folder (no o3d-asset.json) has no input.png to miss
    (asset / "o3d-asset.json").unlink()
    res = CliRunner().invoke(app, ["mesh", str(asset), *opts, "-o", str(tmp_path / "c")])
    assert res.exit_code == 0 and "Gaussians alone" not in res.output, res.output


def test_an_assets_gaussians_ply_meshes_as_its_folder_does(tmp_path, monkeypatch):
    # assets/chair/gaussians.ply: the photo and silhouette of assets/chair are used, as for the folder
    from PIL import Image

    import o3dcli.commands.mesh as mesh_cmd
    from o3dcli.config import dump_config, load_config

    asset = tmp_path / "chair"
    asset.mkdir()
    save_gaussians(asset / "gaussians.ply", surface_gaussians(reference_shape("sphere", soft=0.08), 2048, seed=1))
    (asset / "config.yaml").write_text(dump_config(load_config("tiny")))
    Image.new("RGBA", (32, 32), (200, 120, 40, 255)).save(asset / "input.png")  # all object: cuts nothing
    looked_at = []
    real = mesh_cmd.asset_silhouettes

    def spy(path, mesh_cfg):
        found = real(path, mesh_cfg)
        looked_at.append((path, found is not None))
        return found

    monkeypatch.setattr(mesh_cmd, "asset_silhouettes", spy)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["mesh", str(asset / "gaussians.ply"), "--decimate", "500", "--texture-size", "64",
                                   "--formats", "glb", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert looked_at == [(asset, True)] and (out / "chair" / "model.glb").is_file()
    # a PLY of that name outside an asset folder is meshed from the Gaussians alone
    other = tmp_path / "scan"
    other.mkdir()
    (asset / "gaussians.ply").rename(other / "gaussians.ply")
    assert mesh_cmd._asset_folder_of(other / "gaussians.ply") == other / "gaussians.ply"
    assert mesh_cmd._asset_folder_of(asset / "input.png") == asset / "input.png"


def test_duplicates_warnings_and_a_file_in_the_way(tmp_path):
    # an input given twice is meshed once; what loading it warned of is told with its name; a
    # file where its folder would go is left alone
    (tmp_path / "tri.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv nan 0 0\nf 1 2 3\nf 1 2 4\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "tri").write_text("mine")
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "tri.obj"), str(tmp_path / "tri.obj"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "1 input(s) given more than once; each is meshed once" in text
    assert f"! {tmp_path / 'tri.obj'}: 1 of 4 vertices have non-finite coordinates" in text
    assert text.count("✓") == 1 and (out / "tri-2" / "model.glb").is_file() and (out / "tri").read_text() == "mine"


def test_a_folder_left_by_a_stopped_run_is_reused_and_a_failed_input_leaves_none(tmp_path):
    (tmp_path / "tri.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (tmp_path / "bad.obj").write_text("v 0 0 0\nf 1 2 3\n")
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["mesh", str(tmp_path / "tri.obj"), "-o", str(out)]).exit_code == 0
    (out / "tri" / "model.obj").unlink()  # as if stopped before its last file; its o3d-asset.json is there
    (out / "tri" / ".DS_Store").write_text("")
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "tri.obj"), str(tmp_path / "bad.obj"), "-o", str(out)])
    assert res.exit_code == 1, res.output
    assert (out / "tri" / "model.obj").is_file() and not (out / "tri-2").exists()
    assert not (out / "bad").exists()
    # a folder holding only hidden files is free, not the user's
    (out / "new").mkdir()
    (out / "new" / ".DS_Store").write_text("")
    (tmp_path / "new.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert CliRunner().invoke(app, ["mesh", str(tmp_path / "new.obj"), "-o", str(out)]).exit_code == 0
    assert (out / "new" / "model.glb").is_file() and not (out / "new-2").exists()


def test_long_file_names_get_short_result_folders(tmp_path):
    # a 250-byte input name: the staging folder .<name>.o3d-new-<pid> was over 255 bytes and o3d mesh
    # failed with "cannot write the results (File name too long)"
    from o3dcli.naming import NAME_MAX_BYTES

    stems = ["m" * 250, "網格" * 41 + "x"]
    for stem in stems:
        (tmp_path / f"{stem}.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["mesh", *(str(tmp_path / f"{s}.obj") for s in stems), "--formats", "glb",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(folders) == 2
    for stem, name in zip(sorted(stems), folders):
        assert stem.startswith(name[:-9]) and name[-9] == "-" and len(name.encode()) <= NAME_MAX_BYTES
        assert (out / name / "model.glb").is_file()


def test_a_folder_of_assets_meshes_each_asset_in_it(tmp_path):
    # `o3d mesh assets --decimate N` (an output folder) failed: "folder holds none of model.glb, ..."
    assets = tmp_path / "assets"
    for name in ("apple", "pear"):
        (assets / name).mkdir(parents=True)
        save_mesh_glb(assets / name / "model.glb", reference_shape("sphere"))
    save_mesh_glb(assets / "plum.glb", reference_shape("box"))
    (assets / "o3d-report.json").write_text("{}")
    (assets / ".o3d").mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["mesh", str(assets), "-d", "500", "--texture-size", "64", "--formats", "obj",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{assets}: 3 assets inside" in " ".join(result.output.split())
    assert {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")} == {"apple", "pear", "plum"}
    assert len(load_mesh(out / "pear" / "model.obj").faces) <= 500


def test_meshing_a_folder_into_itself_does_not_mesh_its_own_results_again(tmp_path):
    # `o3d mesh A -o A`: each run expanded A/box1.glb and the earlier result A/box1/, writing
    # A/box1-2/, then A/box1-2-2/, ... one more generation on every run
    folder = tmp_path / "A"
    folder.mkdir()
    for name in ("box1", "box2"):
        save_mesh_glb(folder / f"{name}.glb", reference_shape("sphere"))
    for run in range(3):
        result = CliRunner().invoke(app, ["mesh", str(folder), "-d", "500", "--texture-size", "64", "--formats", "glb",
                                          "-o", str(folder)])
        assert result.exit_code == 0, result.output
        assert {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")} == {"box1", "box2"}
        if run:
            assert "left out 2 folder(s) of results made from other inputs here" in " ".join(result.output.split())

    # A holding one mesh is one asset, meshed into A/A: its result is no second input on the next run
    single = tmp_path / "single"
    single.mkdir()
    save_mesh_glb(single / "s.glb", reference_shape("sphere"))
    for run in range(2):
        result = CliRunner().invoke(app, ["mesh", str(single), "-d", "500", "--texture-size", "64", "--formats", "glb",
                                          "-o", str(single)])
        assert result.exit_code == 0, result.output
        assert {p.name for p in single.iterdir() if not p.name.startswith(".")} == {
            "s.glb", "single", "o3d-mesh-report.json"}, result.output


def test_a_photo_or_an_asset_stopped_before_diffusion_is_told_what_to_run(good_images, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", str(out), "--stop-after",
                                   "preprocess", "--no-progress"])
    assert res.exit_code == 0, res.output
    expected = {good_images / "apple.png": "an image, not a 3D asset; o3d generate makes one from a photo",
                out / "apple": "an o3d asset with no Gaussians or mesh yet",
                out: "an o3d output folder none of whose assets has Gaussians or a mesh yet"}
    for path, message in expected.items():
        res = CliRunner().invoke(app, ["mesh", str(path), "-o", str(tmp_path / "m")])
        assert res.exit_code == 1 and message in " ".join(res.output.split()), res.output


def test_an_image_of_an_asset_or_an_eval_output_says_which_folder_to_give(good_images, tmp_path):
    # views.png of an asset was told "o3d generate .../views.png": a model's own views as a photo
    from o3dcli.inputs import EVAL_MARKER

    asset = tmp_path / "assets" / "crate"
    asset.mkdir(parents=True)
    save_gaussians(asset / "gaussians.ply", surface_gaussians(reference_shape("sphere"), 500, seed=1))
    (asset / "views.png").write_bytes((good_images / "apple.png").read_bytes())
    evaluated = tmp_path / "ev"
    (evaluated / "assets").mkdir(parents=True)
    (evaluated / EVAL_MARKER).write_text("o3d eval wrote this folder\n")
    expected = {asset / "views.png": f"an image of the o3d asset {asset}, not a 3D asset; give the asset folder",
                evaluated: f"an o3d eval output folder; its assets are in {evaluated / 'assets'}: give that folder"}
    for path, message in expected.items():
        for command in ("mesh", "render"):
            res = CliRunner().invoke(app, [command, str(path), "-o", str(tmp_path / "m")])
            assert res.exit_code == 1 and message in " ".join(res.output.split()), (command, res.output)
            assert "o3d generate" not in res.output


def test_an_asset_keeps_its_formats_and_the_result_records_only_mesh_settings(good_images, tmp_path):
    # an asset written as glb, stl (at 50 mm): re-meshed, the same formats and size unless asked
    # otherwise; the result's config.yaml holds the mesh section only (seed, steps, ... made nothing there)
    import yaml

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", str(out), "--steps", "1",
                                   "--formats", "glb,stl", "--set", "mesh.stl_size_mm=50", "--set", "preprocess.size=16",
                                   "--set", "mesh.resolution=48", "--set", "mesh.texture_size=128", "--no-progress"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["mesh", str(out / "apple"), "-d", "500", "-o", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    made = tmp_path / "m" / "apple"
    assert sorted(p.name for p in made.iterdir()) == ["config.yaml", "model.glb", "model.stl", "o3d-asset.json"]
    saved = yaml.safe_load((made / "config.yaml").read_text())
    assert list(saved) == ["mesh"] and saved["mesh"]["formats"] == ["glb", "stl"] and saved["mesh"]["stl_size_mm"] == 50
    assert saved["mesh"]["target_faces"] == 500
    res = CliRunner().invoke(app, ["mesh", str(out / "apple"), "-d", "500", "--formats", "obj", "-o", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in made.iterdir()) == ["config.yaml", "model.mtl", "model.obj", "model.png", "o3d-asset.json"]
    res = CliRunner().invoke(app, ["mesh", str(made), "-d", "400", "-o", str(tmp_path / "again"),
                                   "--preset", str(made / "config.yaml")])  # the result's settings, reused
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["mesh", str(out / "apple"), "-d", "500", "--preset", "tiny", "-o", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output  # the default preset named: as without it (tiny sets no formats)
    assert sorted(p.name for p in (tmp_path / "t" / "apple").glob("model.*")) == ["model.glb", "model.stl"]
    (tmp_path / "objs.yaml").write_text("base: tiny\nmesh:\n  formats: [obj]\n")
    res = CliRunner().invoke(app, ["mesh", str(out / "apple"), "-d", "500", "--preset", str(tmp_path / "objs.yaml"),
                                   "-o", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output  # a preset that sets formats: its own, not the asset's
    assert sorted(p.name for p in (tmp_path / "p" / "apple").glob("model.*")) == ["model.mtl", "model.obj", "model.png"]


def test_a_folder_of_photos_is_told_to_go_to_generate_and_leaves_no_output(good_images, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for command in (["mesh", str(good_images)], ["render", str(good_images), "-o", "renders"]):
        res = CliRunner().invoke(app, command)
        assert res.exit_code == 1 and "a folder of images, not of 3D assets; o3d generate makes assets from photos" \
            in " ".join(res.output.split()), res.output
        # no output folder (o3d-meshes/.o3d/items/<name>/.lock, o3d-mesh-report.json, renders/)
        assert list(work.iterdir()) == []


def test_a_mesh_left_above_the_target_is_said_once(tmp_path):
    # a surface with hundreds of handles cannot go down to 2,000 faces and stay closed: the line
    # that says so names the input, the face counts and why, once
    from test_mesh_pipeline import _lattice

    from o3dcli.geometry.mesh import TriMesh

    lattice = _lattice()
    src = tmp_path / "lattice.glb"
    save_mesh_glb(src, TriMesh(lattice.vertices, lattice.faces, material_color=(0.8, 0.8, 0.8)))
    res = CliRunner().invoke(app, ["mesh", str(src), "-o", str(tmp_path / "out"), "--decimate", "2000",
                                   "--formats", "glb"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    faces = len(load_mesh(tmp_path / "out" / "lattice" / "model.glb").faces)
    assert faces > 2000 and said.count("above the target") == 1, said
    assert f"! {src}: {faces} faces, above the target of 2000 (the surface has" in said


def test_the_report_describes_the_latest_run_and_leaves_generates_report_alone(tmp_path):
    for name in ("tri", "quad"):
        (tmp_path / f"{name}.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n")
    (tmp_path / "bad.obj").write_text("v 0 0 0\nf 1 2 3\n")
    out = tmp_path / "out"
    # an input that is no asset fails before anything is written: no folder, so no report named
    (tmp_path / "notes.txt").write_text("x")
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "notes.txt"), "-o", str(out)])
    assert res.exit_code == 1 and "0/1 succeeded" in res.output and "report:" not in res.output, res.output
    assert not out.exists()
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "bad.obj"), "-o", str(out)])
    assert res.exit_code == 1 and "0/1 succeeded; report:" in " ".join(res.output.split()), res.output
    assert [(i["name"], i["status"]) for i in json.loads((out / "o3d-mesh-report.json").read_text())["items"]] \
        == [("bad", "failed")]
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "tri.obj"), str(tmp_path / "quad.obj"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert f"2/2 succeeded; report: {out / 'o3d-mesh-report.json'}" in " ".join(res.output.split())
    first = json.loads((out / "o3d-mesh-report.json").read_text())
    assert first["summary"] == {"ok": 2}
    for item in first["items"]:  # open triangles: two boundary edges each side, not watertight
        assert item["mesh"] == {"faces": 2, "vertices": 4, "texture": None, "boundary_edges": 4,
                                "non_manifold_edges": 0, "watertight": False}, item
    generated = '{"items": [{"name": "tri", "status": "ok"}]}'  # o3d generate's, in the same folder
    (out / "o3d-report.json").write_text(generated)
    # a later run: its items only (the earlier runs ended before it began)
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "quad.obj"), str(tmp_path / "bad.obj"), "-o", str(out)])
    assert res.exit_code == 1, res.output
    second = json.loads((out / "o3d-mesh-report.json").read_text())
    assert [(i["name"], i["status"]) for i in second["items"]] == [("quad", "ok"), ("bad", "failed")]
    assert list(second["runs"]) == [second["run"]] != [first["run"]]
    assert second["items"][1]["input"] == str((tmp_path / "bad.obj").resolve())
    assert "outside the 1 defined" in second["items"][1]["error"]
    assert (out / "o3d-report.json").read_text() == generated
    assert not list((out / ".o3d" / "mesh-runs").iterdir())  # the run's mark is gone with it



@pytest.mark.parametrize("kind", ["glb", "obj", "usdz"])
def test_a_mesh_with_jpeg_textures_is_written_with_a_jpeg_texture(tmp_path, kind):
    # a scan's JPEG texture written back as PNG made its GLB six times larger: the input's format is
    # kept (as Blender's glTF export does), unless the command names one; PNG inputs stay PNG
    import yaml

    from o3dcli.io.export import save_mesh_obj
    from o3dcli.io.usdz import save_mesh_usdz
    from test_mesh_export import read_glb

    if kind == "usdz":
        pytest.importorskip("pxr")
    save = {"glb": save_mesh_glb, "obj": save_mesh_obj, "usdz": save_mesh_usdz}[kind]
    mesh = reference_shape("sphere", soft=0.2)
    jpeg, png = save(tmp_path / f"j.{kind}", mesh, texture_format="jpeg"), save(tmp_path / f"p.{kind}", mesh)

    def written(src: Path, out: Path, *extra: str) -> tuple[str, str, str]:
        """The result's GLB image type, OBJ texture file and config.yaml's texture_format."""
        res = CliRunner().invoke(app, ["mesh", str(src), "--formats", "glb,obj", "-o", str(out), *extra])
        assert res.exit_code == 0, res.output
        folder = out / src.stem
        doc, _ = read_glb(folder / "model.glb")
        textures = sorted(p.name for p in folder.iterdir() if p.stem == "model" and p.suffix in (".png", ".jpg"))
        conf = yaml.safe_load((folder / "config.yaml").read_text())["mesh"]["texture_format"]
        return doc["images"][0]["mimeType"], ",".join(textures), conf

    assert written(jpeg, tmp_path / "a") == ("image/jpeg", "model.jpg", "jpeg")
    assert written(png, tmp_path / "b") == ("image/png", "model.png", "png")
    # asked for: the command's choice
    assert written(jpeg, tmp_path / "c", "--set", "mesh.texture_format=png") == ("image/png", "model.png", "png")
    assert written(png, tmp_path / "d", "--set", "mesh.texture_format=jpeg") == ("image/jpeg", "model.jpg", "jpeg")


def test_a_jpeg_the_mesh_cannot_use_does_not_make_the_result_jpeg(tmp_path):
    # an OBJ with vertex colours and no texture coordinates, whose MTL names a JPEG: the texture is
    # not used (no UVs), the vertex colours are baked, and the bake stays lossless PNG
    import yaml
    from PIL import Image

    mesh = reference_shape("box")
    rows = [f"v {x:.6f} {y:.6f} {z:.6f} {x + 0.5:.3f} 0.2 0.7" for x, y, z in mesh.vertices.tolist()]
    rows += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces.tolist()]
    (tmp_path / "painted.obj").write_text("mtllib painted.mtl\nusemtl m\n" + "\n".join(rows) + "\n")
    (tmp_path / "painted.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd photo.jpg\n")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "photo.jpg")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "painted.obj"), "--formats", "obj", "-o", str(out),
                                   "--texture-size", "64"])
    assert res.exit_code == 0, res.output
    assert (out / "painted" / "model.png").is_file() and not (out / "painted" / "model.jpg").exists()
    assert yaml.safe_load((out / "painted" / "config.yaml").read_text())["mesh"]["texture_format"] == "png"
