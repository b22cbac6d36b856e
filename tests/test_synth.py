"""Procedural objects, rendered-object folders and `o3d data synth` (o3dcli.synth, o3dcli.commands.data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from o3dcli.geometry.cameras import orbit_cameras
from o3dcli.synth.dataset import RenderedObjectError, load_rendered_object, read_index, write_obj
from o3dcli.synth.generate import SynthSettings, render_object, straight_rgba, synthesize, view_plan
from o3dcli.synth.objects import make_object, signed_volume
from o3dcli.synth.primitives import PRIMITIVE_KINDS, primitive_mesh
from o3dcli.synth.textures import build_atlas, pattern_weight, tile_uv

SMALL = dict(size=24, extra_views=1)


def welded_edges_balanced(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Closed and consistently wound: after welding equal positions, every directed edge
    (a, b) is matched by exactly one (b, a)."""
    _, ids = np.unique(np.round(vertices, 6), axis=0, return_inverse=True)
    f = ids.reshape(-1)[faces]
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    fwd = {tuple(e) for e in edges.tolist()}
    return len(fwd) == len(edges) and all((b, a) in fwd for a, b in fwd)


# analytic volumes in the local frame (radius 1 / half-size 1 / height -1..1)
R_TUBE, R_CAPS = 0.3, 0.5
VOLUMES = {
    "box": 8.0, "sphere": 4 / 3 * np.pi, "cylinder": 2 * np.pi, "cone": 2 * np.pi / 3,
    "torus": 2 * np.pi**2 * (1 - R_TUBE) * R_TUBE**2,
    "capsule": np.pi * R_CAPS**2 * 2 * (1 - R_CAPS) + 4 / 3 * np.pi * R_CAPS**3,
}


@pytest.mark.parametrize("kind", PRIMITIVE_KINDS)
def test_primitive_is_closed_outward_with_the_analytic_volume(kind):
    p = primitive_mesh(kind)
    assert welded_edges_balanced(p.vertices, p.faces)
    tri = p.vertices[p.faces]
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    # inscribed polygons under-estimate: a 32-gon has 0.6% less area than its circle, a
    # 16-gon 2.5% less, so the torus (16-gon tube swept by a 32-gon) keeps ~96.8%
    assert VOLUMES[kind] * 0.96 < vol <= VOLUMES[kind] * (1 + 1e-9)
    assert p.uv.min() >= 0 and p.uv.max() <= 1


def test_make_object_is_deterministic_per_seed():
    a, spec_a = make_object(7)
    b, spec_b = make_object(7)
    for k in ("vertices", "faces", "uv", "texture"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert spec_a == spec_b
    c, _ = make_object(8)
    assert c.vertices.shape != a.vertices.shape or not np.array_equal(c.vertices, a.vertices)


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_object_in_unit_box_closed_and_outward(seed):
    mesh, spec = make_object(seed)
    lo, hi = mesh.bounds()
    assert abs(float((hi - lo).max()) - 1.0) < 1e-5
    assert np.abs((lo + hi) / 2).max() < 1e-6
    assert 1 <= len(spec["primitives"]) <= 4
    assert signed_volume(mesh) > 0
    norm = spec["normalization"]
    normals = mesh.face_normals().astype(np.float64)
    centroids = mesh.vertices[mesh.faces].astype(np.float64).mean(1) / norm["scale"] + norm["center"]
    grid = spec["atlas"]["grid"]
    for k, prim in enumerate(spec["primitives"]):
        f0, f1 = prim["face_range"]
        v0, v1 = prim["vertex_range"]
        assert welded_edges_balanced(mesh.vertices[v0:v1], mesh.faces[f0:f1] - v0)
        rot, half = np.array(prim["rotation"]), np.array(prim["half_extents"])
        # faces point away from the primitive's centre (for a torus: its core circle),
        # tested in the local frame: points map by (R H)^-1, normals by (R H)^T
        p_local = ((centroids[f0:f1] - prim["translation"]) @ rot) / half
        n_local = (normals[f0:f1] @ rot) * half
        centre = np.zeros_like(p_local)
        if prim["kind"] == "torus":
            ring = p_local * [1, 0, 1]
            centre = ring / np.linalg.norm(ring, axis=1, keepdims=True) * prim["anchor"][0]
        assert (np.einsum("ij,ij->i", n_local, p_local - centre) > 0).all(), prim["kind"]
        # each primitive's UVs stay inside its own atlas tile
        uv = mesh.uv[v0:v1]
        col, row = k % grid, k // grid
        assert (uv[:, 0] > col / grid).all() and (uv[:, 0] < (col + 1) / grid).all()
        assert (uv[:, 1] > row / grid).all() and (uv[:, 1] < (row + 1) / grid).all()


def test_atlas_tiles_are_placed_where_their_uvs_point():
    red, blue, green = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]
    specs = [{"pattern": "checks", "colors": [red, blue], "frequency": [2, 2]},
             {"pattern": "solid", "colors": [green, green]}]
    atlas = build_atlas(specs, 32)  # grid 2: tile 0 bottom-left, tile 1 bottom-right
    local = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5, 0.5]])
    for tile, want in ((0, [red, blue, blue]), (1, [green, green, green])):
        uv = tile_uv(local, tile, 2, 32)
        px = np.floor(uv[:, 0] * 64).astype(int), np.floor((1 - uv[:, 1]) * 64).astype(int)
        got = atlas[px[1], px[0]] / 255.0
        np.testing.assert_array_equal(got[:3], want)
    # checks: cell (0, 0) has colour 0, its neighbours colour 1
    assert pattern_weight(specs[0], np.array([0.1, 0.6]), np.array([0.1, 0.1])).tolist() == [0, 1]


def test_straight_rgba_unpremultiplies_edges():
    rgb = torch.tensor([0.2, 0.1, 0.05]).reshape(1, 3, 1, 1).repeat(1, 1, 1, 2)
    alpha = torch.tensor([0.25, 0.0]).reshape(1, 1, 1, 2)
    out = straight_rgba(rgb, alpha)
    assert out[0, 0, 0].tolist() == [204, 102, 51, 64]  # 0.8, 0.4, 0.2 straight; alpha 0.25
    assert out[0, 0, 1].tolist() == [255, 255, 255, 0]  # empty pixels hold the white background


def test_view_plan_uses_published_generation_cameras_then_extras():
    views = view_plan(3, SynthSettings(extra_views=50))
    assert [v["azimuth"] for v in views[:8]] == [0, 45, 90, 135, 180, 225, 270, 337.5]
    assert all(v["elevation"] == 0 and v["kind"] == "generation" for v in views[:8])
    extra = views[8:]
    assert len(extra) == 50 and all(v["kind"] == "extra" for v in extra)
    el = np.array([v["elevation"] for v in extra])
    az = np.array([v["azimuth"] for v in extra])
    assert el.min() >= -10 and el.max() <= 40 and az.min() >= 0 and az.max() < 360
    assert el.max() - el.min() > 30 and az.max() - az.min() > 200  # spread over the ranges
    assert views == view_plan(3, SynthSettings(extra_views=50))


def test_folder_round_trip_determinism_and_resume(tmp_path):
    settings = SynthSettings(**SMALL)
    events = []
    folders = synthesize(tmp_path / "a", 2, 5, **SMALL, on_object=lambda *e: events.append(e[:2]))
    assert [f.name for f in folders] == ["synth_00000005", "synth_00000006"]
    assert sorted((f.name, s) for f, s in events) == [("synth_00000005", False), ("synth_00000006", False)]
    assert not (tmp_path / "a" / ".tmp").exists()  # the staging folder goes once every object is in place
    obj = load_rendered_object(folders[0])
    mesh, _, views, cams, rgba = render_object(5, settings)
    assert obj.images.shape == (9, 4, 24, 24)
    assert torch.equal(obj.images, torch.from_numpy(rgba).permute(0, 3, 1, 2).float() / 255)
    expect = orbit_cameras([v["elevation"] for v in views], [v["azimuth"] for v in views], 1.7417, 39.6, 24)
    for k in ("c2w", "fx", "fy", "cx", "cy"):
        assert torch.equal(getattr(obj.cameras, k), getattr(expect, k)), k
    assert obj.kinds == ["generation"] * 8 + ["extra"] and obj.generation_indices == list(range(8))
    assert obj.meta["shading"] == "lambert" and obj.meta["seed"] == 5
    alpha = obj.images[:, 3]
    assert 0.05 < alpha.mean() < 0.6 and alpha.amax() == 1  # the object is in view, not clipped away
    assert obj.mesh_path.name == "mesh.obj" and (folders[0] / "mesh_texture.png").is_file()
    index = read_index(tmp_path / "a")
    assert index["seed_range"] == [5, 6] and [o["seed"] for o in index["objects"]] == [5, 6]
    # same seeds -> identical bytes; other seeds -> other images
    synthesize(tmp_path / "b", 1, 5, **SMALL)
    for f in sorted(p for p in folders[0].rglob("*") if p.is_file()):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f.name
    assert (folders[0] / "rgba/000.png").read_bytes() != (folders[1] / "rgba/000.png").read_bytes()
    # resume: complete objects are skipped, untouched; new seeds are made
    stamp = (folders[0] / "rgba/000.png").stat().st_mtime_ns
    events.clear()
    synthesize(tmp_path / "a", 3, 5, **SMALL, on_object=lambda *e: events.append((e[0].name, e[1])))
    assert sorted(events) == [("synth_00000005", True), ("synth_00000006", True), ("synth_00000007", False)]
    assert (folders[0] / "rgba/000.png").stat().st_mtime_ns == stamp
    assert read_index(tmp_path / "a")["seed_range"] == [5, 7]
    with pytest.raises(ValueError, match="index.json.*other settings") as err:
        synthesize(tmp_path / "a", 1, 5, size=32, extra_views=1)
    # the difference is named, not every setting
    assert f"size {SMALL['size']} (asked 32)" in str(err.value) and "shading" not in str(err.value)


def test_staging_folder_removed_by_another_process_mid_write(tmp_path, monkeypatch):
    """Another process that finishes removes the empty .tmp; one that was just creating its own
    staging folder inside it tries again rather than failing the object."""
    import shutil

    from o3dcli.synth import dataset

    mesh, _, views, _, rgba = render_object(5, SynthSettings(**SMALL))
    views = [{"file": f"rgba/{i:03d}.png"} for i in range(len(views))]
    real_mkdir, removed = Path.mkdir, []

    def racing_mkdir(self, *args, **kwargs):
        if self.name == "rgba" and not removed:
            real_mkdir(self.parent.parent, exist_ok=True)  # .tmp exists ...
            shutil.rmtree(self.parent.parent)  # ... and the other process removes it
            removed.append(self)
            raise FileNotFoundError(self)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    folder = dataset.write_rendered_object(tmp_path, "obj", rgba, {"views": views}, mesh)
    assert removed and (folder / "cameras.json").is_file() and len(list((folder / "rgba").iterdir())) == len(views)


STALLED_SYNTH = """
import sys
from o3dcli.synth import dataset
from o3dcli.synth.generate import synthesize

real = dataset._write_json
def stalled(path, data):
    real(path, data)
    if path.name == "cameras.json":  # the object's last file is written, its folder not yet renamed
        print(path.parent, flush=True)
        sys.stdin.readline()
dataset._write_json = stalled
synthesize(sys.argv[1], 1, int(sys.argv[2]), size=16, extra_views=0)
"""


def _stalled_synth(root: Path, seed: int) -> tuple[subprocess.Popen, Path]:
    """An `o3d data synth` process stopped with its object's files in .tmp, about to rename them."""
    p = subprocess.Popen([sys.executable, "-c", STALLED_SYNTH, str(root), str(seed)], cwd=Path(__file__).parents[1],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    assert line, "the writer stopped before its marker"
    return p, Path(line)


@pytest.mark.interrupts
def test_a_killed_synths_half_objects_are_removed_by_the_next_run_not_a_running_ones(tmp_path):
    root = tmp_path / "ds"
    running, busy = _stalled_synth(root, 1)
    try:
        killed, left = _stalled_synth(root, 0)  # (its own start keeps `running`'s folder)
        killed.kill()  # kill -9 with its object half-way: the folder stays in .tmp
        killed.wait()
        assert left.is_dir() and left.parent == root / ".tmp" and busy.is_dir()
        synthesize(root, 1, 0, size=16, extra_views=0)  # a later run, while `running` still writes
        assert not left.exists() and not left.with_name(left.name + ".lock").exists()
        assert (busy / "cameras.json").is_file()  # a running writer's work is never removed
        running.communicate("go\n", timeout=300)
        assert running.returncode == 0
    finally:
        for p in (running, killed):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["synth_00000000", "synth_00000001"]
    assert not (root / ".tmp").exists()  # the staging folder goes once no object is in it


def test_a_staging_folder_whose_writer_holds_its_lock_is_kept(tmp_path):
    from o3dcli.synth.dataset import _flock, clean_staging

    staging = tmp_path / ".tmp"
    (staging / "synth_00000003.1234").mkdir(parents=True)  # a writer at work (holds the lock)
    (staging / "synth_00000004.1235").mkdir()  # an older o3d's leftover: no lock file
    (staging / "synth_00000005.1236.lock").touch()  # a writer killed before its folder was made
    fd = _flock(staging / "synth_00000003.1234.lock", blocking=False)
    try:
        assert clean_staging(tmp_path) == 1
        assert sorted(p.name for p in staging.iterdir()) == ["synth_00000003.1234", "synth_00000003.1234.lock"]
    finally:
        os.close(fd)
    assert clean_staging(tmp_path) == 1 and list(staging.iterdir()) == []


def test_obj_writer_round_trips_through_trimesh(tmp_path):
    import trimesh

    mesh, _ = make_object(11, tile_px=16)
    write_obj(tmp_path / "m.obj", mesh)
    loaded = trimesh.load(tmp_path / "m.obj", process=False, maintain_order=True)
    np.testing.assert_array_equal(np.asarray(loaded.vertices, np.float32), mesh.vertices)
    np.testing.assert_array_equal(loaded.faces, mesh.faces)
    np.testing.assert_array_equal(np.asarray(loaded.visual.uv, np.float32), mesh.uv)
    assert np.asarray(loaded.visual.material.image).shape[:2] == mesh.texture.shape[:2]


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(RenderedObjectError, match="cameras.json.*missing"):
        load_rendered_object(tmp_path)
    (tmp_path / "cameras.json").write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(RenderedObjectError, match="cameras.json.*expected format"):
        load_rendered_object(tmp_path)


def test_a_view_without_alpha_is_refused_naming_it(tmp_path):
    # read as opaque, the whole frame became the object's mask and the object trained silently
    from PIL import Image

    (obj,) = synthesize(tmp_path / "d", 1, 20, **SMALL)
    view = obj / "rgba" / "005.png"
    with Image.open(view) as im:
        im.convert("RGB").save(view)
    with pytest.raises(RenderedObjectError, match=r"005.png: no alpha channel \(mode RGB\)"):
        load_rendered_object(obj)


def test_workers_give_the_same_files(tmp_path):
    serial = synthesize(tmp_path / "s", 2, 20, **SMALL)
    parallel = synthesize(tmp_path / "p", 2, 20, **SMALL, workers=2)
    for a, b in zip(serial, parallel):
        assert (a / "rgba/008.png").read_bytes() == (b / "rgba/008.png").read_bytes()
        assert (a / "mesh.obj").read_bytes() == (b / "mesh.obj").read_bytes()


def test_cli_synth(tmp_path):
    import typer
    from typer.testing import CliRunner

    from o3dcli.commands.data import app as data_app

    app = typer.Typer()
    app.add_typer(data_app, name="data")
    out = tmp_path / "ds"
    args = ["data", "synth", "-n", "2", "-o", str(out), "--seed", "3", "--size", "16", "--extra-views", "0",
            "--shading", "unlit"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    index = read_index(out)
    assert index["seed_range"] == [3, 4] and index["settings"]["shading"] == "unlit"
    meta = json.loads((out / "synth_00000003" / "cameras.json").read_text())
    assert meta["shading"] == "unlit" and len(meta["views"]) == 8 and meta["width"] == 16
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 made, 2 already complete" in again.output
    bad = CliRunner().invoke(app, args[:-1] + ["phong"])
    assert bad.exit_code == 2
    none = CliRunner().invoke(app, ["data", "synth", "-n", "0", "-o", str(tmp_path / "none")])
    assert none.exit_code == 2 and not (tmp_path / "none").exists()  # not an empty dataset


def test_synth_seeds_of_the_benchmark_are_warned_about_in_synth_and_train(tmp_path):
    from typer.testing import CliRunner

    from o3dcli.cli import app

    out = tmp_path / "leak"
    res = CliRunner().invoke(app, ["data", "synth", "-n", "2", "-o", str(out), "--seed", "999999", "--size", "16",
                                   "--extra-views", "0"])
    assert res.exit_code == 0, res.output
    assert "seed 1,000,000 is one of the synthetic benchmark's objects" in " ".join(res.output.split())
    clean = CliRunner().invoke(app, ["data", "synth", "-n", "1", "-o", str(tmp_path / "ok"), "--seed", "999998",
                                     "--size", "16", "--extra-views", "0"])
    assert clean.exit_code == 0 and "benchmark" not in clean.output
    res = CliRunner().invoke(app, ["train", "--data", str(out), "-o", str(tmp_path / "run"), "--steps", "1",
                                   "--no-progress", "--set", "preprocess.size=16", "--set", "train.batch_size=1",
                                   "--set", "train.extra_views=0", "--set", "runtime.threads=1"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "1 of 2 objects (synth_01000000) are the synthetic benchmark's" in said, said


def test_command_module_import_is_cheap():
    code = ("import sys, o3dcli.commands.data, o3dcli.synth; "
            "heavy = [m for m in ('torch', 'open3d', 'numpy') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "[]"


def _synth_cli(*args):
    import typer
    from typer.testing import CliRunner

    from o3dcli.commands.data import app as data_app

    app = typer.Typer()
    app.add_typer(data_app, name="data")
    return CliRunner().invoke(app, ["data", "synth", *map(str, args)])


@pytest.mark.parametrize("content", [b"[]", b"\xff\xfe not json"])
def test_a_damaged_index_is_an_error_naming_it(tmp_path, content):
    # '[]' ended in an AttributeError traceback; binary bytes in an error naming no file
    (tmp_path / "index.json").write_bytes(content)
    with pytest.raises(RenderedObjectError, match="index.json"):
        read_index(tmp_path)
    res = _synth_cli("-n", 1, "--size", 16, "-o", tmp_path)
    assert res.exit_code == 2 and "index.json" in res.output and "Traceback" not in res.output, res.output


@pytest.mark.parametrize("args", [["-n", 10**9], ["-n", 1, "--size", 4096], ["-n", 1, "--extra-views", 100000]])
def test_sizes_beyond_what_the_renderer_can_do_are_usage_errors(tmp_path, args):
    res = _synth_cli(*args, "-o", tmp_path / "d")
    assert res.exit_code == 2 and "Invalid value" in res.output, res.output
    assert not (tmp_path / "d").exists()


def test_a_full_disk_keeps_the_complete_objects_and_says_so(tmp_path, monkeypatch):
    import errno

    import o3dcli.synth.generate as gen

    real = gen.synthesize_object

    def one_then_full(root, seed, settings):
        if seed > 0:
            raise OSError(errno.ENOSPC, "No space left on device", str(root / ".tmp" / "x.png"))
        return real(root, seed, settings)

    monkeypatch.setattr(gen, "synthesize_object", one_then_full)
    res = _synth_cli("-n", 3, "--size", 16, "--extra-views", 0, "-o", tmp_path / "d")
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"cannot write in {tmp_path / 'd'}: No space left on device" in text and "1 objects made this time" in text
    assert (tmp_path / "d" / "synth_00000000" / "cameras.json").is_file()


def test_a_large_n_starts_rendering_without_looking_at_every_folder_first(tmp_path, monkeypatch):
    # -n 3000000 looked for 3 million folders (70 s) before the first object; 10**9 ran out of memory
    import o3dcli.synth.generate as gen

    looked = []
    real_id = gen.object_id

    class FirstRender(Exception):
        pass

    def counting_id(seed):
        looked.append(seed)
        return real_id(seed)

    def first_render(root, seed, settings):
        raise FirstRender(len(looked))

    monkeypatch.setattr(gen, "object_id", counting_id)
    monkeypatch.setattr(gen, "synthesize_object", first_render)
    with pytest.raises(FirstRender) as caught:
        synthesize(tmp_path / "d", 100_000, 0, size=16, extra_views=0)
    assert caught.value.args[0] <= 1


def test_an_incomplete_object_folder_is_replaced_and_one_holding_other_files_is_named(tmp_path):
    import shutil

    a = tmp_path / "a"
    synthesize(a, 2, 5, **SMALL)
    good = {p.relative_to(a / "synth_00000006"): p.read_bytes() for p in (a / "synth_00000006").rglob("*") if p.is_file()}
    (a / "synth_00000006" / "cameras.json").unlink()  # a copy of the dataset cut short
    synthesize(a, 2, 5, **SMALL)
    assert {p.relative_to(a / "synth_00000006"): p.read_bytes()
            for p in (a / "synth_00000006").rglob("*") if p.is_file()} == good
    # one that holds files of someone else's is not removed: named, with what to do
    (a / "synth_00000006" / "cameras.json").unlink()
    (a / "synth_00000006" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"synth_00000006: an incomplete object folder .*\(notes.txt\): move or remove it"):
        synthesize(a, 2, 5, **SMALL)
    assert (a / "synth_00000006" / "notes.txt").read_text() == "mine"
    shutil.rmtree(a / "synth_00000006")
    (a / "synth_00000006").write_text("a file")
    with pytest.raises(ValueError, match="synth_00000006: in the way"):
        synthesize(a, 2, 5, **SMALL)


def test_a_json_file_that_cannot_be_written_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno

    from o3dcli.synth import dataset

    written = []

    def full(src, dst):  # the file is written; its rename fails (a full disk, a quota)
        assert Path(src).name.startswith(".index.json.tmp-")  # hidden: a dataset folder's listing skips it
        written.append(json.loads(Path(src).read_text()))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        dataset._write_json(tmp_path / "index.json", {"a": 1})
    monkeypatch.undo()
    assert written == [{"a": 1}]
    assert list(tmp_path.iterdir()) == []


def test_a_folder_of_other_files_is_not_taken_for_a_dataset(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "chair.jpg").write_bytes(b"a photo")
    (photos / ".DS_Store").write_bytes(b"")
    res = _synth_cli("-n", 1, "--size", 16, "--extra-views", 0, "-o", photos)
    assert res.exit_code == 2, res.output
    assert f"{photos}: holds other files (chair.jpg) and is not a dataset" in " ".join(res.output.split())
    assert sorted(p.name for p in photos.iterdir()) == [".DS_Store", "chair.jpg"]  # nothing written
    # an empty folder, and a dataset that lost its index.json, are taken
    (tmp_path / "empty").mkdir()
    assert _synth_cli("-n", 1, "--size", 16, "--extra-views", 0, "-o", tmp_path / "empty").exit_code == 0
    (tmp_path / "empty" / "index.json").unlink()
    assert _synth_cli("-n", 2, "--size", 16, "--extra-views", 0, "-o", tmp_path / "empty").exit_code == 0


def test_two_processes_replacing_one_incomplete_folder_end_with_one_object(tmp_path):
    from o3dcli.synth.dataset import _replace_incomplete

    def folder(name, complete):
        d = tmp_path / name
        (d / "rgba").mkdir(parents=True)
        (d / "rgba" / "000.png").write_bytes(name.encode())
        if complete:
            (d / "cameras.json").write_text("{}")
        return d

    final = tmp_path / "synth_00000001"
    # the other process moved the incomplete folder aside already, and has not put its own in yet
    _replace_incomplete(final, folder("mine", True), tmp_path / "aside")
    assert (final / "rgba" / "000.png").read_bytes() == b"mine" and not (tmp_path / "mine").exists()
    # the other process put its own in first: this one's copy goes, the other's is kept
    _replace_incomplete(final, folder("late", True), tmp_path / "aside")
    assert (final / "rgba" / "000.png").read_bytes() == b"mine" and not (tmp_path / "late").exists()
