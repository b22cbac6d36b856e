"""Content-addressed stage cache, atomic writes and per-item locks (docs/design.md section 5).

Layout under the output folder::

    OUT/.o3d/items/<asset name>/
        .lock                      flock'ed while a process works on the item
        <stage>-<key16>/           a finished stage: its files + manifest.json
        <stage>-<key16>.state/     resumable intermediate state of an unfinished stage
        .tmp-<stage>-<key16>-<pid>/  a stage being written (renamed when complete)

A stage key is the SHA-256 of (stage name, stage format version, the stage's
resolved config, the upstream stage keys, the input file's hash, and the hashes of
the other files the stage reads, such as model weights: retraining weights in place
must not give back results of the old ones). A stage
folder exists only complete: it is filled under a temporary name and renamed
after its manifest is written, so a crash never leaves a half stage that looks
finished. The lock is an advisory `fcntl.flock`, released by the kernel when the
process dies (SIGKILL included), so a stale lock never blocks a re-run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_DIRNAME = ".o3d"
MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class FileDigests:
    """SHA-256 of files, each read once per (path, size, mtime): a batch hashes its model weights
    once, not once per item, and a file rewritten in place is hashed again. With ``store`` (a JSON
    file, e.g. OUT/.o3d/digests.json) the digests outlive the process, so multi-GB checkpoints are
    not read again by every run on the same output folder."""

    def __init__(self, store: Path | None = None) -> None:
        self.store = store
        self._known: dict[str, list] = {}  # path -> [size, mtime_ns, digest]
        if store is not None and store.is_file():
            try:
                data = json.loads(store.read_text())
                self._known = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3}
            except (OSError, ValueError, AttributeError):
                self._known = {}  # unreadable: hash again

    def __call__(self, path: Path) -> str:
        p = Path(path).resolve()
        st = p.stat()
        known = self._known.get(str(p))
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return known[2]
        digest = sha256_file(p)
        self._known[str(p)] = [st.st_size, st.st_mtime_ns, digest]
        if self.store is not None:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.store, json.dumps(self._known, indent=0))
        return digest


def stage_key(stage: str, version: int, config: Any, upstream: dict[str, str], input_hash: str,
              files: dict[str, str] | None = None) -> str:
    """Deterministic key of a stage's result (see the module docstring); ``files``: {role: SHA-256}
    of the files the stage reads besides the input."""
    content = {"stage": stage, "version": version, "config": config, "upstream": upstream, "input": input_hash}
    if files:
        content["files"] = files
    payload = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or a full disk: no half-written temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process umask."""
    try:  # Linux: read without changing it (os.umask sets it, for a moment, for every thread)
        with open("/proc/self/status") as f:
            umask = next(int(ln.split()[1], 8) for ln in f if ln.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def atomic_save_tensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors' `save_file`, atomic as `atomic_write_bytes`, and with the mode of any other new
    file: safetensors creates its files 0600, which hides weights from the other users of a machine."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fchmod(f.fileno(), new_file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_copy(src: Path, dst: Path) -> None:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(dst)
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def same_file_content(a: Path, b: Path) -> bool:
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
    except FileNotFoundError:
        return False
    return sha256_file(a) == sha256_file(b)


class ItemLocked(RuntimeError):
    """Another process holds this item's lock."""


class ItemLock:
    """An exclusive advisory lock on one item's cache folder (released on close or process death)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if not blocking or (deadline is not None and time.monotonic() > deadline):
                    os.close(fd)
                    raise ItemLocked(f"{self.path.parent.name} is being processed by another o3d process") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ItemLock":
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass
class StageWriter:
    """A stage being written: fill `.dir`, then `commit()` it (or `abort()`)."""

    dir: Path
    final: Path

    def commit(self, meta: dict[str, Any], seconds: float | None = None) -> Path:
        """Publish the stage; `seconds` (what computing it took) is kept in the manifest, so a
        later run that finds the stage cached can still say how long it took to make."""
        files = sorted(str(p.relative_to(self.dir)) for p in self.dir.rglob("*") if p.is_file())
        manifest = {"complete": True, "files": files, "meta": meta, "finished": time.time(),
                    "seconds": None if seconds is None else round(seconds, 4)}
        atomic_write_text(self.dir / MANIFEST, json.dumps(manifest, indent=1, default=str))
        try:
            os.rename(self.dir, self.final)
        except OSError:
            if (self.final / MANIFEST).is_file():  # someone else finished the same stage first
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                shutil.rmtree(self.final, ignore_errors=True)
                os.rename(self.dir, self.final)
        _fsync_dir(self.final.parent)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class StateStore:
    """Saved intermediate state of an unfinished stage (e.g. a sampler every k steps).

    Tensors go to safetensors, metadata to JSON; each save replaces the previous
    one atomically, so the state on disk is always one complete snapshot.
    """

    def __init__(self, dir: Path):
        self.dir = dir

    def save(self, tensors: dict, meta: dict[str, Any]) -> None:
        from safetensors.torch import save

        self.dir.mkdir(parents=True, exist_ok=True)
        # clone: safetensors refuses tensors that share memory (e.g. the same zero map under two names)
        blob = save({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()})
        digest = hashlib.sha256(blob).hexdigest()
        atomic_write_bytes(self.dir / "state.safetensors", blob)
        # The metadata names the tensors' hash: a crash between the two writes is detected on load.
        atomic_write_text(self.dir / "state.json", json.dumps({"meta": meta, "tensors_sha256": digest}, default=str))

    def load(self) -> tuple[dict, dict[str, Any]] | None:
        from safetensors.torch import load

        try:
            info = json.loads((self.dir / "state.json").read_text())
            blob = (self.dir / "state.safetensors").read_bytes()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(blob).hexdigest() != info.get("tensors_sha256"):
            return None
        return load(blob), info["meta"]

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class ItemCache:
    """The cache folder of one item (one output asset)."""

    def __init__(self, dir: Path):
        self.dir = dir

    def lock(self) -> ItemLock:
        return ItemLock(self.dir / ".lock")

    def _name(self, stage: str, key: str) -> str:
        return f"{stage}-{key[:16]}"

    def lookup(self, stage: str, key: str) -> Path | None:
        """The finished stage folder, or None."""
        d = self.dir / self._name(stage, key)
        return d if (d / MANIFEST).is_file() else None

    def manifest(self, stage_dir: Path) -> dict[str, Any]:
        return json.loads((stage_dir / MANIFEST).read_text())

    def begin(self, stage: str, key: str) -> StageWriter:
        name = self._name(stage, key)
        tmp = self.dir / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return StageWriter(tmp, self.dir / name)

    def state(self, stage: str, key: str) -> StateStore:
        return StateStore(self.dir / f"{self._name(stage, key)}.state")

    def clean_stale(self) -> int:
        """Tidy the temporary folders left by processes that died or were interrupted (call with the
        lock held): one whose manifest was written holds a finished stage that was not yet renamed
        (stopped during its commit), and is kept as that stage; the rest are removed. Returns how
        many were removed."""
        n = 0
        for p in self.dir.glob(".tmp-*"):
            name = p.name[len(".tmp-"):].rsplit("-", 1)[0]  # .tmp-<stage>-<key16>-<pid>
            final = self.dir / name
            if p.is_dir() and (p / MANIFEST).is_file() and not final.exists():
                try:
                    os.rename(p, final)
                    shutil.rmtree(self.dir / f"{name}.state", ignore_errors=True)
                    continue
                except OSError:
                    pass
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        return n

    def invalidate(self, stage: str, key: str | None = None) -> None:
        """Forget the cached result of `stage` for `key`, its folder and saved state (--force); with
        no key, every setting's. Results of other settings stay: --force recomputes, it does not
        empty the cache."""
        if key is None:
            for p in self.dir.glob(f"{stage}-*"):
                shutil.rmtree(p, ignore_errors=True)
            return
        name = self._name(stage, key)
        for p in (self.dir / name, self.dir / f"{name}.state"):
            shutil.rmtree(p, ignore_errors=True)


class Cache:
    """All items' caches under `OUT/.o3d/`."""

    def __init__(self, out_dir: Path):
        self.root = Path(out_dir) / CACHE_DIRNAME

    def item(self, name: str) -> ItemCache:
        return ItemCache(self.root / "items" / name)
