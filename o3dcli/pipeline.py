"""The batch runner: stages for one item, error isolation, cache, locks and the report.

A `Stage` is a plain function of a `StageContext` that writes its files into
`ctx.work_dir` and returns JSON-able metadata. The runner claims each item's asset name under
its lock (o3dcli.naming.claim_name), computes each stage's key, skips stages whose result is
cached, publishes the named files into the asset folder `OUT/<name>/` in one step
(o3dcli.publish), and records status, errors and timings per item in `OUT/o3d-report.json`
(o3dcli.batch_report: merged with the items of runs that overlap in time).
One item's failure never stops the batch.

Beside it: o3dcli.inputs collects the input files, o3dcli.naming gives each its asset
name and folder, o3dcli.batch_types defines a stage and what a run gives back, and
o3dcli.device the device it runs on.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable

from o3dcli import __version__
from o3dcli.atomic import file_identity
from o3dcli.batch_report import REPORT_NAME, RunMark, adopt_others, new_run_id, write_report
from o3dcli.cache import (
    Cache,
    FileDigests,
    ItemLocked,
    stage_key,
)
from o3dcli.config import Config, absolute_paths, dump_config
from o3dcli.device import check_dtype, device_key, resolve_device
from o3dcli.errors import ConfigError, UserError, disk_full
from o3dcli import publish
from o3dcli.naming import (ASSET_META, Item, asset_meta, asset_meta_text, claim_name, clean_name, drop_if_empty,
                           mark_asset_dir, published, published_files, recorded_entries)
from o3dcli.batch_types import BatchInterrupted, BatchResult, ItemInterrupted, ItemResult
from o3dcli.batch_types import Stage, StageContext, StageWarnings


INPUT_MARK, ASSET_MARK = "<o3d:input>", "<o3d:asset>"
"""What a warning kept in the cache says in place of its item's input path and asset folder, so
that an item reusing the entry (the same image under another name) says its own."""


def _swap(text: str, path: str, mark: str) -> str:
    import re

    # the whole path only: not `out/apple` in `out/apple-2` or `/private/out/apple`; a sentence's
    # full stop may follow it
    return re.sub(r"(?<![\w.\-/\\])" + re.escape(path) + r"(?![\w-]|\.\w)", lambda m: mark, text)


def portable_text(text: str, source, asset_dir: Path) -> str:
    """`text` with the item's input path (resolved, and as given) and asset folder as placeholders:
    longest first, and a folder named without any separator (`-o .`: `apple`) is left alone, so
    no plain word is taken for a path."""
    paths = [(str(Path(source).resolve()), INPUT_MARK), (str(source), INPUT_MARK)] if source else []
    paths += [(str(Path(asset_dir).absolute()), ASSET_MARK), (str(asset_dir), ASSET_MARK)]
    for path, mark in sorted(paths, key=lambda pm: -len(pm[0])):
        if any(sep in path for sep in "/\\"):
            text = _swap(text, path, mark)
    return text


def local_text(text: str, source, asset_dir: Path) -> str:
    """A kept warning as this item says it: the placeholders of `portable_text` filled in."""
    return text.replace(ASSET_MARK, str(asset_dir)).replace(INPUT_MARK, str(source))


def config_value(cfg: dict, dotted: str):
    """cfg["a"]["b"] for "a.b" (a whole section for "a")."""
    value = cfg
    for part in dotted.split("."):
        value = value[part]
    return value


DEFAULT_VALUES = Config().to_dict()
"""The built-in defaults, for a stage's side fields in the key of its result."""


KEYED_AT_DEFAULT = ("preprocess.max_pixels",)
"""Settings that decide whether an item is made, never what it is made into: every key holds them
at their default, so that raising `preprocess.max_pixels` for one large photo, as its error
advises, reuses what the rest of the batch made (keys made before held the default there too)."""


class _TwinAtWork(Exception):
    """Raised before an item's first stage: another process is making the same image (see
    `BatchRunner._twin_at_work`); the item is run later."""


class BatchRunner:
    def __init__(self, out_dir: Path, config: Config, stages: list[Stage], force: bool = False,
                 on_progress: Callable[[str, str], None] | None = None, all_stages: list[Stage] | None = None,
                 batch_id: str | None = None):
        """`stages` are run; `all_stages` (default: the same), of which `stages` is the start, are
        what an asset folder can hold: after a shorter run (--stop-after) the later stages' files
        are published from the cache when it has them for these settings, and removed otherwise.
        `batch_id`: the batch this runner is one process of (o3d generate --jobs: the processes of
        one batch share it; a new one by default). Stages one of them made count as made, not
        cached, for the others, and `force` recomputes only what was made before the batch."""
        self.out_dir = Path(out_dir)
        self.config = config
        self.stages = stages
        self.all_stages = list(all_stages) if all_stages is not None else list(stages)
        if [s.name for s in self.all_stages[:len(stages)]] != [s.name for s in stages]:
            raise ValueError("the stages run must be the first of all_stages")
        self.force = force
        self.batch_id = batch_id or uuid.uuid4().hex
        self.shared = False
        """Whether other processes work on this batch (o3d generate --jobs): an item's failure is
        then recorded for them, so that each failing item is run once."""
        self.cache = Cache(self.out_dir)
        self._earlier_indexed = False
        self.on_progress = on_progress or (lambda name, text: None)
        self.device = resolve_device(config.runtime.device)
        check_dtype(self.device, config.runtime.dtype)
        self.config_text = dump_config(absolute_paths(config), header=f"# resolved o3d {__version__} config; reuse with --preset <this file>\n")
        self.resources: dict[str, Any] = {}
        self.digests = FileDigests(self.cache.root / "digests.json")
        self._input_digests = FileDigests()  # the inputs', in memory: an input is hashed once per process
        self.pinned_files: dict[str, tuple] = {}
        """{resolved path: (file_identity, SHA-256)} of the files stages read (model weights) as this
        batch first read them: every item is keyed by those bytes (see `_file_digest`)."""
        self.resources["pinned_files"] = self.pinned_files
        self.batch_names: dict[str, Path] = {}
        """The asset names this batch's inputs go by (name -> input), so that an item that must
        move to another name does not take a name another item of the batch is to use."""
        self._ours = {dst for s in self.all_stages for dst in s.publish.values()} | {"config.yaml", ASSET_META}

    def run_item(self, item: Item, blocking: bool = False) -> ItemResult:
        """Run every stage of one item; never raises for the item's own problems. The item may end
        under another name than `item.name` (the result's `name`): when, by the time its lock is
        held, that folder has become another input's asset.

        Status `locked` (not run) when another process holds the item, or, without `blocking`, is
        at work on a twin (`_twin_at_work`): the item is then run later, with `blocking`, which
        waits for both and copies what the twin made instead of making it a second time."""
        res = ItemResult(str(item.source), item.name)
        self._running = None  # the stage in progress, for the report of an interrupted item
        base = clean_name(item.source.stem)
        if blocking:  # waited for without holding this item's lock: two such waits never hold each other up
            self._wait_for_twins(item)
        try:
            name, lock = claim_name(self.out_dir, item.source, item.name, base, blocking=blocking,
                                    taken=lambda n: self.batch_names.get(n, item.source) != item.source)
        except ItemLocked:
            res.status = "locked"
            return res
        except OSError as e:  # a full disk, a read-only cache: this item fails, the batch goes on
            res.status = "failed"
            res.error = f"cannot write its folder or lock in {self.out_dir} ({e.strerror or e}" + \
                (f": {e.filename})" if e.filename else ")")
            return res
        if name != item.name:
            item = Item(item.source, name)
            res.name = name
            self.batch_names.setdefault(name, item.source)
        ic = self.cache.item(item.name)
        try:
            ic.clean_stale()
            ic.forget_failures(but=self.batch_id)
            if self.shared and (failed := ic.recorded_failure(self.batch_id, item.source)) is not None:
                # another process of this batch ran it and it failed: said once, not run again
                res.status, res.error, res.traceback = "failed", failed["error"], failed.get("traceback")
                if isinstance(failed.get("stage"), str):
                    res.stage = failed["stage"]
                if isinstance(failed.get("timings"), dict):
                    res.timings = {k: v for k, v in failed["timings"].items() if isinstance(v, (int, float))}
                return res
            mark_asset_dir(self.out_dir / item.name, item.source)
            self._run_stages(item, ic, res, defer_to_twins=not blocking)
            res.status = "ok"
        except _TwinAtWork:
            res.status = "locked"
            drop_if_empty(self.out_dir / item.name)
        except KeyboardInterrupt:
            res.status = "interrupted"
            where = f" during {self._running}" if self._running else ""
            if self._running and self._running not in res.timings:  # the time spent on it counts too
                res.timings[self._running] = round(time.perf_counter() - self._running_t0, 4)
            res.error = (f"interrupted{where}: finished stages (and the sampler's saved steps) are cached; "
                         "run again to resume")
            drop_if_empty(self.out_dir / item.name)
            res.error += _earlier_asset_note(self.out_dir / item.name, res.error)
            raise ItemInterrupted(res) from None
        except Exception as e:  # isolate the item: report and go on with the batch
            res.status, res.stage = "failed", self._running
            if self._running and self._running not in res.timings:  # the time spent on it counts too
                res.timings[self._running] = round(time.perf_counter() - self._running_t0, 4)
            res.error = str(e) if isinstance(e, (UserError, ValueError, OSError)) and str(e) else f"{type(e).__name__}: {e}"
            if disk_full(e):
                res.error = f"out of disk space ({res.error}); free some space and run again"
            if not isinstance(e, UserError):
                res.traceback = traceback.format_exc()
            drop_if_empty(self.out_dir / item.name)
            res.error += _earlier_asset_note(self.out_dir / item.name, res.error)
            if self.shared:
                ic.record_failure(self.batch_id, item.source, res.error, res.traceback, res.stage, res.timings)
        finally:
            lock.release()
        return res

    def _key_config(self) -> dict:
        """The settings as stage keys hold them: paths absolute, as config.yaml writes them (`--preset
        <asset>/config.yaml` finds the entries of the command that made the asset, whatever folder it
        ran in); the device as `device_key` gives it; the KEYED_AT_DEFAULT fields at their defaults."""
        cfg = absolute_paths(self.config).to_dict()
        cfg["runtime"]["device"] = device_key(self.config.runtime.device, self.device)
        for dotted in KEYED_AT_DEFAULT:
            *parents, last = dotted.split(".")
            section = config_value(cfg, ".".join(parents))
            section[last] = config_value(DEFAULT_VALUES, dotted)
        return cfg

    def _key(self, stage: Stage, cfg: dict, keys: dict[str, str], input_hash: str, item: Item,
             result: bool = False) -> str:
        """The key of the stage's cache entry; `result`: the key of its result alone, which its
        downstream stages are keyed by: `stage.side_fields` at their defaults (so the keys made
        without them set are the entry's, as before they were side fields)."""
        files = {role: self._file_digest(p) for role, p in stage.files(self.config).items()} if stage.files else None
        values = {s: config_value(DEFAULT_VALUES if result and s in stage.side_fields else cfg, s) for s in stage.sections}
        if stage.key_extra:
            values.update({f"extra:{k}": v for k, v in stage.key_extra(self.config).items()})
        if stage.per_item:
            values["item"] = item.name
        return stage_key(stage.name, stage.version, values, dict(keys), input_hash, files)

    def _warnings_of_other(self, other: str):
        """How a warning kept in another item's cache entry reads once the entry is this item's:
        one made before warnings kept placeholders names the other item's input and asset folder."""
        source = asset_meta(self.out_dir / other).get("source")
        return lambda text: portable_text(text, source if isinstance(source, str) else None, self.out_dir / other)

    def _file_digest(self, path: Path) -> str:
        """The SHA-256 of a file a stage reads, as this batch first read it. The batch loads its
        models once (o3dcli.stages.get_models), so a weights file rewritten while it runs (`o3d
        train` saving a checkpoint) must not key the later items by bytes they were not made from:
        a later run with the new weights would take them for its own results."""
        key = str(Path(path).resolve())
        if key not in self.pinned_files:
            before = file_identity(key)
            digest = self.digests(key)
            if file_identity(key) != before:
                raise UserError(f"{path}: changed while it was read (another process is writing it); run again")
            self.pinned_files[key] = (before, digest)
        return self.pinned_files[key][1]

    def _twins_before(self, item: Item, input_hash: str) -> list[str]:
        """The items before `item` in this batch's order (which every process of the batch shares)
        made from the same image: those the input index notes for it whose input has those bytes now."""
        noted = set(self.cache.items_of_input(input_hash))
        twins = []
        for name, source in self.batch_names.items():
            if name == item.name:
                break
            if name in noted and self._hash_of(source) == input_hash:
                twins.append(name)
        return twins

    def _hash_of(self, source: Path) -> str | None:
        """The SHA-256 of an input file (read once per path, size and mtime), or None when it is not
        a regular file (a pipe would block) or cannot be read."""
        try:
            return self._input_digests(source) if Path(source).is_file() else None
        except OSError:
            return None

    def _twin_at_work(self, item: Item, input_hash: str) -> str | None:
        """An item of this batch made from the same image (a photo given twice, under two names),
        before this one in the batch, that a process is at work on now, or None. Only earlier
        twins count, so of two processes starting twins at the same moment one waits (o3d generate
        --jobs would otherwise make the image twice). A twin noted in the input index only after
        this check (a process between taking its item and hashing its input, milliseconds) is
        missed: the image is then made twice, as before."""
        return next((n for n in self._twins_before(item, input_hash) if self.cache.item(n).busy()), None)

    def _wait_for_twins(self, item: Item) -> None:
        """Until no process is at work on a twin of `item` (see `_twin_at_work`)."""
        input_hash = self._hash_of(item.source)
        if input_hash is None:
            return  # the item says why when it runs
        for name in self._twins_before(item, input_hash):
            if not self.cache.item(name).busy():
                continue
            self.on_progress(item.name, f"waiting for another o3d process making the same image ({name})")
            lock = self.cache.item(name).lock()
            try:
                lock.acquire(blocking=True, allow_unlocked=True)
            except OSError:
                continue
            lock.release()

    def _run_stages(self, item: Item, ic, res: ItemResult, defer_to_twins: bool = False) -> None:
        if item.source.exists() and not item.source.is_file():  # a pipe or a device: hashing it never ends
            raise UserError(f"{item.source}: not a regular file (a pipe or device); give the path of an image file")
        try:
            input_hash = self._input_digests(item.source)
        except OSError as e:
            raise UserError(f"{item.source}: cannot read file ({e.strerror or e})") from None
        self.cache.register_input(input_hash, item.name)
        if defer_to_twins and self._twin_at_work(item, input_hash) is not None:
            raise _TwinAtWork()
        keys: dict[str, str] = {}  # the key of each stage's result, which later stages are keyed by
        entries: dict[str, str] = {}  # the key of each stage's cache entry (with its side fields)
        dirs: dict[str, Path] = {}
        metas: dict[str, dict] = {}
        cfg = self._key_config()
        for stage in self.stages:
            t0 = time.perf_counter()
            self.on_progress(item.name, stage.name)
            self._running, self._running_t0 = stage.name, t0
            key = self._key(stage, cfg, keys, input_hash, item)
            done = ic.lookup(stage.name, key)
            manifest = ic.manifest(done) if done is not None else None
            # made in this batch: by another of its processes (o3d generate --jobs), not cached
            made_here = manifest is not None and manifest.get("batch") == self.batch_id
            if self.force and not made_here:  # --force: what was made before this batch is made again
                ic.invalidate(stage.name, key)
                done = manifest = None
            if done is None:  # made from the same image under another name (renamed, or given twice)?
                if not self._earlier_indexed:
                    self.cache.index_earlier_items()
                    self._earlier_indexed = True
                found = ic.adopt(stage.name, key, self.cache.items_of_input(input_hash),
                                 batch=self.batch_id if self.force else None, warnings=self._warnings_of_other)
                if found is not None:
                    done, res.reused_from[stage.name] = found
                    manifest = ic.manifest(done)
            if done is not None:
                if not made_here:
                    res.cached.append(stage.name)
            else:
                ic.note_unfinished([ic.entry_name(s, k) for s, k in {**entries, stage.name: key}.items()], item.source)
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
                if meta.get("warnings"):  # kept with this item's paths as placeholders: another item may reuse them
                    meta = {**meta, "warnings": [portable_text(w, item.source, self.out_dir / item.name)
                                                 for w in meta["warnings"]]}
                done = writer.commit(meta, seconds=time.perf_counter() - t0, batch=self.batch_id)
                ctx.state.clear()
                manifest = ic.manifest(done)
            entries[stage.name] = key
            keys[stage.name] = self._key(stage, cfg, keys, input_hash, item, result=True) if stage.side_fields else key
            dirs[stage.name] = done
            metas[stage.name] = manifest.get("meta", {})
            res.computed_seconds[stage.name] = manifest.get("seconds")
            res.stages[stage.name] = {k: v for k, v in metas[stage.name].items() if k != "warnings"}
            said = [local_text(w, item.source, self.out_dir / item.name) for w in metas[stage.name].get("warnings", [])]
            res.warnings += [w for w in said if w not in res.warnings]
            res.timings[stage.name] = round(time.perf_counter() - t0, 4)
            if made_here and isinstance(manifest.get("seconds"), (int, float)):
                res.timings[stage.name] = manifest["seconds"]  # this batch's work, done by another process
        self._running = None  # what follows is publishing, not a stage
        if res.reused_from:
            others = ", ".join(sorted(set(res.reused_from.values())))
            logging.getLogger("o3d").info("%s: the same image as %s: %d cached stage%s reused", item.name, others,
                     len(res.reused_from), "" if len(res.reused_from) == 1 else "s")
        # Files are published once every stage has run, all at once: an item that fails or is
        # interrupted leaves its asset folder as it was (an earlier run's asset stays whole, beside
        # the config.yaml that made it) and a new item gets no folder; its stages stay cached.
        files: dict[str, Path] = {}
        for stage in self.stages:
            files.update(self._stage_files(stage, dirs[stage.name], item, res))
        # The stages not run this time (--stop-after): their files for these settings when the
        # cache has them; whatever else o3d once published here is from other settings, and goes,
        # so that the folder holds what its config.yaml makes.
        for stage in self.all_stages[len(self.stages):]:
            try:
                key = entries[stage.name] = self._key(stage, cfg, keys, input_hash, item)
                keys[stage.name] = self._key(stage, cfg, keys, input_hash, item, result=True) if stage.side_fields else key
            except (ConfigError, OSError):  # e.g. model files not given: checked only when the stage runs
                break
            done = ic.lookup(stage.name, key, recompute=False)
            if done is not None:
                files.update(self._stage_files(stage, done, item, res))
            elif ic.entry_name(stage.name, key) in ic.damaged & recorded_entries(self.out_dir / item.name):
                # found damaged just now (an asset file edited in place: the two are one file), and
                # the asset's files of this stage are from it: they stay until a run recomputes it
                asset_dir = self.out_dir / item.name
                files.update(self._stage_files(stage, asset_dir, item, res, {d: d for d in stage.publish.values()}))
        # the cache entries this asset is made from (o3d cache prune keeps those, and drops the rest)
        names = [ic.entry_name(stage, key) for stage, key in entries.items()]
        for kept in self._publish(self.out_dir / item.name, item.source, files, names, input_hash):
            res.warnings.append(kept.message(self.out_dir / item.name))  # told with the item, and in the report
        ic.forget_finished(names)  # the asset records those it is made from now
        res.outputs.append(f"{item.name}/config.yaml")

    def _stage_files(self, stage: Stage, done: Path, item: Item, res: ItemResult,
                     names: dict[str, str] | None = None) -> dict[str, Path]:
        """A finished stage's files to publish, {path in the asset folder: file in the cache}
        (`names`: {name in `done`: name in the asset folder}, by default the stage's)."""
        files = {}
        for src_name, dst_name in (names if names is not None else stage.publish).items():
            src = done / src_name
            if src.is_dir():  # a folder of outputs (e.g. intermediate/): publish each file
                for f in sorted(p for p in src.rglob("*") if p.is_file()):
                    files[(Path(dst_name) / f.relative_to(src)).as_posix()] = f
            elif src.is_file():  # optional outputs may be absent
                files[dst_name] = src
        res.outputs += [f"{item.name}/{rel}" for rel in sorted(files)]
        return files

    def _is_ours(self, rel: str) -> bool:
        """Whether a path in an asset folder is one o3d publishes (any stage's, or config.yaml): a
        run replaces or removes those; the folder's other files (a user's) are kept."""
        return any(rel == d or rel.startswith(d + "/") for d in self._ours)

    def _publish(self, asset_dir: Path, source: Path, files: dict[str, Path], entries: list[str],
                 input_hash: str) -> list[publish.KeptEdit]:
        """Make the asset folder hold `files` and this config.yaml (and its other, non-o3d files),
        replacing the earlier asset in one step (o3dcli.publish). An o3d file of the earlier asset
        changed since it was published is kept under another name (`publish.keep_edits`); returns
        those."""
        published = published_files(asset_dir)
        try:
            with publish.staging(asset_dir) as staged:
                for rel, src in files.items():
                    publish.add_file(staged / rel, src, current=asset_dir / rel, link_src=True)
                publish.add_bytes(staged / "config.yaml", self.config_text.encode("utf-8"),
                                  current=asset_dir / "config.yaml")
                made = publish.digests(staged, self._is_ours)
                for rel, src in files.items():
                    if src.is_relative_to(asset_dir):  # kept from the asset folder as it is (an edit, maybe)
                        made.pop(rel, None)
                        if rel in published:
                            made[rel] = published[rel]  # what o3d wrote there still decides
                kept = publish.keep_edits(asset_dir, staged, published, self._is_ours)
                publish.add_bytes(staged / ASSET_META, asset_meta_text(source, entries, input_hash, made).encode("utf-8"),
                                  current=asset_dir / ASSET_META)
                publish.commit(asset_dir, staged, self._is_ours)
            return kept
        except OSError as e:
            what = e.strerror or str(e)
            raise UserError(f"{asset_dir}: cannot publish the new files ({what}"
                            f"{': ' + str(e.filename) if e.filename else ''}); the asset folder is left as it was") from None

    def write_report(self, results: list[ItemResult], started: float, interrupted: bool = False,
                     run_id: str | None = None) -> Path:
        """Write OUT/o3d-report.json: this run's items, and those of other runs on this folder that
        overlapped it (see o3dcli.batch_report); under a lock, so concurrent runs lose nothing."""
        return write_report(self.out_dir, self.cache.root, self.device, results, started, interrupted, run_id)


def run_batch(items: list[Item], runner: BatchRunner, show_progress: bool = True,
              on_item_done: Callable[[ItemResult], None] | None = None,
              before_report: Callable[[bool], None] | None = None) -> BatchResult:
    """Run every item with a progress display; items another process holds are
    waited for at the end (their stages are then cached, so no work is repeated).
    `before_report(interrupted)` is called before the report is written (o3d generate --jobs
    ends its workers there, so that the report holds this run's items last)."""
    from o3dcli.console import batch_progress

    started = time.time()
    run_id = new_run_id(started)
    runner.batch_names = {it.name: it.source for it in items}
    results = [ItemResult(str(it.source), it.name, status="not-run") for it in items]
    interrupted = False
    with RunMark(runner.cache.root, run_id, started), batch_progress(disable=not show_progress) as prog:
        task = prog.add_task("starting", total=len(items), stage="")
        runner.on_progress = lambda name, text: prog.update(task, description=name, stage=text)

        def finish(i: int, r: ItemResult) -> None:
            results[i] = r
            prog.advance(task)
            if on_item_done:
                on_item_done(r)

        running = None
        try:
            deferred = []
            for i, it in enumerate(items):
                running = i
                r = runner.run_item(it)
                if r.status == "locked":
                    deferred.append(i)
                else:
                    finish(i, r)
            for i in deferred:
                running = i
                prog.update(task, description=items[i].name, stage="waiting for another o3d process")
                finish(i, runner.run_item(items[i], blocking=True))
        except KeyboardInterrupt as e:
            interrupted = True
            if isinstance(e, ItemInterrupted) and running is not None:
                results[running] = e.result
        prog.update(task, description="generated", stage="")
        if before_report is not None:
            try:
                before_report(interrupted)
            except KeyboardInterrupt:  # while waiting there: the report is still written
                interrupted = True
                before_report(True)
        report_error = None
        path = runner.out_dir / REPORT_NAME
        try:
            path = runner.write_report(results, started, interrupted, run_id=run_id)
            if interrupted and runner.shared:  # the items other processes of the batch got to
                adopt_others(results, path)
        except OSError as e:  # the finished items are cached and published: only the report is lost
            report_error = f"cannot write {path} ({e.strerror or e})"
    if interrupted:
        raise BatchInterrupted(BatchResult(results, path, report_error))
    return BatchResult(results, path, report_error)


def _earlier_asset_note(asset_dir: Path, error: str) -> str:
    """For an item's `error`: that `asset_dir` still holds the asset an earlier run published
    (`published`: a failed or interrupted run leaves it whole, rather than removing it or mixing new
    files in), "" when there is none or the error says so already."""
    kept = "left as it was" not in error and published(asset_dir)
    return f" (the asset an earlier run made is left as it was in {asset_dir})" if kept else ""
