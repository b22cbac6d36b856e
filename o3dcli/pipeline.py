"""The batch runner: stages for one item, error isolation, cache, locks and the report.

A `Stage` is a plain function of a `StageContext` that writes its files into
`ctx.work_dir` and returns JSON-able metadata. The runner computes each stage's
key, skips stages whose result is cached, publishes the named files into the
asset folder `OUT/<name>/`, and records status, errors and timings per item in
`OUT/o3d-report.json`. One item's failure never stops the batch.
"""

from __future__ import annotations

import json
import logging
import os
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
from o3dcli.errors import ConfigError

REPORT_NAME = "o3d-report.json"
ASSET_META = "o3d-asset.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif")
OTHER_IMAGE_SUFFIXES = frozenset({".heic", ".heif", ".avif", ".jxl", ".jp2", ".psd", ".exr", ".hdr", ".svg", ".ico",
                                  ".dng", ".raw", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"})
"""Image formats o3d does not read: a folder scan says how many it passed over."""
OUTPUT_MARKERS = (ASSET_META, "o3d-renders.json")
"""Files that mark a folder as o3d's output (an asset folder, o3d render's folder): a scan skips it."""
RESERVED_NAMES = frozenset({REPORT_NAME})
"""Names in the output folder that belong to o3d, never to an asset."""


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
    key_extra: Callable[[Config], dict[str, Any]] | None = None
    """What else decides the stage's output, {name: value} (e.g. a setting that matters only for one
    format, or whether an optional library is installed): added to the key when not empty."""


class StageWarnings(logging.Filter):
    """Warnings o3d logs while a stage runs, kept for the item (its report, and the line printed
    with it; the cache keeps them with the stage, so a cached stage still tells them) instead of
    going to the console on their own. Paths in the stage's work folder are given as the asset
    folder's, where its files are published: {work folder: asset folder}."""

    def __init__(self, paths: dict[str, str]):
        super().__init__()
        self.paths = paths
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:  # errors (and info) are shown as they come
            return True
        text = record.getMessage()
        for work, asset in self.paths.items():
            text = text.replace(work, asset)
        if text not in self.messages:
            self.messages.append(text)
        return False


@dataclass
class ItemResult:
    input: str
    name: str
    status: str = "pending"  # ok | failed | interrupted | not-run
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


def collect_inputs(inputs: list[Path], recursive: bool = False, notes: list[str] | None = None) -> list[Path]:
    """Files given directly plus image files inside given folders, sorted, without duplicates
    (a file reached twice, e.g. through a link, counts once, under the first path it was found by;
    paths are kept as given, so a link names its asset, not its target).

    A folder scan skips hidden files and everything inside hidden folders (o3d's cache
    `.o3d/`, `.git/`, ...) and o3d's own outputs: asset folders and `o3d render` folders (they
    hold `o3d-asset.json` or `o3d-renders.json`), so that output written inside the input folder,
    or the input folder itself used as output, never feeds o3d's files back in. What it passed over that a
    user may have meant as input (images in formats o3d does not read, o3d output folders) is
    appended to `notes` as sentences. Raises UserError for a path that does not exist (nothing
    has run yet, so failing early loses nothing and catches typos).
    """
    found: dict[Path, Path] = {}
    other: dict[str, int] = {}
    outputs: set[Path] = set()
    broken: list[Path] = []
    for p in inputs:
        p = Path(p)
        if not p.exists():
            raise UserError(f"input not found: {p}")
        if not p.is_dir():
            found.setdefault(p.resolve(), p.absolute())
            continue
        marked: dict[Path, bool] = {}

        def is_output(folder: Path) -> bool:
            if folder not in marked:
                marked[folder] = any((folder / m).is_file() for m in OUTPUT_MARKERS)
            return marked[folder]

        for f in sorted(p.glob("**/*" if recursive else "*")):
            rel = f.relative_to(p)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if not f.is_file():
                if f.is_symlink() and not f.exists() and f.suffix.lower() in IMAGE_SUFFIXES:
                    broken.append(f)  # a link whose target is gone
                continue
            folders = [p / Path(*rel.parts[:i]) for i in range(len(rel.parts))]
            hit = next((d for d in folders if is_output(d)), None)
            if hit is not None:
                outputs.add(hit)
                continue
            suffix = f.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                found.setdefault(f.resolve(), f.absolute())
            elif suffix in OTHER_IMAGE_SUFFIXES:
                other[suffix] = other.get(suffix, 0) + 1
    if notes is not None:
        if other:
            kinds = ", ".join(f"{n} {s}" for s, n in sorted(other.items()))
            notes.append(f"skipped {sum(other.values())} image(s) in formats o3d does not read ({kinds}); "
                         f"convert them to PNG or JPEG (readable: {', '.join(IMAGE_SUFFIXES)})")
        if outputs:
            shown = ", ".join(str(d) for d in sorted(outputs)[:3]) + (", ..." if len(outputs) > 3 else "")
            notes.append(f"skipped {len(outputs)} folder(s) of o3d's own outputs ({shown})")
        if broken:
            shown = ", ".join(str(f) for f in broken[:3]) + (", ..." if len(broken) > 3 else "")
            notes.append(f"skipped {len(broken)} link(s) whose target is missing ({shown})")
    return [found[k] for k in sorted(found, key=lambda k: found[k])]


def has_subfolders(paths: list[Path]) -> bool:
    """Whether any of the folders among `paths` has a (non-hidden) sub-folder."""
    return any(Path(p).is_dir() and any(c.is_dir() and not c.name.startswith(".") for c in Path(p).iterdir())
               for p in paths)


def item_message(path: Path, error: BaseException) -> str:
    """An item's error for a line that already starts with its path: the message without a
    leading "<path>: " (errors name their file, so the path is not said twice)."""
    message = str(error) or type(error).__name__
    for prefix in (f"{path}: ", f"{Path(path).resolve()}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def check_output_dir(path: Path) -> None:
    """UserError when `path` cannot be an output folder: it exists and is not a folder, or the
    folder it would be made in is a file or not writable (found before any work, not at the end)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output {path} exists and is not a folder; give a folder with -o")
    base = Path(os.path.abspath(path))
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise UserError(f"output {path} cannot be made: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"output {path}: no permission to write in {base}")


def safe_name(stem: str) -> str:
    """A folder name for an asset that stays inside the output folder."""
    cleaned = "".join(c if (c.isalnum() or c in "-_.+ ") else "_" for c in stem).strip(" .")
    return cleaned or "item"


GENERIC_STEMS = frozenset({"gaussians", "model", "mesh", "point_cloud", "scene", "splat"})
"""File names that say what a file is, not which object: o3d's own outputs and other 3DGS tools'."""


def asset_stem(path: Path) -> str:
    """The name an input goes by: a folder's name; a file's stem, or for a generic file name
    (an asset folder's gaussians.ply or model.glb) the name of the folder holding it."""
    path = Path(path)
    if path.is_dir():
        return path.resolve().name
    if path.stem.lower() in GENERIC_STEMS and path.resolve().parent.name:
        return path.resolve().parent.name
    return path.stem


def next_free_name(base: str, taken: Callable[[str], bool], make: Callable[[str], str] | None = None) -> str:
    """``base``, or the first of ``base-2``, ``base-3``, ... that ``taken`` does not refuse.
    ``make(suffix)`` builds a candidate from a suffix ("" first) when plain concatenation will not
    do (e.g. a name shortened to fit a file name's length)."""
    make = make or (lambda suffix: base + suffix)
    name, n = make(""), 1
    while taken(name):
        n += 1
        name = make(f"-{n}")
    return name


def unique_names(paths: list[Path], owned_by_other: Callable[[str, Path], bool] | None = None) -> list[str]:
    """One output name per input path (`asset_stem`), collisions suffixed -2, -3, ...

    `owned_by_other(name, path)` says whether an earlier run wrote `name` for another input:
    such a name is skipped too, so no input overwrites another's results.
    """
    used: set[str] = set()
    names = []
    for path in paths:
        name = next_free_name(safe_name(asset_stem(path)), lambda name: name in used or (
            owned_by_other is not None and owned_by_other(name, path)))
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
        name = next_free_name(safe_name(src.stem), lambda name: name in taken or name.lower() in RESERVED_NAMES
                              or _owned_by_other(out_dir / name, src))
        taken.add(name)
        items.append(Item(src, name))
    return items


def _owned_by_other(asset_dir: Path, src: Path) -> bool:
    """Whether `asset_dir` is not free for `src`'s results: its o3d-asset.json names another
    source, or it is not o3d's at all (a file, or a folder holding files but no o3d-asset.json:
    the user's, which o3d must neither fill nor prune)."""
    if asset_dir.exists() and not asset_dir.is_dir():
        return True
    meta = asset_dir / ASSET_META
    if not meta.is_file():
        try:  # hidden entries (.DS_Store, a write's leftover temporary) do not make it the user's
            return asset_dir.is_dir() and any(not e.name.startswith(".") for e in asset_dir.iterdir())
        except OSError:
            return True
    try:
        source = json.loads(meta.read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return False
    # the same file whichever way it was named (absolute, resolved, or through a link)
    return not isinstance(source, str) or (source != str(src) and Path(source).resolve() != Path(src).resolve())


def drop_if_empty(asset_dir: Path) -> None:
    """Remove an asset folder that holds nothing but its o3d-asset.json (an item that failed
    before publishing anything), so that only real assets have folders."""
    try:
        if asset_dir.is_dir() and [p.name for p in asset_dir.iterdir()] == [ASSET_META]:
            (asset_dir / ASSET_META).unlink()
            asset_dir.rmdir()
    except OSError:
        pass


def write_asset_meta(asset_dir: Path, src: Path) -> None:
    """Mark `asset_dir` as the results for `src` (see `_owned_by_other`)."""
    atomic_write_text(asset_dir / ASSET_META, json.dumps({"source": str(src), "o3d": __version__}, indent=1))


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
                except BaseException:
                    logging.getLogger("o3d").removeFilter(caught)
                    for message in caught.messages:  # the stage failed: what it warned of is said now
                        logging.getLogger("o3d").warning("%s", message)
                    writer.abort()
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


class ItemInterrupted(KeyboardInterrupt):
    """Ctrl-C while an item ran; carries that item's result (status "interrupted", its finished stages)."""

    def __init__(self, result: ItemResult):
        super().__init__()
        self.result = result


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch; carries the partial result (the report is written)."""

    def __init__(self, result: BatchResult):
        super().__init__()
        self.result = result
