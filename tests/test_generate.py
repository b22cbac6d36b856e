"""`o3d generate` as a batch: outputs, error isolation, report, cache, names, resume."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from o3dcli.cli import app

runner = CliRunner()


def generate(*args):
    """The batch-runner tests stop after preprocessing (fast); tests/test_generate_full.py runs every stage."""
    return runner.invoke(app, ["generate", "--no-progress", "--stop-after", "preprocess", *map(str, args)])


def report(out: Path) -> dict:
    return json.loads((out / "o3d-report.json").read_text())


def test_mixed_batch_isolates_bad_items(good_images, bad_images, tmp_path):
    out = tmp_path / "out"
    res = generate(good_images, bad_images, "-o", out)
    assert res.exit_code == 1, res.output
    rep = report(out)
    status = {Path(i["input"]).name: i for i in rep["items"]}
    assert {k for k, v in status.items() if v["status"] == "ok"} == {"apple.png", "pear.png", "plum.jpg"}
    for bad in ("truncated.png", "noise.png", "notes.jpg", "empty.png", "wholeframe.png"):
        assert status[bad]["status"] == "failed"
        assert bad in status[bad]["error"], status[bad]["error"]  # the message names the file
        assert not (out / Path(bad).stem).exists()  # a failed item leaves no asset folder behind
    for name in ("apple", "pear", "plum"):
        img = Image.open(out / name / "input.png")
        assert img.size == (1024, 1024) and img.mode == "RGBA"  # the model's crop, at PHOTO_SIZE
        alpha = np.asarray(img)[..., 3]
        assert alpha.max() == 255 and alpha[0, 0] == 0  # foreground present, corners empty
        assert (out / name / "config.yaml").is_file()
        assert status[f"{name}.{'jpg' if name == 'plum' else 'png'}"]["timings"]["preprocess"] > 0


def test_rerun_recomputes_nothing_and_force_recomputes(good_images, tmp_path):
    out = tmp_path / "out"
    assert generate(good_images, "-o", out).exit_code == 0
    first = (out / "apple" / "input.png").read_bytes()
    made = {i["name"]: i["computed_seconds"] for i in report(out)["items"]}
    assert all(0 <= t["preprocess"] <= 60 for t in made.values())
    res = generate(good_images, "-o", out)
    assert res.exit_code == 0
    assert "nothing recomputed" in res.output
    assert all(i["cached"] == ["preprocess"] for i in report(out)["items"])
    # a cached stage still reports what computing it took (kept in its manifest)
    assert {i["name"]: i["computed_seconds"] for i in report(out)["items"]} == made
    assert (out / "apple" / "input.png").read_bytes() == first
    res = generate(good_images, "-o", out, "--force")
    assert res.exit_code == 0 and all(i["cached"] == [] for i in report(out)["items"])
    # a changed setting is a new key: recomputed, and the asset follows it
    res = generate(good_images, "-o", out, "--set", "preprocess.size=48")
    assert res.exit_code == 0 and all(i["cached"] == [] for i in report(out)["items"])
    from safetensors.torch import load_file

    sizes = sorted(load_file(str(p))["rgba"].shape[-1] for p in (out / ".o3d").rglob("apple*/**/prepared.safetensors"))
    assert sizes == [32, 48]  # the earlier result is kept beside the new one
    assert "size: 48" in (out / "apple" / "config.yaml").read_text()


def test_new_weights_at_the_same_path_are_not_answered_from_the_cache(good_images, tmp_path):
    # a model retrained in place (a training run's model.safetensors) must not give back the old one's results
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from o3dcli.models.build import resolve_weights

    shipped = resolve_weights("tiny")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(shipped.read_bytes())
    apple = good_images / "apple.png"
    out = tmp_path / "out"
    args = ["--set", f"model.weights={weights}", "--steps", "2", "-o", out]

    def run():
        res = runner.invoke(app, ["generate", "--no-progress", "--stop-after", "diffusion", str(apple), *map(str, args)])
        assert res.exit_code == 0, res.output
        return report(out)["items"][0]["cached"], (out / "apple" / "views.png").read_bytes()

    cached, views = run()
    assert cached == []
    assert run() == (["preprocess", "diffusion"], views)  # the same weights: all cached
    with safe_open(str(shipped), "pt") as f:  # other weights, same architecture, written to the same path
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    gen = torch.Generator().manual_seed(0)
    tensors = {k: v + 0.05 * torch.randn(v.shape, generator=gen).to(v.dtype) if v.is_floating_point() else v
               for k, v in tensors.items()}
    save_file(tensors, str(weights), metadata=meta)
    cached, new_views = run()
    assert cached == ["preprocess"] and new_views != views


def test_name_collisions_never_overwrite(tmp_path, good_images):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "chair.png").write_bytes((good_images / "apple.png").read_bytes())
    (b / "chair.png").write_bytes((good_images / "pear.png").read_bytes())
    out = tmp_path / "out"
    assert generate(a / "chair.png", b / "chair.png", "-o", out).exit_code == 0
    names = {i["name"]: Path(i["input"]) for i in report(out)["items"]}
    assert names == {"chair": (a / "chair.png").resolve(), "chair-2": (b / "chair.png").resolve()}
    # a later run with only b's chair must not take over a's folder
    apple_input = (out / "chair" / "input.png").read_bytes()
    assert generate(b / "chair.png", "-o", out).exit_code == 0
    assert report(out)["items"][0]["name"] == "chair-2"
    assert (out / "chair" / "input.png").read_bytes() == apple_input


def test_the_same_photo_by_another_path_keeps_its_asset(tmp_path, good_images):
    # on macOS `Photos/apple.png` and `photos/apple.png` are one file whose paths resolve apart (the
    # file system ignores case and keeps what was typed); a hard link is such a pair anywhere
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    (a / "apple.png").write_bytes((good_images / "apple.png").read_bytes())
    os.link(a / "apple.png", b / "apple.png")
    (c / "apple.png").write_bytes((good_images / "pear.png").read_bytes())  # another photo of that name
    out = tmp_path / "out"
    assert generate(a / "apple.png", "-o", out).exit_code == 0
    res = generate(b / "apple.png", "-o", out)
    assert res.exit_code == 0, res.output
    (item,) = report(out)["items"]
    assert item["name"] == "apple" and item["cached"] == ["preprocess"] and not (out / "apple-2").exists()
    assert generate(c / "apple.png", "-o", out).exit_code == 0
    assert report(out)["items"][0]["name"] == "apple-2"


def test_moved_photos_keep_their_assets_and_cache(tmp_path, good_images):
    # a reorganised photo folder (or a drive mounted elsewhere): the same bytes at a new path, the
    # old path gone. Before, each photo got a new asset (apple-2) and every stage again.
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    (shoot / "apple.png").write_bytes((good_images / "apple.png").read_bytes())
    (shoot / "pear.png").write_bytes((good_images / "pear.png").read_bytes())
    out = tmp_path / "out"
    assert generate(shoot, "-o", out).exit_code == 0
    moved = tmp_path / "archive" / "2026"
    moved.parent.mkdir()
    shoot.rename(moved)
    res = generate(moved, "-o", out)
    assert res.exit_code == 0, res.output
    items = {i["name"]: i for i in report(out)["items"]}
    assert sorted(items) == ["apple", "pear"] and all(i["cached"] == ["preprocess"] for i in items.values())
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.is_dir()) == ["apple", "pear"]
    assert json.loads((out / "apple" / "o3d-asset.json").read_text())["source"] == str((moved / "apple.png").resolve())
    # other bytes under the moved photo's name are another photo: a folder of their own
    (moved / "apple.png").unlink()
    (tmp_path / "apple.png").write_bytes((good_images / "plum.jpg").read_bytes())
    assert generate(tmp_path / "apple.png", "-o", out).exit_code == 0
    assert report(out)["items"][0]["name"] == "apple-2"


def _entries(item: Path) -> dict[str, Path]:
    return {p.name: p for p in item.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _made_then_renamed(tmp_path, good_images, old: str, new: str, between=lambda out: None):
    """A folder holding one photo (`old`.png, the apple) generated into `out`, `between(out)` done,
    the photo renamed `new`.png, and generated again: (shoot, out, the second run's result, its item)."""
    shoot, out = tmp_path / "shoot", tmp_path / "out"
    shoot.mkdir()
    (shoot / f"{old}.png").write_bytes((good_images / "apple.png").read_bytes())
    assert generate(shoot, "-o", out).exit_code == 0
    between(out)
    (shoot / f"{old}.png").rename(shoot / f"{new}.png")
    res = generate(shoot, "-o", out)
    assert res.exit_code == 0, res.output
    (item,) = report(out)["items"]
    return shoot, out, res, item


def test_a_renamed_photo_reuses_what_was_made_under_its_old_name(tmp_path, good_images):
    # keys hold the image's bytes, not its name: the new asset's stages are copies of the old ones'
    shoot, out, res, item = _made_then_renamed(tmp_path, good_images, "apple", "green apple")
    assert item["name"] == "green apple" and item["cached"] == ["preprocess"]
    assert item["reused_from"] == {"preprocess": "apple"}
    assert "green apple: the same image as apple: 1 cached stage reused" in res.output
    assert (out / "green apple" / "input.png").read_bytes() == (out / "apple" / "input.png").read_bytes()
    old, new = _entries(out / ".o3d" / "items" / "apple"), _entries(out / ".o3d" / "items" / "green apple")
    assert list(new) == list(old) and len(new) == 1
    for f in old[next(iter(old))].iterdir():  # copies, not links: each asset's files are its own
        twin = new[f.parent.name] / f.name
        assert twin.read_bytes() == f.read_bytes() and not os.path.samefile(twin, f)
    assert not list((out / ".o3d" / "items" / "green apple").glob(".tmp-*"))
    # the old asset deleted and the cache pruned: the new one keeps its entries, and runs from them
    shutil.rmtree(out / "apple")
    assert runner.invoke(app, ["cache", "prune", str(out)]).exit_code == 0
    assert [p.name for p in (out / ".o3d" / "items" / "apple").iterdir()] == [".lock"]
    res = generate(shoot, "-o", out)
    assert res.exit_code == 0 and report(out)["items"][0]["cached"] == ["preprocess"]
    assert report(out)["items"][0]["reused_from"] == {}


def test_a_photo_renamed_after_an_earlier_o3d_made_its_asset_is_found_too(tmp_path, good_images):
    # .o3d/inputs removed: as an o3d before the index left the output folder
    _, _, _, item = _made_then_renamed(tmp_path, good_images, "apple", "green",
                                       between=lambda out: shutil.rmtree(out / ".o3d" / "inputs"))
    assert item["reused_from"] == {"preprocess": "apple"}


def test_the_same_photo_twice_in_a_batch_is_made_once_even_with_force(tmp_path, good_images):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    a.mkdir(), b.mkdir()
    (a / "apple.png").write_bytes((good_images / "apple.png").read_bytes())
    (b / "copy.png").write_bytes((good_images / "apple.png").read_bytes())
    for args in ((), ("--force",)):
        res = generate(a, b, "-o", out, *args)
        assert res.exit_code == 0, res.output
        items = {i["name"]: i for i in report(out)["items"]}
        assert items["apple"]["cached"] == []  # made by the first run, and made again by --force
        assert items["copy"]["cached"] == ["preprocess"] and items["copy"]["reused_from"] == {"preprocess": "apple"}
        # --force: the copy is of what this batch made, not of the entry it had before
        (mine,) = _entries(out / ".o3d" / "items" / "copy").values()
        (theirs,) = _entries(out / ".o3d" / "items" / "apple").values()
        assert json.loads((mine / "manifest.json").read_text())["batch"] == \
            json.loads((theirs / "manifest.json").read_text())["batch"]


def test_a_damaged_entry_of_another_asset_is_not_reused(tmp_path, good_images):
    def damage(out):
        (entry,) = _entries(out / ".o3d" / "items" / "apple").values()
        damaged = entry / "prepared.safetensors"
        damaged.write_bytes(damaged.read_bytes()[:-10])

    _, out, _, item = _made_then_renamed(tmp_path, good_images, "apple", "pear", between=damage)
    assert item["name"] == "pear" and item["cached"] == [] and item["reused_from"] == {}
    assert sorted(p.name for p in (out / ".o3d" / "items" / "pear").iterdir()) == \
        [".lock", *_entries(out / ".o3d" / "items" / "apple")]


def test_asset_folder_holds_only_what_its_config_makes(good_images, tmp_path):
    # after a shorter or a changed run, files from other settings must not sit next to config.yaml
    apple, out = good_images / "apple.png", tmp_path / "out"

    def run(*args):
        res = runner.invoke(app, ["generate", "--no-progress", str(apple), "--steps", "2", "-o", str(out), *args])
        assert res.exit_code == 0, res.output
        return report(out)["items"][0]

    run("--stop-after", "diffusion", "--save-intermediate")
    asset = out / "apple"
    made = {p: (asset / p).read_bytes() for p in ("gaussians.ply", "views.png", "turntable.gif")}
    assert any((asset / "intermediate").rglob("*.png"))
    # the same settings, stopping earlier: the later stage's files are the cache's for these settings
    item = run("--stop-after", "preprocess", "--save-intermediate")
    assert item["cached"] == ["preprocess"] and "apple/gaussians.ply" in item["outputs"]
    assert {p: (asset / p).read_bytes() for p in made} == made
    # without intermediates: that diffusion result is not cached, so its files go, intermediates too
    item = run("--stop-after", "preprocess", "--seed", "5")
    assert not any((asset / p).exists() for p in made) and not (asset / "intermediate").exists()
    assert "seed: 5" in (asset / "config.yaml").read_text()
    assert sorted(p.name for p in asset.iterdir()) == ["config.yaml", "input.png", "o3d-asset.json"]
    # back to the first settings: republished from the cache, nothing recomputed
    item = run("--stop-after", "diffusion", "--save-intermediate")
    assert item["cached"] == ["preprocess", "diffusion"]
    assert {p: (asset / p).read_bytes() for p in made} == made and any((asset / "intermediate").rglob("*.png"))


def test_output_folder_inside_the_input_folder_is_not_read_back(good_images, tmp_path):
    out = good_images / "out"
    assert generate(good_images, "-o", out).exit_code == 0
    res = generate(good_images, "-r", "-o", out)
    assert res.exit_code == 0, res.output
    assert sorted(i["name"] for i in report(out)["items"]) == ["apple", "pear", "plum"]
    # hidden folders are skipped in any scanned folder, not only o3d's
    hidden = good_images / "sub" / ".thumbnails"
    hidden.mkdir(parents=True)
    (hidden / "apple.png").write_bytes((good_images / "apple.png").read_bytes())
    from o3dcli.inputs import collect_inputs

    notes = []
    found = collect_inputs([good_images], recursive=True, notes=notes)
    assert [p.name for p in found] == ["apple.png", "pear.png", "plum.jpg"]
    assert notes == [f"skipped 3 folder(s) of o3d's own outputs ({out / 'apple'}, {out / 'pear'}, {out / 'plum'})"]
    # o3d eval's renders (ground truth over prediction, per object) are not photos either
    from o3dcli.eval.renders import RENDERS_MANIFEST

    renders = good_images / "eval" / "renders"
    (renders / "tiny").mkdir(parents=True)
    (renders / "tiny" / "apple.png").write_bytes((good_images / "apple.png").read_bytes())
    (renders / RENDERS_MANIFEST).write_text('{"renders": ["tiny/apple.png"]}')
    notes = []
    assert [p.name for p in collect_inputs([good_images], recursive=True, notes=notes)] == ["apple.png", "pear.png",
                                                                                           "plum.jpg"]
    assert f"skipped 4 folder(s) of o3d's own outputs ({renders}, {out / 'apple'}, {out / 'pear'}, ...)" in notes


def test_renders_written_into_a_photo_folder_skip_only_themselves(good_images, tmp_path):
    # `o3d render ... -o photos` then `o3d generate photos`: o3d-renders.json marked the whole folder
    # as o3d's output, so the user's own photos beside the renders were skipped ("no image files")
    from o3dcli.inputs import collect_inputs
    from o3dcli.io.ply import save_gaussians
    from test_render_cmd import _blob

    save_gaussians(tmp_path / "chair.ply", _blob(60))
    res = runner.invoke(app, ["render", str(tmp_path / "chair.ply"), "-o", str(good_images), "--frames", "2",
                              "--size", "16", "--no-mp4"])
    assert res.exit_code == 0, res.output
    assert (good_images / "chair_views.png").is_file() and (good_images / "chair_turntable.gif").is_file()
    (good_images / "pear_views.png").write_bytes((good_images / "pear.png").read_bytes())  # the user's, not recorded
    sub = good_images / "sub"
    sub.mkdir()
    (sub / "kiwi.png").write_bytes((good_images / "apple.png").read_bytes())
    out = tmp_path / "out"
    res = generate(good_images, "-o", out)
    assert res.exit_code == 0, res.output
    assert sorted(i["name"] for i in report(out)["items"]) == ["apple", "pear", "pear_views", "plum"]
    assert f"skipped 2 image(s) written by o3d render ({good_images})" in " ".join(res.output.split())
    notes = []
    assert [p.relative_to(good_images).as_posix() for p in collect_inputs([tmp_path / "images"], recursive=True,
                                                                          notes=notes)] == \
        ["apple.png", "pear.png", "pear_views.png", "plum.jpg", "sub/kiwi.png"]
    assert notes == [f"skipped 2 image(s) written by o3d render ({good_images})"]
    # a damaged o3d-renders.json: only files named like renders are skipped, and the note says so
    (good_images / "o3d-renders.json").write_text('{"chair": "/tmp/cha')
    notes = []
    assert [p.name for p in collect_inputs([good_images], notes=notes)] == ["apple.png", "pear.png", "plum.jpg"]
    assert notes == [f"{good_images / 'o3d-renders.json'} cannot be read, so 3 image(s) named like o3d render's were "
                     "taken for its renders and skipped (chair_turntable.gif, chair_views.png, pear_views.png); "
                     "rename any that are your own images"]
    # asset folders and eval's renders are still skipped whole
    (good_images / "o3d-renders.json").write_text("{}")
    (sub / ".o3d-renders.json").write_text('{"renders": []}')
    notes = []
    assert [p.name for p in collect_inputs([good_images], recursive=True, notes=notes)] == \
        ["apple.png", "chair_turntable.gif", "chair_views.png", "pear.png", "pear_views.png", "plum.jpg"]
    assert notes == [f"skipped 1 folder(s) of o3d's own outputs ({sub})"]


def test_the_input_folder_or_its_parent_as_output(good_images, tmp_path, monkeypatch):
    # every image sits inside the output folder: they are still inputs; the assets are not
    res = generate(good_images, "-o", good_images)
    assert res.exit_code == 0, res.output
    assert sorted(i["name"] for i in report(good_images)["items"]) == ["apple", "pear", "plum"]
    assert (good_images / "apple" / "input.png").is_file()
    res = generate(good_images, "-r", "-o", good_images)
    assert res.exit_code == 0 and "nothing recomputed" in res.output, res.output
    assert sorted(i["name"] for i in report(good_images)["items"]) == ["apple", "pear", "plum"]
    monkeypatch.chdir(good_images.parent)
    res = generate("images", "-o", ".")
    assert res.exit_code == 0, res.output
    assert sorted(i["name"] for i in report(good_images.parent)["items"]) == ["apple", "pear", "plum"]
    # an earlier output folder further down is skipped by -r, whatever it is called
    res = generate(".", "-r", "-o", "again")
    assert res.exit_code == 0, res.output
    assert sorted(i["name"] for i in report(good_images.parent / "again")["items"]) == ["apple", "pear", "plum"]


def test_folders_and_files_that_are_not_o3d_assets_are_never_taken_over(good_images, tmp_path):
    out = tmp_path / "out"
    (out / "apple").mkdir(parents=True)
    (out / "apple" / "model.glb").write_text("my own model")
    (out / "apple" / "config.yaml").write_text("mine")
    (out / "pear").write_text("a file where an asset folder would go")
    (out / "plum").mkdir()  # empty: free to use
    res = generate(good_images, "-o", out)
    assert res.exit_code == 0, res.output
    assert sorted(i["name"] for i in report(out)["items"]) == ["apple-2", "pear-2", "plum"]
    assert (out / "apple" / "model.glb").read_text() == "my own model"
    assert (out / "apple" / "config.yaml").read_text() == "mine"
    assert (out / "pear").read_text() == "a file where an asset folder would go"


def test_links_name_assets_after_themselves_and_unread_formats_are_reported(good_images, tmp_path, monkeypatch):
    monkeypatch.setattr("o3dcli.io.images._heif_plugin", lambda: False)  # as without the `heif` extra
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "9f86d081884c7d65").write_bytes((good_images / "apple.png").read_bytes())
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "chair.png").symlink_to(blobs / "9f86d081884c7d65")
    (snap / "IMG_0001.HEIC").write_bytes(b"not read")
    (snap / "gone.png").symlink_to(blobs / "deleted")
    (snap / "web.jfif").write_bytes((good_images / "plum.jpg").read_bytes())  # a JPEG by another name
    out = tmp_path / "out"
    res = generate(snap, "-o", out)
    assert res.exit_code == 0, res.output
    assert sorted(i["name"] for i in report(out)["items"]) == ["chair", "web"]
    assert ('skipped 1 image(s) in formats o3d does not read here (1 .heic); for HEIC: pip install "o3dcli[heif]"'
            in " ".join(res.output.split()))
    assert f"skipped 1 link(s) whose target is missing ({snap / 'gone.png'})" in " ".join(res.output.split())
    (snap / "chair.png").unlink()
    (snap / "web.jfif").unlink()
    res = generate(snap, "-o", out)
    assert res.exit_code == 2 and "formats o3d does not read here (1 .heic)" in " ".join(res.output.split())


def test_a_file_and_a_link_to_it_in_one_scan_make_one_asset_named_after_the_file(good_images, tmp_path):
    from o3dcli.inputs import collect_inputs

    d = tmp_path / "odd"
    d.mkdir()
    (d / "same.png").write_bytes((good_images / "apple.png").read_bytes())
    (d / "a_link.png").symlink_to(d / "same.png")  # found first, in name order
    (d / "b.png").symlink_to(good_images / "pear.png")  # a link to a file outside: named after itself
    assert [p.name for p in collect_inputs([d])] == ["b.png", "same.png"]
    # a link given by name is what the user asked for
    assert [p.name for p in collect_inputs([d / "a_link.png", d])] == ["a_link.png", "b.png"]


def test_recursive_scans_follow_links_to_folders_once_each(good_images, tmp_path):
    """A linked-in folder of photos was skipped without a word ("no image files found" when it
    held the only ones); links that loop back up, or lead to a folder scanned already, are not
    entered twice."""
    from o3dcli.inputs import collect_inputs

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "apple.png").write_bytes((good_images / "apple.png").read_bytes())
    top = tmp_path / "top"
    (top / "real").mkdir(parents=True)
    (top / "real" / "pear.png").write_bytes((good_images / "pear.png").read_bytes())
    (top / "linked").symlink_to(elsewhere)
    (top / "again").symlink_to(elsewhere)  # a second way to the same folder
    (top / "real" / "loop").symlink_to(top)  # back up the tree
    notes: list[str] = []
    found = collect_inputs([top], recursive=True, notes=notes)
    assert [p.relative_to(top).as_posix() for p in found] == ["again/apple.png", "real/pear.png"]
    assert collect_inputs([top], recursive=False, notes=[]) == []
    only = tmp_path / "only"
    only.mkdir()
    (only / "photos").symlink_to(elsewhere)
    out = tmp_path / "out"
    res = generate(only, "-r", "-o", out)
    assert res.exit_code == 0, res.output
    assert [i["name"] for i in report(out)["items"]] == ["apple"]


def test_an_input_that_now_fails_says_its_earlier_asset_is_left(good_images, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    data = (good_images / "apple.png").read_bytes()
    (photos / "x.png").write_bytes(data)
    out = tmp_path / "out"
    assert generate(photos, "-o", out).exit_code == 0
    before = (out / "x" / "input.png").read_bytes()
    record = (out / "x" / "o3d-asset.json").read_bytes()
    (photos / "x.png").write_bytes(data[: len(data) // 2])  # damaged since
    res = generate(photos, "-o", out)
    assert res.exit_code == 1, res.output
    [item] = report(out)["items"]
    assert item["status"] == "failed" and "truncated" in item["error"]
    assert item["error"].endswith(f"(the asset an earlier run made is left as it was in {out / 'x'})")
    assert (out / "x" / "input.png").read_bytes() == before
    # its record too (it lost the cache entries it is made from, and named the damaged bytes)
    assert (out / "x" / "o3d-asset.json").read_bytes() == record
    # a first run's failure has no such asset, nor has a folder of other files: nothing said
    (tmp_path / "fresh" / "x").mkdir(parents=True)
    (tmp_path / "fresh" / "x" / ".DS_Store").write_bytes(b"\0")
    res = generate(photos, "-o", tmp_path / "fresh")
    assert "earlier run" not in report(tmp_path / "fresh")["items"][0]["error"]


def test_long_file_names_get_short_asset_names(good_images, tmp_path):
    # an input whose name is 250 bytes long (legal on disk): its staging folder .<name>.o3d-new-<pid>
    # was longer than 255 bytes and publishing failed ("File name too long") after preprocessing ran
    from o3dcli.naming import NAME_MAX_BYTES

    photos = tmp_path / "photos"
    photos.mkdir()
    stems = ["a" * 250, "a" * 245 + "b" * 5, "椅" * 83, "short"]
    for stem in stems:
        (photos / f"{stem}.png").write_bytes((good_images / "apple.png").read_bytes())
    out = tmp_path / "out"
    res = generate(photos, "-o", out)
    assert res.exit_code == 0, res.output
    by_source = {Path(i["input"]).stem: i["name"] for i in report(out)["items"]}
    assert by_source["short"] == "short" and len(set(by_source.values())) == len(stems)
    for stem in stems[:3]:
        name = by_source[stem]
        assert stem.startswith(name[:-9]) and name[-9] == "-" and len(name.encode()) <= NAME_MAX_BYTES
        assert (out / name / "input.png").is_file()
        assert json.loads((out / name / "o3d-asset.json").read_text())["source"] == str(photos / f"{stem}.png")
    res = generate(photos, "-o", out)  # a re-run finds the same names and its cache
    assert res.exit_code == 0 and "nothing recomputed" in res.output, res.output
    assert {Path(i["input"]).stem: i["name"] for i in report(out)["items"]} == by_source
    # the same long file name from another folder gets -2, still short enough
    other = tmp_path / "other"
    other.mkdir()
    (other / f"{stems[0]}.png").write_bytes((good_images / "pear.png").read_bytes())
    res = generate(other, "-o", out)
    assert res.exit_code == 0, res.output
    [item] = report(out)["items"]
    assert item["name"].endswith("-2") and len(item["name"].encode()) <= NAME_MAX_BYTES
    assert item["name"][:-11] == by_source[stems[0]][:len(item["name"]) - 11]


def test_reserved_names_are_never_asset_names(tmp_path, good_images):
    from o3dcli.naming import assign_names

    src = tmp_path / "o3d-report.json.png"
    src.write_bytes((good_images / "apple.png").read_bytes())
    assert [i.name for i in assign_names([src], tmp_path / "out")] == ["o3d-report.json-2"]
    out = tmp_path / "out"
    res = generate(src, good_images / "apple.png", "-o", out)
    assert res.exit_code == 0, res.output
    assert (out / "o3d-report.json").is_file() and (out / "o3d-report.json-2" / "input.png").is_file()


def test_bad_output_and_late_usage_errors_leave_nothing(tmp_path, good_images):
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = generate(good_images, "-o", afile)
    assert res.exit_code == 2 and "not a folder" in res.output and afile.read_text() == "x"
    # settings the shipped weights do not fit: refused before the output folder is made
    res = runner.invoke(app, ["generate", str(good_images), "-o", str(tmp_path / "o"), "--set", "denoiser.num_views=4"])
    assert res.exit_code == 2 and "denoiser.num_views" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [["generate", "IMAGES"], ["mesh", "IMAGES"], ["render", "IMAGES"],
                                     ["data", "synth", "-n", "1"], ["train", "--data", "IMAGES"],
                                     ["eval", "--limit", "1"]])
def test_an_output_inside_a_file_is_a_usage_error_for_every_command(tmp_path, good_images, command):
    # -o under a file cannot be made: said up front (it ended in a NotADirectoryError traceback)
    (tmp_path / "afile").write_text("x")
    args = [str(good_images) if a == "IMAGES" else a for a in command]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "afile" / "sub")])
    assert res.exit_code == 2, res.output
    assert "cannot be made" in res.output and "is a file, not a folder" in res.output


@pytest.mark.parametrize("command", [["generate", "IMAGES"], ["mesh", "IMAGES"], ["render", "IMAGES"],
                                     ["data", "synth", "-n", "1"], ["train", "--data", "IMAGES"],
                                     ["eval", "--limit", "1"]])
def test_an_empty_or_dangling_output_is_a_usage_error_for_every_command(tmp_path, good_images, command, monkeypatch):
    # -o "$OUT" with OUT unset was the working folder; a link to a missing folder ended in a traceback
    monkeypatch.chdir(tmp_path)
    args = [str(good_images) if a == "IMAGES" else a for a in command]
    res = runner.invoke(app, [*args, "-o", ""])
    assert res.exit_code == 2 and "an empty path" in " ".join(res.output.split()), res.output
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "gone")])
    assert res.exit_code == 2 and "which does not exist" in " ".join(res.output.split()), res.output
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "gone" / "sub")])  # the link higher up the path
    assert res.exit_code == 2 and "which does not exist" in " ".join(res.output.split()), res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"gone", good_images.name})  # nothing written


@pytest.mark.parametrize("command", [["generate"], ["mesh"], ["render"], ["train", "-o", "run", "--data"],
                                     ["eval", "--benchmark", "folder", "--data"]])
def test_an_empty_input_path_is_a_usage_error(tmp_path, command, monkeypatch):
    # `o3d generate "$IN"` with IN unset read every image of the working folder
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, [*command, "", *(["-o", "out"] if command[0] != "train" else [])])
    assert res.exit_code == 2 and "an empty path" in " ".join(res.output.split()), res.output
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_folder_is_a_usage_error(tmp_path, good_images, monkeypatch):
    # another user's output folder: its .o3d/ (cache and locks) read-only to this one
    import os

    import o3dcli.inputs as inputs

    out = tmp_path / "out"
    (out / ".o3d").mkdir(parents=True)
    real = os.access
    monkeypatch.setattr(inputs.os, "access", lambda p, mode: False if Path(p) == out / ".o3d" else real(p, mode))
    res = generate(good_images, "-o", out)
    assert res.exit_code == 2 and "no permission to write in" in res.output and ".o3d" in res.output, res.output
    assert sorted(p.name for p in out.iterdir()) == [".o3d"]


def test_an_interrupted_item_is_reported_as_such(good_images, tmp_path):
    from o3dcli.config import load_config
    from o3dcli.inputs import collect_inputs
    from o3dcli.naming import assign_names
    from o3dcli.pipeline import BatchRunner, run_batch
    from o3dcli.batch_types import BatchInterrupted
    from o3dcli.batch_types import Stage

    def stage_run(ctx):
        if ctx.item.name == "pear":
            raise KeyboardInterrupt
        (ctx.work_dir / "x.txt").write_text(ctx.item.name)
        return {}

    out = tmp_path / "out"
    out.mkdir()
    stage = Stage("touch", 1, (), stage_run, publish={"x.txt": "x.txt"})
    runner_ = BatchRunner(out, load_config("tiny"), [stage])
    items = assign_names(collect_inputs([good_images]), out)
    with pytest.raises(BatchInterrupted) as caught:
        run_batch(items, runner_, show_progress=False)
    status = {r.name: r.status for r in caught.value.result.items}
    assert status == {"apple": "ok", "pear": "interrupted", "plum": "not-run"}
    rep = report(out)
    assert rep["interrupted"] and rep["summary"] == {"ok": 1, "interrupted": 1, "not-run": 1}
    assert "run again to resume" in rep["items"][1]["error"]
    assert rep["items"][1]["error"].startswith("interrupted during touch:")  # which stage was running
    assert "touch" in rep["items"][1]["timings"]  # and the time it had taken counts


@pytest.mark.parametrize("command, name", [(["generate", "--stop-after", "preprocess"], "pipe.png"), (["mesh"], "pipe.obj")])
def test_a_pipe_given_as_input_fails_at_once(tmp_path, command, name):
    # a FIFO (or /dev/zero) was hashed, or read, forever; a subprocess, so a hang fails the test
    fifo = tmp_path / name
    os.mkfifo(fifo)
    res = subprocess.run([sys.executable, "-m", "o3dcli.cli", *command, str(fifo), "-o", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "not a regular file (a pipe or device)" in res.stdout + res.stderr


def test_a_reader_that_goes_away_does_not_stop_the_batch(good_images, tmp_path):
    # `o3d generate ... 2>&1 | head -1`: rich exited with code 1 at the next write, mid-batch,
    # leaving no report; now the output goes quiet and the batch finishes
    out = tmp_path / "out"
    images = tmp_path / "in"
    shutil.copytree(good_images, images)
    (images / "aaa-broken.png").write_bytes(b"not a png")  # first: its line comes after the reader left
    proc = subprocess.Popen([sys.executable, "-m", "o3dcli.cli", "generate", str(images), "-o", str(out),
                             "--stop-after", "preprocess", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout.readline().startswith(b"o3d ")  # the first line, then the reader leaves
    proc.stdout.close()
    assert proc.wait(timeout=120) == 1  # one item failed
    rep = json.loads((out / "o3d-report.json").read_text())
    assert rep["summary"] == {"ok": 3, "failed": 1}


def test_cached_tensors_are_readable_by_the_folders_other_users(good_images, tmp_path):
    # safetensors makes its files 0600: another user of a shared output folder could not resume
    import stat

    old = os.umask(0o022)
    try:
        assert generate(good_images, "-o", tmp_path / "out").exit_code == 0
    finally:
        os.umask(old)
    files = list((tmp_path / "out" / ".o3d").rglob("prepared.safetensors"))
    assert len(files) == 3 and {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o644}


def test_a_full_disk_fails_the_items_it_hits_and_the_report_not_the_batch(good_images, tmp_path, monkeypatch):
    # no space for an item's folder or lock: that item fails and the batch goes on; no space for
    # the report: said, exit 1, the finished assets kept (both ended in a traceback)
    import errno

    import o3dcli.cache as cache
    import o3dcli.pipeline as pipeline

    out = tmp_path / "out"
    real_claim = pipeline.claim_name

    def claim(out_dir, source, name, *a, **k):
        if name == "pear":
            raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / ".o3d" / "items" / name))
        return real_claim(out_dir, source, name, *a, **k)

    def full_write(fd, data):  # the lock's pid line: the disk is full, the lock still holds
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "claim_name", claim)
    monkeypatch.setattr(cache.os, "write", full_write)
    monkeypatch.setattr(pipeline, "write_report", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    res = generate(good_images, "-o", out)
    text = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "✗ pear" in text and "cannot write its folder or lock in" in text and "No space left on device" in text
    assert f"error: cannot write {out / 'o3d-report.json'} (No space left on device)" in text
    assert "Traceback" not in res.output and not (out / "o3d-report.json").exists()
    assert (out / "apple" / "input.png").is_file() and (out / "plum" / "input.png").is_file()


def test_a_stage_that_runs_out_of_disk_says_the_disk_is_full(good_images, tmp_path, monkeypatch):
    # safetensors' own words were all the item said ("SafetensorError: ... I/O error: No space ...")
    def full(*a, **k):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("o3dcli.atomic.atomic_save_tensors", full)
    out = tmp_path / "out"
    res = generate(good_images, "-o", out)
    assert res.exit_code == 1
    errors = [i["error"] for i in json.loads((out / "o3d-report.json").read_text())["items"]]
    assert len(errors) == 3 and all(e.startswith("out of disk space (") for e in errors), errors


@pytest.mark.parametrize(
    "args, needle",
    [
        (["missing-folder"], "input not found"),
        (["--set", "preprocess.sise=3"], "did you mean 'preprocess.size'"),
        (["--preset", "nope"], "unknown preset"),
        ([], "no inputs"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, needle):
    res = generate(*args, "-o", tmp_path / "out") if args[:1] != ["missing-folder"] else generate(tmp_path / "missing-folder", "-o", tmp_path / "out")
    assert res.exit_code == 2
    assert needle in res.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only messages")
def test_cuda_options_without_cuda_are_usage_errors(good_images, tmp_path):
    res = generate(good_images, "-o", tmp_path / "o", "--device", "cuda")
    assert res.exit_code == 2 and "CUDA is not available" in res.output
    res = generate(good_images, "-o", tmp_path / "o", "--dtype", "float16")
    assert res.exit_code == 2 and "needs a CUDA device" in res.output


@pytest.mark.skipif(__import__("torch").backends.mps.is_available(), reason="checks the message without MPS")
def test_mps_without_mps_is_a_usage_error_before_anything_is_written(good_images, tmp_path):
    res = generate(good_images, "-o", tmp_path / "o", "--device", "mps")
    assert res.exit_code == 2 and "runtime.device=mps but" in res.output
    assert not (tmp_path / "o").exists()


def test_rembg_matting_without_rembg_is_a_usage_error(good_images, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "rembg", None)  # import rembg -> ImportError
    res = generate(good_images, "-o", tmp_path / "o", "--set", "preprocess.matting=rembg")
    assert res.exit_code == 2 and "preprocess.matting=rembg but rembg is not installed" in res.output
    assert "preprocess.matting=builtin" in res.output and not (tmp_path / "o").exists()


def test_rembg_matting_cached_runs_on_without_rembg(good_images, tmp_path, monkeypatch):
    # preprocessed with rembg once; re-run (another format) where rembg is not installed: the
    # cached items run on, with a warning, instead of the whole batch being refused
    import sys
    import types

    import numpy as np
    from PIL import Image

    import o3dcli.matting as matting

    fake = types.ModuleType("rembg")
    fake.new_session = lambda name: "session"
    fake.remove = lambda image, session, only_mask: Image.fromarray(
        np.pad(np.full((image.size[1] // 2, image.size[0] // 2), 255, np.uint8),
               ((image.size[1] // 4, image.size[1] - image.size[1] // 2 - image.size[1] // 4),
                (image.size[0] // 4, image.size[0] - image.size[0] // 2 - image.size[0] // 4))), "L")
    monkeypatch.setattr(matting, "_REMBG_SESSIONS", {})
    monkeypatch.setitem(sys.modules, "rembg", fake)
    apple = good_images / "apple.png"
    args = [apple, "-o", tmp_path / "o", "--set", "preprocess.matting=rembg", "--stop-after", "preprocess"]
    assert generate(*args).exit_code == 0
    monkeypatch.setitem(sys.modules, "rembg", None)  # now not installed
    res = generate(*args)
    assert res.exit_code == 0, res.output
    assert "warning" in res.output and "rembg is not installed" in res.output
    res = generate(good_images / "pear.png", *args[1:])  # not cached: that item fails, naming why
    assert res.exit_code == 1 and "rembg is not installed" in res.output


def test_device_index_and_name_are_checked(monkeypatch):
    import torch

    from o3dcli.device import resolve_device
    from o3dcli.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cuda") == "cuda"
    with pytest.raises(UserError, match=r"cuda:5 but this machine has 2 CUDA device\(s\)"):
        resolve_device("cuda:5")
    with pytest.raises(UserError, match="not a torch device"):
        resolve_device("cuda:x")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="on a CUDA machine auto picks CUDA, and "
                    "--device cpu is another device type, with its own results")
def test_naming_the_device_auto_picks_or_raising_the_pixel_limit_recomputes_nothing(good_images, tmp_path):
    out = tmp_path / "out"
    apple = str(good_images / "apple.png")
    args = ["generate", "--no-progress", apple, "-o", str(out), "--stop-after", "diffusion", "--steps", "1",
            "--set", "preprocess.size=16"]
    assert runner.invoke(app, args).exit_code == 0
    views = (out / "apple" / "views.png").read_bytes()
    # the device "auto" picks here (no CUDA in tests) makes the same results: not made again
    res = runner.invoke(app, [*args, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert report(out)["items"][0]["cached"] == ["preprocess", "diffusion"]
    # a limit that lets a large photo through, as its error advises, changes no result either
    res = runner.invoke(app, [*args, "--set", "preprocess.max_pixels=60000000"])
    assert res.exit_code == 0, res.output
    assert report(out)["items"][0]["cached"] == ["preprocess", "diffusion"]
    assert (out / "apple" / "views.png").read_bytes() == views
    # a limit the photo is over still refuses it where nothing is cached for it
    res = runner.invoke(app, [*args, "--set", "preprocess.max_pixels=5000", "--set", "runtime.seed=1", "--force"])
    assert res.exit_code == 1 and "over the limit of 5,000" in report(out)["items"][0]["error"]


def test_stage_keys_hold_the_device_type_or_auto_where_it_is_the_type_auto_picks(monkeypatch):
    import o3dcli.device as device

    monkeypatch.setattr(device, "resolve_device", lambda name: "cuda" if name == "auto" else name)
    assert device.device_key("auto", "cuda") == "auto"
    assert device.device_key("cuda:1", "cuda:1") == device.device_key("cuda", "cuda") == "auto"
    assert device.device_key("cpu", "cpu") == "cpu"  # another device type: its own results
    monkeypatch.setattr(device, "resolve_device", lambda name: "cpu" if name == "auto" else name)
    assert device.device_key("cpu", "cpu") == "auto" and device.device_key("mps", "mps") == "mps"


def test_the_recursive_hint_is_given_only_for_images_in_sub_folders(good_images, tmp_path):
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    shutil.copy(good_images / "apple.png", top / "sub" / "apple.png")
    res = generate(top, "-o", tmp_path / "out")
    assert res.exit_code == 2 and "use --recursive: 1 in sub-folders" in res.output
    # an output folder's asset folders hold images too, but --recursive would skip them: no hint
    (top / "sub" / "o3d-asset.json").write_text("{}")
    res = generate(top, "-o", tmp_path / "out")
    assert res.exit_code == 2 and "no image files found" in res.output and "--recursive" not in res.output


def test_empty_folder_is_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    res = generate(tmp_path / "empty", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "no image files" in res.output
    assert "--recursive" not in res.output  # no sub-folders to recurse into


def test_recursive(tmp_path, good_images):
    nested = tmp_path / "nest" / "deeper"
    nested.mkdir(parents=True)
    (nested / "kiwi.png").write_bytes((good_images / "apple.png").read_bytes())
    res = generate(tmp_path / "nest", "-o", tmp_path / "o1")
    assert res.exit_code == 2  # no images at the top level
    assert generate(tmp_path / "nest", "-r", "-o", tmp_path / "o2").exit_code == 0
    assert (tmp_path / "o2" / "kiwi" / "input.png").is_file()


def _o3d(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "o3dcli.cli", *map(str, args), "--stop-after", "preprocess"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, **kw)


def _many_images(d: Path, n: int) -> Path:
    from conftest import disk_rgba

    d.mkdir()
    for i in range(n):
        Image.fromarray(disk_rgba(200, 0.1 + 0.3 * i / n, (0.3 + 0.4 * (i % 5) / 5, 0.5)), "RGBA").save(d / f"img{i:03d}.png")
    return d


def _asset_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".o3d" not in p.parts and p.name != "o3d-report.json"}


@pytest.mark.interrupts
def test_real_subprocess_and_sigkill_resume(tmp_path):
    imgs = _many_images(tmp_path / "imgs", 40)
    ref = tmp_path / "ref"
    p = _o3d("generate", imgs, "-o", ref, "--no-progress")
    out_text = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, out_text
    out = tmp_path / "out"
    p = _o3d("generate", imgs, "-o", out, "--no-progress")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("[!.]*/input.png"))) < 3:  # not staging folders
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done_before = len(list(out.glob("[!.]*/input.png")))
    assert 3 <= done_before < 40, "the kill should land mid-batch"
    p = _o3d("generate", imgs, "-o", out, "--no-progress")
    text = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, text
    rep = report(out)
    assert sum(i["cached"] == ["preprocess"] for i in rep["items"]) >= done_before - 1
    assert _asset_files(out) == _asset_files(ref)
    assert not list(out.rglob(".*.tmp-*")) and not list((out / ".o3d").rglob(".tmp-*"))


TWO_RENAMES = ("import sys; import o3dcli.publish as p; p._exchange = lambda a, b: False; "
               "from o3dcli.cli import main; sys.argv[0] = 'o3d'; main()")
"""`python -c TWO_RENAMES ARGS` runs o3d publishing as where folders cannot be swapped in one step."""


@pytest.mark.interrupts
@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_two_processes_share_an_output_folder(tmp_path, swap):
    imgs = _many_images(tmp_path / "imgs", 24)
    out = tmp_path / "out"
    args = ("generate", imgs, "-o", out, "--no-progress")
    procs = [_o3d(*args) if swap == "exchange" else
             subprocess.Popen([sys.executable, "-c", TWO_RENAMES, *map(str, args), "--stop-after", "preprocess"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(list(out.glob("*/input.png"))) == 24
    assert not list(out.rglob(".*.tmp-*"))


def test_warnings_logged_by_a_stage_reach_the_report_and_survive_the_cache(good_images, tmp_path):
    import logging

    from o3dcli.config import load_config
    from o3dcli.inputs import collect_inputs
    from o3dcli.naming import assign_names
    from o3dcli.pipeline import BatchRunner, run_batch
    from o3dcli.batch_types import Stage

    def stage_run(ctx):
        (ctx.work_dir / "x.txt").write_text("x")
        logging.getLogger("o3d").warning("%s: looks odd", ctx.work_dir / "x.txt")
        logging.getLogger("o3d").info("not a warning")
        return {"warnings": ["said by the stage"]}

    out = tmp_path / "out"
    out.mkdir()
    stage = Stage("touch", 1, (), stage_run, publish={"x.txt": "x.txt"})
    items = assign_names(collect_inputs([good_images / "apple.png"]), out)
    for run in range(2):  # computed, then cached: the same warnings
        result = run_batch(items, BatchRunner(out, load_config("tiny"), [stage]), show_progress=False)
        assert result.items[0].cached == ([] if run == 0 else ["touch"])
        # the work folder's path is given as the asset folder's, where x.txt is published
        assert result.items[0].warnings == ["said by the stage", f"{out / 'apple' / 'x.txt'}: looks odd"]
        assert report(out)["items"][0]["warnings"] == result.items[0].warnings
    assert not logging.getLogger("o3d").filters  # the stage's catch is gone after it


def test_warnings_of_a_failing_stage_are_still_said(good_images, tmp_path, caplog):
    import logging

    from o3dcli.config import load_config
    from o3dcli.inputs import collect_inputs
    from o3dcli.naming import assign_names
    from o3dcli.pipeline import BatchRunner, run_batch
    from o3dcli.batch_types import Stage

    def stage_run(ctx):
        logging.getLogger("o3d").warning("about to fail")
        logging.getLogger("o3d").error("an error is shown as it comes")
        raise ValueError("broken")

    out = tmp_path / "out"
    out.mkdir()
    items = assign_names(collect_inputs([good_images / "apple.png"]), out)
    with caplog.at_level(logging.WARNING, logger="o3d"):
        result = run_batch(items, BatchRunner(out, load_config("tiny"), [Stage("boom", 1, (), stage_run)]),
                           show_progress=False)
    assert result.items[0].status == "failed" and "broken" in result.items[0].error
    assert [r.getMessage() for r in caplog.records] == ["an error is shown as it comes", "about to fail"]


def test_sigterm_stops_a_batch_like_ctrl_c_with_exit_code_143(good_images, tmp_path, monkeypatch):
    # kill, timeout, docker stop and job schedulers send SIGTERM: the finished items are kept and
    # reported, and a re-run resumes
    import dataclasses

    import o3dcli.stages as stages

    def run(ctx):
        if ctx.item.name == "pear":
            signal.raise_signal(signal.SIGTERM)  # to this thread, not any of the process
        return stages.run_preprocess(ctx)

    monkeypatch.setattr(stages, "PREPROCESS", dataclasses.replace(stages.PREPROCESS, run=run))
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    o3d_log = logging.getLogger("o3d")
    logging_before = o3d_log.level, list(o3d_log.handlers), o3d_log.propagate
    res = generate(good_images, "-o", out)
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handling is back once the command ends
    # and so is its logging: the command's handler and propagate=False end with it (a warning
    # logged after an `o3d` command run from Python reached no root handler, nor pytest's caplog)
    assert (o3d_log.level, o3d_log.handlers, o3d_log.propagate) == logging_before
    assert res.exit_code == 143, res.output
    assert {i["name"]: i["status"] for i in report(out)["items"]} == {"apple": "ok", "pear": "interrupted",
                                                                      "plum": "not-run"}
    monkeypatch.undo()
    res = generate(good_images, "-o", out)
    assert res.exit_code == 0 and all(i["status"] == "ok" for i in report(out)["items"])


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_an_unfinished_rerun_leaves_the_earlier_asset_whole(good_images, tmp_path, stop):
    # new settings, then Ctrl-C (or a failure) in a later stage: the asset folder keeps the earlier
    # run's files and config.yaml together, not the new run's first files beside the old last ones
    from o3dcli.config import load_config
    from o3dcli.inputs import collect_inputs
    from o3dcli.naming import assign_names
    from o3dcli.pipeline import BatchRunner, run_batch
    from o3dcli.batch_types import BatchInterrupted
    from o3dcli.batch_types import Stage

    fail = {"on": False}

    def first(ctx):
        (ctx.work_dir / "a.txt").write_text(str(ctx.config.preprocess.size))
        return {}

    def second(ctx):
        if fail["on"]:
            raise stop("stopped")
        (ctx.work_dir / "b.txt").write_text(str(ctx.config.preprocess.size))
        return {}

    stages = [Stage("first", 1, ("preprocess",), first, publish={"a.txt": "a.txt"}),
              Stage("second", 1, ("preprocess",), second, publish={"b.txt": "b.txt"})]
    out = tmp_path / "out"
    out.mkdir()
    items = assign_names(collect_inputs([good_images / "apple.png"]), out)
    assert run_batch(items, BatchRunner(out, load_config("tiny"), stages), show_progress=False).ok
    before = {p.name: p.read_bytes() for p in (out / "apple").iterdir()}
    assert set(before) == {"a.txt", "b.txt", "config.yaml", "o3d-asset.json"}
    fail["on"] = True
    runner_ = BatchRunner(out, load_config("tiny", ["preprocess.size=48"]), stages)
    if stop is KeyboardInterrupt:
        with pytest.raises(BatchInterrupted):
            run_batch(items, runner_, show_progress=False)
    else:
        assert not run_batch(items, runner_, show_progress=False).ok
    assert {p.name: p.read_bytes() for p in (out / "apple").iterdir()} == before
    # a new input that stops the same way gets no folder (its finished stage stays cached)
    items = assign_names(collect_inputs([good_images / "pear.png"]), out)
    if stop is KeyboardInterrupt:
        with pytest.raises(BatchInterrupted):
            run_batch(items, runner_, show_progress=False)
    else:
        run_batch(items, runner_, show_progress=False)
    assert not (out / "pear").exists()


def test_a_failure_that_names_no_file_is_told_with_the_input(good_images, tmp_path, monkeypatch):
    import dataclasses

    import o3dcli.stages as stages

    def run(ctx):
        if ctx.item.name == "pear":
            raise ValueError("carve meshing found no surface")
        return stages.run_preprocess(ctx)

    monkeypatch.setattr(stages, "PREPROCESS", dataclasses.replace(stages.PREPROCESS, run=run))
    res = generate(good_images, "-o", tmp_path / "out")
    assert res.exit_code == 1
    assert f"✗ pear ({(good_images / 'pear.png').absolute()}): carve meshing found no surface" in " ".join(
        res.output.split())
    # the summary says which stage it failed in, and the time spent there
    assert "failedinpreprocess" in "".join(res.output.split())
    pear = next(i for i in report(tmp_path / "out")["items"] if i["name"] == "pear")
    assert pear["stage"] == "preprocess" and pear["timings"]["preprocess"] > 0


def test_without_a_terminal_each_finished_item_gets_a_line(good_images, tmp_path):
    # CliRunner's output is not a terminal, as a log file or a pipe is not: no bar (rich would draw
    # it once, at the end), a line per item as it finishes
    out = tmp_path / "out"
    res = runner.invoke(app, ["generate", "--stop-after", "preprocess", str(good_images), "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for k, name in enumerate(("apple", "pear", "plum"), 1):
        assert f"[{k}/3] ✓ {name}: ok in " in text and "0 of 1 stages cached" in text
    assert "generated" not in res.output and "3/3 0:0" not in text  # no bar (its last words, count, time)
    res = runner.invoke(app, ["generate", "--stop-after", "preprocess", str(good_images), "-o", str(out)])
    assert "[3/3] ✓ plum: ok in" in " ".join(res.output.split()) and "1 of 1 stages cached" in res.output


def test_an_asset_named_otherwise_than_its_input_says_which_input_it_is(good_images, tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "fox.png").write_bytes((good_images / "apple.png").read_bytes())
    (a / "fox.jpg").write_bytes((good_images / "plum.jpg").read_bytes())
    res = generate(a, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    second = next(i for i in report(tmp_path / "out")["items"] if i["name"] == "fox-2")
    flat = "".join(res.output.split())
    assert f"✓fox-2({second['input']}):okin".replace(" ", "") in flat  # its line
    assert res.output.count("<-") == 1  # and its row of the summary (fox-2, over its input: the path folds)
    assert "✓fox:okin" in flat  # named after its own input: no more said


def test_a_heic_photo_from_a_phone_is_an_input(good_images, tmp_path):
    # pillow-heif (the `heif` extra) reads it; the asset is the same as from the PNG it was made
    # from, up to the HEIC coding's loss.
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    photos = tmp_path / "phone"
    photos.mkdir()
    Image.open(good_images / "plum.jpg").save(photos / "IMG_0001.HEIC", format="HEIF", quality=95)
    res = generate(photos, good_images / "plum.jpg", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    items = {i["name"]: i for i in report(tmp_path / "out")["items"]}
    assert set(items) == {"IMG_0001", "plum"} and all(i["status"] == "ok" for i in items.values())
    import torch
    from safetensors.torch import load_file

    views = {}
    for name in items:
        (entry,) = (tmp_path / "out" / ".o3d" / "items" / name).glob("preprocess-*/prepared.safetensors")
        views[name] = load_file(str(entry))
    heic, jpeg = views["IMG_0001"], views["plum"]
    assert set(heic) == set(jpeg)
    for key in heic:
        assert heic[key].shape == jpeg[key].shape
        assert (heic[key].float() - jpeg[key].float()).abs().mean() < 0.02 * (255 if heic[key].dtype == torch.uint8 else 1)


def test_an_output_folder_whose_file_system_takes_no_locks_still_works(good_images, tmp_path, monkeypatch):
    # e.g. an NFS mount without its lock daemon: flock fails with ENOLCK. Every item failed
    # ("cannot write its folder or lock"); now the batch runs, with one warning.
    import errno
    import fcntl

    from o3dcli import cache

    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(cache, "_warned_unlocked", set())
    monkeypatch.setattr(fcntl, "flock", flock)
    res = generate(good_images, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert [i["status"] for i in report(tmp_path / "out")["items"]] == ["ok"] * 3
    assert " ".join(res.output.split()).count("takes no locks") == 1


def test_a_warning_that_names_no_file_is_told_with_its_input(good_images, tmp_path, monkeypatch):
    # same-named inputs become fox and fox-2: a warning line must say which file it is about
    import shutil

    import o3dcli.preprocess as pp
    from o3dcli.matting import Matte

    real = pp.estimate_foreground
    monkeypatch.setattr(pp, "estimate_foreground",
                        lambda *a: Matte(real(*a).alpha, "alpha", ("the image border is not a uniform background",)))
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(good_images / "apple.png", tmp_path / d / "fox.png")
    res = runner.invoke(app, ["generate", "--no-progress", "--stop-after", "preprocess", str(tmp_path / "a" / "fox.png"),
                              str(tmp_path / "b" / "fox.png"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for name, d in (("fox", "a"), ("fox-2", "b")):
        assert f"! {name} ({tmp_path / d / 'fox.png'}): the image border is not a uniform background" in text, text


def test_a_reused_stages_warnings_name_this_items_input(good_images, tmp_path, monkeypatch):
    # the warning was kept with the first item's path: "red (…/red.png): …/tomato.png: the object is only…"
    import o3dcli.preprocess as pp

    monkeypatch.setattr(pp, "SMALL_OBJECT_PX", 100_000)  # every object "small": a warning that names the file
    shoot, out, res, item = _made_then_renamed(tmp_path, good_images, "tomato", "red")
    assert item["reused_from"] == {"preprocess": "tomato"}
    assert item["warnings"] and all("tomato" not in w and str(shoot / "red.png") in w for w in item["warnings"]), item
    assert "tomato" not in " ".join(res.output.split()).split("stages cached")[0].replace("as tomato", "")


def test_an_interrupted_copy_of_another_items_entry_leaves_nothing_half_made(good_images, tmp_path, monkeypatch):
    import o3dcli.cache as cache_mod

    shoot, out = tmp_path / "shoot", tmp_path / "out"
    shoot.mkdir()
    (shoot / "apple.png").write_bytes((good_images / "apple.png").read_bytes())
    assert generate(shoot, "-o", out).exit_code == 0
    (shoot / "apple.png").rename(shoot / "green.png")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "atomic_write_text", interrupted)  # the manifest: the copy's last write
    assert generate(shoot, "-o", out).exit_code == 130
    assert [p.name for p in (out / ".o3d" / "items" / "green").iterdir()] == [".lock"]
    monkeypatch.undo()
    res = generate(shoot, "-o", out)
    assert res.exit_code == 0 and report(out)["items"][0]["reused_from"] == {"preprocess": "apple"}, res.output


def test_kept_warnings_swap_whole_paths_only():
    from o3dcli.pipeline import local_text, portable_text

    # `-o .`: the asset folder is a bare word, which a warning's text may hold too
    kept = portable_text("/p/object.jpg: the object is only 40 px across", "/p/object.jpg", Path(".") / "object")
    assert kept == "<o3d:input>: the object is only 40 px across"
    kept = portable_text("see out/apple/model.stl. Not out/apple-2/x, /x/out/apple or out/apple.", "/tmp/a.jpg",
                         Path("out/apple"))
    assert kept == "see <o3d:asset>/model.stl. Not out/apple-2/x, /x/out/apple or <o3d:asset>."
    assert local_text(kept, "/q/b.jpg", Path("out/b")) == "see out/b/model.stl. Not out/apple-2/x, /x/out/apple or out/b."


def test_an_output_on_a_read_only_disk_is_said_to_be_so(tmp_path, monkeypatch):
    import os
    from types import SimpleNamespace

    from o3dcli.errors import UserError
    from o3dcli.inputs import check_output_dir

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(UserError, match="no permission to write in"):
        check_output_dir(tmp_path / "out")
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_flag=os.ST_RDONLY), raising=False)
    with pytest.raises(UserError, match=f"output {tmp_path / 'out'}: its disk is read-only"):
        check_output_dir(tmp_path / "out")
    (tmp_path / "out" / ".o3d").mkdir(parents=True)  # an earlier run's output folder, now on a read-only disk
    with pytest.raises(UserError, match=f"output {tmp_path / 'out'}: its disk is read-only; give another"):
        check_output_dir(tmp_path / "out")
