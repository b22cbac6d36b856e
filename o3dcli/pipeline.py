"""The batch runner: stages for one item, error isolation, cache, locks and the report.

A `Stage` is a plain function of a `StageContext` that writes its files into
`ctx.work_dir` and returns JSON-able metadata. The runner computes each stage's
key, skips stages whose result is cached, publishes the named files into the
asset folder `OUT/<name>/`, and records status, errors and timings per item in
`OUT/o3d-report.json`. One item's failure never stops the batch.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from o3dcli import __version__
from o3dcli.cache import (
    Cache,
    FileDigests,
    ItemLocked,
    StateStore,
    atomic_copy,
    atomic_write_text,
    same_file_content,
    sha256_file,
    stage_key,
)
from o3dcli.config import Config, dump_config

REPORT_NAME = "o3d-report.json"
ASSET_META = "o3d-asset.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class UserError(Exception):
    """An error caused by the input or settings (shown without a traceback)."""


@dataclass(frozen=True)
class Item:
    """One input of a batch and the asset name it gets."""

    source: Path
    name: str


@dataclass
class StageContext:
    item: Item
    config: Config
    work_dir: Path
    upstream: dict[str, Path]
    state: StateStore
    input_sha256: str
    device: str
    progress: Callable[[str], None] = lambda text: None
    meta: dict[str, dict] = field(default_factory=dict)
    """Metadata returned by the upstream stages, by stage name."""
    resources: dict[str, Any] = field(default_factory=dict)
    """Shared by all items of a batch (e.g. the loaded models, built once)."""


@dataclass(frozen=True)
class Stage:
    name: str
    """Stage name: a cache folder prefix, so use letters and underscores only."""
    version: int
    """Bump when the stage's output format or algorithm changes: old cache entries stop matching."""
    sections: tuple[str, ...]
    """Config sections ("mesh") or single fields ("mesh.target_faces") whose values go into the key."""
    run: Callable[[StageContext], dict[str, Any]]
    publish: dict[str, str] = field(default_factory=dict)
    """Files of the stage folder copied into the asset folder: {cache file: asset file}."""
    files: Callable[[Config], dict[str, Path]] | None = None
    """Files the stage reads besides the input (e.g. model weights), {role: path}: their contents'
    hashes go into the key, so new weights at the same path are not answered from the cache."""


@dataclass
class ItemResult:
    input: str
    name: str
    status: str = "pending"  # ok | failed | not-run
    error: str | None = None
    traceback: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stages: dict[str, dict] = field(default_factory=dict)
    """Metadata each stage returned (e.g. which weights, steps run, resumed from)."""
    computed_seconds: dict[str, float | None] = field(default_factory=dict)
    """Seconds each stage took when it was computed: in this run, or for a cached stage in the run
    that computed it (None for caches written before o3d recorded it). `timings` is this run's."""


@dataclass
class BatchResult:
    items: list[ItemResult]
    report_path: Path

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.items)

    @property
    def computed_stages(self) -> int:
        return sum(len(r.timings) - len(r.cached) for r in self.items)


# ---------------------------------------------------------------------------
# Inputs and names


def collect_inputs(inputs: list[Path], recursive: bool = False) -> list[Path]:
    """Files given directly plus image files inside given folders, sorted, without duplicates.

    Raises UserError for a path that does not exist (nothing has run yet, so
    failing early loses nothing and catches typos).
    """
    found: dict[Path, None] = {}
    for p in inputs:
        p = Path(p)
        if not p.exists():
            raise UserError(f"input not found: {p}")
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            for f in sorted(p.glob(pattern)):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                    found.setdefault(f.resolve(), None)
        else:
            found.setdefault(p.resolve(), None)
    return sorted(found)


def safe_name(stem: str) -> str:
    """A folder name for an asset that stays inside the output folder."""
    cleaned = "".join(c if (c.isalnum() or c in "-_.+ ") else "_" for c in stem).strip(" .")
    return cleaned or "item"


def unique_names(paths: list[Path]) -> list[str]:
    """One output name per input path (file stem, or folder name), collisions suffixed -2, -3, ..."""
    used: set[str] = set()
    names = []
    for path in paths:
        base = safe_name(path.stem if path.is_file() else Path(path).resolve().name)
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        names.append(name)
    return names


def assign_names(sources: list[Path], out_dir: Path) -> list[Item]:
    """Asset names from file stems; collisions get -2, -3, ... in sorted order.

    An existing asset folder that belongs to another source file (its
    o3d-asset.json says so) is never reused, so no input overwrites another's asset.
    """
    taken: set[str] = set()
    items = []
    for src in sources:
        base = safe_name(src.stem)
        name, n = base, 1
        while name in taken or _owned_by_other(out_dir / name, src):
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        items.append(Item(src, name))
    return items


def _owned_by_other(asset_dir: Path, src: Path) -> bool:
    meta = asset_dir / ASSET_META
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("source") != str(src)
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------
# Running


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"runtime.device={name} but CUDA is not available (torch {torch.__version__})")
    return name


def check_dtype(device: str, dtype: str) -> None:
    if dtype != "float32" and not device.startswith("cuda"):
        raise UserError(f"runtime.dtype={dtype} needs a CUDA device (device is {device}); use float32 on the CPU")


def config_value(cfg: dict, dotted: str):
    """cfg["a"]["b"] for "a.b" (a whole section for "a")."""
    value = cfg
    for part in dotted.split("."):
        value = value[part]
    return value


class BatchRunner:
    def __init__(self, out_dir: Path, config: Config, stages: list[Stage], force: bool = False,
                 on_progress: Callable[[str, str], None] | None = None):
        self.out_dir = Path(out_dir)
        self.config = config
        self.stages = stages
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
        except Exception as e:  # isolate the item: report and go on with the batch
            res.status = "failed"
            res.error = str(e) if isinstance(e, (UserError, ValueError, OSError)) and str(e) else f"{type(e).__name__}: {e}"
            if not isinstance(e, UserError):
                res.traceback = traceback.format_exc()
        finally:
            lock.release()
        return res

    def _claim_asset_dir(self, item: Item) -> None:
        asset_dir = self.out_dir / item.name
        if _owned_by_other(asset_dir, item.source):
            raise UserError(f"{asset_dir} belongs to another input; not overwriting it")
        asset_dir.mkdir(parents=True, exist_ok=True)
        for stale in asset_dir.rglob(".*.tmp-*"):  # left by a process killed mid-write (we hold the lock)
            if stale.is_file():
                stale.unlink(missing_ok=True)
        atomic_write_text(asset_dir / ASSET_META, json.dumps({"source": str(item.source), "o3d": __version__}, indent=1))

    def _run_stages(self, item: Item, ic, res: ItemResult) -> None:
        try:
            input_hash = sha256_file(item.source)
        except OSError as e:
            raise UserError(f"{item.source}: cannot read file ({e.strerror or e})") from None
        keys: dict[str, str] = {}
        dirs: dict[str, Path] = {}
        metas: dict[str, dict] = {}
        cfg = self.config.to_dict()
        for stage in self.stages:
            t0 = time.perf_counter()
            self.on_progress(item.name, stage.name)
            files = {role: self.digests(p) for role, p in stage.files(self.config).items()} if stage.files else None
            key = stage_key(stage.name, stage.version, {s: config_value(cfg, s) for s in stage.sections}, dict(keys),
                            input_hash, files)
            if self.force and stage.name not in res.cached:
                ic.invalidate(stage.name)
            done = ic.lookup(stage.name, key)
            if done is not None:
                res.cached.append(stage.name)
            else:
                writer = ic.begin(stage.name, key)
                ctx = StageContext(item, self.config, writer.dir, dict(dirs), ic.state(stage.name, key), input_hash,
                                   self.device, lambda text, s=stage.name: self.on_progress(item.name, f"{s}: {text}"), dict(metas),
                                   self.resources)
                try:
                    meta = stage.run(ctx) or {}
                except BaseException:
                    writer.abort()
                    raise
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
            for src_name, dst_name in stage.publish.items():
                src = done / src_name
                if src.is_dir():  # a folder of outputs (e.g. intermediate/): publish each file
                    for f in sorted(p for p in src.rglob("*") if p.is_file()):
                        rel = f.relative_to(src)
                        self._publish(f, self.out_dir / item.name / dst_name / rel)
                        res.outputs.append(f"{item.name}/{dst_name}/{rel}")
                elif src.is_file():  # optional outputs may be absent
                    self._publish(src, self.out_dir / item.name / dst_name)
                    res.outputs.append(f"{item.name}/{dst_name}")
        cfg_path = self.out_dir / item.name / "config.yaml"
        if not (cfg_path.is_file() and cfg_path.read_text() == self.config_text):
            atomic_write_text(cfg_path, self.config_text)
        res.outputs.append(f"{item.name}/config.yaml")

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
        except KeyboardInterrupt:
            interrupted = True
        prog.update(task, description="done", stage="")
    ordered = [results[it.name] for it in items]
    path = runner.write_report(ordered, started, interrupted)
    if interrupted:
        raise BatchInterrupted(BatchResult(ordered, path))
    return BatchResult(ordered, path)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch; carries the partial result (the report is written)."""

    def __init__(self, result: BatchResult):
        super().__init__()
        self.result = result
