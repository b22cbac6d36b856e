"""Several o3d processes on one output folder, and publishing an asset in one step: a name is
claimed under its lock (o3d generate and o3d mesh), an asset folder is the earlier asset or the
new one, never a mix, and the report keeps the items of runs that overlap."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from o3dcli.batch_report import RunMark, new_run_id, write_report
from o3dcli.batch_types import BatchInterrupted, ItemResult, Stage
from o3dcli.cache import Cache
from o3dcli.config import load_config
from o3dcli.naming import Item, assign_names, write_asset_meta
from o3dcli.pipeline import BatchRunner, run_batch
from test_generate import _o3d, generate, report

TRI = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"


def _holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (Linux /proc)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            pass
    return False


def _wait_blocked_on(proc: subprocess.Popen, lock_path: Path, timeout: float = 240) -> None:
    """Until `proc` waits for the lock at `lock_path` (a blocking ItemLock keeps the file open while
    it waits) or has ended: a condition, not a guess at how long start-up takes. The file must stay
    open for 0.3 s: a lock tried without waiting, or probed (`ItemCache.busy`), is open for moments."""
    if not Path(f"/proc/{os.getpid()}/fd").is_dir():
        proc.kill()
        pytest.skip("needs /proc to see which files a process has open")
    deadline = time.monotonic() + timeout
    open_since = None
    while proc.poll() is None:
        if not _holds_open(proc.pid, lock_path):
            open_since = None
        elif open_since is None:
            open_since = time.monotonic()
        elif time.monotonic() - open_since >= 0.3:
            return
        assert time.monotonic() < deadline, "the process neither waited for the lock nor ended"
        time.sleep(0.01)


def _same_named_inputs(tmp_path: Path, good_images: Path, name: str = "chair.png") -> tuple[Path, Path]:
    a, b = tmp_path / "dA" / name, tmp_path / "dB" / name
    for f, src in ((a, "apple.png"), (b, "pear.png")):
        f.parent.mkdir()
        f.write_bytes((good_images / src).read_bytes())
    return a, b


# -- a name is claimed under its lock ----------------------------------------------------------


def test_generate_takes_the_next_name_when_the_one_it_waited_for_became_another_inputs(tmp_path, good_images):
    # process A works on dA/chair.png as `chair` (the test holds its lock); process B, started with
    # dB/chair.png, also chose `chair` (free then), waits for the lock, and meanwhile A marks the
    # folder as dA's. B must take chair-2, not fail the item ("belongs to another input").
    a, b = _same_named_inputs(tmp_path, good_images)
    out = tmp_path / "out"
    lock = Cache(out).item("chair").lock()
    lock.acquire()
    try:
        proc = _o3d("generate", b, "-o", out, "--no-progress")
        _wait_blocked_on(proc, lock.path)
        (out / "chair").mkdir()  # what process A does with the lock held
        write_asset_meta(out / "chair", a.absolute())
        (out / "chair" / "input.png").write_text("A's")
    finally:
        lock.release()
    text = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, text
    assert [(i["name"], i["status"]) for i in report(out)["items"]] == [("chair-2", "ok")]
    assert json.loads((out / "chair-2" / "o3d-asset.json").read_text())["source"] == str(b.absolute())
    assert (out / "chair" / "input.png").read_text() == "A's"


def test_an_item_renamed_under_its_lock_keeps_clear_of_the_batchs_other_names(tmp_path, good_images):
    # names chosen up front (both free), then `chair` becomes another input's before the batch runs:
    # the item moves on, past chair-2 (the other item's), to chair-3
    a, b = _same_named_inputs(tmp_path, good_images)
    other = tmp_path / "dC" / "chair.png"
    other.parent.mkdir()
    other.write_bytes((good_images / "plum.jpg").read_bytes())
    out = tmp_path / "out"
    items = assign_names([a, b], out)
    assert [i.name for i in items] == ["chair", "chair-2"]
    assert generate(other, "-o", out).exit_code == 0  # another process, meanwhile
    result = run_batch(items, BatchRunner(out, load_config("tiny"), _touch_stages()), show_progress=False)
    assert [(r.name, r.status) for r in result.items] == [("chair-3", "ok"), ("chair-2", "ok")]
    assert json.loads((out / "chair" / "o3d-asset.json").read_text())["source"] == str(other.absolute())
    assert [i["name"] for i in report(out)["items"]] == ["chair-3", "chair-2"]


@pytest.mark.parametrize("seen", ["files without o3d-asset.json", "not a folder"])
def test_an_asset_seen_half_published_by_another_process_keeps_its_name(tmp_path, seen):
    # While another process publishes `apple`, a check without the lock can straddle the swap: a
    # path looked up in the earlier folder as it is swapped out and removed, or (where folders
    # cannot be swapped in one step) the moment between two renames. It then sees a folder with
    # files but no o3d-asset.json, or a path that is not a folder. Those are the states here, with
    # that process's lock held; the input whose asset it is must not be moved to apple-2 (a second
    # asset of one input: this once failed CI with 25 assets for 24 inputs).
    from o3dcli.cache import ItemLocked
    from o3dcli.naming import claim_name, folder_taken

    src = tmp_path / "apple.png"
    src.write_bytes(b"png")
    out = tmp_path / "out"
    out.mkdir()
    if seen == "not a folder":
        (out / "apple").write_text("")
    else:
        (out / "apple").mkdir()
        (out / "apple" / "input.png").write_text("new")
    lock = Cache(out).item("apple").lock()
    lock.acquire()
    try:
        assert not folder_taken(out, "apple", src)
        assert [i.name for i in assign_names([src], out)] == ["apple"]
        with pytest.raises(ItemLocked):  # generate waits for it, then decides under the lock
            claim_name(out, src, "apple")
    finally:
        lock.release()
    # the same state with no process at work on it is the user's file or folder: passed over
    assert folder_taken(out, "apple", src)
    assert [i.name for i in assign_names([src], out)] == ["apple-2"]
    name, held = claim_name(out, src, "apple")
    held.release()
    assert name == "apple-2"


@pytest.mark.parametrize("gone", ["a stage committed", "an asset published", "a failed item's folder dropped"])
def test_a_folder_scan_goes_on_when_another_process_moves_a_folder_it_listed(tmp_path, monkeypatch, gone):
    # `o3d generate -r shots -o shots/o3d` while another o3d works on shots/o3d: a folder the scan
    # listed is gone when the scan goes into it (a cache stage's .tmp- folder renamed on commit, an
    # asset's staging folder swapped in, a failed item's empty asset folder removed). The scan
    # crashed with FileNotFoundError; such a folder is passed over, as hidden folders and o3d's
    # outputs are.
    import shutil

    from o3dcli.inputs import collect_inputs
    from o3dcli.naming import drop_if_empty

    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "apple.png").write_bytes(b"png")
    out = shots / "o3d"
    write_asset_meta(out / "apple", shots / "apple.png")
    if gone == "a stage committed":
        moving = out / ".o3d" / "items" / "apple" / ".tmp-diffusion-0123456789abcdef-99"
    elif gone == "an asset published":
        moving = out / ".apple.o3d-new-99"
    else:
        moving = out / "pear"
    if gone != "a failed item's folder dropped":
        moving.mkdir(parents=True)
        (moving / "views.png").write_bytes(b"png")
    write_asset_meta(moving, shots / "apple.png")
    real = os.scandir
    moved = []

    def scandir(path="."):
        # the other process, meanwhile (once: on Python 3.13 its own folder removal scans through here too)
        if not moved and not isinstance(path, int) and Path(path) == moving and moving.exists():
            moved.append(path)
            if gone == "a stage committed":
                os.rename(moving, moving.with_name("diffusion-0123456789abcdef"))
            elif gone == "a failed item's folder dropped":
                drop_if_empty(moving)
            else:
                os.rename(out / "apple", out / ".apple.o3d-old-99")
                os.rename(moving, out / "apple")
                shutil.rmtree(out / ".apple.o3d-old-99")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert collect_inputs([shots], recursive=True) == [(shots / "apple.png").absolute()]


def _republished_at_a_look(monkeypatch, asset: Path, staged: Path, looks: list[Path], methods=("is_file",)) -> None:
    """Make a look (`Path.<method>`) at one of `looks` land between the two renames by which another
    process republishes `asset` from `staged` where folders cannot be swapped in one step (macOS):
    the earlier folder renamed away, the look, the staged folder renamed in, the earlier removed.
    Happens while `staged` exists (make it again for another such look)."""
    import shutil

    old = asset.with_name(f".{asset.name}.o3d-old-99")
    for method in methods:
        def look(self, real=getattr(Path, method)):
            if self in looks and staged.exists():  # the other process, meanwhile
                os.rename(asset, old)
                seen = real(self)
                os.rename(staged, asset)
                shutil.rmtree(old)
                return seen
            return real(self)

        monkeypatch.setattr(Path, method, look)


def test_a_folder_scan_looks_again_at_an_asset_folder_it_saw_between_two_renames(tmp_path, monkeypatch):
    # `o3d generate -r shots -o shots/o3d` while another o3d republishes shots/o3d/apple where folders
    # cannot be swapped in one step (macOS): the earlier folder is renamed away, then the new one in.
    # A look for its o3d-asset.json between the two renames finds none; the asset's own input.png
    # was then taken as an input (a new asset made from o3d's output).
    from o3dcli.inputs import collect_inputs

    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "apple.png").write_bytes(b"png")
    asset = shots / "o3d" / "apple"
    staged = shots / "o3d" / ".apple.o3d-new-99"
    for folder in (asset, staged):
        write_asset_meta(folder, shots / "apple.png")
        (folder / "input.png").write_bytes(b"png")
    _republished_at_a_look(monkeypatch, asset, staged, [asset / "o3d-asset.json"])
    notes: list[str] = []
    assert collect_inputs([shots], recursive=True, notes=notes) == [(shots / "apple.png").absolute()]
    assert notes == [f"skipped 1 folder(s) of o3d's own outputs ({asset})"]


def test_mesh_takes_an_asset_folder_it_saw_between_two_renames_for_the_asset(tmp_path, monkeypatch):
    # `o3d mesh out/apple` while `o3d generate` republishes out/apple by two renames: a look for its
    # gaussians.ply between them found none, so the folder was taken for something else to mesh
    # (its model.glb, or "input not found"), and the run's several looks disagreed
    from o3dcli.commands.mesh import _source

    asset, staged = tmp_path / "out" / "apple", tmp_path / "out" / ".apple.o3d-new-99"
    for folder in (asset, staged):
        folder.mkdir(parents=True)
        (folder / "gaussians.ply").write_bytes(b"ply")
    _republished_at_a_look(monkeypatch, asset, staged, [asset / "gaussians.ply"])
    assert _source(asset) == asset / "gaussians.ply"
    (tmp_path / "chair.obj").write_text(TRI)
    assert _source(tmp_path / "chair.obj") == tmp_path / "chair.obj"


def test_mesh_finds_an_asset_folders_input_photo_it_looked_for_between_two_renames(tmp_path, monkeypatch):
    # `o3d mesh out/apple` while `o3d generate` republishes out/apple by two renames (macOS): a look
    # for its input.png and config.yaml between them found no folder, and the mesh was silently made
    # without the input photo projected onto its texture nor its surface cut to the input's outline
    import numpy as np
    from PIL import Image

    from o3dcli.commands.mesh import asset_input_view, asset_silhouettes
    from o3dcli.config import dump_config
    from o3dcli.mesh.config import MeshConfig

    asset, staged = tmp_path / "out" / "apple", tmp_path / "out" / ".apple.o3d-new-99"
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 10:22] = 255
    for folder in (asset, staged):
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(dump_config(load_config("tiny")))
        Image.fromarray(rgba, "RGBA").save(folder / "input.png")
    _republished_at_a_look(monkeypatch, asset, staged, [asset, asset / "input.png", asset / "config.yaml"],
                           methods=("is_dir", "is_file"))
    assert asset_silhouettes(asset, MeshConfig()) is not None
    staged.mkdir()  # and again, for the photo
    for f in ("config.yaml", "input.png"):
        os.link(asset / f, staged / f)
    assert asset_input_view(asset, MeshConfig()) is not None


def test_mesh_claims_its_folder_under_the_lock_generate_uses(tmp_path):
    # `o3d mesh dM1/chair.obj -o out & o3d mesh dM2/chair.obj -o out`: the second run waits for the
    # first's lock on `chair`; finding it the other input's, it takes chair-2 (it wrote into the same
    # folder: one result silently lost)
    m1, m2 = tmp_path / "dM1" / "chair.obj", tmp_path / "dM2" / "chair.obj"
    for f in (m1, m2):
        f.parent.mkdir()
        f.write_text(TRI)
    out = tmp_path / "out"
    lock = Cache(out).item("chair").lock()
    lock.acquire()  # the first process, at work on chair
    try:
        proc = subprocess.Popen([sys.executable, "-m", "o3dcli.cli", "mesh", str(m2), "--formats", "glb", "-o", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _wait_blocked_on(proc, lock.path)
        (out / "chair").mkdir(exist_ok=True)
        write_asset_meta(out / "chair", m1.resolve())
        (out / "chair" / "model.glb").write_text("the first process's")
    finally:
        lock.release()
    text = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, text
    assert (out / "chair" / "model.glb").read_text() == "the first process's"
    assert json.loads((out / "chair" / "o3d-asset.json").read_text())["source"] == str(m1.resolve())
    assert json.loads((out / "chair-2" / "o3d-asset.json").read_text())["source"] == str(m2.resolve())
    assert (out / "chair-2" / "model.glb").stat().st_size > 100


def test_two_mesh_processes_both_appear_in_the_mesh_report(tmp_path):
    # `o3d mesh tri.obj -o out & o3d mesh quad.obj -o out`: each run's report keeps the other's item.
    # The first process is held on its item's lock until the second has finished.
    from typer.testing import CliRunner

    from o3dcli.cli import app

    for name in ("tri", "quad"):
        (tmp_path / f"{name}.obj").write_text(TRI)
    out = tmp_path / "out"
    lock = Cache(out).item("tri").lock()
    lock.acquire()
    try:
        first = subprocess.Popen([sys.executable, "-m", "o3dcli.cli", "mesh", str(tmp_path / "tri.obj"), "-o", str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _wait_blocked_on(first, lock.path)
        res = CliRunner().invoke(app, ["mesh", str(tmp_path / "quad.obj"), "-o", str(out)])
        assert res.exit_code == 0, res.output
        # the second run's report names the first as under way (its mark), and only its own item
        assert [i["name"] for i in json.loads((out / "o3d-mesh-report.json").read_text())["items"]] == ["quad"]
        assert len(list((out / ".o3d" / "mesh-runs").glob("*.json"))) == 1
    finally:
        lock.release()
    text = first.communicate(timeout=300)[0].decode()
    assert first.returncode == 0, text
    rep = json.loads((out / "o3d-mesh-report.json").read_text())
    assert [(i["name"], i["status"]) for i in rep["items"]] == [("tri", "ok"), ("quad", "ok")]
    assert len(rep["runs"]) == 2 and rep["summary"] == {"ok": 2}
    assert not (out / "o3d-report.json").exists() and not list((out / ".o3d" / "runs").glob("*"))


# -- publishing in one step ----------------------------------------------------------------------


def _touch_stages():
    def first(ctx):
        for name in ("a.txt", "b.txt"):
            (ctx.work_dir / name).write_text(f"{name} {ctx.config.preprocess.size}")
        return {}

    def second(ctx):
        (ctx.work_dir / "c.txt").write_text(f"c.txt {ctx.config.preprocess.size}")
        return {}

    return [Stage("first", 1, ("preprocess",), first, publish={"a.txt": "a.txt", "b.txt": "b.txt"}),
            Stage("second", 1, ("preprocess",), second, publish={"c.txt": "c.txt"})]


def _folder(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _leftovers(out: Path) -> list[Path]:
    """Staging folders beside the assets (`.<name>.o3d-new-<pid>`, `.<name>.o3d-old-<pid>`) and
    temporary files of atomic writes."""
    return sorted(out.glob(".*.o3d-*")) + sorted(out.rglob(".*.tmp-*"))


def _asset_with_a_users_file(out: Path, good_images: Path) -> tuple[list[Item], dict[str, bytes]]:
    out.mkdir()
    items = [Item((good_images / "apple.png").absolute(), "apple")]
    assert run_batch(items, BatchRunner(out, load_config("tiny"), _touch_stages()), show_progress=False).ok
    (out / "apple" / "notes").mkdir()
    (out / "apple" / "notes" / "mine.txt").write_text("a file the user added")
    before = _folder(out / "apple")
    assert set(before) == {"a.txt", "b.txt", "c.txt", "config.yaml", "o3d-asset.json", "notes/mine.txt"}
    return items, before


@pytest.mark.parametrize("stop", ["ctrl-c", "disk full", "disk full, copying"])
def test_publishing_stopped_half_way_leaves_the_earlier_asset_whole(good_images, tmp_path, monkeypatch, stop):
    # new settings, then Ctrl-C or a full disk while the files go into the asset folder: it held the
    # new a.txt beside the old b.txt, c.txt and config.yaml
    import shutil

    out = tmp_path / "out"
    items, before = _asset_with_a_users_file(out, good_images)
    calls = []

    def then_stop(real):  # files are hard-linked from the cache, or copied where links fail
        def put(src, dst, *args, **kw):
            calls.append(dst)
            if len(calls) == 2:
                if stop == "ctrl-c":
                    raise KeyboardInterrupt
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
            return real(src, dst, *args, **kw)
        return put

    def no_links(src, dst, *args, **kw):  # the cache on another disk: every file is copied
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src))

    monkeypatch.setattr(shutil, "copyfile", then_stop(shutil.copyfile))
    monkeypatch.setattr(os, "link", no_links if stop == "disk full, copying" else then_stop(os.link))
    runner_ = BatchRunner(out, load_config("tiny", ["preprocess.size=48"]), _touch_stages())
    if stop == "ctrl-c":
        with pytest.raises(BatchInterrupted):
            run_batch(items, runner_, show_progress=False)
    else:
        result = run_batch(items, runner_, show_progress=False)
        assert result.items[0].status == "failed"
        error = result.items[0].error
        assert "No space left on device" in error and str(out / "apple") in error, error
        assert "left as it was" in error
    assert len(calls) == 2
    assert _folder(out / "apple") == before
    assert _leftovers(out) == []
    monkeypatch.undo()
    # the same command again: the new asset, whole, with the user's file still in it
    assert run_batch(items, runner_, show_progress=False).ok
    after = _folder(out / "apple")
    assert set(after) == set(before) and after["notes/mine.txt"] == b"a file the user added"
    assert all(after[f] == f"{f} 48".encode() for f in ("a.txt", "b.txt", "c.txt"))
    assert "size: 48" in after["config.yaml"].decode()
    assert _leftovers(out) == []


def test_ctrl_c_during_the_swap_lets_it_finish(good_images, tmp_path, monkeypatch):
    import o3dcli.publish as publish

    out = tmp_path / "out"
    items, before = _asset_with_a_users_file(out, good_images)
    real = publish._exchange

    def interrupted_exchange(a, b):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C as the folders are swapped
        return real(a, b)

    monkeypatch.setattr(publish, "_exchange", interrupted_exchange)
    # Ctrl-C as in a terminal: a test run started in the background by a script (`cmd &`) inherits
    # SIGINT ignored, and an ignored Ctrl-C rightly interrupts nothing (the test then failed)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(BatchInterrupted):
            run_batch(items, BatchRunner(out, load_config("tiny", ["preprocess.size=48"]), _touch_stages()),
                      show_progress=False)
    finally:
        after_handler = signal.signal(signal.SIGINT, outer)
    after = _folder(out / "apple")
    assert all(after[f] == f"{f} 48".encode() for f in ("a.txt", "b.txt", "c.txt"))  # the new asset, whole
    assert after["notes/mine.txt"] == before["notes/mine.txt"] and _leftovers(out) == []
    assert after_handler is handler  # the swap put the handler back


def test_nothing_is_swapped_when_nothing_changed_and_without_exchange_two_renames_do(good_images, tmp_path,
                                                                                    monkeypatch):
    import o3dcli.publish as publish

    out = tmp_path / "out"
    items, before = _asset_with_a_users_file(out, good_images)
    inode = (out / "apple").stat().st_ino
    assert run_batch(items, BatchRunner(out, load_config("tiny"), _touch_stages()), show_progress=False).ok
    assert (out / "apple").stat().st_ino == inode and _folder(out / "apple") == before
    # a file system that cannot exchange two folders
    monkeypatch.setattr(publish, "_exchange", lambda a, b: False)
    assert run_batch(items, BatchRunner(out, load_config("tiny", ["preprocess.size=48"]), _touch_stages()),
                     show_progress=False).ok
    after = _folder(out / "apple")
    assert after["c.txt"] == b"c.txt 48" and after["notes/mine.txt"] == before["notes/mine.txt"]
    assert _leftovers(out) == []


KILL_AT_SWAP = """
import os, signal, sys
import o3dcli.publish as publish
from o3dcli.cli import app

def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "before":  # the new asset staged, not yet swapped in
    publish._exchange = killed
else:  # a file system without exchange, killed between its two renames
    publish._exchange = lambda a, b: False
    rename = os.rename
    def rename_then_die(src, dst):
        if ".o3d-new-" in os.fspath(src):
            killed()
        rename(src, dst)
    os.rename = rename_then_die
sys.argv = ["o3d", *sys.argv[2:]]
app()
"""


@pytest.mark.parametrize("when", ["before", "between"])
def test_a_process_killed_while_publishing_leaves_what_the_next_run_repairs(good_images, tmp_path, when):
    a, b = _same_named_inputs(tmp_path, good_images, "apple.png")
    out = tmp_path / "out"
    assert generate(a, "-o", out).exit_code == 0
    before = _folder(out / "apple")
    args = ["generate", str(a), "-o", str(out), "--no-progress", "--stop-after", "preprocess",
            "--set", "preprocess.size=48"]
    proc = subprocess.run([sys.executable, "-c", KILL_AT_SWAP, when, *args], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    if when == "before":
        assert _folder(out / "apple") == before  # the earlier asset, whole
    else:
        assert not (out / "apple").exists()  # moved out, not yet replaced
    assert _leftovers(out) != []
    # another input of the same name, next: a killed publish is repaired before the folder is
    # looked at (under its lock), so the folder is seen as dA's and left alone
    assert generate(b, "-o", out).exit_code == 0
    assert [i["name"] for i in report(out)["items"]] == ["apple-2"]
    assert _folder(out / "apple") == before
    assert (_leftovers(out) == []) == (when == "between")  # the staged copy goes when `apple` is next run
    res = generate(a, "-o", out, "--set", "preprocess.size=48")
    assert res.exit_code == 0, res.output
    assert "size: 48" in (out / "apple" / "config.yaml").read_text() and _leftovers(out) == []


# -- the report of runs that overlap -------------------------------------------------------------


def test_the_report_keeps_the_items_of_runs_that_overlap(good_images, tmp_path):
    # runs on one folder at the same time each wrote the report whole: the last to finish won
    out = tmp_path / "out"
    out.mkdir()
    seen = {}

    def run_items(*names):
        items = assign_names([good_images / n for n in names], out)
        return run_batch(items, BatchRunner(out, load_config("tiny"), [stage]), show_progress=False)

    def touch(ctx):
        (ctx.work_dir / "x.txt").write_text(ctx.item.name)
        if ctx.item.name == "apple":  # while this run works on apple, two others run, one after the other
            run_items("pear.png")
            run_items("plum.jpg")
            seen["during"] = [i["name"] for i in report(out)["items"]]
        return {}

    stage = Stage("touch", 1, (), touch, publish={"x.txt": "x.txt"})
    result = run_items("apple.png")
    assert result.ok
    # plum's run kept pear's, which had not overlapped it, but both overlap apple's, still running
    assert seen["during"] == ["plum", "pear"]
    rep = report(out)
    assert [i["name"] for i in rep["items"]] == ["apple", "plum", "pear"]
    assert rep["summary"] == {"ok": 3} and len(rep["runs"]) == 3 and rep["run"] == rep["items"][0]["run"]
    assert {i["run"] for i in rep["items"]} == set(rep["runs"])
    # a run after those: the report is that run's alone, as before; its items replace same-named ones
    run_items("pear.png")
    rep = report(out)
    assert [i["name"] for i in rep["items"]] == ["pear"] and list(rep["runs"]) == [rep["run"]]
    assert not list((out / ".o3d" / "runs").iterdir())  # no run is marked as under way


def test_two_generate_processes_both_appear_in_the_report(good_images, tmp_path):
    # `o3d generate dA -o cr & o3d generate dX -o cr --stop-after preprocess`: the report held only
    # one of them. The first process is held on its item's lock until the second has finished.
    a = tmp_path / "dA" / "chair.png"
    a.parent.mkdir()
    a.write_bytes((good_images / "apple.png").read_bytes())
    out = tmp_path / "out"
    lock = Cache(out).item("chair").lock()
    lock.acquire()
    try:
        first = _o3d("generate", a, "-o", out, "--no-progress")
        _wait_blocked_on(first, lock.path)
        res = generate(good_images / "pear.png", "-o", out)
        assert res.exit_code == 0, res.output
    finally:
        lock.release()
    text = first.communicate(timeout=300)[0].decode()
    assert first.returncode == 0, text
    assert sorted(i["name"] for i in report(out)["items"]) == ["chair", "pear"]


@pytest.mark.parametrize("noted", [["apple0"], ["apple1", "apple0"]])
def test_a_photo_whose_twin_another_process_is_making_waits_and_copies_it(good_images, tmp_path, noted):
    # one photo given twice, under two names, with --jobs: two processes made it at the same moment.
    # An item whose twin (the same image, earlier in the batch) another process holds now is run
    # after it, and copies what it made; whatever order the input index notes them in (an earlier
    # run may have noted the second copy first)
    import shutil

    from o3dcli.atomic import sha256_file

    d = tmp_path / "photos"
    d.mkdir()
    for name in ("apple0.png", "apple1.png"):
        shutil.copy(good_images / "apple.png", d / name)
    out = tmp_path / "out"
    cache = Cache(out)
    for name in noted:
        cache.register_input(sha256_file(d / "apple0.png"), name)
    lock = cache.item("apple0").lock()
    lock.acquire()  # another process, at work on apple0
    try:
        proc = _o3d("generate", d, "-o", out, "--no-progress")
        _wait_blocked_on(proc, lock.path)
        # apple1 is not made meanwhile: it was made at once, then the process waited for apple0
        assert not list((out / ".o3d" / "items").glob("apple1/preprocess-*"))
    finally:
        lock.release()
    text = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, text
    items = {i["name"]: i for i in report(out)["items"]}
    assert items["apple0"]["cached"] == [] and items["apple0"]["status"] == "ok"
    assert items["apple1"]["reused_from"] == {"preprocess": "apple0"} and items["apple1"]["status"] == "ok"
    assert (out / "apple1" / "input.png").read_bytes() == (out / "apple0" / "input.png").read_bytes()


def test_an_item_noted_for_an_image_it_no_longer_holds_is_no_twin(good_images, tmp_path):
    # the input index notes apple0 for the apple's bytes, but apple0.png is a pear now: apple1 (the
    # apple) does not wait while another process is at work on apple0
    import shutil

    from o3dcli.atomic import sha256_file

    d = tmp_path / "photos"
    d.mkdir()
    shutil.copy(good_images / "pear.png", d / "apple0.png")
    shutil.copy(good_images / "apple.png", d / "apple1.png")
    out = tmp_path / "out"
    cache = Cache(out)
    cache.register_input(sha256_file(good_images / "apple.png"), "apple0")
    lock = cache.item("apple0").lock()
    lock.acquire()
    try:
        proc = _o3d("generate", d, "-o", out, "--no-progress")
        _wait_blocked_on(proc, lock.path)
        assert list((out / ".o3d" / "items").glob("apple1/preprocess-*"))  # made before waiting for apple0
    finally:
        lock.release()
    text = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, text
    assert all(not i["reused_from"] for i in report(out)["items"])


def test_a_pipe_among_items_run_last_fails_without_hanging(tmp_path):
    # an item run last (another process held it) is looked at for twins before it runs: reading a
    # named pipe to hash it blocked for ever; it fails as "not a regular file", as it does first time
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    d = tmp_path / "photos"
    d.mkdir()
    os.mkfifo(d / "x.png")
    out = tmp_path / "out"
    lock = Cache(out).item("x").lock()
    lock.acquire()
    try:
        proc = _o3d("generate", d / "x.png", "-o", out, "--no-progress")
        _wait_blocked_on(proc, lock.path)
    finally:
        lock.release()
    try:
        text = proc.communicate(timeout=120)[0].decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("o3d generate hung on the pipe") from None
    assert proc.returncode == 1 and "not a regular file" in text, text


def _item(inp: Path, name: str, status: str) -> ItemResult:
    return ItemResult(str(inp), name, status=status, error=None if status in ("ok", "not-run") else "x")


def _overlapping_reports(out: Path, first: list[ItemResult], second: list[ItemResult]) -> dict:
    """Run A starts, run B starts, A writes its report, then B (interrupted, say) writes its own."""
    out.mkdir(exist_ok=True)
    root = out / ".o3d"
    ta = time.time() - 2  # B starts before A finishes, whether the marks could be made or not
    ra = new_run_id(ta)
    with RunMark(root, ra, ta):
        tb = ta + 1
        rb = new_run_id(tb)
        with RunMark(root, rb, tb):
            write_report(out, root, "cpu", first, ta, run_id=ra)
            write_report(out, root, "cpu", second, tb, interrupted=True, run_id=rb)
    rep = report(out)
    assert {i["run"] for i in rep["items"]} == set(rep["runs"]) and rep["run"] == rb
    return {"A": ra, "B": rb, **rep}


def _entries(rep: dict) -> list[tuple[str, str, str, str]]:
    runs = {rep["A"]: "A", rep["B"]: "B"}
    return sorted((runs[i["run"]], Path(i["input"]).parent.name, i["name"], i["status"]) for i in rep["items"])


@pytest.mark.parametrize("same", ["same input", "the same file through a link"])
@pytest.mark.parametrize("mine", ["not-run", "interrupted"])
@pytest.mark.parametrize("theirs", ["ok", "failed"])
def test_an_item_that_did_not_run_leaves_an_overlapping_runs_finished_item_of_that_input(tmp_path, same, mine,
                                                                                          theirs):
    # run A finishes foo; run B, overlapping it, is interrupted with foo not run: the report held
    # only B's not-run foo, A's result gone
    a = tmp_path / "a" / "foo.png"
    b = a
    if same != "same input":
        b = tmp_path / "link" / "foo.png"
        b.parent.mkdir()
        a.parent.mkdir()
        a.write_bytes(b"x")
        b.symlink_to(a)
    rep = _overlapping_reports(tmp_path / "out", [_item(a, "foo", theirs), _item(a, "bar", "ok")],
                               [_item(b, "foo", mine), _item(a, "baz", mine)])
    assert _entries(rep) == [("A", "a", "bar", "ok"), ("A", "a", "foo", theirs), ("B", "a", "baz", mine)]
    assert rep["summary"] == ({"ok": 2, mine: 1} if theirs == "ok" else {"ok": 1, theirs: 1, mine: 1})
    assert rep["runs"][rep["B"]]["summary"] == {mine: 2}  # what run B itself did


@pytest.mark.parametrize("mine, theirs", [("ok", "ok"), ("ok", "failed"), ("failed", "ok"), ("failed", "not-run"),
                                          ("not-run", "not-run"), ("interrupted", "not-run"),
                                          ("interrupted", "interrupted")])
def test_this_runs_item_replaces_an_overlapping_runs_item_of_the_same_input_otherwise(tmp_path, mine, theirs):
    a = tmp_path / "a" / "foo.png"
    rep = _overlapping_reports(tmp_path / "out", [_item(a, "foo", theirs)], [_item(a, "foo", mine)])
    assert _entries(rep) == [("B", "a", "foo", mine)]
    assert list(rep["runs"]) == [rep["B"]]


def test_a_not_run_item_leaves_an_overlapping_runs_interrupted_item(tmp_path):
    # o3d generate --jobs, interrupted: a worker was under way on foo, which the command never reached
    a = tmp_path / "a" / "foo.png"
    rep = _overlapping_reports(tmp_path / "out", [_item(a, "foo", "interrupted")],
                               [_item(a, "foo", "not-run"), _item(a, "bar", "not-run")])
    assert _entries(rep) == [("A", "a", "foo", "interrupted"), ("B", "a", "bar", "not-run")]


@pytest.mark.parametrize("mine, theirs", [(m, t) for m in ("ok", "failed", "not-run", "interrupted")
                                          for t in ("ok", "failed", "not-run") if (m, t) != ("ok", "ok")])
def test_items_of_two_inputs_under_one_name_are_two_entries(tmp_path, mine, theirs):
    # /a/foo.png and /b/foo.png, both planned as `foo` (one run interrupted before it took the name,
    # or one failed): each input keeps its entry. (Both ok: the next test.)
    a, b = tmp_path / "a" / "foo.png", tmp_path / "b" / "foo.png"
    rep = _overlapping_reports(tmp_path / "out", [_item(a, "foo", theirs)], [_item(b, "foo", mine)])
    assert _entries(rep) == [("A", "a", "foo", theirs), ("B", "b", "foo", mine)]


@pytest.mark.parametrize("owner", ["a", "b", None])
def test_of_two_inputs_ok_under_one_name_the_report_keeps_the_one_the_folder_names(tmp_path, owner):
    # under the per-name locks only one input holds the folder at the end (the other's was
    # replaced, e.g. after the folder was deleted): its o3d-asset.json says which
    a, b = tmp_path / "a" / "foo.png", tmp_path / "b" / "foo.png"
    out = tmp_path / "out"
    if owner:
        (out / "foo").mkdir(parents=True)
        write_asset_meta(out / "foo", tmp_path / owner / "foo.png")
    rep = _overlapping_reports(out, [_item(a, "foo", "ok"), _item(a, "bar", "ok")],
                               [_item(b, "foo", "ok"), _item(b, "baz", "not-run")])
    foo = [(run, inp) for run, inp, name, _ in _entries(rep) if name == "foo"]
    assert foo == {"a": [("A", "a")], "b": [("B", "b")], None: [("A", "a"), ("B", "b")]}[owner]
    assert sorted(i["name"] for i in rep["items"]) == sorted(["foo"] * len(foo) + ["bar", "baz"])


def test_the_report_is_written_without_its_lock_where_flock_fails(tmp_path, monkeypatch, caplog):
    # flock fails with ENOLCK on some NFS mounts: write_report raised after every item was done,
    # and the report was lost
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    from o3dcli import cache

    monkeypatch.setattr(cache, "_warned_unlocked", set())
    monkeypatch.setattr(fcntl, "flock", no_locks)
    a = tmp_path / "a" / "foo.png"
    with caplog.at_level(logging.WARNING, logger="o3d"):
        rep = _overlapping_reports(tmp_path / "out", [_item(a, "foo", "ok")], [_item(a, "bar", "not-run")])
    assert _entries(rep) == [("A", "a", "foo", "ok"), ("B", "a", "bar", "not-run")]  # merged all the same
    warnings = [r for r in caplog.records if r.name == "o3d" and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per file system, not per report written
    assert "takes no locks" in warnings[0].getMessage() and "No locks available" in warnings[0].getMessage()


# -- files a batch reads (model weights) rewritten while it runs -------------------------------


def _weights_stage(weights: Path) -> Stage:
    def run(ctx):  # models are loaded once per batch, as o3dcli.stages.get_models does
        model = ctx.resources.setdefault("model", weights.read_bytes())
        (ctx.work_dir / "out.txt").write_bytes(model)
        return {}

    return Stage("touch", 1, (), run, publish={"out.txt": "out.txt"}, files=lambda cfg: {"weights": weights})


def test_weights_rewritten_during_a_batch_do_not_key_results_made_with_the_old_ones(tmp_path, good_images):
    # `o3d eval` of RUN/model.safetensors while `o3d train` saves new weights there: the batch's
    # models were loaded from the old bytes, so its later items must not be cached as the new
    # weights' results (a later run with the new weights would publish the old model's output)
    from o3dcli.atomic import atomic_write_bytes

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"old weights")
    out = tmp_path / "out"
    items = assign_names([good_images / "apple.png", good_images / "pear.png"], out)

    def after(result):
        if result.name == "apple":
            atomic_write_bytes(weights, b"new weights")  # what o3d train's save does

    first = run_batch(items, BatchRunner(out, load_config("tiny"), [_weights_stage(weights)]),
                      show_progress=False, on_item_done=after)
    assert [r.status for r in first.items] == ["ok", "ok"]
    assert (out / "pear" / "out.txt").read_bytes() == b"old weights"
    again = run_batch(items, BatchRunner(out, load_config("tiny"), [_weights_stage(weights)]), show_progress=False)
    assert [r.cached for r in again.items] == [[], []]  # neither was made with the new weights
    assert [(out / n / "out.txt").read_bytes() for n in ("apple", "pear")] == [b"new weights"] * 2


def test_models_are_not_loaded_from_weights_changed_since_the_batch_keyed_its_items(tmp_path, monkeypatch):
    from o3dcli.batch_types import StageContext
    from o3dcli.atomic import file_identity
    from o3dcli.errors import UserError
    from o3dcli.models import build
    from o3dcli.stages import get_models

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"old weights")
    pinned = {str(weights): (file_identity(weights), "sha of the old weights")}
    monkeypatch.setattr(build, "build_models", lambda cfg, device, dtype: weights.read_bytes())
    ctx = StageContext(Item(tmp_path / "a.png", "a"), load_config("tiny"), tmp_path, {}, {}, "", "cpu",
                       lambda text: None, {}, {"pinned_files": pinned})
    assert get_models(ctx) == b"old weights"
    ctx.resources.clear()
    ctx.resources["pinned_files"] = pinned
    os.replace(tmp_path / "model.safetensors", tmp_path / "old")  # the batch keyed the old file,
    weights.write_bytes(b"new weights")  # another process put new weights in its place since
    with pytest.raises(UserError, match="changed since this batch first read it"):
        get_models(ctx)
    assert ("models", "cpu", load_config("tiny").runtime.dtype) not in ctx.resources


def test_a_folder_scan_keeps_the_images_of_a_folder_being_filled_meanwhile(tmp_path, monkeypatch):
    # photos still being copied into shots/ while `o3d generate -r shots` scans it: the folder's mtime
    # changes with every file added, but it stays the same folder, and its images are inputs
    from o3dcli.inputs import collect_inputs

    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "apple.png").write_bytes(b"png")
    real, added = Path.is_file, []

    def is_file(self):
        if self.name == "o3d-asset.json":  # another file arrives at every look
            (shots / f"late{len(added)}.jpg").write_bytes(b"jpg")
            added.append(self)
        return real(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    assert collect_inputs([shots]) == [(shots / "apple.png").absolute()]
    assert len(added) == 1  # one look was enough
