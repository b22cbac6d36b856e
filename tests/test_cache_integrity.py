"""A cache entry is checked against its manifest (sizes, SHA-256) before it is used or published:
a damaged one is a miss (warned of, removed, recomputed), and its files are on disk before the
manifest that vouches for them."""

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from o3dcli.cache import Cache
from o3dcli.cache_integrity import MANIFEST
from o3dcli.cli import app

KEY = "k" * 64


def _entry(tmp_path, files: dict[str, bytes]):
    ic = Cache(tmp_path).item("chair")
    w = ic.begin("mesh", KEY)
    for name, data in files.items():
        (w.dir / name).parent.mkdir(parents=True, exist_ok=True)
        (w.dir / name).write_bytes(data)
    return ic, w.commit({"faces": 12})


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_manifest_records_each_files_size_and_sha256(tmp_path):
    ic, done = _entry(tmp_path, {"mesh.npz": b"m" * 300, "sub/views.png": b"v" * 7})
    manifest = json.loads((done / MANIFEST).read_text())
    assert manifest["files"] == ["mesh.npz", "sub/views.png"]
    assert manifest["sizes"] == {"mesh.npz": 300, "sub/views.png": 7}
    assert manifest["sha256"] == {"mesh.npz": hashlib.sha256(b"m" * 300).hexdigest(),
                                  "sub/views.png": hashlib.sha256(b"v" * 7).hexdigest()}
    assert ic.lookup("mesh", KEY) == done and ic.manifest(done)["meta"] == {"faces": 12}


@pytest.mark.parametrize("damage, problem", [
    (lambda d: (d / "mesh.npz").write_bytes(b""), "mesh.npz: damaged cache entry (0 bytes, expected 300)"),
    (lambda d: (d / "mesh.npz").write_bytes(b"m" * 100), "mesh.npz: damaged cache entry (100 bytes, expected 300)"),
    (lambda d: (d / "mesh.npz").write_bytes(b"m" * 299 + b"x"),
     "mesh.npz: damaged cache entry (its content does not match its recorded SHA-256)"),
    (lambda d: (d / "sub" / "views.png").unlink(), "views.png: damaged cache entry (missing)"),
    (lambda d: (d / MANIFEST).write_text(""), "manifest.json: damaged cache entry (empty)"),
    (lambda d: (d / MANIFEST).write_bytes(os.urandom(64) + b"\xff"), "manifest.json: damaged cache entry (unreadable"),
    (lambda d: (d / MANIFEST).write_text('{"complete": true, "files": ["mesh.npz"'),
     "manifest.json: damaged cache entry (not JSON"),
    (lambda d: (d / MANIFEST).write_text("[1, 2]"), "manifest.json: damaged cache entry (not a finished stage"),
    (lambda d: (d / MANIFEST).unlink(), "manifest.json: damaged cache entry (missing)"),
])
def test_a_damaged_entry_is_a_miss_that_is_said_and_removed(tmp_path, caplog, damage, problem):
    ic, done = _entry(tmp_path, {"mesh.npz": b"m" * 300, "sub/views.png": b"v" * 7})
    damage(done)
    with caplog.at_level(logging.WARNING, logger="o3d"):
        assert ic.lookup("mesh", KEY) is None
    said = _warnings(caplog)
    assert len(said) == 1 and problem in said[0] and said[0].endswith("; recomputing"), said
    assert str(done) in said[0]  # the entry's file, with its folder
    assert not done.exists()
    # recomputed: the new entry is found, with no further warning
    w = ic.begin("mesh", KEY)
    (w.dir / "mesh.npz").write_bytes(b"n" * 300)
    w.commit({})
    caplog.clear()
    assert ic.lookup("mesh", KEY) == done and (done / "mesh.npz").read_bytes() == b"n" * 300
    assert _warnings(caplog) == []


def test_a_new_result_replaces_a_damaged_entry_in_its_way(tmp_path):
    # e.g. damaged after this run's lookup: the finished stage takes its place (it used to be
    # dropped as "someone else finished first", leaving the damaged files in the cache)
    ic, done = _entry(tmp_path, {"mesh.npz": b"m" * 300})
    (done / "mesh.npz").write_bytes(b"")
    w = ic.begin("mesh", KEY)
    (w.dir / "mesh.npz").write_bytes(b"n" * 300)
    assert w.commit({}) == done and (done / "mesh.npz").read_bytes() == b"n" * 300
    assert ic.lookup("mesh", KEY) == done


def test_a_manifest_of_an_earlier_o3d_is_taken_when_its_files_are_there(tmp_path, caplog):
    ic, done = _entry(tmp_path, {"mesh.npz": b"m" * 300})
    legacy = {"complete": True, "files": ["mesh.npz"], "meta": {"faces": 12}, "finished": 1.0, "seconds": 2.0}
    (done / MANIFEST).write_text(json.dumps(legacy))
    assert ic.lookup("mesh", KEY) == done
    # its files' sizes and hashes are recorded then, so that later damage is found
    upgraded = {**legacy, "sizes": {"mesh.npz": 300}, "sha256": {"mesh.npz": hashlib.sha256(b"m" * 300).hexdigest()}}
    assert ic.manifest(done) == upgraded and json.loads((done / MANIFEST).read_text()) == upgraded
    (done / "mesh.npz").write_bytes(b"m" * 299 + b"x")
    with caplog.at_level(logging.WARNING, logger="o3d"):
        assert ic.lookup("mesh", KEY) is None
    assert "mesh.npz: damaged cache entry (its content" in _warnings(caplog)[0] and not done.exists()
    # an empty file is damage even under an earlier o3d's manifest
    ic, done = _entry(tmp_path, {"mesh.npz": b"m" * 300})
    (done / MANIFEST).write_text(json.dumps(legacy))
    (done / "mesh.npz").write_bytes(b"")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="o3d"):
        assert ic.lookup("mesh", KEY) is None
    assert "mesh.npz: damaged cache entry (0 bytes)" in _warnings(caplog)[0] and not done.exists()


def test_the_stage_files_are_on_disk_before_the_manifest(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    ic = Cache(tmp_path).item("chair")
    w = ic.begin("mesh", KEY)
    (w.dir / "sub").mkdir()
    (w.dir / "mesh.npz").write_bytes(b"m" * 300)
    (w.dir / "sub" / "views.png").write_bytes(b"v")
    monkeypatch.setattr(os, "fsync", fsync)
    w.commit({})
    monkeypatch.undo()
    manifest_at = next(i for i, p in enumerate(synced) if Path(p).name.startswith(f".{MANIFEST}.tmp-"))
    before = set(synced[:manifest_at])
    assert {str(w.dir / "mesh.npz"), str(w.dir / "sub" / "views.png"), str(w.dir / "sub"), str(w.dir)} <= before


def _batch(tmp_path, good_images, stages):
    from o3dcli.config import load_config
    from o3dcli.inputs import collect_inputs
    from o3dcli.naming import assign_names
    from o3dcli.pipeline import BatchRunner, run_batch

    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    items = assign_names(collect_inputs([good_images / "apple.png"]), out)
    return out, run_batch(items, BatchRunner(out, load_config("tiny"), stages), show_progress=False).items[0]


def _two_stages(calls):
    from o3dcli.batch_types import Stage

    def make(ctx):
        calls.append("make")
        np.savez(ctx.work_dir / "data.npz", x=np.arange(5000.0))
        return {}

    def use(ctx):
        calls.append("use")
        with np.load(ctx.upstream["make"] / "data.npz") as z:
            (ctx.work_dir / "sum.txt").write_text(str(z["x"].sum()))
        return {}

    return [Stage("make", 1, (), make), Stage("use", 1, (), use, publish={"sum.txt": "sum.txt"})]


def test_a_damaged_upstream_entry_is_recomputed_and_the_batch_succeeds(tmp_path, good_images, caplog):
    calls = []
    out, first = _batch(tmp_path, good_images, _two_stages(calls))
    assert first.status == "ok" and calls == ["make", "use"]
    data = next((out / ".o3d" / "items" / "apple").glob("make-*/data.npz"))
    data.write_bytes(data.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="o3d"):
        out, again = _batch(tmp_path, good_images, _two_stages(calls))
    assert again.status == "ok", again.error
    assert calls == ["make", "use", "make"] and again.cached == ["use"]
    assert any(f"{data}: damaged cache entry (1,000 bytes, expected" in m for m in _warnings(caplog))
    assert (out / "apple" / "sum.txt").read_text() == str(np.arange(5000.0).sum())


def test_an_unreadable_file_of_an_entry_taken_as_valid_is_named_with_a_way_out(tmp_path, good_images):
    # an earlier o3d's manifest has no sizes or hashes: a file cut short is met by its reader
    calls = []
    out, first = _batch(tmp_path, good_images, _two_stages(calls))
    entry = next((out / ".o3d" / "items" / "apple").glob("make-*"))
    manifest = json.loads((entry / MANIFEST).read_text())
    (entry / MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if k not in ("sizes", "sha256")}))
    for p in (out / ".o3d" / "items" / "apple").glob("use-*"):
        p.rename(p.with_name(".old-" + p.name))  # so that "use" runs again and reads data.npz
    (entry / "data.npz").write_bytes((entry / "data.npz").read_bytes()[:1000])
    out, again = _batch(tmp_path, good_images, _two_stages(calls))
    assert again.status == "failed"
    assert str(entry / "data.npz") in again.error and "--force" in again.error, again.error
    assert len(again.cached) <= len(again.timings)


def test_generate_recovers_from_damaged_cache_files(tmp_path, good_images):
    runner = CliRunner()
    out = tmp_path / "out"

    def generate():
        return runner.invoke(app, ["generate", "--no-progress", "--stop-after", "preprocess",
                                   str(good_images / "apple.png"), "-o", str(out)])

    assert generate().exit_code == 0
    published = (out / "apple" / "input.png").read_bytes()
    entry = next((out / ".o3d" / "items" / "apple").glob("preprocess-*"))
    (entry / "input.png").write_bytes(b"")
    res = generate()
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the log line is wrapped at the console's width, wherever the path ends
    assert "damaged cache entry" in said and "nothing recomputed" not in said
    assert (out / "apple" / "input.png").read_bytes() == published  # not the empty file
    (entry / MANIFEST).write_text("")
    res = generate()
    assert res.exit_code == 0, res.output
    item = json.loads((out / "o3d-report.json").read_text())["items"][0]
    assert item["status"] == "ok" and item["cached"] == [] and list(item["timings"]) == ["preprocess"]
    res = generate()
    assert res.exit_code == 0 and "nothing recomputed" in res.output
