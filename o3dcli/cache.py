"""Content-addressed stage cache and per-item locks (docs/design.md section 5).

Layout under the output folder::

    OUT/.o3d/items/<asset name>/
        .lock                      flock'ed while a process works on the item
        <stage>-<key16>/           a finished stage: its files + manifest.json
        <stage>-<key16>.state/     resumable intermediate state of an unfinished stage
        .tmp-<stage>-<key16>-<pid>/  a stage being written (renamed when complete)
        unfinished.json            the entries runs began and have not finished (kept by prune)

A stage key is the SHA-256 of (stage name, stage format version, the stage's
resolved config, the upstream stage keys, the input file's hash, and the hashes of
the other files the stage reads, such as model weights: retraining weights in place
must not give back results of the old ones). A stage
folder exists only complete: it is filled under a temporary name and renamed
after its manifest is written, so a crash never leaves a half stage that looks
finished. The manifest records each file's size and SHA-256, and is written only after
the files (and their folders) are on disk (fsync), so it is the commit point: a stage
folder is used or published only when its files match it; one that does not (a file
damaged, cut short or gone, an unreadable manifest) is a miss, said in a warning,
removed and recomputed. The lock is an advisory `fcntl.flock`, released by the kernel when the
process dies (SIGKILL included), so a stale lock never blocks a re-run.

Beside it: o3dcli.atomic writes files atomically and hashes them, and o3dcli.cache_integrity
checks a stage folder against its manifest.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from o3dcli.atomic import _fsync_dir, _hash_and_sync, atomic_write_bytes, atomic_write_text, sha256_file
from o3dcli.cache_integrity import (
    MANIFEST,
    CachedFileUnreadable,
    _record_sizes_and_hashes,
    cached_file_in_error,
    check_stage_dir,
    has_other_names,
    remove_stage_dir,
)

CACHE_DIRNAME = ".o3d"
UNFINISHED = "unfinished.json"
"""In an item's cache folder while runs that were under way or stopped have entries not finished
(ItemCache.note_unfinished, forget_finished): those entries, and the input of the last such run."""
log = logging.getLogger("o3d")


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



class ItemLocked(RuntimeError):
    """Another process holds this item's lock."""


LOCKS_UNSUPPORTED = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
"""flock errors that mean the file system takes no locks (an NFS mount without its lock daemon,
some FUSE and SMB mounts), not that another process holds one."""
_warned_unlocked: set[int] = set()  # file systems (st_dev) already warned about (warn_unlocked)


class ItemLock:
    """An exclusive advisory lock on one item's cache folder (released on close or process death).

    On a file system that takes no locks (LOCKS_UNSUPPORTED), `acquire(allow_unlocked=True)` warns,
    once per file system, and goes on without the lock (`.unlocked`): for the locks that guard
    o3d's own work (an item, the report), so that o3d works there, one process at a time, rather
    than failing every item. Without allow_unlocked the OSError is raised: for the locks taken to
    prove that no one else is at work before removing something (`running_runs`, `o3d cache
    prune`), where going on unlocked would remove another process's files."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self.unlocked = False

    def acquire(self, blocking: bool = False, timeout: float | None = None, allow_unlocked: bool = False) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if allow_unlocked and e.errno in LOCKS_UNSUPPORTED:
                    self.unlocked = True
                    warn_unlocked(self.path, fd, e)
                    break
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if not blocking or (deadline is not None and time.monotonic() > deadline):
                    os.close(fd)
                    raise ItemLocked(f"{self.path.parent.name} is being processed by another o3d process") from None
                time.sleep(0.1)
        self._fd = fd
        try:  # the holder's pid, for people: the lock does not need it (a full disk cannot take it)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            if not self.unlocked:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            self.unlocked = False

    def __enter__(self) -> "ItemLock":
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def warn_unlocked(path: Path, fd: int, err: OSError) -> None:
    """The warning that a file system takes no locks (`err`, from flock on `fd`, open on `path`),
    logged once per file system and process."""
    try:
        device = os.fstat(fd).st_dev
    except OSError:
        device = -1
    if device in _warned_unlocked:
        return
    _warned_unlocked.add(device)
    log.warning("cannot lock files in %s (%s): its file system takes no locks (an NFS mount without "
                "its lock daemon, some SMB or FUSE mounts); o3d goes on without them, so run only one o3d "
                "on this folder at a time, or use a folder on a local disk", path.parent, err.strerror or err)


@dataclass
class StageWriter:
    """A stage being written: fill `.dir`, then `commit()` it (or `abort()`)."""

    dir: Path
    final: Path

    def commit(self, meta: dict[str, Any], seconds: float | None = None, batch: str | None = None) -> Path:
        """Publish the stage; `seconds` (what computing it took) is kept in the manifest, so a
        later run that finds the stage cached can still say how long it took to make; so are the
        `batch` that made it and the process (pid)."""
        sizes, digests = {}, {}
        for p in sorted(self.dir.rglob("*")):
            if p.is_file() and p != self.dir / MANIFEST:
                name = p.relative_to(self.dir).as_posix()
                sizes[name], digests[name] = _hash_and_sync(p)
        for d in [*(p for p in self.dir.rglob("*") if p.is_dir()), self.dir]:
            _fsync_dir(d)  # the files' names are durable too, before the manifest that lists them
        manifest = {"complete": True, "files": sorted(sizes), "sizes": sizes, "sha256": digests, "meta": meta,
                    "finished": time.time(), "seconds": None if seconds is None else round(seconds, 4),
                    "batch": batch, "pid": os.getpid()}
        atomic_write_text(self.dir / MANIFEST, json.dumps(manifest, indent=1, default=str))
        try:
            os.rename(self.dir, self.final)
        except OSError:
            if (self.final / MANIFEST).is_file() and check_stage_dir(self.final)[1] is None:
                shutil.rmtree(self.dir, ignore_errors=True)  # someone else finished the same stage first
            else:  # an unfinished or damaged folder in the way: ours replaces it
                remove_stage_dir(self.final)
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
        self._checked: dict[Path, dict[str, Any]] = {}  # stage folder -> its manifest, as lookup checked it
        self.damaged: set[str] = set()  # entries lookup found damaged (and removed)

    def lock(self) -> ItemLock:
        return ItemLock(self.dir / ".lock")

    def busy(self) -> bool:
        """Whether a process holds this item's lock now (its work under way). Probed with a shared
        lock on the lock file, taken and dropped at once: creates nothing, and never stops another
        prober. False where no lock can be had (no lock file, a file system that takes none)."""
        import fcntl

        try:
            fd = os.open(self.dir / ".lock", os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            return e.errno in (errno.EAGAIN, errno.EACCES)
        finally:
            os.close(fd)  # drops the probe's lock
        return False

    def entry_name(self, stage: str, key: str) -> str:
        """The name of `stage`'s folder for `key` in this item's cache folder."""
        return f"{stage}-{key[:16]}"

    def lookup(self, stage: str, key: str, recompute: bool = True) -> Path | None:
        """The finished stage folder, or None. The folder is checked against its manifest first
        (every listed file there, with its recorded size and SHA-256): a damaged one is a miss,
        said in a one-line warning that names the file, removed, and its name added to `damaged`.
        `recompute`: whether the caller computes the stage on a miss (the warning says so, or that
        a later run will, for a stage a --stop-after run skips)."""
        name = self.entry_name(stage, key)
        d = self.dir / name
        if not d.exists():
            return None
        manifest, problem = check_stage_dir(d)
        if problem is not None:
            path, what = problem
            shared = has_other_names(path)
            if shared:
                what += "; the file is also in an asset folder, so it was likely edited there"
            if recompute:
                then = "recomputing" + (", and o3d's file replaces the edited one" if shared else "")
            else:
                then = "this run stops before that stage: the next run that includes it recomputes it"
            log.warning("%s: damaged cache entry (%s); %s", path, what, then)
            remove_stage_dir(d)
            self.damaged.add(name)
            return None
        if "sizes" not in manifest:  # an earlier o3d's: its files are checked from now on
            manifest = _record_sizes_and_hashes(d, manifest)
        self._checked[d] = manifest
        return d

    def adopt(self, stage: str, key: str, others: list[str], batch: str | None = None,
              warnings: Callable[[str], Callable[[str], str]] | None = None) -> tuple[Path, str] | None:
        """Another item's finished entry for (`stage`, `key`), copied into this item's folder:
        (the copy, the other item's name), or None when none of `others` (item names: those
        `Cache.items_of_input` lists for this item's input) has it whole. Keys hold the input's
        bytes, not its name, so a photo renamed (or the same photo given twice) finds the results
        made under its other name. Copied, not linked: each asset's files are its own to edit.
        `batch`: take only entries that batch made (--force). `warnings(other)`: how each warning
        the other item's entry keeps is rewritten (one made by an earlier o3d names its paths).

        The other item is not locked: what another process removes or damages meanwhile fails the
        copy's check against its manifest, and the next one (or a recomputation) is tried. The
        manifest is written last, whole (atomically), so a copy cut short is never taken for
        finished (clean_stale); an interrupted copy is removed."""
        name = self.entry_name(stage, key)
        final = self.dir / name
        for other in others:
            if other == self.dir.name:
                continue
            src = self.dir.parent / other / name
            try:
                manifest = json.loads((src / MANIFEST).read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), dict):
                continue  # an earlier o3d's (no hashes), or not a manifest: its copy could not be checked
            if batch is not None and manifest.get("batch") != batch:
                continue
            meta = manifest.get("meta")
            if warnings is not None and isinstance(meta, dict) and isinstance(meta.get("warnings"), list):
                rewrite = warnings(other)
                manifest["meta"] = {**meta, "warnings": [rewrite(w) if isinstance(w, str) else w
                                                         for w in meta["warnings"]]}
            tmp = self.dir / f".tmp-{name}-{os.getpid()}"
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(src, tmp, ignore=lambda d, names: [MANIFEST] if Path(d) == src else [])
                for p in tmp.rglob("*"):  # durable before the manifest that vouches for them
                    if p.is_file():
                        with open(p, "rb") as f:
                            os.fsync(f.fileno())
                for d in [*(p for p in tmp.rglob("*") if p.is_dir()), tmp]:
                    _fsync_dir(d)
                atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1, default=str))
                checked, problem = check_stage_dir(tmp)
                if problem is not None:
                    raise FileNotFoundError(f"{problem[0]}: {problem[1]}")
                os.rename(tmp, final)
                _fsync_dir(self.dir)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                log.debug("%s: not reused (%s)", src, e)
                continue
            except BaseException:  # interrupted: no half copy is left to be taken for finished
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            shutil.rmtree(self.dir / f"{name}.state", ignore_errors=True)  # finished: no state to resume
            self._checked[final] = checked
            return final, other
        return None

    def manifest(self, stage_dir: Path) -> dict[str, Any]:
        """The stage's manifest: as `lookup` checked it, or read again."""
        checked = self._checked.pop(Path(stage_dir), None)
        if checked is not None:
            return checked
        return json.loads((stage_dir / MANIFEST).read_text())

    def unreadable_input(self, exc: BaseException, stage_dirs) -> CachedFileUnreadable | None:
        """What to raise, instead of `exc`, when a stage failed reading a file of one of the cached
        stages it was given (`stage_dirs`): an error that names the file and the way out. None when
        `exc` is about something else. Files are checked by `lookup`, so this is for a file that
        matches its manifest but not what its reader expects (or an earlier o3d's entry)."""
        path = cached_file_in_error(exc, stage_dirs)
        if path is None:
            return None
        return CachedFileUnreadable(f"{path}: cannot read this cached file ({type(exc).__name__}: {exc}); "
                                    "run again with --force to recompute it")

    def begin(self, stage: str, key: str) -> StageWriter:
        name = self.entry_name(stage, key)
        tmp = self.dir / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return StageWriter(tmp, self.dir / name)

    def state(self, stage: str, key: str) -> StateStore:
        return StateStore(self.dir / f"{self.entry_name(stage, key)}.state")

    def clean_stale(self) -> int:
        """Tidy the temporary folders left by processes that died or were interrupted (call with the
        lock held): one whose manifest was written holds a finished stage that was not yet renamed
        (stopped during its commit), and is kept as that stage; the rest are removed, as are the
        temporary files of the item's records. Returns how many folders were removed."""
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
        for p in self.dir.glob(".*.tmp-*"):  # a record (unfinished.json, failed-*.json) cut short by a kill
            if p.is_file():
                p.unlink(missing_ok=True)
        return n

    def note_unfinished(self, names: list[str], source: Path) -> None:
        """Record, before a stage is computed, the entries the run making this item's asset from
        `source` uses (`names`, the one about to be made among them), beside those earlier
        unfinished runs recorded: until they are finished (`forget_finished`), `o3d cache prune`
        keeps them and their saved states, so that an interrupted or failed run resumes where it
        stopped whatever ran since. Best effort, as `record_failure`."""
        try:
            entries = sorted((self.unfinished() or set()) | set(names))
            atomic_write_text(self.dir / UNFINISHED, json.dumps({"entries": entries, "source": str(source)}))
        except OSError:
            pass

    def unfinished(self) -> set[str] | None:
        """The entries `note_unfinished` recorded (None: no unfinished run, or made before o3d
        recorded them)."""
        entries = self._unfinished_record().get("entries")
        return {e for e in entries if isinstance(e, str)} if isinstance(entries, list) else None

    def unfinished_source(self) -> str | None:
        """The input the last unfinished run was making this item from, as it recorded it."""
        source = self._unfinished_record().get("source")
        return source if isinstance(source, str) else None

    def _unfinished_record(self) -> dict:
        try:
            record = json.loads((self.dir / UNFINISHED).read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def forget_finished(self, names: list[str]) -> None:
        """Drop the recorded entries an asset just published is made from (`names`: it records them
        itself), and the record once none is left; those of other runs stay recorded."""
        recorded = self.unfinished()
        if recorded is None:
            return
        left = recorded - set(names)
        try:
            if left:
                atomic_write_text(self.dir / UNFINISHED, json.dumps({"entries": sorted(left),
                                                                      "source": self.unfinished_source()}))
            else:
                (self.dir / UNFINISHED).unlink(missing_ok=True)
        except OSError:
            pass

    def record_failure(self, batch: str, source: Path, error: str | None, trace: str | None,
                       stage: str | None = None, timings: dict[str, float] | None = None) -> None:
        """Record that this item failed in `batch` (o3d generate --jobs: the other processes of the
        batch report it without running it again), with the stage it failed in and the seconds
        each stage took. Best effort: a folder that cannot be written means only that another
        process may try the item too."""
        try:
            atomic_write_text(self.dir / f"failed-{batch}.json",
                              json.dumps({"source": str(source), "error": error, "traceback": trace,
                                          "stage": stage, "timings": timings or {}}))
        except OSError:
            pass

    def recorded_failure(self, batch: str, source: Path) -> dict[str, Any] | None:
        """The failure `record_failure` recorded for this item and input in `batch`, or None."""
        try:
            failed = json.loads((self.dir / f"failed-{batch}.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(failed, dict) or failed.get("source") != str(source) or not isinstance(failed.get("error"), str):
            return None
        return failed

    def forget_failures(self, but: str) -> None:
        """Remove the failures recorded in other batches than `but` (they were for those batches)."""
        for p in self.dir.glob("failed-*.json"):
            if p.name != f"failed-{but}.json":
                p.unlink(missing_ok=True)

    def invalidate(self, stage: str, key: str | None = None) -> None:
        """Forget the cached result of `stage` for `key`, its folder and saved state (--force); with
        no key, every setting's. Results of other settings stay: --force recomputes, it does not
        empty the cache."""
        self._checked.clear()
        if key is None:
            for p in self.dir.glob(f"{stage}-*"):
                shutil.rmtree(p, ignore_errors=True)
            return
        name = self.entry_name(stage, key)
        for p in (self.dir / name, self.dir / f"{name}.state"):
            shutil.rmtree(p, ignore_errors=True)


class Cache:
    """All items' caches under `OUT/.o3d/`."""

    def __init__(self, out_dir: Path):
        self.root = Path(out_dir) / CACHE_DIRNAME

    def item(self, name: str) -> ItemCache:
        return ItemCache(self.root / "items" / name)

    def _input_index(self, input_hash: str) -> Path:
        return self.root / "inputs" / f"{input_hash[:32]}.txt"

    def register_input(self, input_hash: str, name: str) -> None:
        """Note that item `name` is made from the input whose SHA-256 is `input_hash`, so that
        another item of the same input finds its entries (`items_of_input`) without reading every
        item's folder. One line appended (processes sharing the folder append whole lines);
        best effort: an index that cannot be written only means nothing is reused from this item."""
        if name in self.items_of_input(input_hash):
            return
        path = self._input_index(input_hash)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                # on a line of its own even after a line cut short (a full disk): blank lines are skipped
                os.write(fd, ("\n" + json.dumps(name) + "\n").encode())
            finally:
                os.close(fd)
        except OSError:
            pass

    def index_earlier_items(self) -> None:
        """Index the items an o3d before the index made, once per output folder: each one's asset
        folder records its input's SHA-256 (o3d-asset.json), so a photo renamed since is found."""
        from o3dcli.naming import asset_meta

        marker = self.root / "inputs" / ".earlier-items-indexed"
        if marker.exists():
            return
        try:
            names = sorted(p.name for p in (self.root / "items").iterdir() if p.is_dir())
        except OSError:
            return
        for name in names:
            digest = asset_meta(self.root.parent / name).get("source_sha256")
            if isinstance(digest, str):
                self.register_input(digest, name)
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass

    def items_of_input(self, input_hash: str) -> list[str]:
        """The items `register_input` noted for this input, first noted first (some may be gone)."""
        try:
            lines = self._input_index(input_hash).read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return []
        names = []
        for line in lines:
            try:
                name = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            if isinstance(name, str) and name and "/" not in name and name not in (".", "..") and name not in names:
                names.append(name)
        return names
