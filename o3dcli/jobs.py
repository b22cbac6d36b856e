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

A worker's output goes to a log file in OUT/.o3d/logs/, removed when the worker ends normally
(its items are in the command's own summary and in the report). Workers run in a session of
their own: Ctrl-C or SIGTERM stops the command, which passes SIGTERM on to each worker once; on
Linux a worker also gets SIGTERM when the command's process dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LOG_DIR = "logs"
# all items ok, some failed (the command's own run reports them), stopped by Ctrl-C or SIGTERM
WORKER_ENDED_NORMALLY = (0, 1, 130, 143)


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


def worker_args(paths: list[Path], output: Path, preset: str, sets: list[str], recursive: bool,
                stop_after: str | None, force: bool, threads: int | None, batch_id: str) -> list[str]:
    """The `o3d generate` arguments of a worker: the command's inputs, output and settings (its
    `--set`s and shortcut options, as `--set`s), no progress display, the batch id, and the torch
    threads to use (None: runtime.threads, which is set)."""
    args = ["generate", *(str(p) for p in paths), "-o", str(output), "--preset", preset, "--no-progress",
            "--worker-of", batch_id]
    for s in sets:
        args += ["--set", s]
    if threads:  # not as runtime.threads: every process's config.yaml is the command's
        args += ["--worker-threads", str(threads)]
    if recursive:
        args.append("--recursive")
    if stop_after:
        args += ["--stop-after", stop_after]
    if force:
        args.append("--force")
    return args


PARENT_ENV = "O3D_JOBS_PARENT"


def follow_parent() -> bool:
    """In a worker: ask Linux for SIGTERM when the command's process dies (prctl PDEATHSIG, as the
    first thing the worker does), and say whether that process is still there (False: it died
    before this, so the worker should not start)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    parent = os.environ.get(PARENT_ENV, "")
    return not parent.isdigit() or os.getppid() == int(parent)


def _remove_orphaned_logs(log_dir: Path) -> None:
    """Remove the worker logs of commands no longer running (killed before they could tidy up)."""
    for log_path in log_dir.glob("generate-*-worker*.log"):
        pid = log_path.name.split("-")[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log_path.unlink(missing_ok=True)
        except OSError:  # running, as another user
            pass


@dataclass
class Workers:
    """The worker processes of one batch."""

    log_dir: Path
    procs: list[tuple[subprocess.Popen, Path]] = field(default_factory=list)

    def start(self, args: list[str], envs: list[dict[str, str] | None]) -> None:
        """One worker per entry of `envs` (extra environment variables, or None), each running
        `python -m o3dcli ARGS`, its output into a log file."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _remove_orphaned_logs(self.log_dir)
        for k, extra in enumerate(envs, start=1):
            log_path = self.log_dir / f"generate-{os.getpid()}-worker{k}.log"
            env = {**os.environ, **(extra or {}), "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
            with open(log_path, "wb") as log_file:
                # a session of its own: Ctrl-C in the terminal reaches the command only, which passes
                # it on once (a second signal could cut short a worker's own tidying up)
                proc = subprocess.Popen([sys.executable, "-m", "o3dcli", *args], stdin=subprocess.DEVNULL,
                                        stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.procs.append((proc, log_path))

    def stop(self) -> None:
        """Ask the workers still running to stop (SIGTERM: they keep and report what they
        finished, as after Ctrl-C)."""
        for proc, _ in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except OSError:
                    pass

    def wait(self, timeout: float | None = None) -> list[str]:
        """Wait for every worker; problems to tell (a worker that ended otherwise than normally,
        with its log, which is kept; the logs of the others are removed). After `timeout` seconds
        the workers left are killed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        problems = []
        for proc, log_path in self.procs:
            try:
                code = proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code in WORKER_ENDED_NORMALLY:
                log_path.unlink(missing_ok=True)
            else:
                problems.append(f"worker process {proc.pid} ended with exit code {code} (its log: {log_path})")
        self.procs = []
        try:
            self.log_dir.rmdir()  # empty: nothing to keep
        except OSError:
            pass
        return problems
