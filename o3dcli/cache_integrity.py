"""Checking a stage cache entry (o3dcli.cache) against its manifest, and the errors of a cached file.

A finished stage folder's manifest records each file's size and SHA-256; `check_stage_dir` says
whether the folder's files still match it (a damaged entry is a miss, removed with
`remove_stage_dir` and recomputed), and `cached_file_in_error` finds the cached file a stage
failed to read, so that its error names it (`CachedFileUnreadable`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from o3dcli.atomic import _fsync_dir, _hash_and_sync, atomic_write_text, sha256_file

MANIFEST = "manifest.json"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def check_stage_dir(d: Path) -> tuple[dict[str, Any] | None, tuple[Path, str] | None]:
    """(manifest, None) for a finished stage folder whose files match its manifest, else
    (None, (the file at fault, what is wrong with it)). A manifest written by an earlier o3d
    records names only: it is taken when its files are there and none is empty (recomputing
    every cached stage after an upgrade would cost more than it guards against; a file damaged
    otherwise is met by the stage that reads it, whose error then names it), and `lookup`
    records its files' sizes and hashes, so that later damage is found."""
    mpath = d / MANIFEST
    try:
        text = mpath.read_text()
    except FileNotFoundError:
        return None, (mpath, "missing")
    except (OSError, UnicodeDecodeError) as e:
        return None, (mpath, f"unreadable: {getattr(e, 'strerror', None) or e}")
    if not text.strip():
        return None, (mpath, "empty")
    try:
        manifest = json.loads(text)
    except ValueError as e:
        return None, (mpath, f"not JSON: {e}")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("complete") is not True or not isinstance(files, list)
            or not all(isinstance(n, str) for n in files) or not isinstance(manifest.get("meta", {}), dict)):
        return None, (mpath, "not a finished stage's manifest")
    legacy = "sizes" not in manifest and "sha256" not in manifest
    sizes, digests = manifest.get("sizes"), manifest.get("sha256")
    if not legacy and not (isinstance(sizes, dict) and isinstance(digests, dict)):
        return None, (mpath, "sizes or hashes unreadable")
    for name in files:
        rel = Path(name)
        if not name or rel.is_absolute() or ".." in rel.parts:
            return None, (mpath, f"lists a file outside its folder: {name!r}")
        path = d / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None, (path, "missing")
        except OSError as e:
            return None, (path, f"unreadable: {e.strerror or e}")
        if not path.is_file():
            return None, (path, "not a file")
        if legacy:
            if size == 0:
                return None, (path, "0 bytes")
            continue
        want_size, want_digest = sizes.get(name), digests.get(name)
        if not isinstance(want_size, int) or not isinstance(want_digest, str):
            return None, (path, "no recorded size or hash")
        if size != want_size:
            return None, (path, f"{_plural(size, 'byte')}, expected {want_size:,}")
        try:
            digest = sha256_file(path)
        except OSError as e:
            return None, (path, f"unreadable: {e.strerror or e}")
        if digest != want_digest:
            return None, (path, "its content does not match its recorded SHA-256")
    return manifest, None


def has_other_names(path: Path) -> bool:
    """Whether a (damaged) cache file has other names: o3d publishes cache files into asset
    folders as hard links, so an edit made in place to an asset's file (a texture painted over, a
    mesh saved over) is an edit of the cache's too, and that is the likely cause."""
    try:
        return path.stat().st_nlink > 1
    except OSError:
        return False


def _record_sizes_and_hashes(d: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest of an earlier o3d (names only), rewritten with its files' sizes and SHA-256 as
    they are now: a later damage is then found (one that came before is not, and is met by the
    stage that reads the file). Left as it was where the folder cannot be written."""
    sizes, digests = {}, {}
    try:
        for name in manifest["files"]:
            sizes[name], digests[name] = _hash_and_sync(d / name)
        upgraded = {**manifest, "sizes": sizes, "sha256": digests}
        atomic_write_text(d / MANIFEST, json.dumps(upgraded, indent=1, default=str))
    except OSError:
        return manifest
    return upgraded


def remove_stage_dir(d: Path) -> None:
    """Remove a stage folder, its manifest first: a removal cut short leaves a folder that is
    a miss, never a finished-looking stage with files missing."""
    try:
        (d / MANIFEST).unlink()
        _fsync_dir(d)
    except OSError:
        pass
    shutil.rmtree(d, ignore_errors=True)


def cached_file_in_error(exc: BaseException, stage_dirs) -> Path | None:
    """The file under one of `stage_dirs` (finished stage folders) that was being read when `exc`
    was raised, or None: the exception's own file name, else a path held by the innermost frame
    of its traceback that holds one (the loader's argument: np.load's, safetensors', PIL's)."""
    if not isinstance(exc, Exception):
        return None  # Ctrl-C and the like are never a file's fault
    roots = [Path(p).resolve() for p in stage_dirs]
    if not roots:
        return None

    def inside(value) -> Path | None:
        if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
            try:
                p = Path(value)
                if not p.is_absolute() or not p.is_file():
                    return None
                p = p.resolve()
            except (OSError, ValueError, TypeError):
                return None
            if any(p.is_relative_to(r) for r in roots):
                return p
        return None

    found = inside(getattr(exc, "filename", None))
    if found is not None:
        return found
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            found = inside(value)
            if found is not None:
                return found
    return None


class CachedFileUnreadable(ValueError):
    """A stage could not read a file of a cached stage it depends on (see ItemCache.unreadable_input)."""
