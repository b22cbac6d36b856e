"""`o3d generate --jobs N`: N processes on one batch.

The command's own process runs the batch as always (progress, summary, report, exit code) and
starts N - 1 worker processes that run the same command on the same output folder. Every process
goes through the items in order and takes the next one no other process holds (the per-item lock
of o3dcli.naming.claim_name), so the work spreads itself; an item another process holds is taken
up again at the end, when its stages are found made. The processes share a batch id: what one of
them made counts as made in this batch, not cached, for the others, and `--force` recomputes only
what was made before the batch (o3dcli.pipeline.BatchRunner).

Each process loads its own copy of the model: N times the memory. torch's threads are divided
among the processes unless `runtime.threads` is set. On CUDA with no device index, the workers
are spread over the visible GPUs (each worker sees one, through CUDA_VISIBLE_DEVICES).

The workers take the command's list of items (a file in OUT/.o3d/logs/), not their own scan of
the inputs. An item that fails is recorded for the batch in its cache folder, so the other
processes report it without running it again. A worker's output goes to a log file in
OUT/.o3d/logs/, removed when the worker ends normally (its items are in the command's own
summary and in the report) and kept as `*-kept.log` otherwise. Workers run in a session of their
own: Ctrl-C or SIGTERM stops the command, which passes SIGTERM on to each worker once (and its
summary then takes, from the merged report, what the workers finished or were at); on Linux a
worker also gets SIGTERM when the command's process dies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LOG_DIR = "logs"
# done (a worker exits 0 when items failed too: the command's own run reports them), stopped by
# Ctrl-C or SIGTERM; 1 is a crash (a Python traceback), 2 a usage error
WORKER_ENDED_NORMALLY = (0, 130, 143)
KEPT = "-kept.log"


def library_threads() -> int:
    """Threads for the native libraries o3d calls besides torch (scipy's KD-tree queries, open3d's
    ray casts): torch's thread count, which is runtime.threads, or this process's share under
    --jobs; left to themselves they would each take every core, N processes N times over."""
    import torch

    return max(1, torch.get_num_threads())


def open3d():
    """The open3d module, with its own thread pool (TBB, used by ICP, TSDF fusion and marching
    cubes) bounded by `library_threads()` for this process (open3d 0.20 and later; earlier
    releases take every core there)."""
    import open3d as o3d

    limit = getattr(o3d.utility, "set_max_threads", None)
    if limit is not None:
        limit(library_threads())
    return o3d


def threads_per_process(jobs: int, threads_setting: int, available: int) -> int:
    """torch threads for each of `jobs` processes: `runtime.threads` when set, else the
    `available` threads (torch's default count, one per core) divided among them."""
    if threads_setting:
        return threads_setting
    return max(1, available // max(1, jobs))


def cuda_devices_for_workers(workers: int, device_setting: str, resolved_type: str,
                             visible: str | None, device_count: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each worker (None: leave it as it is). Only when the device is CUDA
    without an index (`auto` or `cuda`) and more than one GPU is visible: the command's own process
    uses the first visible GPU, worker k the (k+1)-th, round the list again when there are more
    processes than GPUs. An explicit `cuda:N` puts every process on that GPU, as asked."""
    if resolved_type != "cuda" or ":" in device_setting:
        return [None] * workers
    gpus = [g.strip() for g in visible.split(",") if g.strip()] if visible is not None else \
        [str(i) for i in range(device_count)]
    if len(gpus) < 2:
        return [None] * workers
    return [gpus[(k + 1) % len(gpus)] for k in range(workers)]


def worker_args(output: Path, preset: str, sets: list[str], stop_after: str | None, force: bool,
                threads: int | None, batch_id: str) -> list[str]:
    """The `o3d generate` arguments of a worker: the command's output and settings (its `--set`s
    and shortcut options, as `--set`s), no progress display, the batch id, and the torch threads
    to use (None: runtime.threads, which is set). The items are given by `Workers.start`: the
    command's own list, so that a file added to an input folder meanwhile is not taken by a worker
    alone."""
    args = ["generate", "-o", str(output), "--preset", preset, "--no-progress", "--worker-of", batch_id]
    for s in sets:
        args += ["--set", s]
    if threads:  # not as runtime.threads: every process's config.yaml is the command's
        args += ["--worker-threads", str(threads)]
    if stop_after:
        args += ["--stop-after", stop_after]
    if force:
        args.append("--force")
    return args


def write_items(path: Path, items) -> None:
    """The batch's items (input and asset name, in order), for the workers."""
    from o3dcli.atomic import atomic_write_text

    atomic_write_text(path, json.dumps([[str(it.source), it.name] for it in items]))


def read_items(path: Path):
    """The items `write_items` wrote."""
    from o3dcli.naming import Item

    return [Item(Path(source), name) for source, name in json.loads(Path(path).read_text())]


PARENT_ENV = "O3D_JOBS_PARENT"


def follow_parent(parent: int | None = None) -> bool:
    """In a worker: ask Linux for SIGTERM when the command's process dies (prctl PDEATHSIG, as the
    first thing the worker does), and say whether that process is still there (False: it died
    before this, so the worker should not start). `parent`: the command's process id (default:
    from the environment, O3D_JOBS_PARENT)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    if parent is None:
        given = os.environ.get(PARENT_ENV, "")
        parent = int(given) if given.isdigit() else None
    return parent is None or os.getppid() == parent


def _remove_orphaned_files(log_dir: Path) -> None:
    """Remove the worker logs and item lists of commands no longer running (killed before they
    could tidy up); logs kept after an abnormal end (`*-kept.log`) stay for the user to read."""
    for path in log_dir.glob("generate-*"):
        pid = path.name.split("-")[1]
        if not pid.isdigit() or path.name.endswith(KEPT):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except OSError:  # running, as another user
            pass


def worker_command(args: list[str]) -> list[str]:
    """The command line of a worker process running `o3d ARGS`: this Python, with the folder o3dcli
    is imported from, and not the working folder, on its path (`python -m` would put the working
    folder first, where a script of the user's named like a module, `grp.py`, would be imported
    instead of Python's own; the `o3d` command does not look there either)."""
    import o3dcli

    root = str(Path(o3dcli.__file__).resolve().parent.parent)
    # the working folder's entry (absent with PYTHONSAFEPATH) goes; o3dcli's folder comes first
    # where it is not on the path already (a checkout run as `python -m o3dcli`)
    start = ("import os, sys\n"
             "if sys.path and sys.path[0] in ('', os.getcwd()):\n    del sys.path[0]\n"
             f"if {root!r} not in {{os.path.realpath(p) for p in sys.path}}:\n    sys.path.insert(0, {root!r})\n"
             "sys.argv[0] = 'o3d'\nfrom o3dcli.cli import main\nmain()\n")
    return [sys.executable, "-c", start, *args]


@dataclass
class Workers:
    """The worker processes of one batch."""

    log_dir: Path
    procs: list[tuple[subprocess.Popen, Path]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _stopped: set[int] = field(default_factory=set)
    _items_file: Path | None = None

    def start(self, args: list[str], items, envs: list[dict[str, str] | None]) -> str | None:
        """One worker per entry of `envs` (extra environment variables, or None), each running
        `python -m o3dcli ARGS` on `items`, its output into a log file. Returns what stopped it
        from starting them all (the command then works with the ones it has), else None."""
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            _remove_orphaned_files(self.log_dir)
            self._items_file = self.log_dir / f"generate-{os.getpid()}-items.json"
            write_items(self._items_file, items)
        except OSError as e:
            return f"cannot start worker processes: cannot write in {self.log_dir} ({e.strerror or e})"
        for k, extra in enumerate(envs, start=1):
            log_path = self.log_dir / f"generate-{os.getpid()}-worker{k}.log"
            env = {**os.environ, **(extra or {}), "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
            try:
                with open(log_path, "wb") as log_file:
                    # a session of its own: Ctrl-C in the terminal reaches the command only, which
                    # passes it on once (a second signal could cut short a worker's own tidying up)
                    proc = subprocess.Popen(worker_command([*args, "--worker-items", str(self._items_file)]),
                                            stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
            except OSError as e:  # too many processes, no memory left to start one, ...
                log_path.unlink(missing_ok=True)
                return f"started {k - 1} of {len(envs)} worker processes: {e.strerror or e}"
            self.procs.append((proc, log_path))
        return None

    def stop(self) -> None:
        """Ask the workers still running to stop, once each (SIGTERM: they keep and report what
        they finished, as after Ctrl-C)."""
        for proc, _ in self.procs:
            if proc.poll() is None and proc.pid not in self._stopped:
                self._stopped.add(proc.pid)
                try:
                    proc.send_signal(signal.SIGTERM)
                except OSError:
                    pass

    def wait(self, timeout: float | None = None) -> list[str]:
        """Wait for every worker; the problems to tell: a worker that ended otherwise than
        normally, with its log, which is kept (renamed `*-kept.log`); the logs of the others are
        removed. After `timeout` seconds the workers left are killed. What an interrupt cuts
        short is finished by the next call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.procs:
            proc, log_path = self.procs[0]
            try:
                code = proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code in WORKER_ENDED_NORMALLY:
                log_path.unlink(missing_ok=True)
            else:
                kept = log_path.with_name(log_path.stem + KEPT)
                try:
                    os.replace(log_path, kept)
                except OSError:
                    kept = log_path
                self.problems.append(f"worker process {proc.pid} ended with exit code {code} (its log: {kept})")
            self.procs.pop(0)
        if self._items_file is not None:
            self._items_file.unlink(missing_ok=True)
        try:
            self.log_dir.rmdir()  # empty: nothing to keep
        except OSError:
            pass
        problems, self.problems = self.problems, []
        return problems


def start_workers(n: int, items, output: Path, preset: str, sets: list[str], stop_after: str | None,
                  force: bool, threads: int | None, cfg, runner) -> Workers:
    """Start `n` worker processes on the batch `runner` runs (o3d generate --jobs, and o3d eval's
    generation); a warning when fewer could be started."""
    kind = str(runner.device).split(":")[0]
    count = 0
    if kind == "cuda":
        import torch

        count = torch.cuda.device_count()
    gpus = cuda_devices_for_workers(n, cfg.runtime.device, kind, os.environ.get("CUDA_VISIBLE_DEVICES"), count)
    workers = Workers(runner.cache.root / LOG_DIR)
    problem = workers.start(worker_args(output, preset, sets, stop_after, force, threads, runner.batch_id), items,
                            [None if g is None else {"CUDA_VISIBLE_DEVICES": g} for g in gpus])
    if problem:
        from rich.markup import escape

        from o3dcli.console import console

        console.print(f"[yellow]warning[/yellow]: {escape(problem)}; the batch goes on without them", soft_wrap=True)
    return workers


def end_workers(workers: Workers | None, stop: bool = False) -> None:
    """Wait for the workers (after asking them to stop, when the command was interrupted); say
    which ended otherwise than normally. Once: later calls do nothing."""
    if workers is None:
        return
    from rich.markup import escape

    from o3dcli.console import console

    if stop:
        workers.stop()
    for problem in workers.wait(timeout=120 if stop else 600):
        console.print(f"[yellow]warning[/yellow]: {escape(problem)}", soft_wrap=True)
