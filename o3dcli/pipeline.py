"""The batch runner: stages for one item, error isolation, cache, locks and the report.

A `Stage` is a plain function of a `StageContext` that writes its files into
`ctx.work_dir` and returns JSON-able metadata. The runner computes each stage's
key, skips stages whose result is cached, publishes the named files into the
asset folder `OUT/<name>/`, and records status, errors and timings per item in
`OUT/o3d-report.json`. One item's failure never stops the batch.

Beside it: o3dcli.inputs collects the input files, o3dcli.naming gives each its asset
name and folder, o3dcli.batch_types defines a stage and what a run gives back, and
o3dcli.device the device it runs on.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from o3dcli import __version__
from o3dcli.cache import (
    Cache,
    FileDigests,
    ItemLocked,
    atomic_copy,
    atomic_write_text,
    same_file_content,
    sha256_file,
    stage_key,
)
from o3dcli.config import Config, dump_config
from o3dcli.device import check_dtype, resolve_device
from o3dcli.errors import ConfigError, UserError
from o3dcli.naming import REPORT_NAME, Item, _owned_by_other, drop_if_empty, write_asset_meta
from o3dcli.batch_types import BatchInterrupted, BatchResult, ItemInterrupted, ItemResult
from o3dcli.batch_types import Stage, StageContext, StageWarnings


def config_value(cfg: dict, dotted: str):
    """cfg["a"]["b"] for "a.b" (a whole section for "a")."""
    value = cfg
    for part in dotted.split("."):
        value = value[part]
    return value


class BatchRunner:
    def __init__(self, out_dir: Path, config: Config, stages: list[Stage], force: bool = False,
                 on_progress: Callable[[str, str], None] | None = None, all_stages: list[Stage] | None = None):
        """`stages` are run; `all_stages` (default: the same), of which `stages` is the start, are
        what an asset folder can hold: after a shorter run (--stop-after) the later stages' files
        are published from the cache when it has them for these settings, and removed otherwise."""
        self.out_dir = Path(out_dir)
        self.config = config
        self.stages = stages
        self.all_stages = list(all_stages) if all_stages is not None else list(stages)
        if [s.name for s in self.all_stages[:len(stages)]] != [s.name for s in stages]:
            raise ValueError("the stages run must be the first of all_stages")
        self.force = force
        self.cache = Cache(self.out_dir)
        self.on_progress = on_progress or (lambda name, text: None)
        self.device = resolve_device(config.runtime.device)
        check_dtype(self.device, config.runtime.dtype)
        self.config_text = dump_config(config, header=f"# resolved o3d {__version__} config; reuse with --preset <this file>\n")
        self.resources: dict[str, Any] = {}
        self.digests = FileDigests(self.cache.root / "digests.json")

    def run_item(self, item: Item, blocking: bool = False) -> ItemResult:
        """Run every stage of one item; never raises for the item's own problems."""
        res = ItemResult(str(item.source), item.name)
        self._running = None  # the stage in progress, for the report of an interrupted item
        ic = self.cache.item(item.name)
        lock = ic.lock()
        try:
            lock.acquire(blocking=blocking)
        except ItemLocked:
            res.status = "locked"
            return res
        try:
            ic.clean_stale()
            self._claim_asset_dir(item)
            self._run_stages(item, ic, res)
            res.status = "ok"
        except KeyboardInterrupt:
            res.status = "interrupted"
            where = f" during {self._running}" if self._running else ""
            if self._running and self._running not in res.timings:  # the time spent on it counts too
                res.timings[self._running] = round(time.perf_counter() - self._running_t0, 4)
            res.error = (f"interrupted{where}: finished stages (and the sampler's saved steps) are cached; "
                         "run again to resume")
            drop_if_empty(self.out_dir / item.name)
            raise ItemInterrupted(res) from None
        except Exception as e:  # isolate the item: report and go on with the batch
            res.status = "failed"
            res.error = str(e) if isinstance(e, (UserError, ValueError, OSError)) and str(e) else f"{type(e).__name__}: {e}"
            if not isinstance(e, UserError):
                res.traceback = traceback.format_exc()
            drop_if_empty(self.out_dir / item.name)
        finally:
            lock.release()
        return res

    def _claim_asset_dir(self, item: Item) -> None:
        asset_dir = self.out_dir / item.name
        if _owned_by_other(asset_dir, item.source):
            raise UserError(f"{asset_dir} belongs to another input or is not an o3d asset folder; not overwriting it")
        asset_dir.mkdir(parents=True, exist_ok=True)
        for stale in asset_dir.rglob(".*.tmp-*"):  # left by a process killed mid-write (we hold the lock)
            if stale.is_file():
                stale.unlink(missing_ok=True)
        write_asset_meta(asset_dir, item.source)

    def _key(self, stage: Stage, cfg: dict, keys: dict[str, str], input_hash: str) -> str:
        files = {role: self.digests(p) for role, p in stage.files(self.config).items()} if stage.files else None
        values = {s: config_value(cfg, s) for s in stage.sections}
        if stage.key_extra:
            values.update({f"extra:{k}": v for k, v in stage.key_extra(self.config).items()})
        return stage_key(stage.name, stage.version, values, dict(keys), input_hash, files)

    def _run_stages(self, item: Item, ic, res: ItemResult) -> None:
        try:
            input_hash = sha256_file(item.source)
        except OSError as e:
            raise UserError(f"{item.source}: cannot read file ({e.strerror or e})") from None
        keys: dict[str, str] = {}
        dirs: dict[str, Path] = {}
        metas: dict[str, dict] = {}
        cfg = self.config.to_dict()
        published: set[str] = set()
        for stage in self.stages:
            t0 = time.perf_counter()
            self.on_progress(item.name, stage.name)
            self._running, self._running_t0 = stage.name, t0
            key = self._key(stage, cfg, keys, input_hash)
            if self.force and stage.name not in res.cached:
                ic.invalidate(stage.name, key)
            done = ic.lookup(stage.name, key)
            if done is not None:
                res.cached.append(stage.name)
            else:
                writer = ic.begin(stage.name, key)
                ctx = StageContext(item, self.config, writer.dir, dict(dirs), ic.state(stage.name, key), input_hash,
                                   self.device, lambda text, s=stage.name: self.on_progress(item.name, f"{s}: {text}"), dict(metas),
                                   self.resources)
                caught = StageWarnings({str(writer.dir): str(self.out_dir / item.name)})
                logging.getLogger("o3d").addFilter(caught)
                try:
                    meta = stage.run(ctx) or {}
                except BaseException as e:
                    logging.getLogger("o3d").removeFilter(caught)
                    for message in caught.messages:  # the stage failed: what it warned of is said now
                        logging.getLogger("o3d").warning("%s", message)
                    writer.abort()
                    if (unreadable := ic.unreadable_input(e, dirs.values())) is not None:
                        raise unreadable from e  # names the cached file it could not read, and --force
                    raise
                finally:
                    logging.getLogger("o3d").removeFilter(caught)
                if caught.messages:
                    meta = {**meta, "warnings": list(meta.get("warnings", [])) + caught.messages}
                done = writer.commit(meta, seconds=time.perf_counter() - t0)
                ctx.state.clear()
            keys[stage.name] = key
            dirs[stage.name] = done
            manifest = ic.manifest(done)
            metas[stage.name] = manifest.get("meta", {})
            res.computed_seconds[stage.name] = manifest.get("seconds")
            res.stages[stage.name] = {k: v for k, v in metas[stage.name].items() if k != "warnings"}
            res.warnings += [w for w in metas[stage.name].get("warnings", []) if w not in res.warnings]
            res.timings[stage.name] = round(time.perf_counter() - t0, 4)
        self._running = None  # what follows is publishing, not a stage
        # Files are published once every stage has run: an item that fails or is interrupted
        # leaves its asset folder as it was (an earlier run's asset stays whole, beside the
        # config.yaml that made it) and a new item gets no folder; its stages stay cached.
        for stage in self.stages:
            published |= self._publish_stage(stage, dirs[stage.name], item, res)
        # The stages not run this time (--stop-after): their files for these settings when the
        # cache has them; whatever else o3d once published here is from other settings, and goes,
        # so that the folder holds what its config.yaml makes.
        for stage in self.all_stages[len(self.stages):]:
            try:
                key = keys[stage.name] = self._key(stage, cfg, keys, input_hash)
            except (ConfigError, OSError):  # e.g. model files not given: checked only when the stage runs
                break
            done = ic.lookup(stage.name, key)
            if done is not None:
                published |= self._publish_stage(stage, done, item, res)
        self._prune(self.out_dir / item.name, published)
        cfg_path = self.out_dir / item.name / "config.yaml"
        if not (cfg_path.is_file() and cfg_path.read_text() == self.config_text):
            atomic_write_text(cfg_path, self.config_text)
        res.outputs.append(f"{item.name}/config.yaml")

    def _publish_stage(self, stage: Stage, done: Path, item: Item, res: ItemResult) -> set[str]:
        """Copy a finished stage's published files into the asset folder; their paths in it."""
        written = set()
        for src_name, dst_name in stage.publish.items():
            src = done / src_name
            if src.is_dir():  # a folder of outputs (e.g. intermediate/): publish each file
                for f in sorted(p for p in src.rglob("*") if p.is_file()):
                    rel = (Path(dst_name) / f.relative_to(src)).as_posix()
                    self._publish(f, self.out_dir / item.name / rel)
                    written.add(rel)
            elif src.is_file():  # optional outputs may be absent
                self._publish(src, self.out_dir / item.name / dst_name)
                written.add(dst_name)
        res.outputs += [f"{item.name}/{rel}" for rel in sorted(written)]
        return written

    def _prune(self, asset_dir: Path, keep: set[str]) -> None:
        """Remove the files o3d publishes (any stage's) that this run did not publish."""
        import shutil

        for stage in self.all_stages:
            for dst_name in stage.publish.values():
                target = asset_dir / dst_name
                if target.is_dir():
                    for f in sorted(p for p in target.rglob("*") if p.is_file()):
                        if f.relative_to(asset_dir).as_posix() not in keep:
                            f.unlink()
                    if not any(p.is_file() for p in target.rglob("*")):
                        shutil.rmtree(target)
                elif target.is_file() and dst_name not in keep:
                    target.unlink()

    @staticmethod
    def _publish(src: Path, dst: Path) -> None:
        if not same_file_content(src, dst):
            atomic_copy(src, dst)

    def write_report(self, results: list[ItemResult], started: float, interrupted: bool = False) -> Path:
        path = self.out_dir / REPORT_NAME
        counts: dict[str, int] = {}
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
        report = {
            "o3d_version": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "seconds": round(time.time() - started, 3),
            "device": self.device,
            "interrupted": interrupted,
            "summary": counts,
            "items": [r.__dict__ for r in results],
        }
        atomic_write_text(path, json.dumps(report, indent=1))
        return path


def run_batch(items: list[Item], runner: BatchRunner, show_progress: bool = True,
              on_item_done: Callable[[ItemResult], None] | None = None) -> BatchResult:
    """Run every item with a progress display; items another process holds are
    waited for at the end (their stages are then cached, so no work is repeated)."""
    from o3dcli.console import batch_progress

    started = time.time()
    results = {it.name: ItemResult(str(it.source), it.name, status="not-run") for it in items}
    interrupted = False
    with batch_progress(disable=not show_progress) as prog:
        task = prog.add_task("starting", total=len(items), stage="")
        runner.on_progress = lambda name, text: prog.update(task, description=name, stage=text)

        def finish(it: Item, r: ItemResult) -> None:
            results[it.name] = r
            prog.advance(task)
            if on_item_done:
                on_item_done(r)

        try:
            deferred = []
            for it in items:
                r = runner.run_item(it)
                if r.status == "locked":
                    deferred.append(it)
                else:
                    finish(it, r)
            for it in deferred:
                prog.update(task, description=it.name, stage="waiting for another o3d process")
                finish(it, runner.run_item(it, blocking=True))
        except KeyboardInterrupt as e:
            interrupted = True
            if isinstance(e, ItemInterrupted):
                results[e.result.name] = e.result
        prog.update(task, description="generated", stage="")
    ordered = [results[it.name] for it in items]
    path = runner.write_report(ordered, started, interrupted)
    if interrupted:
        raise BatchInterrupted(BatchResult(ordered, path))
    return BatchResult(ordered, path)
