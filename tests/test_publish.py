"""o3dcli.publish at the file-system level: where it stages, what a killed swap leaves, what
recovery keeps. (Publishing through o3d generate and o3d mesh: tests/test_shared_output.py.)"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

import o3dcli.publish as publish


def _asset(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.txt").write_text(text)
    (folder / "o3d-asset.json").write_text('{"source": "x"}')
    return folder


def _publish(asset_dir: Path, text: str) -> bool:
    with publish.staging(asset_dir) as staged:
        publish.add_bytes(staged / "model.txt", text.encode(), current=asset_dir / "model.txt")
        publish.add_bytes(staged / "o3d-asset.json", b'{"source": "x"}', current=asset_dir / "o3d-asset.json")
        return publish.commit(asset_dir, staged, lambda rel: rel in ("model.txt", "o3d-asset.json"))


def test_staging_is_beside_the_asset_even_when_the_cache_folder_is_on_another_disk(tmp_path):
    # OUT/.o3d moved to a bigger disk (a link): staging inside it made every swap fail with EXDEV
    other = Path(tempfile.mkdtemp(dir="/dev/shm")) if os.path.isdir("/dev/shm") else None
    if other is None or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system (/dev/shm)")
    try:
        out = tmp_path / "out"
        asset = _asset(out / "apple", "old")
        (out / ".o3d").symlink_to(other, target_is_directory=True)
        assert _publish(asset, "new")
        assert (asset / "model.txt").read_text() == "new"
        assert sorted(p.name for p in out.iterdir()) == [".o3d", "apple"] and not any(other.iterdir())
    finally:
        import shutil

        shutil.rmtree(other, ignore_errors=True)


def test_an_asset_moved_aside_by_a_killed_swap_stays_in_the_output_folder_and_comes_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    asset = _asset(out / "apple", "old")
    monkeypatch.setattr(publish, "_exchange", lambda a, b: False)  # macOS, exFAT: two renames
    rename = os.rename
    dead = []

    def killed_between(src, dst):
        if dead or "o3d-new-" in os.fspath(src):
            dead.append(src)
            raise SystemExit("killed")  # stands for kill -9: no rename after this one happens
        rename(src, dst)

    monkeypatch.setattr(os, "rename", killed_between)
    with pytest.raises(SystemExit):
        _publish(asset, "new")
    monkeypatch.setattr(os, "rename", rename)
    moved = [p for p in out.iterdir() if p.name.startswith(".apple.o3d-old-")]
    assert not asset.exists() and len(moved) == 1  # beside the asset: deleting OUT/.o3d cannot lose it
    assert (moved[0] / "model.txt").read_text() == "old"
    publish.recover(asset)
    assert (asset / "model.txt").read_text() == "old" and sorted(p.name for p in out.iterdir()) == ["apple"]


def test_recovery_removes_a_moved_aside_asset_only_when_a_whole_asset_replaced_it(tmp_path, caplog):
    out = tmp_path / "out"
    old = _asset(out / ".apple.o3d-old-12345", "earlier")
    (out / "apple").mkdir()
    (out / "apple" / "notes.txt").write_text("a folder made by hand since")
    publish.recover(out / "apple")
    assert old.is_dir() and (out / "apple" / "notes.txt").is_file()  # both kept
    assert "both are kept" in caplog.text and ".apple.o3d-old-12345" in caplog.text
    _asset(out / "apple", "new")  # the swap had finished: the moved-aside copy is done with
    publish.recover(out / "apple")
    assert not old.exists() and (out / "apple" / "model.txt").read_text() == "new"


def test_staged_leftovers_are_removed_and_only_o3d_temporary_files_count_as_such(tmp_path):
    out = tmp_path / "out"
    _asset(out / "apple", "old")
    (out / ".apple.o3d-new-999").mkdir()
    (out / ".apple.o3d-new-999" / "model.txt").write_text("half")
    (out / ".apple.o3d-new-backup").mkdir()  # not a pid: not o3d's
    publish.recover(out / "apple")
    assert sorted(p.name for p in out.iterdir()) == [".apple.o3d-new-backup", "apple"]
    assert publish._is_temporary(".model.glb.tmp-4242")
    assert not publish._is_temporary(".notes.tmp-backup") and not publish._is_temporary("a.tmp-1")
