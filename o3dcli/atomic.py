"""Generic file-system helpers used all over the package: atomic writes (a reader sees the old
file or the whole new one, never a part), fsync of files and folders, and file hashes.

An atomic write fills a temporary file beside its target (`.<name>.tmp-<pid>`), flushes it to the
disk (fsync) and renames it over the target, then syncs the folder; an interrupted write (Ctrl-C,
a full disk) removes its temporary file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def file_identity(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a file's version apart without reading it: device, inode, size and modification
    time (a file replaced by a rename gets a new inode, one rewritten in place a new mtime); None
    when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def look_steady(folder: Path, look: Callable[[], bool], tries: int = 20) -> bool | None:
    """`look()`, a test of what `folder` holds, made where another process may be replacing the
    folder by two renames (o3dcli.publish, where folders cannot be swapped in one step: macOS): True
    is believed at once, False only when `folder` was the same folder before and after the look
    (a look between the two renames finds the folder absent); None when it stays absent. "The same
    folder" is the same inode: files added or removed meanwhile (photos being copied in, another
    asset written beside) change a folder's mtime, not which folder it is."""
    for _ in range(tries):
        before = _inode(folder)
        if look():
            return True
        if before is not None and _inode(folder) == before:
            return False
        time.sleep(0.05)
    return None


def _inode(path: Path) -> tuple[int, int] | None:
    identity = file_identity(path)
    return None if identity is None else identity[:2]


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


def _hash_and_sync(path: Path, chunk: int = 1 << 20) -> tuple[int, str]:
    """Size and SHA-256 of a file just written, which is flushed to the disk (fsync) on the way:
    its bytes are durable before a manifest vouches for them."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            size += len(block)
        os.fsync(f.fileno())
    return size, h.hexdigest()
