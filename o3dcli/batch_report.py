"""The batch report, OUT/o3d-report.json: this run's items, their status, errors and timings.

The report is written under a lock and merged: runs on one output folder that overlap in time
(one finished after the other started, or is still running: each run holds a lock under
`OUT/.o3d/runs/` while it runs) all keep their items in it; a run's items replace those of the
same name, and the items of runs that ended before it began are dropped, so after runs one
after another the report describes the latest.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from o3dcli import __version__
from o3dcli.atomic import atomic_write_text
from o3dcli.batch_types import ItemResult
from o3dcli.cache import ItemLock, ItemLocked
from o3dcli.naming import REPORT_NAME


def write_report(out_dir: Path, cache_root: Path, device: str, results: list[ItemResult], started: float,
                 interrupted: bool = False, run_id: str | None = None) -> Path:
    """Write OUT/o3d-report.json: this run's items, and those of other runs on this folder that
    overlapped it (see the module docstring); under a lock, so concurrent runs lose nothing."""
    path = out_dir / REPORT_NAME
    run_id = run_id or new_run_id(started)
    finished = time.time()
    this_run = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "started_at": round(started, 3),
        "finished_at": round(finished, 3),
        "seconds": round(finished - started, 3),
        "pid": os.getpid(),
        "device": device,
        "interrupted": interrupted,
        "summary": _count(results),
    }
    items = [{**r.__dict__, "run": run_id} for r in results]
    lock = ItemLock(cache_root / "report.lock")
    lock.acquire(blocking=True)
    try:
        since = min([started] + [t for rid, t in running_runs(cache_root).items() if rid != run_id])
        earlier = _read_json(path)
        runs = earlier.get("runs") if isinstance(earlier.get("runs"), dict) else {}
        overlapping = {rid: r for rid, r in runs.items() if rid != run_id and isinstance(r, dict)
                       and isinstance(r.get("finished_at"), (int, float)) and r["finished_at"] >= since}
        names = {r.name for r in results}
        kept = [i for i in earlier.get("items", []) if isinstance(i, dict) and i.get("run") in overlapping
                and i.get("name") not in names]
        items += kept
        runs = {run_id: this_run, **{rid: r for rid, r in overlapping.items() if any(i["run"] == rid for i in kept)}}
        report = {
            "o3d_version": __version__,
            "started": this_run["started"],
            "seconds": this_run["seconds"],
            "device": device,
            "interrupted": interrupted,
            "summary": _count(items),
            "run": run_id,
            "runs": runs,
            "items": items,
        }
        atomic_write_text(path, json.dumps(report, indent=1))
    finally:
        lock.release()
    return path


def _count(items) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in items:
        status = r["status"] if isinstance(r, dict) else r.status
        counts[status] = counts.get(status, 0) + 1
    return counts


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


RUNS_DIRNAME = "runs"


def new_run_id(started: float) -> str:
    """A batch run's id: when it started, and a random part (unique across processes and hosts)."""
    return time.strftime("%Y%m%dT%H%M%S", time.localtime(started)) + "-" + uuid.uuid4().hex[:8]


class RunMark:
    """Says to other processes that a batch run on this output folder is under way, and since when:
    a lock held while it runs (`OUT/.o3d/runs/<run id>.lock`, released by the kernel if the process
    dies) beside a file with its start time. See `running_runs`."""

    def __init__(self, cache_root: Path, run_id: str, started: float):
        self.lock = ItemLock(cache_root / RUNS_DIRNAME / f"{run_id}.lock")
        self.info = cache_root / RUNS_DIRNAME / f"{run_id}.json"
        self.started = started

    def __enter__(self) -> "RunMark":
        try:
            self.lock.acquire()  # before the start time is written: a run that has one is marked running
            atomic_write_text(self.info, json.dumps({"started_at": self.started, "pid": os.getpid()}))
        except OSError:  # a read-only cache folder: the run still goes on, unmarked
            self.lock.release()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.info.unlink(missing_ok=True)
            self.lock.path.unlink(missing_ok=True)
        except OSError:
            pass
        self.lock.release()


def running_runs(cache_root: Path) -> dict[str, float]:
    """The batch runs on this output folder that are under way: {run id: start time}. The marks of
    runs that died (their lock is free) are removed."""
    found = {}
    for info in sorted((Path(cache_root) / RUNS_DIRNAME).glob("*.json")):
        run_id = info.stem
        probe = ItemLock(info.with_suffix(".lock"))
        try:
            probe.acquire()
        except ItemLocked:
            started = _read_json(info).get("started_at")
            if isinstance(started, (int, float)):
                found[run_id] = float(started)
            continue
        except OSError:
            continue
        try:  # free: its run died without taking its mark away
            info.unlink(missing_ok=True)
            probe.path.unlink(missing_ok=True)
        finally:
            probe.release()
    return found
