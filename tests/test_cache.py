import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest
import torch

from o3dcli.atomic import atomic_write_bytes
from o3dcli.cache import (
    Cache,
    FileDigests,
    ItemLocked,
    stage_key,
)


def test_stage_key_depends_on_every_part():
    k = stage_key("s", 1, {"a": 1}, {"up": "x"}, "h")
    assert k == stage_key("s", 1, {"a": 1}, {"up": "x"}, "h")
    others = [
        stage_key("t", 1, {"a": 1}, {"up": "x"}, "h"),
        stage_key("s", 2, {"a": 1}, {"up": "x"}, "h"),
        stage_key("s", 1, {"a": 2}, {"up": "x"}, "h"),
        stage_key("s", 1, {"a": 1}, {"up": "y"}, "h"),
        stage_key("s", 1, {"a": 1}, {"up": "x"}, "g"),
    ]
    assert len({k, *others}) == 6
    # the files a stage reads (model weights) are part of the key; none given keeps the old key
    assert stage_key("s", 1, {"a": 1}, {"up": "x"}, "h", {}) == k
    with_w = stage_key("s", 1, {"a": 1}, {"up": "x"}, "h", {"weights": "d1"})
    assert with_w not in {k, *others} and with_w != stage_key("s", 1, {"a": 1}, {"up": "x"}, "h", {"weights": "d2"})


def test_file_digests_follow_a_file_rewritten_in_place(tmp_path):
    import hashlib

    w = tmp_path / "w.bin"
    w.write_bytes(b"old weights")
    digests = FileDigests()
    first = digests(w)
    assert first == hashlib.sha256(b"old weights").hexdigest() and digests(tmp_path / "." / "w.bin") == first
    w.write_bytes(b"new weights, same path")
    os.utime(w, ns=(time.time_ns(), time.time_ns() + 1))  # a rewrite within the clock's resolution
    assert digests(w) == hashlib.sha256(b"new weights, same path").hexdigest()


def test_file_digests_are_remembered_across_processes_in_their_store(tmp_path, monkeypatch):
    import hashlib

    import o3dcli.cache as cache

    w, store = tmp_path / "w.bin", tmp_path / ".o3d" / "digests.json"
    w.write_bytes(b"weights")
    assert FileDigests(store)(w) == hashlib.sha256(b"weights").hexdigest() and store.is_file()
    reads = []
    monkeypatch.setattr(cache, "sha256_file", lambda p: reads.append(p) or "re-read")
    assert FileDigests(store)(w) == hashlib.sha256(b"weights").hexdigest() and reads == []  # from the store
    os.utime(w, ns=(time.time_ns(), time.time_ns() + 1))  # touched or rewritten: read again
    assert FileDigests(store)(w) == "re-read" and len(reads) == 1
    store.write_text("{not json")
    assert FileDigests(store)(w) == "re-read"  # a damaged store is only a lost memo


def test_atomic_write_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(p, b"abc")
    atomic_write_bytes(p, b"defg")
    assert p.read_bytes() == b"defg"
    assert [x.name for x in p.parent.iterdir()] == ["f.bin"]


def test_stage_commit_and_abort(tmp_path):
    ic = Cache(tmp_path).item("chair")
    assert ic.lookup("pre", "k" * 64) is None
    w = ic.begin("pre", "k" * 64)
    (w.dir / "a.txt").write_text("x")
    assert ic.lookup("pre", "k" * 64) is None  # not visible before commit
    d = w.commit({"n": 1})
    assert ic.lookup("pre", "k" * 64) == d
    assert ic.manifest(d) ["meta"] == {"n": 1}
    assert ic.manifest(d)["files"] == ["a.txt"]
    w2 = ic.begin("other", "j" * 64)
    (w2.dir / "b.txt").write_text("y")
    w2.abort()
    assert ic.lookup("other", "j" * 64) is None and not w2.dir.exists()


def test_state_store_round_trip_and_corruption(tmp_path):
    st = Cache(tmp_path).item("x").state("diffusion", "a" * 64)
    assert st.load() is None
    st.save({"latents": torch.arange(6.0).reshape(2, 3)}, {"step": 4})
    tensors, meta = st.load()
    assert meta == {"step": 4}
    assert torch.equal(tensors["latents"], torch.arange(6.0).reshape(2, 3))
    # a tensor file that does not match its metadata (crash between the two writes) is ignored
    (st.dir / "state.safetensors").write_bytes(b"garbage")
    assert st.load() is None
    st.clear()
    assert not st.dir.exists()
    zeros = torch.zeros(3)
    st.save({"rgb_map": zeros, "ccm_map": zeros}, {})  # one tensor under two names (a model without adapters)
    assert torch.equal(st.load()[0]["ccm_map"], zeros)


def _hold_lock(path, ready):
    from o3dcli.cache import ItemLock

    lock = ItemLock(path)
    lock.acquire()
    ready.set()
    time.sleep(60)


def test_lock_is_exclusive_and_freed_when_holder_is_killed(tmp_path):
    ic = Cache(tmp_path).item("a")
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(ic.dir / ".lock", ready))
    p.start()
    try:
        assert ready.wait(20)
        with pytest.raises(ItemLocked):
            ic.lock().acquire()
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        lock = ic.lock()
        lock.acquire(blocking=True, timeout=10)
        lock.release()
    finally:
        if p.is_alive():
            p.kill()


def test_clean_stale_and_invalidate(tmp_path):
    ic = Cache(tmp_path).item("a")
    w = ic.begin("mesh", "m" * 64)  # left behind as if its process died
    ic.begin("bake", "b" * 64).commit({})
    assert ic.clean_stale() == 1 and not w.dir.exists()
    ic.invalidate("bake")
    assert ic.lookup("bake", "b" * 64) is None


def test_a_stage_stopped_during_its_commit_is_kept_and_force_forgets_only_its_own_settings(tmp_path, monkeypatch):
    import o3dcli.cache as cache_mod

    ic = Cache(tmp_path).item("a")
    w = ic.begin("mesh", "m" * 64)
    (w.dir / "mesh.ply").write_text("result")
    ic.state("mesh", "m" * 64).dir.mkdir(parents=True)  # the stage's saved state, cleared after a commit
    # Ctrl-C lands after the manifest is written, before the folder is renamed
    monkeypatch.setattr(cache_mod.os, "rename", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        w.commit({"faces": 10})
    monkeypatch.undo()
    assert w.dir.is_dir() and ic.lookup("mesh", "m" * 64) is None
    assert ic.clean_stale() == 0  # the next run keeps the finished stage instead of recomputing it
    done = ic.lookup("mesh", "m" * 64)
    assert done is not None and (done / "mesh.ply").read_text() == "result"
    assert ic.manifest(done)["meta"] == {"faces": 10} and not ic.state("mesh", "m" * 64).dir.exists()
    # --force recomputes these settings' stage and keeps what other settings made
    ic.begin("mesh", "n" * 64).commit({})
    ic.invalidate("mesh", "m" * 64)
    assert ic.lookup("mesh", "m" * 64) is None and ic.lookup("mesh", "n" * 64) is not None


def test_an_interrupted_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import o3dcli.atomic as atomic_mod

    (tmp_path / "src.bin").write_bytes(b"x" * 1000)
    monkeypatch.setattr(atomic_mod.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        atomic_mod.atomic_copy(tmp_path / "src.bin", tmp_path / "out" / "dst.bin")
    with pytest.raises(KeyboardInterrupt):
        atomic_mod.atomic_write_text(tmp_path / "out" / "a.txt", "text")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_mesh_stage_files_are_deflated_and_read_back_exactly(tmp_path):
    import zipfile

    from o3dcli.geometry.mesh import TriMesh
    from o3dcli.stages import load_trimesh, save_trimesh

    rng = np.random.default_rng(0)
    texture = np.zeros((256, 256, 4), np.uint8)
    texture[64:192, 64:192] = (200, 120, 40, 255)  # mostly flat, as baked textures are
    mesh = TriMesh(rng.normal(size=(500, 3)).astype(np.float32), rng.integers(0, 500, (900, 3)).astype(np.int32),
                   uv=rng.uniform(size=(500, 2)).astype(np.float32), texture=texture, alpha_mode="MASK",
                   alpha_cutoff=0.25, double_sided=True)
    save_trimesh(tmp_path / "mesh.npz", mesh)
    with zipfile.ZipFile(tmp_path / "mesh.npz") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    assert (tmp_path / "mesh.npz").stat().st_size < texture.nbytes / 4
    back = load_trimesh(tmp_path / "mesh.npz")
    for name in ("vertices", "faces", "uv", "texture", "material_color"):
        got, want = getattr(back, name), getattr(mesh, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert (back.alpha_mode, back.alpha_cutoff, back.double_sided, back.vertex_colors) == ("MASK", 0.25, True, None)
    # a file an earlier o3d wrote (np.savez, stored) still reads
    np.savez(tmp_path / "old.npz", vertices=mesh.vertices, faces=mesh.faces, material_color=mesh.material_color)
    assert np.array_equal(load_trimesh(tmp_path / "old.npz").faces, mesh.faces)


def failing_flock(code: int):
    def flock(fd, op):
        if op & 8 == 0:  # fcntl.LOCK_UN is 8: unlocking what was never locked is not asked for
            raise OSError(code, os.strerror(code))
        raise AssertionError("unlock of a lock the file system never gave")
    return flock


def test_a_file_system_without_locks_is_worked_on_unlocked_with_one_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    from o3dcli import cache
    from o3dcli.cache import ItemLock

    monkeypatch.setattr(cache, "_warned_unlocked", set())
    monkeypatch.setattr(fcntl, "flock", failing_flock(errno.ENOLCK))
    first, second = ItemLock(tmp_path / "a" / ".lock"), ItemLock(tmp_path / "b" / ".lock")
    with caplog.at_level("WARNING", logger="o3d"):
        first.acquire(allow_unlocked=True)
        second.acquire(blocking=True, allow_unlocked=True)
    assert first.unlocked and second.unlocked
    warnings = [r.getMessage() for r in caplog.records if "takes no locks" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path / "a") in warnings[0] and "No locks available" in warnings[0]
    first.release()
    second.release()
    assert not first.unlocked and first._fd is None
    # a lock taken to prove no one else is at work (before removing something) is not had
    with pytest.raises(OSError, match="No locks available"):
        ItemLock(tmp_path / "p" / ".lock").acquire()
    for code in (errno.EOPNOTSUPP, errno.ENOSYS):  # the other ways a file system says it
        monkeypatch.setattr(fcntl, "flock", failing_flock(code))
        lock = ItemLock(tmp_path / "c" / ".lock")
        lock.acquire(allow_unlocked=True)
        assert lock.unlocked
        lock.release()
    # a lock another process holds, and other errors, are what they were
    monkeypatch.setattr(fcntl, "flock", failing_flock(errno.EAGAIN))
    with pytest.raises(ItemLocked):
        ItemLock(tmp_path / "d" / ".lock").acquire(allow_unlocked=True)
    monkeypatch.setattr(fcntl, "flock", failing_flock(errno.EIO))
    with pytest.raises(OSError, match="Input/output error"):
        ItemLock(tmp_path / "e" / ".lock").acquire(allow_unlocked=True)


def test_without_locks_nothing_another_process_may_be_using_is_removed(tmp_path, monkeypatch):
    # The probes that take a lock to prove a run, an item or a staging folder abandoned must not
    # take "no locks here" for "abandoned".
    import errno
    import fcntl

    from o3dcli.batch_report import RunMark, running_runs
    from o3dcli.synth.dataset import STAGING, _flock, clean_staging

    monkeypatch.setattr(fcntl, "flock", failing_flock(errno.ENOLCK))
    root = tmp_path / ".o3d"
    with RunMark(root, "run-a", 100.0):  # another batch on this folder, at work
        assert running_runs(root) == {}  # cannot be told: none counted ...
        assert sorted(p.name for p in (root / "runs").iterdir()) == ["run-a.json", "run-a.lock"]  # ... none removed
    data = tmp_path / "data"
    (data / STAGING / "obj.123").mkdir(parents=True)  # a writer's folder
    fd = _flock(data / STAGING / "obj.123.lock", blocking=True)  # the writer goes on, unlocked
    assert fd is not None
    assert clean_staging(data) == 0 and (data / STAGING / "obj.123").is_dir()
    os.close(fd)
