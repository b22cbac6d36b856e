"""The batch report, OUT/o3d-report.json: this run's items, their status, errors and timings.

The report is written under a lock and merged: runs on one output folder that overlap in time
(one finished after the other started, or is still running: each run holds a lock under
`OUT/.o3d/runs/` while it runs) all keep their items in it, and the items of runs that ended
before it began are dropped, so after runs one after another the report describes the latest.

Items are matched on their input and name together (the input compared as the file it names),
never on the name alone: one entry per input and name.
- The same input and name in this run and an overlapping one: this run's item replaces the
  other's, unless this run's is `not-run` or `interrupted` and the other's `ok` or `failed` (a
  finished result, which is what the folder holds, is not replaced by an item that did not run),
  or this run's is `not-run` and the other's `interrupted` (that one was under way).
- The same name for different inputs (e.g. `/a/foo.png` and `/b/foo.png`, both planned as `foo`,
  one run interrupted before it took its name): two entries, one per input. Under the per-name
  locks only one input can hold the folder at the end, so when several are `ok` under one name
  and `OUT/<name>/o3d-asset.json` names one of them, the others' `ok` items (their results were
  replaced since) are dropped; their other statuses (`failed`, `not-run`, ...) stay, since they
  tell what became of that input.

Where the lock cannot be taken (its file cannot be made), a warning is logged and the report is
merged and written without it; on a file system that takes no locks, ItemLock goes on unlocked
after its own warning.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path

from o3dcli import __version__
from o3dcli.atomic import atomic_write_text
from o3dcli.batch_types import ItemResult
from o3dcli.cache import ItemLock, ItemLocked
from o3dcli.naming import ASSET_META, MESH_REPORT_NAME, REPORT_NAME

log = logging.getLogger("o3d")

FINISHED = ("ok", "failed")
"""Statuses of an item that ran to its end; `not-run` and `interrupted` items do not replace them."""


def write_report(out_dir: Path, cache_root: Path, device: str, results: list[ItemResult | dict], started: float,
                 interrupted: bool = False, run_id: str | None = None, kind: str = "generate") -> Path:
    """Write OUT/o3d-report.json: this run's items, and those of other runs on this folder that
    overlapped it (see the module docstring); under a lock, so concurrent runs lose nothing.
    `kind`: the command whose report it is (a key of REPORTS); each has its own file, lock and run
    marks, so `o3d mesh` writing into an o3d generate output folder leaves generate's report be."""
    report_name, lock_name, _ = REPORTS[kind]
    path = out_dir / report_name
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
    items = [{**(r if isinstance(r, dict) else r.__dict__), "run": run_id} for r in results]
    lock = ItemLock(cache_root / lock_name)
    try:
        lock.acquire(blocking=True, allow_unlocked=True)
    except OSError as e:  # its file cannot be made (no locks at all: ItemLock goes on unlocked itself)
        log.warning("could not lock the report (%s: %s); writing %s without the lock: runs on this "
                    "output folder at the same time may lose each other's items in it", lock.path, e, path)
    try:
        since = min([started] + [t for rid, t in running_runs(cache_root, kind).items() if rid != run_id])
        earlier = _read_json(path)
        runs = earlier.get("runs") if isinstance(earlier.get("runs"), dict) else {}
        overlapping = {rid: r for rid, r in runs.items() if rid != run_id and isinstance(r, dict)
                       and isinstance(r.get("finished_at"), (int, float))
                       and r["finished_at"] >= round(since, 3)}  # rounded as finished_at is
        theirs = [i for i in earlier.get("items", []) if isinstance(i, dict) and i.get("run") in overlapping]
        items = _merge(items, theirs, out_dir)
        runs = {run_id: this_run, **{rid: r for rid, r in overlapping.items() if any(i["run"] == rid for i in items)}}
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


def _merge(mine: list[dict], theirs: list[dict], out_dir: Path) -> list[dict]:
    """This run's items and those of overlapping runs, one per (input, name): see the module
    docstring. This run's items come first, in their order, then the others' in theirs."""
    theirs_by_key: dict[tuple, dict] = {}
    for i in theirs:  # an earlier report holds one per key; of a malformed one, the first
        theirs_by_key.setdefault(_key(i), i)
    kept_mine, replaced = [], set()
    for i in mine:
        other = theirs_by_key.get(_key(i))
        if other is not None and _outranks(other.get("status"), i.get("status")):
            continue  # the other run's finished result (or its started one, over not-run) stays
        kept_mine.append(i)
        replaced.add(_key(i))
    merged = kept_mine + [i for k, i in theirs_by_key.items() if k not in replaced]
    return _drop_replaced_ok(merged, out_dir)


def _outranks(theirs, mine) -> bool:
    """Whether another run's item status stays over this run's: a finished one (`ok`, `failed`)
    over one that did not finish, and an `interrupted` one (it was under way) over `not-run`."""
    if mine not in FINISHED and theirs in FINISHED:
        return True
    return mine == "not-run" and theirs == "interrupted"


def adopt_others(results: list[ItemResult], path: Path) -> None:
    """Fill in this run's `not-run` items from the report at `path` (just written, merged with the
    runs that overlapped this one): what another process of the batch did with them (o3d generate
    --jobs, interrupted: the command's summary then says what the workers finished)."""
    items = {_key(i): i for i in _read_json(path).get("items", []) if isinstance(i, dict)}
    fields = set(ItemResult.__dataclass_fields__)
    for r in results:
        if r.status != "not-run":
            continue
        other = items.get(_key({"input": r.input, "name": r.name}))
        if other is not None and other.get("status") in (*FINISHED, "interrupted"):
            for k, v in other.items():
                if k in fields:
                    setattr(r, k, v)


def _drop_replaced_ok(items: list[dict], out_dir: Path) -> list[dict]:
    """Of `ok` items of different inputs under one name, those whose input the folder's
    o3d-asset.json does not name (when it names one of them): only one input holds the folder."""
    ok_inputs: dict[object, set] = {}
    for i in items:
        if i.get("status") == "ok":
            ok_inputs.setdefault(_key(i)[1], set()).add(_key(i)[0])
    stale: set[tuple] = set()
    for name, inputs in ok_inputs.items():
        if len(inputs) < 2 or not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            continue
        owner = _input_key(_read_json(out_dir / name / ASSET_META).get("source"))
        if owner in inputs:
            stale |= {(i, name) for i in inputs if i != owner}
    return [i for i in items if not (i.get("status") == "ok" and _key(i) in stale)]


def _key(item: dict) -> tuple:
    name = item.get("name")
    return _input_key(item.get("input")), name if isinstance(name, str) else repr(name)


def _input_key(source) -> object:
    """An input as the file it names: the same file given through a link, or as another absolute
    path to it, is one input."""
    if isinstance(source, str) and os.path.isabs(source):
        return os.path.realpath(source)
    return source if isinstance(source, (str, int, float, type(None))) else repr(source)


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

REPORTS = {
    "generate": (REPORT_NAME, "report.lock", RUNS_DIRNAME),
    "mesh": (MESH_REPORT_NAME, "mesh-report.lock", "mesh-runs"),
}
"""Per command that writes a batch report: its file in OUT, its lock and its run marks' folder
(under OUT/.o3d/)."""


def new_run_id(started: float) -> str:
    """A batch run's id: when it started, and a random part (unique across processes and hosts)."""
    return time.strftime("%Y%m%dT%H%M%S", time.localtime(started)) + "-" + uuid.uuid4().hex[:8]


class RunMark:
    """Says to other processes that a batch run on this output folder is under way, and since when:
    a lock held while it runs (`OUT/.o3d/runs/<run id>.lock`, released by the kernel if the process
    dies) beside a file with its start time. See `running_runs`."""

    def __init__(self, cache_root: Path, run_id: str, started: float, kind: str = "generate"):
        runs_dir = REPORTS[kind][2]
        self.lock = ItemLock(cache_root / runs_dir / f"{run_id}.lock")
        self.info = cache_root / runs_dir / f"{run_id}.json"
        self.started = started

    def __enter__(self) -> "RunMark":
        try:
            self.lock.acquire(allow_unlocked=True)  # before the start time is written: a run that has one is marked running
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


def running_runs(cache_root: Path, kind: str = "generate") -> dict[str, float]:
    """The batch runs of command `kind` (a key of REPORTS) on this output folder that are under way:
    {run id: start time}. The marks of runs that died (their lock is free) are removed."""
    found = {}
    for info in sorted((Path(cache_root) / REPORTS[kind][2]).glob("*.json")):
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
