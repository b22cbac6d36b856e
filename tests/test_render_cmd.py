"""`o3d render`: turntable GIF and view grid of Gaussian PLYs and meshes; bad inputs are isolated."""

import os

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.io.ply import save_gaussians


def _blob(n=400, offset=(0.0, 0.0, 0.0)) -> Gaussians:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(n, 3, generator=g) * 0.15 + torch.tensor(offset)
    return Gaussians(means, torch.full((n, 3), 0.03), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                     torch.full((n,), 0.9), torch.tensor([[0.9, 0.2, 0.1]]).repeat(n, 1))


def test_render_gaussians_and_mesh(tmp_path):
    import trimesh

    ply = tmp_path / "blob.ply"
    save_gaussians(ply, _blob(offset=(3.0, 1.0, 0.0)))  # off-centre and small: the view is normalised
    box = tmp_path / "box.glb"
    mesh = trimesh.creation.box(extents=(2.0, 1.0, 1.0))
    mesh.visual.vertex_colors = [30, 60, 200, 255]
    mesh.export(box)
    (tmp_path / "bad.ply").write_text("not a ply\n")
    out = tmp_path / "renders"
    res = CliRunner().invoke(app, ["render", str(ply), str(box), str(tmp_path / "bad.ply"), "-o", str(out),
                                   "--frames", "6", "--size", "48", "--no-mp4"])
    assert res.exit_code == 1, res.output  # the bad file fails, the others are rendered
    assert "bad.ply" in res.output
    for name in ("blob", "box"):
        gif = Image.open(out / f"{name}_turntable.gif")
        assert gif.n_frames == 6 and gif.size == (48, 48)
        grid = np.asarray(Image.open(out / f"{name}_views.png").convert("RGB"))
        assert grid.shape == (2 * 48, 4 * 48, 3)
        centre = grid[24, 24].astype(int)  # first view's centre: the object, not the white background
        assert (255 - centre).sum() > 60
        assert grid[0, 0].tolist() == [255, 255, 255]
    blob = np.asarray(Image.open(out / "blob_views.png").convert("RGB"))[:48, :48].astype(int)
    assert blob[24, 24, 0] > blob[24, 24, 2] + 60  # red Gaussians


def test_render_mp4_with_the_video_extra(tmp_path):
    import pytest

    iio = pytest.importorskip("imageio.v2", reason="the `video` extra (imageio, imageio-ffmpeg) is not installed")
    pytest.importorskip("imageio_ffmpeg", reason="the `video` extra (imageio-ffmpeg) is not installed")
    ply = tmp_path / "blob.ply"
    save_gaussians(ply, _blob())
    res = CliRunner().invoke(app, ["render", str(ply), "-o", str(tmp_path / "r"), "--frames", "5", "--size", "32"])
    assert res.exit_code == 0, res.output
    reader = iio.get_reader(tmp_path / "r" / "blob_turntable.mp4")
    assert reader.count_frames() == 5 and tuple(reader.get_meta_data()["size"]) == (32, 32)


def test_render_names_follow_the_asset_folder_and_never_overwrite(tmp_path):
    # asset folders all hold a gaussians.ply: each render is named after its folder, and a later run
    # for another input of the same name gets -2 instead of replacing the first one's files
    for folder, offset in (("a/chair", (0.0, 0.0, 0.0)), ("b/chair", (2.0, 0.0, 0.0)), ("fox", (0.0, 1.0, 0.0))):
        (tmp_path / folder).mkdir(parents=True)
        save_gaussians(tmp_path / folder / "gaussians.ply", _blob(100, offset))
    out = tmp_path / "r"
    opts = ["-o", str(out), "--frames", "2", "--size", "16", "--no-mp4"]
    assert CliRunner().invoke(app, ["render", str(tmp_path / "a/chair/gaussians.ply"), str(tmp_path / "fox"), *opts]).exit_code == 0
    first = (out / "chair_views.png").read_bytes()
    res = CliRunner().invoke(app, ["render", str(tmp_path / "b/chair/gaussians.ply"), *opts])
    assert res.exit_code == 0, res.output
    assert (out / "chair-2_views.png").is_file() and (out / "chair_views.png").read_bytes() == first
    assert (out / "fox_views.png").is_file()
    # the same input again takes its own name back
    assert CliRunner().invoke(app, ["render", str(tmp_path / "a/chair"), *opts]).exit_code == 0
    assert not (out / "chair-3_views.png").exists()
    # and so does the same file by another path (a hard link here; on macOS, a path typed in another
    # letter case, which resolves apart on its case-insensitive file system)
    (tmp_path / "c" / "chair").mkdir(parents=True)
    os.link(tmp_path / "a/chair/gaussians.ply", tmp_path / "c/chair/gaussians.ply")
    assert CliRunner().invoke(app, ["render", str(tmp_path / "c/chair/gaussians.ply"), *opts]).exit_code == 0
    assert not (out / "chair-3_views.png").exists()


def test_render_usage_errors(tmp_path):
    ply = tmp_path / "g.ply"
    save_gaussians(ply, _blob(50))
    res = CliRunner().invoke(app, ["render", str(ply), str(tmp_path / "missing.ply"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "missing.ply" in res.output and not (tmp_path / "o").exists()
    (tmp_path / "afile").write_text("x")
    res = CliRunner().invoke(app, ["render", str(ply), "-o", str(tmp_path / "afile")])
    assert res.exit_code == 2 and "not a folder" in res.output


def test_views_frame_a_cube_whole_and_show_an_untextured_white_mesh_in_grey(tmp_path):
    # the unit cube's corners (0.87 from its centre) were cut off by the orbit that sees a sphere of
    # radius 0.59; a white mesh was white on the white background
    import trimesh

    from o3dcli.io.mesh import load_mesh
    from o3dcli.render.turntable import render_asset, turntable_cameras

    trimesh.creation.box((1.0, 1.0, 1.0)).export(tmp_path / "cube.obj")
    mesh = load_mesh(tmp_path / "cube.obj")
    rgb = render_asset(mesh, turntable_cameras(8, 64))  # [8, 3, 64, 64] on white
    fg = (rgb < 0.98).any(1)
    assert fg.any(-1).any(-1).all()  # every view sees it
    for edge in (fg[:, 0, :], fg[:, -1, :], fg[:, :, 0], fg[:, :, -1]):
        assert not edge.any()  # and none cuts it
    assert float(rgb[:, :, 32, 32].max()) < 0.8  # grey, not white on white


def test_long_names_are_shortened_to_fit_with_their_temporary_files(tmp_path):
    # a 245-character stem failed with "File name too long": <name>_turntable.gif passes 255 bytes, and
    # at 235 characters (or 120 two-byte letters) only the atomic write's ".<file>.tmp-<pid>" did
    import json

    stems = ["a" * 245, "a" * 240 + "b" * 5, "c" * 235, "é" * 120, "short"]
    for i, stem in enumerate(stems):
        save_gaussians(tmp_path / "g.ply", _blob(60, (0.0, float(i), 0.0)))  # its temporary name would not fit
        (tmp_path / "g.ply").rename(tmp_path / f"{stem}.ply")
    out = tmp_path / "r"
    opts = ["-o", str(out), "--frames", "2", "--size", "16", "--no-mp4"]
    res = CliRunner().invoke(app, ["render", *(str(tmp_path / f"{s}.ply") for s in stems), *opts])
    assert res.exit_code == 0, res.output
    names = json.loads((out / "o3d-renders.json").read_text())
    assert len(names) == len(stems)
    by_source = {v: k for k, v in names.items()}
    for stem in stems:
        name = by_source[str((tmp_path / f"{stem}.ply").resolve())]
        if stem == "short":
            assert name == "short"  # names that fit are kept as they are
        else:  # the start of the stem and a short hash of the whole of it
            assert stem.startswith(name[:-9]) and len(name[:-9]) > 100 and name[-9] == "-"
        for suffix in ("_turntable.gif", "_views.png"):
            assert (out / f"{name}{suffix}").is_file()
            assert len(f".{name}{suffix}.tmp-4194304".encode()) <= 255  # the temporary file fits too
    # the two stems alike in their first 240 characters get different names; a re-run finds the same ones
    assert len(set(names)) == len(stems)
    res = CliRunner().invoke(app, ["render", str(tmp_path / f"{stems[0]}.ply"), *opts])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "o3d-renders.json").read_text()) == names
    # a long name taken by another input gets -2, still short enough
    (tmp_path / "other").mkdir()
    (tmp_path / "g.ply").write_bytes((tmp_path / f"{stems[0]}.ply").read_bytes())
    (tmp_path / "g.ply").rename(tmp_path / "other" / f"{stems[0]}.ply")
    res = CliRunner().invoke(app, ["render", str(tmp_path / "other" / f"{stems[0]}.ply"), *opts])
    assert res.exit_code == 0, res.output
    second = json.loads((out / "o3d-renders.json").read_text()).keys() - names.keys()
    assert len(second) == 1 and next(iter(second)).endswith("-2")
    assert len(next(iter(second)).encode()) <= 228


def test_a_users_own_files_of_the_same_name_are_never_replaced(tmp_path):
    # names missing from o3d-renders.json counted as free: the user's tri_views.png was overwritten
    import json

    save_gaussians(tmp_path / "tri.ply", _blob(60))
    out = tmp_path / "r"
    out.mkdir()
    (out / "tri_views.png").write_bytes(b"my own picture")
    (out / "fox_turntable.mp4").write_bytes(b"my own video")
    save_gaussians(tmp_path / "fox.ply", _blob(60, (1.0, 0.0, 0.0)))
    opts = ["-o", str(out), "--frames", "2", "--size", "16", "--no-mp4"]
    res = CliRunner().invoke(app, ["render", str(tmp_path / "tri.ply"), str(tmp_path / "fox.ply"), *opts])
    assert res.exit_code == 0, res.output
    assert (out / "tri_views.png").read_bytes() == b"my own picture"
    assert (out / "fox_turntable.mp4").read_bytes() == b"my own video"  # also a file this run would not write
    assert (out / "tri-2_views.png").is_file() and (out / "fox-2_turntable.gif").is_file()
    assert not (out / "tri_turntable.gif").exists() and not (out / "fox_views.png").exists()
    manifest = json.loads((out / "o3d-renders.json").read_text())
    assert manifest == {"tri-2": str((tmp_path / "tri.ply").resolve()), "fox-2": str((tmp_path / "fox.ply").resolve())}
    # a re-run takes its own names back (files o3d wrote are not the user's)
    assert CliRunner().invoke(app, ["render", str(tmp_path / "tri.ply"), *opts]).exit_code == 0
    assert not (out / "tri-3_views.png").exists()
    assert json.loads((out / "o3d-renders.json").read_text()) == manifest


def test_a_name_is_recorded_before_its_files_and_not_for_a_failed_input(tmp_path, monkeypatch):
    # files left by a run stopped after the GIF belong to that input: the re-run does not take them for
    # a user's and move to -2; an input that cannot be read claims no name
    import json

    from o3dcli.io import media

    save_gaussians(tmp_path / "fox.ply", _blob(60))
    out = tmp_path / "r"
    opts = ["-o", str(out), "--frames", "2", "--size", "16", "--no-mp4"]
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(media, "save_png", interrupted)  # Ctrl-C between the GIF and the grid
        res = CliRunner().invoke(app, ["render", str(tmp_path / "fox.ply"), *opts])
    assert res.exit_code == 130 and (out / "fox_turntable.gif").is_file() and not (out / "fox_views.png").exists()
    assert CliRunner().invoke(app, ["render", str(tmp_path / "fox.ply"), *opts]).exit_code == 0
    assert (out / "fox_views.png").is_file() and not (out / "fox-2_views.png").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "fox.ply").write_text("not a ply\n")
    assert CliRunner().invoke(app, ["render", str(tmp_path / "bad" / "fox.ply"), *opts]).exit_code == 1
    assert json.loads((out / "o3d-renders.json").read_text()) == {"fox": str((tmp_path / "fox.ply").resolve())}


def test_a_turntable_seen_from_straight_above_turns(tmp_path):
    # at --elevation 90 every frame was the same picture (a 1-frame GIF, 8 equal views); at 89 it turned
    import trimesh

    box = trimesh.creation.box(extents=(2.0, 0.5, 1.0))  # a long box: a quarter turn shows
    box.visual.vertex_colors = [30, 60, 200, 255]
    box.export(tmp_path / "box.glb")
    out = tmp_path / "r"
    for elevation in ("90", "-90"):
        res = CliRunner().invoke(app, ["render", str(tmp_path / "box.glb"), "-o", str(out), "--frames", "4",
                                       "--size", "32", "--elevation", elevation, "--no-mp4"])
        assert res.exit_code == 0, res.output
        assert Image.open(out / "box_turntable.gif").n_frames == 4
        views = np.asarray(Image.open(out / "box_views.png").convert("RGB")).reshape(2, 32, 4, 32, 3)
        views = views.transpose(0, 2, 1, 3, 4).reshape(8, 32, 32, 3).astype(int)
        fg = (255 - views).sum(-1) > 60
        assert (fg[0] != fg[2]).sum() > 50  # azimuth 0 and 90: the box lies across, then along
        assert (fg[0] != np.rot90(fg[2])).sum() < 20  # a quarter turn of the picture


def test_gif_frame_rate_is_capped_at_50_fps_with_a_warning(tmp_path):
    # GIF delays are whole 1/100 s: --fps 60 and 100 stored 1 (played at 10 fps by browsers), --fps 1000
    # stored 0 and an MP4 of 0 fps
    save_gaussians(tmp_path / "g.ply", _blob(60))
    out = tmp_path / "r"
    opts = ["-o", str(out), "--frames", "3", "--size", "16"]

    def delays(name):
        with Image.open(out / name) as gif:
            found = []
            for i in range(gif.n_frames):
                gif.seek(i)
                found.append(gif.info["duration"])
            return found

    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), *opts, "--fps", "60", "--no-mp4"])
    assert res.exit_code == 0, res.output
    assert delays("g_turntable.gif") == [20, 20, 20]
    assert res.output.count("warning") == 1 and "--fps 60" in res.output and "50 fps" in res.output
    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), *opts, "--fps", "50", "--no-mp4"])
    assert res.exit_code == 0 and "warning" not in res.output and delays("g_turntable.gif") == [20, 20, 20]
    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), *opts, "--fps", "12", "--no-mp4"])
    assert res.exit_code == 0 and delays("g_turntable.gif") == [80, 90, 80]  # 1/12 s on average, not 8/100 s each
    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), *opts, "--frames", "12", "--fps", "12", "--no-mp4"])
    assert res.exit_code == 0 and sum(delays("g_turntable.gif")) == 1000  # 12 frames at 12 fps: one second


def test_non_finite_and_out_of_range_option_values_are_usage_errors(tmp_path):
    # --elevation nan/inf rendered blank images and reported success; --fps inf failed the item (exit 1)
    save_gaussians(tmp_path / "g.ply", _blob(60))
    for option, value in [("--fps", "121"), ("--fps", "1000"), ("--fps", "0"), ("--fps", "-5"), ("--fps", "nan"),
                          ("--fps", "inf"), ("--elevation", "nan"), ("--elevation", "inf"), ("--elevation", "-inf"),
                          ("--size", "100000"), ("--frames", "100000")]:  # these two ran out of memory
        res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), "-o", str(tmp_path / "bad"), option, value])
        assert res.exit_code == 2 and option in res.output, (option, value, res.output)
        assert not (tmp_path / "bad").exists()
    # each within its bound, together too much to hold (3600 frames of 4096^2: 181 GB)
    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), "-o", str(tmp_path / "bad"),
                                   "--frames", "3600", "--size", "4096"])
    assert res.exit_code == 2 and "--frames 3600 at --size 4096 is" in " ".join(res.output.split())
    assert not (tmp_path / "bad").exists()


def test_mp4_keeps_a_frame_rate_above_the_gifs(tmp_path):
    import pytest

    iio = pytest.importorskip("imageio.v2", reason="the `video` extra (imageio, imageio-ffmpeg) is not installed")
    pytest.importorskip("imageio_ffmpeg", reason="the `video` extra (imageio-ffmpeg) is not installed")
    save_gaussians(tmp_path / "g.ply", _blob(60))
    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), "-o", str(tmp_path / "r"), "--frames", "3",
                                   "--size", "16", "--fps", "120"])
    assert res.exit_code == 0, res.output
    assert "the MP4 at 120" in res.output
    assert iio.get_reader(tmp_path / "r" / "g_turntable.mp4").get_meta_data()["fps"] == 120


def test_a_format_no_longer_written_is_removed_but_never_a_users_file(tmp_path):
    # a render with MP4, then again with --no-mp4: the new GIF sat beside the earlier render's MP4
    import pytest

    pytest.importorskip("imageio.v2", reason="the `video` extra (imageio, imageio-ffmpeg) is not installed")
    pytest.importorskip("imageio_ffmpeg", reason="the `video` extra (imageio-ffmpeg) is not installed")
    save_gaussians(tmp_path / "g.ply", _blob(60))
    save_gaussians(tmp_path / "fox.ply", _blob(60, (1.0, 0.0, 0.0)))
    out = tmp_path / "r"
    out.mkdir()
    (out / "fox_turntable.mp4").write_bytes(b"my own video")
    opts = ["-o", str(out), "--frames", "2", "--size", "16"]
    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), str(tmp_path / "fox.ply"), *opts])
    assert res.exit_code == 0, res.output
    assert (out / "g_turntable.mp4").is_file() and (out / "fox-2_turntable.mp4").is_file()
    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), str(tmp_path / "fox.ply"), *opts, "--no-mp4"])
    assert res.exit_code == 0, res.output
    assert not (out / "g_turntable.mp4").exists() and not (out / "fox-2_turntable.mp4").exists()
    assert (out / "g_turntable.gif").is_file() and (out / "g_views.png").is_file()
    assert (out / "fox_turntable.mp4").read_bytes() == b"my own video"


def test_an_input_given_twice_is_rendered_once(tmp_path):
    # `o3d render sphere.ply sphere.ply` rendered it twice, as sphere and sphere-2; o3d mesh meshes it once
    import json

    (tmp_path / "fox").mkdir()
    save_gaussians(tmp_path / "fox" / "gaussians.ply", _blob(60))
    (tmp_path / "link.ply").symlink_to(tmp_path / "fox" / "gaussians.ply")
    out = tmp_path / "r"
    ply = str(tmp_path / "fox" / "gaussians.ply")
    res = CliRunner().invoke(app, ["render", ply, ply, str(tmp_path / "fox"), str(tmp_path / "link.ply"), "-o", str(out),
                                   "--frames", "2", "--size", "16", "--no-mp4"])
    assert res.exit_code == 0, res.output
    assert "3 input(s) given more than once; each is rendered once" in " ".join(res.output.split())
    assert res.output.count("✓") == 1
    assert json.loads((out / "o3d-renders.json").read_text()) == {"fox": str((tmp_path / "fox" / "gaussians.ply").resolve())}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "fox_turntable.gif", "fox_views.png", "o3d-renders.json"]  # (and the manifest's hidden lock file)


def test_a_folder_of_assets_renders_each_asset_in_it(tmp_path):
    # `o3d render assets` (an o3d generate output folder) failed: "folder holds none of model.glb, ..."
    assets = tmp_path / "assets"
    for name, offset in (("apple", (0.0, 0.0, 0.0)), ("pear", (1.0, 0.0, 0.0))):
        (assets / name).mkdir(parents=True)
        save_gaussians(assets / name / "gaussians.ply", _blob(60, offset))
    (assets / ".o3d").mkdir()
    (assets / "o3d-report.json").write_text("{}")
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["render", str(assets), "-o", str(out), "--frames", "2", "--size", "16", "--no-mp4"])
    assert res.exit_code == 0, res.output
    assert f"{assets}: 2 assets inside" in " ".join(res.output.split())
    assert {p.name for p in out.glob("*_views.png")} == {"apple_views.png", "pear_views.png"}
    # a folder with nothing to render is still an error naming it
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["render", str(tmp_path / "empty"), "-o", str(out), "--frames", "2", "--size", "16"])
    assert res.exit_code == 1 and "empty: folder holds none of" in " ".join(res.output.split())


def test_a_damaged_manifest_is_warned_about_and_no_render_is_replaced(tmp_path):
    save_gaussians(tmp_path / "fox.ply", _blob(60))
    out = tmp_path / "r"
    opts = ["-o", str(out), "--frames", "2", "--size", "16", "--no-mp4"]
    assert CliRunner().invoke(app, ["render", str(tmp_path / "fox.ply"), *opts]).exit_code == 0
    first = (out / "fox_views.png").read_bytes()
    (out / "o3d-renders.json").write_text("{not json")
    res = CliRunner().invoke(app, ["render", str(tmp_path / "fox.ply"), *opts])
    assert res.exit_code == 0, res.output
    assert "o3d-renders.json cannot be read" in " ".join(res.output.split())
    assert (out / "fox_views.png").read_bytes() == first and (out / "fox-2_views.png").is_file()


def test_up_is_read_in_any_case(tmp_path):
    import trimesh

    tall = tmp_path / "tall.glb"
    trimesh.creation.box(extents=(0.3, 0.3, 1.0)).export(tall)  # tall along Z: --up z stands it up
    views = {}
    for up in ("z", "Z", "y"):
        out = tmp_path / up
        res = CliRunner().invoke(app, ["render", str(tall), "--up", up, "-o", str(out), "--frames", "2", "--size", "16",
                                       "--no-mp4"])
        assert res.exit_code == 0, res.output
        views[up] = np.asarray(Image.open(out / "tall_views.png"))
    assert np.array_equal(views["z"], views["Z"]) and not np.array_equal(views["z"], views["y"])
    res = CliRunner().invoke(app, ["render", str(tall), "--up", "w", "-o", str(tmp_path / "w")])
    assert res.exit_code == 2 and "--up must be auto, y or z" in res.output


def test_names_another_render_records_meanwhile_are_kept_and_not_taken(tmp_path, monkeypatch):
    # two o3d render runs on one folder: each rewrote the manifest from what it read at its start,
    # losing the other's names (whose renders an o3d generate scan then took for photos)
    import json

    import o3dcli.io.assets as assets

    save_gaussians(tmp_path / "fox.ply", _blob(60))
    out = tmp_path / "r"
    out.mkdir()
    real = assets.load_asset

    def load_while_another_render_records(path, **kw):  # another process, between our start and our record
        (out / "o3d-renders.json").write_text(json.dumps({"fox": "/elsewhere/fox.ply", "owl": "/elsewhere/owl.ply"}))
        return real(path, **kw)

    monkeypatch.setattr(assets, "load_asset", load_while_another_render_records)
    res = CliRunner().invoke(app, ["render", str(tmp_path / "fox.ply"), "-o", str(out), "--frames", "2", "--size", "16",
                                   "--no-mp4"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "o3d-renders.json").read_text())
    assert manifest == {"fox": "/elsewhere/fox.ply", "owl": "/elsewhere/owl.ply",
                        "fox-2": str((tmp_path / "fox.ply").resolve())}
    assert (out / "fox-2_views.png").is_file() and not (out / "fox_views.png").exists()


def test_after_a_damaged_manifest_earlier_renders_stay_recorded(tmp_path):
    from o3dcli.inputs import collect_inputs

    save_gaussians(tmp_path / "fox.ply", _blob(60))
    out = tmp_path / "r"
    opts = ["-o", str(out), "--frames", "2", "--size", "16", "--no-mp4"]
    assert CliRunner().invoke(app, ["render", str(tmp_path / "fox.ply"), *opts]).exit_code == 0
    (out / "o3d-renders.json").write_text("{cut short")
    save_gaussians(tmp_path / "owl.ply", _blob(60, (1.0, 0.0, 0.0)))
    assert CliRunner().invoke(app, ["render", str(tmp_path / "owl.ply"), *opts]).exit_code == 0
    assert collect_inputs([out]) == []  # fox's renders are still known as renders, not photos


def test_an_ffmpeg_that_is_not_there_leaves_the_mp4_out_and_a_failed_mp4_keeps_the_rest(tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("imageio_ffmpeg", reason="the `video` extra (imageio-ffmpeg) is not installed")
    from o3dcli.io import media

    save_gaussians(tmp_path / "g.ply", _blob())
    opts = ["-o", str(tmp_path / "r"), "--frames", "2", "--size", "16"]
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-ffmpeg"))
    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), *opts])
    assert res.exit_code == 0, res.output
    assert f"MP4 needs ffmpeg, and {tmp_path / 'no-ffmpeg'} (IMAGEIO_FFMPEG_EXE) is not there; writing GIFs only" in " ".join(res.output.split())
    assert sorted(p.name for p in (tmp_path / "r").glob("g_*")) == ["g_turntable.gif", "g_views.png"]
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE")

    def broken(path, frames, fps):  # ffmpeg is there but fails (a build without libx264)
        raise OSError("ffmpeg exited with 1: Unknown encoder 'libx264'")

    monkeypatch.setattr(media, "save_mp4", broken)
    save_gaussians(tmp_path / "h.ply", _blob())
    res = CliRunner().invoke(app, ["render", str(tmp_path / "h.ply"), *opts])
    assert res.exit_code == 1
    assert "the MP4 could not be written (ffmpeg exited with 1: Unknown encoder 'libx264'); its GIF and views PNG are written, and --no-mp4 leaves the MP4 out" in " ".join(res.output.split())
    assert sorted(p.name for p in (tmp_path / "r").glob("h_*")) == ["h_turntable.gif", "h_views.png"]


def test_the_views_png_is_seen_from_the_generation_cameras(tmp_path):
    # its 8th view was at azimuth 315, where an asset's views.png (and the published rig) has 337.5
    import torch

    from o3dcli.commands.render import GRID_AZIMUTHS
    from o3dcli.config import CameraConfig
    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.io.media import to_uint8
    from o3dcli.render.turntable import render_asset

    assert GRID_AZIMUTHS == CameraConfig().azimuths
    # a blob with a bright marker on one side: the 8th tile must match a render at 337.5 degrees
    blob = _blob()
    marker = Gaussians(torch.tensor([[0.3, 0.0, 0.3]]).repeat(40, 1) + torch.randn(40, 3) * 0.02,
                       torch.full((40, 3), 0.03), torch.tensor([[1.0, 0, 0, 0]]).repeat(40, 1),
                       torch.full((40,), 0.95), torch.tensor([[0.1, 0.3, 1.0]]).repeat(40, 1))
    g = Gaussians(*(torch.cat([getattr(blob, k), getattr(marker, k)]) for k in ("means", "scales", "quats", "opacities", "colors")))
    save_gaussians(tmp_path / "g.ply", g)
    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), "-o", str(tmp_path / "r"), "--frames", "2",
                                   "--size", "32", "--no-mp4", "--elevation", "10"])
    assert res.exit_code == 0, res.output
    last = np.asarray(Image.open(tmp_path / "r" / "g_views.png").convert("RGB"))[32:, 96:].astype(int)
    from o3dcli.io.ply import load_gaussians

    for azimuth, same in ((337.5, True), (315.0, False)):
        ref = to_uint8(render_asset(load_gaussians(tmp_path / "g.ply"), orbit_cameras([10.0], [azimuth], size=32)))[0]
        assert (np.abs(last - ref.astype(int)).max() <= 1) == same, azimuth


def test_wide_splats_at_the_edge_stay_inside_every_turntable_frame():
    # the view was fitted to the Gaussians' centres only: splats of generated assets reached past it
    # and were cut off at the frame's edge in a third of the frames
    from o3dcli.render.turntable import turntable_frames

    g = torch.Generator().manual_seed(1)
    n = 3000
    dirs = torch.randn(n, 3, generator=g)
    means = dirs / dirs.norm(dim=1, keepdim=True) * torch.tensor([1.0, 0.6, 0.8])  # an ellipsoid's shell
    blob = Gaussians(means, torch.full((n, 3), 0.08), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                     torch.full((n,), 0.9), torch.tensor([[0.2, 0.3, 0.8]]).repeat(n, 1))
    frames = turntable_frames(blob, n_frames=8, size=64)
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], 1)
    assert (border >= 250).all(), int((border < 250).any(-1).sum())
    assert (frames[:, 32, 32] < 200).any(-1).all()  # and the object is drawn


def test_one_gaussian_or_one_point_is_drawn_as_a_blob_not_a_filled_frame(tmp_path):
    # a set without spread of its own was divided by a spread of 1e-8: its Gaussian filled the frame
    one = Gaussians(torch.tensor([[0.5, 0.2, 0.1]]), torch.full((1, 3), 0.05), torch.tensor([[1.0, 0, 0, 0]]),
                    torch.tensor([0.9]), torch.tensor([[0.9, 0.1, 0.1]]))
    save_gaussians(tmp_path / "one.ply", one)
    (tmp_path / "point.ply").write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                                        "property float z\nend_header\n0.5 0.2 0.1\n0.5 0.2 0.1\n")
    res = CliRunner().invoke(app, ["render", str(tmp_path / "one.ply"), str(tmp_path / "point.ply"), "-o",
                                   str(tmp_path / "r"), "--frames", "2", "--size", "32", "--no-mp4"])
    assert res.exit_code == 0, res.output
    for name in ("one", "point"):
        tile = np.asarray(Image.open(tmp_path / "r" / f"{name}_views.png").convert("RGB"))[:32, :32].astype(int)
        assert (tile[16, 16] < 200).any() and tile[[0, 0, -1, -1], [0, -1, 0, -1]].min() >= 250, name
        assert 0.05 < (tile < 250).any(-1).mean() < 0.6, name


def test_a_splat_file_from_another_tool_is_read_minus_y_up_as_splat_viewers_show_it(tmp_path):
    # o3d's gaussians.ply records its frame in header comments; a file without them (another tool's, or
    # o3d's re-saved by a splat editor) was read +Y up, upside down against how every splat viewer shows it
    from o3dcli.io.assets import TURN_Z_180, _turned, load_asset
    from o3dcli.io.ply import VIEWER_FRAME_COMMENT, WRITTEN_BY_COMMENT

    g = torch.Generator().manual_seed(0)
    n = 300
    means = torch.randn(n, 3, generator=g) * 0.1
    means[:50, 1] += 0.5  # a cap on top (+Y in o3d's world)
    q = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.05 + 0.01
    ours = Gaussians(means, scales, q / q.norm(dim=1, keepdim=True), torch.full((n,), 0.9), torch.rand(n, 3, generator=g))
    save_gaussians(tmp_path / "ours.ply", ours)
    raw = (tmp_path / "ours.ply").read_bytes()
    frame, written = f"comment {VIEWER_FRAME_COMMENT}\n".encode(), f"comment {WRITTEN_BY_COMMENT}\n".encode()
    assert frame in raw and written in raw
    (tmp_path / "theirs.ply").write_bytes(raw.replace(frame, b"").replace(written, b""))
    # o3d's files from before it wrote them turned: its +Y-up world as it is, without the frame comment
    save_gaussians(tmp_path / "older.ply", _turned(ours, TURN_Z_180))
    (tmp_path / "older.ply").write_bytes((tmp_path / "older.ply").read_bytes().replace(frame, b""))

    def top_cap_up(asset):
        return float(asset.means[:50, 1].mean()) > 0.4

    for up in ("auto", "y", "z"):
        # auto: as the viewers take it, where o3d's own file is upright; y: the file's own +Y up
        assert top_cap_up(load_asset(tmp_path / "theirs.ply", up=up)) == (up == "auto"), up
        for name in ("ours.ply", "older.ply"):  # o3d's own: the frame they record, whatever --up says
            assert torch.allclose(load_asset(tmp_path / name, up=up).means, ours.means, atol=1e-6), (name, up)
    assert not top_cap_up(load_asset(tmp_path / "theirs.ply", foreign_splats="stored"))  # o3d eval's protocol
    again = load_asset(tmp_path / "theirs.ply")
    assert torch.allclose(again.means, ours.means, atol=1e-6)  # the same Gaussians as o3d's own file gives
    assert torch.allclose(again.covariances(), ours.covariances(), atol=1e-6)
    z_up = load_asset(tmp_path / "theirs.ply", up="z")  # the file's own Z taken as up
    stored = load_asset(tmp_path / "theirs.ply", up="y")
    assert torch.allclose(stored.means, torch.stack([-ours.means[:, 0], -ours.means[:, 1], ours.means[:, 2]], 1), atol=1e-6)
    assert torch.allclose(z_up.means, torch.stack([stored.means[:, 0], stored.means[:, 2], -stored.means[:, 1]], 1), atol=1e-6)
    # and o3d render draws it as it draws o3d's own file, upright
    res = CliRunner().invoke(app, ["render", str(tmp_path / "theirs.ply"), str(tmp_path / "ours.ply"), "-o",
                                   str(tmp_path / "r"), "--frames", "2", "--size", "32", "--no-mp4"])
    assert res.exit_code == 0, res.output
    views = {k: np.asarray(Image.open(tmp_path / "r" / f"{k}_views.png").convert("RGB")).astype(int) for k in ("theirs", "ours")}
    assert np.abs(views["theirs"] - views["ours"]).max() <= 2 and views["ours"].min() < 200


def test_mesh_views_rendered_in_groups_are_the_views_rendered_at_once(monkeypatch):
    # render_asset keeps only each group's colour (8 views at 4096 px held 17 GB of maps)
    import trimesh

    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.geometry.mesh import TriMesh
    from o3dcli.render import turntable

    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    mesh = TriMesh(box.vertices, box.faces, material_color=np.array([0.8, 0.3, 0.2]))
    cams = orbit_cameras([15.0] * 5, [0, 60, 130, 200, 290], size=24)
    at_once = turntable.render_asset(mesh, cams)
    monkeypatch.setattr(turntable, "MESH_PIXELS_AT_ONCE", 2 * 24 * 24)  # groups of 2, 2 and 1 views
    grouped = turntable.render_asset(mesh, cams)
    assert grouped.shape == at_once.shape == (5, 3, 24, 24) and torch.equal(grouped, at_once)
    assert (at_once < 0.9).any()


def test_a_render_in_which_nothing_shows_says_so(tmp_path):
    (tmp_path / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")  # a triangle without area
    save_gaussians(tmp_path / "g.ply", _blob())
    res = CliRunner().invoke(app, ["render", str(tmp_path / "flat.obj"), str(tmp_path / "g.ply"), "-o",
                                   str(tmp_path / "r"), "--frames", "2", "--size", "16", "--no-mp4"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert f"warning: {tmp_path / 'flat.obj'}: nothing shows in any view" in said and said.count("nothing shows") == 1


def test_an_mp4_stopped_while_encoding_leaves_no_hidden_file(tmp_path, monkeypatch):
    from pathlib import Path

    import pytest

    iio = pytest.importorskip("imageio.v2", reason="the `video` extra (imageio, imageio-ffmpeg) is not installed")
    from o3dcli.io import media

    def cut_short(path, frames, **kw):  # part of the file written, then Ctrl-C
        Path(path).write_bytes(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(iio, "mimwrite", cut_short)
    with pytest.raises(KeyboardInterrupt):
        media.save_mp4(tmp_path / "x.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_said_to_be_one(tmp_path, monkeypatch):
    import errno

    from o3dcli.io import media

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(media, "save_gif", full)
    save_gaussians(tmp_path / "g.ply", _blob())
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["render", str(tmp_path / "g.ply"), "-o", str(out), "--frames", "2", "--size", "16",
                                   "--no-mp4"])
    assert res.exit_code == 1
    assert (f"out of disk space writing its renders in {out} ([Errno 28] No space left on device); free some "
            "space and run again") in " ".join(res.output.split())
