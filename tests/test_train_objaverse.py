"""Training data in the published Objaverse render layout (render_XXXX.png + meta.json), and what
happens to objects that cannot be used: skipped with a reason naming the file, the rest train."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.config import load_config
from o3dcli.geometry.convert import cameras_to_blender
from o3dcli.synth.dataset import load_rendered_object
from o3dcli.synth.generate import synthesize
from o3dcli.train.data import DatasetError, load_dataset

SMALL = ["preprocess.size=16", "train.batch_size=1", "train.extra_views=2", "train.warmup_steps=1",
         "train.checkpoint_every=1000", "train.log_every=1", "runtime.threads=1"]


def to_objaverse(src, dst, *, angle_scale=1.0, radius_scale=1.0, angle_in_degrees=False):
    """An o3d rendered-object folder rewritten in the Objaverse layout (Blender Z-up world, OpenGL
    camera axes, camera_angle_x in radians), with optional mistakes in its cameras."""
    obj = load_rendered_object(src)
    c2w, angle = cameras_to_blender(obj.cameras)
    c2w = c2w.clone()
    c2w[:, :3, 3] *= radius_scale
    angle = angle * angle_scale
    dst.mkdir(parents=True)
    for i, view in enumerate(obj.meta["views"]):
        shutil.copy(src / view["file"], dst / f"render_{i:04d}.png")
    meta = {"camera_angle_x": math.degrees(angle) if angle_in_degrees else angle,
            "locations": [{"index": i, "transform_matrix": m.tolist()} for i, m in enumerate(c2w)]}
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, 3, seed=0, size=32, extra_views=2)
    return root


def objects_of(synth):
    return sorted(p for p in synth.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_objaverse_layout_loads_the_same_views_as_the_o3d_folder(synth, tmp_path):
    cfg = load_config("tiny", SMALL + ["train.cond_image=view"])
    src = objects_of(synth)[0]
    to_objaverse(src, tmp_path / "objv" / src.name)
    (ours,), (theirs,) = load_dataset(synth, cfg, limit=1), load_dataset(tmp_path / "objv", cfg)
    assert torch.allclose(ours.views, theirs.views, atol=1e-6)
    assert torch.allclose(ours.cond[0], theirs.cond[0], atol=1e-6)
    # the views off the rig become the extra views, at the same cameras
    assert theirs.extra_c2w.shape == ours.extra_c2w.shape == (2, 4, 4)
    assert torch.allclose(theirs.extra_c2w, ours.extra_c2w, atol=1e-4)
    assert theirs.points is None and ours.points is not None  # no mesh in that layout


def test_a_meta_json_with_a_byte_order_mark_loads(synth, tmp_path):
    # Windows tools write UTF-8 with a BOM; json refused it ("Unexpected UTF-8 BOM")
    cfg = load_config("tiny", SMALL)
    src = objects_of(synth)[0]
    folder = to_objaverse(src, tmp_path / "objv" / src.name)
    plain = load_dataset(tmp_path / "objv", cfg)[0]
    (folder / "meta.json").write_text((folder / "meta.json").read_text(), encoding="utf-8-sig")
    assert (folder / "meta.json").read_bytes()[:3] == b"\xef\xbb\xbf"
    (bom,) = load_dataset(tmp_path / "objv", cfg)
    assert torch.equal(bom.views, plain.views)


def break_render_alpha(folder):
    p = folder / "render_0003.png"
    Image.open(p).convert("RGB").save(p)


def truncate_render(folder):
    p = folder / "render_0002.png"
    p.write_bytes(p.read_bytes()[:200])


def bad_meta(folder):
    (folder / "meta.json").write_text('{"camera_angle_x": 0.69, "locations": [')


def non_square(folder):
    p = folder / "render_0000.png"
    Image.open(p).resize((48, 32)).save(p)


def other_size(folder):
    p = folder / "render_0005.png"
    Image.open(p).resize((64, 64)).save(p)


def missing_render(folder):
    (folder / "render_0004.png").unlink()


def edit_meta(folder, change):
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta))  # NaN written as NaN, as Python's json reads it


def nan_in_extra_view(folder):  # NaN compared false with every tolerance: it passed, and trained, made every weight NaN
    edit_meta(folder, lambda m: m["locations"][9]["transform_matrix"][0].__setitem__(0, float("nan")))


def infinite_position(folder):
    edit_meta(folder, lambda m: m["locations"][2]["transform_matrix"][1].__setitem__(3, float("inf")))


def nan_angle(folder):
    edit_meta(folder, lambda m: m.__setitem__("camera_angle_x", float("nan")))


def opencv_axes(folder):  # the matrices in OpenCV's camera axes, not Blender's: every camera looks away
    def flip(m):
        for loc in m["locations"]:
            loc["transform_matrix"] = (torch.tensor(loc["transform_matrix"]) @ torch.diag(torch.tensor(
                [1.0, -1.0, -1.0, 1.0]))).tolist()
    edit_meta(folder, flip)


def rolled_rig_view(folder):  # a rig view upside down (turned 180 degrees about its forward axis)
    def roll(m):
        mat = torch.tensor(m["locations"][1]["transform_matrix"])
        mat[:3, :2] *= -1
        m["locations"][1]["transform_matrix"] = mat.tolist()
    edit_meta(folder, roll)


def opaque_view(folder):  # an alpha channel that marks the whole frame: the mask would be everything
    p = folder / "render_0003.png"
    im = Image.open(p)
    im.putalpha(255)
    im.save(p)


@pytest.mark.parametrize("mistake, expected", [
    (nan_in_extra_view, "locations[9].transform_matrix holds a value that is not a finite number"),
    (infinite_position, "locations[2].transform_matrix holds a value that is not a finite number"),
    (nan_angle, "camera_angle_x is nan"),
    (opencv_axes, "render_0000.png's transform_matrix: the camera looks 180 degrees away"),
    (rolled_rig_view, "render_0001.png's transform_matrix: the camera is rolled (upside down"),
    (opaque_view, "render_0003.png: its alpha is opaque everywhere"),
    (dict(angle_scale=1.25), "field of view"),
    (dict(angle_in_degrees=True), "looks like degrees"),
    (dict(radius_scale=1.5), "cameras.radius"),
    (break_render_alpha, "render_0003.png: no alpha channel"),
    (truncate_render, "render_0002.png: cannot read the image"),
    (bad_meta, "meta.json: cannot read camera_angle_x"),
    (non_square, "render_0000.png: 48x32 pixels"),
    (other_size, "renders of different sizes"),
    (missing_render, "without the 1 view(s) that have no render"),  # a rig view: the object cannot be used
])
def test_an_unusable_object_is_skipped_with_its_reason_and_the_others_load(synth, tmp_path, mistake, expected):
    cfg = load_config("tiny", SMALL)
    good, bad, also_good = objects_of(synth)
    root = tmp_path / "objv"
    to_objaverse(good, root / good.name)
    to_objaverse(also_good, root / also_good.name)
    if callable(mistake):
        mistake(to_objaverse(bad, root / bad.name))
    else:
        to_objaverse(bad, root / bad.name, **mistake)
    skipped = []
    objs = load_dataset(root, cfg, on_skip=lambda folder, message: skipped.append((folder, message)))
    assert [o.name for o in objs] == [good.name, also_good.name]
    assert len(skipped) == 1 and skipped[0][0] == root / bad.name
    assert expected in skipped[0][1] and bad.name in skipped[0][1], skipped[0][1]
    # --limit counts usable objects
    assert [o.name for o in load_dataset(root, cfg, limit=2, on_skip=lambda *a: None)] == [good.name, also_good.name]


def test_an_extra_view_whose_alpha_is_empty_or_opaque_is_left_out_with_a_note(synth, tmp_path):
    # one such extra view skipped the whole object, where a missing one is left out
    cfg = load_config("tiny", SMALL)
    src = objects_of(synth)[0]
    folder = to_objaverse(src, tmp_path / "objv" / src.name)
    for name, alpha in (("render_0008.png", 0), ("render_0009.png", 255)):  # the 2 extra views
        im = Image.open(folder / name)
        im.putalpha(alpha)
        im.save(folder / name)
    notes, skipped = [], []
    (obj,) = load_dataset(tmp_path / "objv", cfg, on_skip=lambda *a: skipped.append(a), on_note=notes.append)
    assert skipped == [] and obj.extra_c2w.shape == (0, 4, 4)
    assert [n.split(": ", 1)[1] for n in notes] == [
        "its alpha is transparent everywhere: the object is not in this render; this extra view is left out",
        "its alpha is opaque everywhere; training renders need a transparent background, the object's mask is "
        "read from it; this extra view is left out"]


def test_a_missing_extra_view_is_left_out_and_names_are_matched_in_any_case(synth, tmp_path):
    cfg = load_config("tiny", SMALL)
    src = objects_of(synth)[0]
    folder = to_objaverse(src, tmp_path / "objv" / src.name)
    (folder / "render_0009.png").unlink()  # an extra view (8 rig views, then 2 extra)
    (folder / "render_0000.png").rename(folder / "render_0000.PNG")  # a Windows tool's name
    notes, skipped = [], []
    (obj,) = load_dataset(tmp_path / "objv", cfg, on_skip=lambda *a: skipped.append(a), on_note=notes.append)
    assert skipped == [] and obj.extra_c2w.shape == (1, 4, 4)
    assert len(notes) == 1 and "no render for view 9" in notes[0] and "left out" in notes[0]
    (full,) = load_dataset(synth, cfg, limit=1)
    assert torch.allclose(obj.views, full.views, atol=1e-6)  # the rig views, render_0000.PNG among them


def test_cameras_off_the_rig_say_what_the_rig_needs_and_what_the_object_has(synth, tmp_path):
    cfg = load_config("tiny", SMALL)
    src = objects_of(synth)[0]
    folder = to_objaverse(src, tmp_path / "objv" / src.name)
    meta = json.loads((folder / "meta.json").read_text())
    meta["locations"] = meta["locations"][:5]  # 5 of the 8 rig views
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="none of its 1 object folders") as e:
        load_dataset(tmp_path / "objv", cfg, on_skip=lambda *a: None)
    assert "5 views at elevation 0 degrees" in str(e.value)
    assert "azimuths 0, 45, 90, 135, 180, 225, 270, 337.5 degrees" in str(e.value)


def test_train_reports_skipped_objects_and_trains_on_the_rest(synth, tmp_path):
    good, bad, _ = objects_of(synth)
    root = tmp_path / "objv"
    to_objaverse(good, root / good.name)
    break_render_alpha(to_objaverse(bad, root / bad.name))
    (root / "notes").mkdir()  # a stray folder is named, not silently ignored
    sets = [a for kv in SMALL for a in ("--set", kv)]
    res = CliRunner().invoke(app, ["train", "--data", str(root), "-o", str(tmp_path / "run"), "--steps", "1",
                                   "--no-progress", *sets])
    assert res.exit_code == 0, res.output
    assert "render_0003.png: no alpha channel" in res.output and "not an object folder" in res.output
    assert "2 object folder(s) skipped" in res.output and "1 object from" in res.output
    assert "no ground-truth mesh" in res.output
    # nothing usable at all is a usage error naming the reason
    shutil.rmtree(root / good.name)
    res = CliRunner().invoke(app, ["train", "--data", str(root), "-o", str(tmp_path / "run2"), "--steps", "1",
                                   "--no-progress", *sets])
    assert res.exit_code == 2 and "no alpha channel" in res.output
    assert not (tmp_path / "run2").exists()


@pytest.mark.parametrize("key, value", [("c2w", float("nan")), ("fx", float("inf")), ("fx", 0.0)])
def test_an_o3d_object_with_a_camera_value_that_is_not_finite_is_skipped_naming_the_view(synth, tmp_path, key, value):
    cfg = load_config("tiny", SMALL)
    good, bad, _ = objects_of(synth)
    root = tmp_path / "data"
    for src in (good, bad):
        shutil.copytree(src, root / src.name)
    meta = json.loads((root / bad.name / "cameras.json").read_text())
    view = meta["views"][9]
    if key == "c2w":
        view["c2w"][0][0] = value
    else:
        view[key] = value
    (root / bad.name / "cameras.json").write_text(json.dumps(meta))
    skipped = []
    objs = load_dataset(root, cfg, on_skip=lambda folder, message: skipped.append(message))
    assert [o.name for o in objs] == [good.name]
    what = "its focal length (fx, fy) is not above 0" if value == 0 else "a camera value is not a finite number"
    assert len(skipped) == 1 and f"{bad.name}/cameras.json: view 9 ({view['file']}): {what}" in skipped[0], skipped
