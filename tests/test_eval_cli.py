"""`o3d eval` through the CLI: benchmarks, scoring existing predictions, reports, exit codes."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.eval.benchmarks import find_prediction, folder_objects, gso_objects, synthetic_objects
from o3dcli.synth.dataset import write_obj
from o3dcli.synth.objects import make_object

FAST = ["--size", "32", "--points", "2000", "--no-progress"]


def run(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def write_gso_object(root, name, mesh, textured: bool, gazebo_files: bool = True):
    """One object in the Google Scanned Objects layout: Z-up OBJ in meshes/, MTL naming texture.png,
    the texture in materials/textures/ (left out when not textured), model.sdf and model.config
    (left out with gazebo_files=False, as trimmed copies of the dataset do)."""
    d = root / name
    (d / "meshes").mkdir(parents=True)
    x, y, z = mesh.vertices.T
    write_obj(d / "meshes" / "model.obj", mesh.replace(vertices=np.stack([x, -z, y], 1)))  # our Y-up -> Z-up
    mtl = d / "meshes" / "model.mtl"
    mtl.write_text(mtl.read_text().replace("map_Kd model_texture.png", "map_Kd texture.png"))
    tex = d / "meshes" / "model_texture.png"
    if textured:
        (d / "materials" / "textures").mkdir(parents=True)
        shutil.move(tex, d / "materials" / "textures" / "texture.png")
    else:
        tex.unlink()
    if gazebo_files:
        (d / "model.sdf").write_text(f"<sdf version='1.6'><model name='{name}'></model></sdf>\n")
        (d / "model.config").write_text(f"<model><name>{name}</name></model>\n")
    return d


@pytest.fixture
def gso(tmp_path):
    """Two GSO objects in metres-like units (not the unit box), one without its texture, and a stray folder."""
    root = tmp_path / "gso"
    root.mkdir()
    for name, seed, textured in (("b_plain", 1_000_004, False), ("a_textured", 1_000_003, True)):
        m = make_object(seed)[0]
        write_gso_object(root, name, m.replace(vertices=m.vertices * 0.2 + np.array([0.05, 0.1, -0.02])), textured)
    (root / "a_renders").mkdir()  # not an object: no meshes/model.obj
    return root


def test_gso_loader_turns_z_up_into_y_up_and_flags_missing_textures(gso):
    objs = gso_objects(gso)
    assert [o.name for o in objs] == ["a_textured", "b_plain"]  # sorted; the stray folder skipped
    assert [o.appearance for o in objs] == [True, False]
    want = make_object(1_000_003)[0]
    got = objs[0].load()
    # rotated back and normalised (the OBJ reader merges repeated corners: compare triangles)
    assert np.allclose(got.vertices[got.faces], want.vertices[want.faces], atol=1e-5)
    assert got.has_texture and np.array_equal(got.texture, want.texture)
    assert not objs[1].load().has_texture
    assert [o.name for o in gso_objects(gso, limit=1)] == ["a_textured"]


def test_gso_objects_without_their_gazebo_files_are_still_z_up(tmp_path):
    # a trimmed copy of GSO (meshes/ and materials/ only) is still the Z-up dataset
    want = make_object(1_000_003)[0]
    write_gso_object(tmp_path, "trimmed", want, textured=True, gazebo_files=False)
    got = gso_objects(tmp_path)[0].load()
    assert np.allclose(got.vertices[got.faces], want.vertices[want.faces], atol=1e-5)


def test_synthetic_benchmark_seeds_and_names():
    objs = synthetic_objects(limit=3)
    assert [o.seed for o in objs] == [1_000_000, 1_000_001, 1_000_002]
    assert objs[1].name == "synth_01000001"
    assert [o.seed for o in synthetic_objects(["synth_01000042"])] == [1_000_042]
    with pytest.raises(ValueError, match="not an object"):
        synthetic_objects(["synth_00000042"])  # a training seed


@pytest.mark.parametrize("value, ok", [("1", True), ("-1", False), ("two", False)])
def test_scoring_predictions_honours_runtime_threads(gso, tmp_path, value, ok):
    # scoring is torch work too: "--set runtime.threads=1 is not used" left no way to limit it
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        res = run("--benchmark", "gso", "--data", gso, "--predictions", gso, "--limit", "1", "-o", tmp_path / "o",
                  "--set", f"runtime.threads={value}", *FAST)
        if ok:
            assert res.exit_code == 0 and "not used" not in res.output, res.output
            assert torch.get_num_threads() == 1
        else:
            assert res.exit_code == 2 and "runtime.threads must be a whole number" in res.output, res.output
        # a generation setting with --predictions is still said to be unused
        res = run("--benchmark", "gso", "--data", gso, "--predictions", gso, "--limit", "1", "-o", tmp_path / "o",
                  "--set", "runtime.threads=1", "--set", "diffusion.steps=3", *FAST)
        assert "--set is not used" in " ".join(res.output.split())
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("flag", ["--predictions", "--variants", "--lpips-weights"])
def test_an_empty_list_value_is_a_usage_error(tmp_path, flag):
    # --predictions "$PRED" with PRED unset switched silently to generating
    res = run("--benchmark", "synthetic", "--limit", "1", flag, "", "-o", tmp_path / "o", *FAST)
    assert res.exit_code == 2 and "an empty value" in res.output, res.output


def test_trimmed_gso_predictions_are_read_z_up_like_the_ground_truth(tmp_path):
    from o3dcli.eval.benchmarks import load_prediction

    want = make_object(1_000_003)[0]
    write_gso_object(tmp_path, "trimmed", want, textured=False, gazebo_files=False)
    got = load_prediction(tmp_path / "trimmed")
    assert np.allclose(got.vertices[got.faces], want.vertices[want.faces], atol=1e-5)


def test_gso_predictions_that_are_the_ground_truth_score_perfectly(gso, tmp_path):
    preds = tmp_path / "preds"
    shutil.copytree(gso, preds)  # another tool's output in its own units: --align box brings it home
    out = tmp_path / "out"
    res = run("--benchmark", "gso", "--data", gso, "--predictions", preds, "--align", "box", "-o", out, *FAST)
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "eval.json").read_text())
    by = {r["object"]: r for r in rep["results"]}
    for r in by.values():
        m = r["metrics"]
        assert r["status"] == "ok" and r["kind"] == "mesh"
        assert m["chamfer"] < 1e-6 and m["fscore@0.02"] == 1.0 and m["volume_iou"] == 1.0 and m["mask_iou"] == 1.0
        assert m["normal_consistency"] == pytest.approx(1.0)
        assert r["alignment"]["scale"] == pytest.approx(1 / (0.2 * 1.0), rel=1e-3)
    textured = by["a_textured"]["metrics"]
    assert textured["psnr"] > 40
    assert textured["ssim"] == pytest.approx(1.0, abs=1e-3)
    plain = by["b_plain"]["metrics"]  # no texture: geometry and silhouettes only
    assert plain["psnr"] is None and plain["ssim"] is None and plain["lpips"] is None
    assert rep["protocol"]["align"] == "box" and rep["benchmark"]["objects"][1]["appearance"] is False
    grid = Image.open(out / "renders" / "preds" / "a_textured.png")
    assert grid.size == (8 * 32, 2 * 32)  # GT row over prediction row, 8 views


def _lpips_file(tmp_path):
    from o3dcli.eval.lpips import LPIPS

    torch.manual_seed(0)
    sd = LPIPS().state_dict()
    path = tmp_path / "lpips_random.pth"
    # the LPIPS package's names for the heads (lin0.model.1.weight), which are >= 0 there
    torch.save({(f"{k.split('.')[0]}.model.1.weight" if k.startswith("lin") else k): (v.abs() if k.startswith("lin") else v)
                for k, v in sd.items()}, path)
    return path


def test_synthetic_predictions_with_gt_meshes_and_lpips(tmp_path):
    preds = tmp_path / "preds"
    preds.mkdir()
    for o in synthetic_objects(limit=2):
        write_obj(preds / f"{o.name}.obj", o.load())  # any tool's layout: DIR/<object>.obj
    out = tmp_path / "out"
    res = run("--benchmark", "synthetic", "--limit", "2", "--predictions", preds, "-o", out,
              "--lpips-weights", _lpips_file(tmp_path), "--set", "diffusion.steps=3", "--align", "None",
              "--asset", "Mesh", *FAST)  # choices in any case
    assert res.exit_code == 0, res.output
    assert "note: --set is not used" in res.output  # nothing is generated: said, not silently dropped
    rep = json.loads((out / "eval.json").read_text())
    assert [o["seed"] for o in rep["benchmark"]["objects"]] == [1_000_000, 1_000_001]
    for r in rep["results"]:
        m = r["metrics"]
        assert m["psnr"] == m["psnr_masked"] == 60.0 and m["ssim"] == 1.0 and m["lpips"] == 0.0  # PSNR capped
        assert m["chamfer"] == 0.0 and m["fscore@0.05"] == 1.0 and m["volume_iou"] == 1.0
    mean = rep["variants"][0]["mean"]
    assert mean["chamfer"] == 0.0 and mean["psnr"] == 60.0 and rep["variants"][0]["objects_ok"] == 2
    rows = list(csv.DictReader((out / "eval.csv").open()))
    assert [r["object"] for r in rows] == ["synth_01000000", "synth_01000001", "MEAN"]
    assert rows[0]["psnr"] == "60.00" and rows[0]["lpips"] == "0.0000" and rows[0]["gen_seconds"] == ""
    assert rows[2]["status"] == "mean" and float(rows[2]["chamfer"]) == 0.0  # numeric columns stay numeric
    md = (out / "eval.md").read_text()
    assert "o3d-eval-2" in md and "| **mean** |" in md and "synth_01000001" in md
    assert "## Columns" in md and "fscore@t** (t = 0.02, 0.05, 0.1)" in md
    assert "synth_01000000" in res.output and "mean" in res.output


def test_folder_benchmark_and_missing_predictions_exit_1(tmp_path):
    import trimesh

    data = tmp_path / "meshes"
    data.mkdir()
    a = make_object(1_000_005)[0]
    write_obj(data / "chair.obj", a)
    b = make_object(1_000_006)[0]
    trimesh.Trimesh(b.vertices, b.faces).export(data / "chair.ply")  # same stem: named chair-2
    assert [o.name for o in folder_objects(data)] == ["chair", "chair-2"]
    preds = tmp_path / "preds"
    (preds / "chair").mkdir(parents=True)
    write_obj(preds / "chair" / "model.obj", a)  # an o3d asset folder
    assert find_prediction(preds, "chair") == preds / "chair" / "model.obj"
    # other tools' files: an STL (Z-up) or a USDZ at the top of the predictions folder
    from o3dcli.eval.benchmarks import load_prediction
    from o3dcli.io.export import save_mesh_stl

    save_mesh_stl(preds / "table.stl", a)
    assert find_prediction(preds, "table") == preds / "table.stl"
    extent = lambda m: np.ptp(m.vertices, axis=0) / np.ptp(m.vertices, axis=0).max()  # noqa: E731
    assert np.allclose(extent(load_prediction(preds / "table.stl")), extent(a), atol=1e-5)  # turned back to Y-up
    (preds / "stool.usdz").write_bytes(b"")
    assert find_prediction(preds, "stool") == preds / "stool.usdz"
    # a suffix in upper case (Windows tools), a folder of several meshes: the one named after the object
    (preds / "lamp.GLB").write_bytes(b"")
    assert find_prediction(preds, "lamp") == preds / "lamp.GLB"
    (preds / "vase").mkdir()
    for f in ("vase.ply", "other.ply"):
        (preds / "vase" / f).write_bytes(b"")
    assert find_prediction(preds, "vase") == preds / "vase" / "vase.ply"
    (preds / "vase" / "vase.ply").unlink()
    (preds / "vase" / "third.obj").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"vase: holds 2 meshes \(other.ply, third.obj\), none named"):
        find_prediction(preds, "vase")
    # --asset views or gaussians asks for what only an o3d asset folder has: another tool's mesh is
    # refused, not scored as a mesh beside the others' views (the mean then mixed the two)
    (preds / "chair" / "views.png").write_bytes(b"")
    assert find_prediction(preds, "chair", "views") == preds / "chair" / "views.png"
    assert find_prediction(preds, "chair", "mesh") == preds / "chair" / "model.obj"
    for asset in ("views", "gaussians"):
        with pytest.raises(FileNotFoundError, match=rf"table.stl: not .*--asset {asset} scores"):
            find_prediction(preds, "table", asset)
    assert find_prediction(preds, "table", "mesh") == preds / "table.stl"
    (preds / "splats.ply").write_bytes(b"")  # a .ply may hold Gaussians: loaded, and judged, as it is
    assert find_prediction(preds, "splats", "gaussians") == preds / "splats.ply"
    with pytest.raises(FileNotFoundError, match="splats.ply: not views.png"):
        find_prediction(preds, "splats", "views")
    out = tmp_path / "out"
    res = run("--benchmark", "folder", "--data", data, "--predictions", preds, "-o", out, *FAST)
    assert res.exit_code == 1, res.output
    assert "no prediction for 'chair-2'" in res.output
    rep = json.loads((out / "eval.json").read_text())
    by = {r["object"]: r for r in rep["results"]}
    assert by["chair"]["status"] == "ok" and by["chair"]["metrics"]["chamfer"] == 0.0
    assert by["chair-2"]["status"] == "failed" and "chair-2" in by["chair-2"]["error"]
    assert rep["variants"][0]["objects_failed"] == 1


@pytest.mark.parametrize("args, message", [
    (["--benchmark", "gso"], "needs --data"),
    (["--benchmark", "folder", "--data", "/nonexistent-o3d"], "not a folder"),
    (["--benchmark", "lsun"], "--benchmark must be"),
    (["--benchmark", "gso", "--data", str(Path(__file__).parent)], "use --benchmark folder"),  # not the GSO layout
    (["--objects", "synth_01000001,nope"], "not an object"),
    (["--align", "umeyama"], "--align must be"),
    (["--predictions", ".", "--variants", "tiny"], "give one of them"),
    (["--predictions", "/nonexistent-o3d"], "not a folder"),
    (["--lpips-weights", "/nonexistent-o3d/vgg.pth", "--predictions", "."], "not found"),
    (["--set", "diffusion.stepz=1"], "unknown key"),
    (["--views", "1", "--novel-views"], "--novel-views leaves no view to score"),
    (["--data", "."], "the synthetic benchmark makes its objects"),
    # checked before anything is written, as o3d generate does (each object failed on them, exit 1)
    (["--set", "model.weights=/nonexistent-o3d/w.safetensors"], "/nonexistent-o3d/w.safetensors"),
    (["--set", "runtime.device=cpu", "--set", "runtime.dtype=float16"], "needs a CUDA device"),
    (["--preset", "ouroboros3d-svd-lgm"], "model.published_unet"),
    # bounded: --views 100000 took all 24 GB of the machine before scoring anything
    # (click words the range differently from release to release: only the bound is sure to be said)
    (["--views", "100000"], "360"), (["--size", "100000"], "2048"), (["--points", "1000000000"], "2000000"),
    (["--views", "360", "--size", "2048"], "--views 360 at --size 2048 is 1,509,949,440 pixels per object"),
    (["--views", "300", "--size", "512"], "--views 300 at --size 512"),
])
def test_usage_errors_exit_2(args, message, tmp_path):
    res = run(*args, "-o", tmp_path / "out", "--no-progress")
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_matting_tool_that_is_not_installed_is_a_usage_error(tmp_path, monkeypatch):
    from o3dcli import matting

    def missing():
        raise matting.RembgUnavailable("rembg is not installed (test)")

    monkeypatch.setattr(matting, "_import_rembg", missing)
    res = run("--set", "preprocess.matting=rembg", "--limit", "1", "-o", tmp_path / "out", "--no-progress")
    assert res.exit_code == 2 and "preprocess.matting=rembg but rembg is not installed" in " ".join(res.output.split())
    assert not (tmp_path / "out").exists()


def test_a_missing_matting_tool_with_a_cache_warns_and_the_uncached_objects_fail(tmp_path, monkeypatch):
    from o3dcli import matting

    def missing():
        raise matting.RembgUnavailable("rembg is not installed (test)")

    monkeypatch.setattr(matting, "_import_rembg", missing)
    (tmp_path / "out" / "assets" / ".o3d" / "items").mkdir(parents=True)  # an earlier run's cache
    res = run("--set", "preprocess.matting=rembg", "--limit", "1", "-o", tmp_path / "out", *FAST)
    said = " ".join(res.output.split())
    assert res.exit_code == 1, res.output  # the one object is not cached: it fails, and the run says so
    assert "preprocess.matting=rembg but rembg is not installed" in said
    assert "the items whose preprocessing is not cached will fail" in said  # told before it runs


def test_asset_option_picks_the_mesh_or_the_gaussians(tmp_path):
    from o3dcli.eval.geometry import sample_surface
    from o3dcli.geometry.gaussians import Gaussians
    from o3dcli.io.ply import save_gaussians

    obj = synthetic_objects(limit=1)[0]
    mesh = obj.load()
    folder = tmp_path / "preds" / obj.name  # an o3d asset folder holding both
    folder.mkdir(parents=True)
    write_obj(folder / "model.obj", mesh)
    pts = torch.from_numpy(sample_surface(mesh, 4000, seed=0).points).float()
    n = len(pts)
    save_gaussians(folder / "gaussians.ply", Gaussians(pts, torch.full((n, 3), 0.01), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                                                       torch.full((n,), 0.9), torch.full((n, 3), 0.5)))
    kinds = {}
    for asset in ("auto", "mesh", "gaussians"):
        out = tmp_path / asset
        res = run("--benchmark", "synthetic", "--limit", "1", "--predictions", tmp_path / "preds", "-o", out,
                  "--asset", asset, *FAST)
        assert res.exit_code == 0, res.output
        rep = json.loads((out / "eval.json").read_text())
        assert rep["protocol"]["asset"] == asset
        kinds[asset] = (rep["results"][0]["kind"], rep["results"][0]["metrics"]["chamfer"])
    assert kinds["auto"][0] == kinds["mesh"][0] == "mesh" and kinds["auto"][1] == 0.0
    assert kinds["gaussians"][0] == "gaussians" and 0 < kinds["gaussians"][1] < 0.02  # points on the surface
    res = run("--benchmark", "synthetic", "--limit", "1", "--predictions", tmp_path / "preds", "-o", tmp_path / "x",
              "--asset", "nope", *FAST)
    assert res.exit_code == 2 and "--asset" in res.output


def test_asset_views_scores_the_generated_images(tmp_path):
    import torch.nn.functional as F
    import yaml

    from o3dcli.eval.protocol import EvalProtocol, prepare_reference
    from o3dcli.io.media import image_grid, save_png, to_uint8

    obj = synthetic_objects(limit=1)[0]
    ref = prepare_reference(obj.load(), EvalProtocol(size=32))
    small = F.interpolate(ref.views.rgb, size=(16, 16), mode="area")  # what a 16 px model would draw if perfect
    for name, views in (("exact", small), ("rolled", small.roll(1, 0))):  # rolled: every view at the wrong camera
        (tmp_path / name / obj.name).mkdir(parents=True)
        save_png(tmp_path / name / obj.name / "views.png", image_grid(to_uint8(views), cols=8))
    res = run("--benchmark", "synthetic", "--limit", "1", "--predictions", f"{tmp_path / 'exact'},{tmp_path / 'rolled'}",
              "-o", tmp_path / "out", "--asset", "views", *FAST)
    assert res.exit_code == 0, res.output
    rows = {r["variant"]: r for r in json.loads((tmp_path / "out" / "eval.json").read_text())["results"]}
    exact, rolled = rows["exact"]["metrics"], rows["rolled"]["metrics"]
    assert rows["exact"]["kind"] == "views" and exact["chamfer"] is None and exact["mask_iou"] is None
    assert exact["psnr"] > 45 and exact["ssim"] > 0.99  # only 8-bit rounding differs
    assert rolled["psnr"] < exact["psnr"] - 20 and rolled["ssim"] < exact["ssim"]
    # views made at other cameras are refused, naming the file; and views cannot be aligned
    cams = {"elevations": [0.0] * 8, "azimuths": [0, 30, 60, 90, 120, 150, 180, 210], "fov_deg": 39.6, "radius": 1.7417}
    (tmp_path / "exact" / obj.name / "config.yaml").write_text(yaml.safe_dump({"cameras": cams}))
    res = run("--benchmark", "synthetic", "--limit", "1", "--predictions", tmp_path / "exact", "-o", tmp_path / "o2",
              "--asset", "views", *FAST)
    assert res.exit_code == 1
    err = json.loads((tmp_path / "o2" / "eval.json").read_text())["results"][0]["error"]
    assert "views.png" in err and "other cameras" in err
    res = run("--benchmark", "synthetic", "--limit", "1", "--predictions", tmp_path / "exact", "-o", tmp_path / "o3",
              "--asset", "views", "--align", "icp", *FAST)
    assert res.exit_code == 2 and "cannot be aligned" in res.output


def test_predictions_out_of_the_ground_truths_frame_are_pointed_at_align(tmp_path):
    data, preds = tmp_path / "gt", tmp_path / "p"
    data.mkdir()
    preds.mkdir()
    a, b = make_object(1_000_001)[0], make_object(1_000_002)[0]
    write_obj(data / "a.obj", a)
    write_obj(data / "b.obj", b)
    write_obj(preds / "a.obj", a.replace(vertices=a.vertices * 3.0))  # another tool's units
    write_obj(preds / "b.obj", b)
    res = run("--benchmark", "folder", "--data", data, "--predictions", preds, "-o", tmp_path / "o1", *FAST)
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and "p: a is 3 times the size of the ground truth's" in said and "--align box" in said
    assert said.count("times the size") == 1  # once per variant
    res = run("--benchmark", "folder", "--data", data, "--predictions", preds, "-o", tmp_path / "o2", "--align", "box",
              *FAST)
    assert res.exit_code == 0 and "times the size" not in res.output


def test_scoring_processes_tell_an_off_frame_variant_once(tmp_path):
    data, preds = tmp_path / "gt", tmp_path / "p"
    data.mkdir()
    preds.mkdir()
    for name, seed in (("a", 1_000_001), ("b", 1_000_002), ("c", 1_000_003)):
        mesh = make_object(seed)[0]
        write_obj(data / f"{name}.obj", mesh)
        write_obj(preds / f"{name}.obj", mesh.replace(vertices=mesh.vertices * 3.0))  # every one off
    res = run("--benchmark", "folder", "--data", data, "--predictions", preds, "-o", tmp_path / "o1", "--jobs", "2",
              *FAST)
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and ", 2 processes" in said, res.output
    assert said.count("times the size") == 1 and "--align box" in said  # once per variant, from either process
    rows = json.loads((tmp_path / "o1" / "eval.json").read_text())["results"]
    assert [r["object"] for r in rows] == ["a", "b", "c"] and all(r["status"] == "ok" for r in rows)


def test_views_of_an_object_without_colour_are_not_scored_as_ok(gso, tmp_path):
    # --asset views has colour metrics only; a GSO object without its texture has none: all n/a was "ok"
    from o3dcli.io.media import image_grid, save_png

    for name in ("a_textured", "b_plain"):
        (tmp_path / "p" / name).mkdir(parents=True)
        save_png(tmp_path / "p" / name / "views.png", image_grid(np.full((8, 16, 16, 3), 200, np.uint8), cols=8))
    res = run("--benchmark", "gso", "--data", gso, "--predictions", tmp_path / "p", "-o", tmp_path / "out",
              "--asset", "views", *FAST)
    assert res.exit_code == 1, res.output
    rows = {r["object"]: r for r in json.loads((tmp_path / "out" / "eval.json").read_text())["results"]}
    assert rows["a_textured"]["status"] == "ok" and rows["a_textured"]["metrics"]["psnr"] is not None
    assert rows["b_plain"]["status"] == "failed"
    assert "nothing could be scored: the ground truth has no colour" in rows["b_plain"]["error"]


def test_novel_views_leave_the_input_view_out_of_the_image_metrics(tmp_path):
    import torch.nn.functional as F

    from o3dcli.eval.metrics import psnr, quantize8
    from o3dcli.eval.protocol import EvalProtocol, prepare_reference
    from o3dcli.io.media import image_grid, save_png, to_uint8

    obj = synthetic_objects(limit=1)[0]
    ref = prepare_reference(obj.load(), EvalProtocol(size=32))
    views = F.interpolate(ref.views.rgb, size=(16, 16), mode="area")
    views[1:] = 0.5  # view 0 (the input view) right, the novel views grey
    (tmp_path / "p" / obj.name).mkdir(parents=True)
    save_png(tmp_path / "p" / obj.name / "views.png", image_grid(to_uint8(views), cols=8))
    scores = {}
    for flag in ([], ["--novel-views"]):
        out = tmp_path / ("novel" if flag else "all")
        res = run("--benchmark", "synthetic", "--limit", "1", "--predictions", tmp_path / "p", "-o", out,
                  "--asset", "views", *flag, *FAST)
        assert res.exit_code == 0, res.output
        rep = json.loads((out / "eval.json").read_text())
        assert rep["protocol"]["novel_views"] == bool(flag)
        scores[bool(flag)] = rep["results"][0]["metrics"]["psnr"]
    assert "novel views only" in (tmp_path / "novel" / "eval.md").read_text()
    # the grey views' PSNRs, averaged over views 1..7; with view 0 (right, ~50 dB) averaged in, higher
    gt = quantize8(F.interpolate(ref.views.rgb, size=(16, 16), mode="area"))
    per_view = psnr(quantize8(views), gt)
    assert scores[True] == pytest.approx(float(per_view[1:].mean()), abs=0.05)
    assert scores[False] > scores[True] + 2


def test_an_output_that_is_a_file_is_a_usage_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    res = run("--benchmark", "synthetic", "--limit", "1", "-o", afile, "--no-progress")
    assert res.exit_code == 2 and "not a folder" in res.output and afile.read_text() == "keep me"


def test_predictions_with_nothing_to_score_are_a_usage_error_that_points_inside(tmp_path):
    # an eval output folder given instead of its assets/: refused up front, pointing at assets/
    preds = tmp_path / "ev" / "assets"
    (preds / "synth_01000000").mkdir(parents=True)
    write_obj(preds / "synth_01000000" / "model.obj", make_object(1_000_000)[0])
    (tmp_path / "ev" / "eval.json").write_text("{}")
    res = run("--benchmark", "synthetic", "--limit", "2", "--predictions", tmp_path / "ev", "-o", tmp_path / "o", *FAST)
    assert res.exit_code == 2, res.output
    assert "none of the 2 benchmark objects has a prediction" in res.output
    assert "no prediction for 'synth_01000000'" in res.output and str(preds) in res.output
    assert not (tmp_path / "o").exists()
