"""o3d's files in an asset folder are hard links to the cache's, where the file system allows:
an asset costs no disk beside its cache. An edit made in place there changes the cached file
too, which the cache's check finds and says, and the next run makes o3d's file again."""

import errno
import json
import logging
import os
from pathlib import Path

from typer.testing import CliRunner

from o3dcli.cli import app

runner = CliRunner()


def generate(image: Path, out: Path):
    return runner.invoke(app, ["generate", "--no-progress", "--stop-after", "preprocess", str(image), "-o", str(out)])


def cached_input(out: Path) -> Path:
    return next((out / ".o3d" / "items" / "apple").glob("preprocess-*")) / "input.png"


def test_published_files_are_the_cache_files_and_a_rerun_touches_nothing(good_images, tmp_path):
    out = tmp_path / "out"
    res = generate(good_images / "apple.png", out)
    assert res.exit_code == 0, res.output
    asset = out / "apple" / "input.png"
    assert os.path.samefile(asset, cached_input(out)) and asset.stat().st_nlink == 2
    before = asset.stat()
    assert generate(good_images / "apple.png", out).exit_code == 0
    after = asset.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_nlink) == (before.st_ino, before.st_mtime_ns, 2)


def test_where_links_fail_the_files_are_copies(good_images, tmp_path, monkeypatch):
    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "out"
    res = generate(good_images / "apple.png", out)
    assert res.exit_code == 0, res.output
    asset = out / "apple" / "input.png"
    assert not os.path.samefile(asset, cached_input(out)) and asset.stat().st_nlink == 1
    assert asset.read_bytes() == cached_input(out).read_bytes()


def test_an_asset_file_edited_in_place_is_said_and_made_again(good_images, tmp_path):
    out = tmp_path / "out"
    assert generate(good_images / "apple.png", out).exit_code == 0
    asset = out / "apple" / "input.png"
    published = asset.read_bytes()
    with open(asset, "r+b") as f:  # an editor that saves over the file it opened
        f.seek(len(published) // 2)
        f.write(b"\x00" * 16)
    res = generate(good_images / "apple.png", out)
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the log line is wrapped at the console's width
    assert "damaged cache entry" in said and "also in an asset folder, so it was likely edited there" in said
    assert asset.read_bytes() == published and os.path.samefile(asset, cached_input(out))
    item = json.loads((out / "o3d-report.json").read_text())["items"][0]
    assert item["cached"] == []  # the entry was recomputed
    # the edit is not lost: kept beside it, and said
    kept = out / "apple" / "input.edited.png"
    assert kept.read_bytes()[len(published) // 2:][:16] == b"\x00" * 16 and len(kept.read_bytes()) == len(published)
    assert f"{asset} was changed since o3d wrote it: the edit is kept as input.edited.png" in said
    assert any("the edit is kept as input.edited.png" in w for w in item["warnings"])
    assert generate(good_images / "apple.png", out).exit_code == 0  # it is the user's now: left alone
    assert kept.is_file() and not (out / "apple" / "input.edited-2.png").exists()


def test_an_asset_file_replaced_by_another_is_kept_when_o3d_writes_its_own_again(good_images, tmp_path):
    # an editor that saves a new file in the old one's place: the cache is intact, and a re-run
    # put o3d's file back without a word; a run that writes nothing new keeps no copies
    out = tmp_path / "out"
    assert generate(good_images / "apple.png", out).exit_code == 0
    force = ["generate", "--no-progress", "--stop-after", "preprocess", "--force", str(good_images / "apple.png"),
             "-o", str(out)]
    assert runner.invoke(app, force).exit_code == 0
    assert sorted(p.name for p in (out / "apple").iterdir()) == ["config.yaml", "input.png", "o3d-asset.json"]
    asset = out / "apple" / "input.png"
    published = asset.read_bytes()
    asset.unlink()
    asset.write_bytes(b"my own input")
    for n in (1, 2):
        res = runner.invoke(app, force if n == 1 else ["generate", "--no-progress", "--stop-after", "preprocess",
                                                       str(good_images / "apple.png"), "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert asset.read_bytes() == published
    assert (out / "apple" / "input.edited.png").read_bytes() == b"my own input"
    assert not (out / "apple" / "input.edited-2.png").exists()
    # the same for o3d's config.yaml
    (out / "apple" / "config.yaml").write_text("# my notes\n")
    assert generate(good_images / "apple.png", out).exit_code == 0
    assert (out / "apple" / "config.edited.yaml").read_text() == "# my notes\n"
    assert (out / "apple" / "config.yaml").read_text() != "# my notes\n"


def test_prune_counts_only_what_removing_frees(tmp_path):
    from o3dcli.commands.cache import _size

    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "own.npz").write_bytes(b"o" * 1000)
    (entry / "model.glb").write_bytes(b"m" * 5000)
    os.link(entry / "model.glb", tmp_path / "asset-model.glb")  # published: the asset keeps its bytes
    assert _size(entry) == 1000 and _size(entry / "model.glb") == 0 and _size(entry / "own.npz") == 1000
    (tmp_path / "asset-model.glb").unlink()  # the asset deleted: now removing the entry frees it all
    assert _size(entry) == 6000


def test_copies_are_relinked_once_after_force_or_from_an_earlier_o3d(good_images, tmp_path):
    out = tmp_path / "out"
    assert generate(good_images / "apple.png", out).exit_code == 0
    asset = out / "apple" / "input.png"
    # --force recomputes the entry as a new file with the same bytes: the asset takes that one
    res = runner.invoke(app, ["generate", "--no-progress", "--stop-after", "preprocess", "--force",
                              str(good_images / "apple.png"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert os.path.samefile(asset, cached_input(out)) and asset.stat().st_nlink == 2
    # an asset folder an earlier o3d wrote holds copies: the next run links them, once
    data = asset.read_bytes()
    asset.unlink()
    asset.write_bytes(data)
    assert generate(good_images / "apple.png", out).exit_code == 0
    assert os.path.samefile(asset, cached_input(out))
    before = asset.stat()
    assert generate(good_images / "apple.png", out).exit_code == 0
    assert (asset.stat().st_ino, asset.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_stop_after_run_keeps_an_asset_file_edited_in_place(good_images, tmp_path, caplog):
    # the skipped stage's entry is found damaged (it is the edited file): the run does not
    # recompute it, so the asset keeps that stage's files; a full run then makes them again
    from o3dcli.batch_types import Stage
    from o3dcli.config import load_config
    from o3dcli.naming import Item
    from o3dcli.pipeline import BatchRunner, run_batch

    def first(ctx):
        (ctx.work_dir / "a.txt").write_text("a")
        return {}

    def second(ctx):
        for name in ("b.txt", "c.txt"):
            (ctx.work_dir / name).write_text(f"{name} as o3d makes it")
        return {}

    stages = [Stage("first", 1, ("preprocess",), first, publish={"a.txt": "a.txt"}),
              Stage("second", 1, ("preprocess",), second, publish={"b.txt": "b.txt", "c.txt": "c.txt"})]
    out = tmp_path / "out"
    out.mkdir()
    items = [Item((good_images / "apple.png").absolute(), "apple")]

    def run(n):
        return run_batch(items, BatchRunner(out, load_config("tiny"), stages[:n], all_stages=stages),
                         show_progress=False).items[0]

    assert run(2).status == "ok"
    with open(out / "apple" / "b.txt", "r+b") as f:
        f.write(b"B")
    with caplog.at_level(logging.WARNING, logger="o3d"):
        assert run(1).status == "ok"
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "likely edited there" in said and "this run stops before that stage" in said, said
    assert (out / "apple" / "b.txt").read_text() == "B.txt as o3d makes it"  # kept, with its edit
    assert (out / "apple" / "c.txt").read_text() == "c.txt as o3d makes it"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="o3d"):
        result = run(2)
    assert result.status == "ok"
    assert (out / "apple" / "b.txt").read_text() == "b.txt as o3d makes it"
    # the edit the stop-after run kept is kept still, under another name
    assert (out / "apple" / "b.edited.txt").read_text() == "B.txt as o3d makes it"
    assert any("the edit is kept as b.edited.txt" in w for w in result.warnings)
    assert caplog.records == []  # the damaged entry was removed: this is a plain miss
