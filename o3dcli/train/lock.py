"""The lock of a training run's folder: one `o3d train` at a time writes into it.

An advisory `fcntl.flock` on RUN/.o3d-train.lock (o3dcli.cache's ItemLock), released by the
kernel when the process ends, SIGKILL included: a killed run never leaves a stale lock. The
file holds the pid of the process that has the lock, for the refusal's message. Under
torchrun only rank 0 takes it: the ranks of one run share the folder (only rank 0 writes).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from o3dcli.cache import ItemLock, ItemLocked

RUN_LOCK = ".o3d-train.lock"
RUN_FILES = ("checkpoint.pt", "model.safetensors", "config.yaml", "losses.csv")
_TEMPORARY = re.compile(r"\.(" + "|".join(re.escape(n) for n in RUN_FILES) + r")\.tmp-(\d+)")
"""An atomic write (o3dcli.atomic) of a run file while it is written: .<name>.tmp-<pid>."""


class RunInUse(RuntimeError):
    """Another process trains into this run folder; the message names the folder and its pid."""


def lock_holder(path: Path) -> int | None:
    """The pid written in a lock file, None when it cannot be read (being written, or gone)."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


class RunLock:
    """`take()` locks the run folder (idempotent; makes the folder); the lock goes on `release()`,
    at the end of a `with` block, or with the process. `enabled=False` (torchrun ranks but 0)
    takes nothing."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._lock: ItemLock | None = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def take(self) -> None:
        """RunInUse when another process holds the lock."""
        if not self.enabled or self._lock is not None:
            return
        path = self.run_dir / RUN_LOCK
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # made here, not by ItemLock: a plain new file's mode, like every other file of the run
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o666))
        lock = ItemLock(path)
        try:
            lock.acquire(allow_unlocked=True)
        except ItemLocked:
            pid = lock_holder(path)
            who = f"another o3d train (pid {pid})" if pid else "another o3d train"
            raise RunInUse(f"{self.run_dir} is in use by {who}; wait for it to end (or stop it), "
                           "or train into another --output") from None
        self._lock = lock
        if not lock.unlocked:  # unlocked (no locks on this file system): they may be another run's
            self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        """Remove the half-written files of a killed run (a checkpoint can be gigabytes): with the
        lock held, no other process is writing into the folder."""
        for p in self.run_dir.iterdir():
            m = _TEMPORARY.fullmatch(p.name)
            if m and p.is_file() and int(m.group(2)) != os.getpid():
                p.unlink(missing_ok=True)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
