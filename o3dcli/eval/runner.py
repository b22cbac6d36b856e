"""Running an evaluation: render the inputs, generate (or find) each variant's assets, score them.

Layout of the output folder OUT:
    inputs/<object>.png            the input view of each object (only when generating)
    assets/[<variant>/]<object>/   generated assets (o3d generate's layout; its cache in .o3d/)
    renders/<variant>/<object>.png ground truth (top row) and prediction (bottom row) at the scored views
    renders/.o3d-renders.json      which renders eval wrote (o3dcli.eval.renders)
    .o3d-eval                      marks OUT as eval's, for folder scans (o3dcli.inputs.OUTPUT_MARKERS)
    eval.json, eval.csv, eval.md   the report (o3dcli.eval.report)
<object> is the object's file name (BenchmarkObject.file_name). One object's failure (a GT
that does not load, a generation or a scoring error) is recorded and the run goes on.
"""

from __future__ import annotations

import logging
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from o3dcli.eval.benchmarks import BenchmarkObject, find_prediction, load_prediction
from o3dcli.eval.protocol import EvalProtocol, prepare_reference, render_input_view, score_prediction
from o3dcli.eval.renders import clean_renders


class EvalUsageError(ValueError):
    """A problem with the settings found before any work was done (exit code 2)."""


@dataclass
class Variant:
    """One column of the comparison: a generation config, or a folder of existing predictions."""

    name: str
    config: object | None = None
    """o3dcli.config.Config to generate with, or None when scoring ``predictions``."""
    source: str = ""
    """The preset / YAML file, or the predictions folder (for the report)."""
    sets: list[str] = field(default_factory=list)
    """The overrides the config was loaded with (`--set`s, `--seed`): what worker processes of the
    generation (--jobs) load it with, from `source`."""
    predictions: Path | None = None
    assets_dir: Path | None = None
    meta: dict = field(default_factory=dict)
    """Seed, model weights, ... (for the report)."""


@dataclass
class ObjectResult:
    object: str
    variant: str
    status: str = "pending"  # ok | failed
    error: str | None = None
    traceback: str | None = None
    metrics: dict = field(default_factory=dict)
    asset: str | None = None
    kind: str | None = None
    alignment: dict | None = None
    gen_seconds: float | None = None
    """Seconds generating the asset took when it was computed (also when this run found it cached)."""
    gen_cached: bool | None = None
    """True when this run found every generation stage cached."""
    eval_seconds: float | None = None
    render: str | None = None
    """OUT/renders/<variant>/<object>.png when the object was scored."""


@dataclass
class EvalRun:
    benchmark: str
    data: str | None
    protocol: EvalProtocol
    objects: list[BenchmarkObject]
    variants: list[Variant]
    results: list[ObjectResult]
    lpips: str | None
    started: float
    seconds: float = 0.0
    jobs: int = 1
    """Processes the run used (--jobs): its objects' seconds overlap."""

    def result(self, obj: str, variant: str) -> ObjectResult:
        return next(r for r in self.results if r.object == obj and r.variant == variant)

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.results)


def _error_text(e: Exception) -> str:
    return str(e) if isinstance(e, (ValueError, OSError)) and str(e) else f"{type(e).__name__}: {e}"


def _fail(r: ObjectResult, e: Exception, with_traceback: bool = True) -> None:
    r.status, r.error = "failed", _error_text(e)
    if with_traceback and not isinstance(e, (FileNotFoundError,)):
        r.traceback = traceback.format_exc()


class _RepeatFilter(logging.Filter):
    """Drops a log message already given (the "o3d" logger's), so a ground truth loaded twice in a
    run (its input view, then its scoring) warns once about a missing texture."""

    def __init__(self, seen: set[str]):
        super().__init__()
        self.seen = seen

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


@contextmanager
def _warn_once(seen: set[str]):
    log = logging.getLogger("o3d")
    quiet = _RepeatFilter(seen)
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


def _off_frame(prediction, gt) -> str:
    """How a prediction's bounding box is off the ground truth's ("" when it is not): 1.5 times its
    size or more either way, or its centre off by a quarter of the ground truth's size or more."""
    import torch

    points = prediction.vertices if hasattr(prediction, "vertices") else getattr(prediction, "means", None)
    if points is None or len(points) == 0:
        return ""
    points, ref = torch.as_tensor(points, dtype=torch.float64), torch.as_tensor(gt.vertices, dtype=torch.float64)
    lo, hi, rlo, rhi = points.min(0).values, points.max(0).values, ref.min(0).values, ref.max(0).values
    size, rsize = float((hi - lo).max()), float((rhi - rlo).max())
    if rsize <= 0:
        return ""
    ratio = size / rsize
    shift = float(((hi + lo) / 2 - (rhi + rlo) / 2).norm()) / rsize
    if ratio >= 1.5 or ratio <= 1 / 1.5:
        return f"{ratio:.2g} times the size of"
    if shift >= 0.25:
        return f"off centre by {shift:.2g} of the size of"
    return ""


def load_ground_truth(obj: BenchmarkObject, seen: set[str]):
    """obj.load(), telling each of its warnings once per run (``seen`` holds those told)."""
    with _warn_once(seen):
        return obj.load()


def prepare_generation(variants: list[Variant], out: Path) -> dict[str, object]:
    """BatchRunners of the generating variants, built before anything is written: a bad device or
    precision, model files that are missing or do not fit, or a matting tool that is not installed
    (with nothing cached) is a usage error, as for o3d generate, not a failure of every object.
    Each variant writes into OUT/assets/ (one variant) or OUT/assets/<name>/."""
    from o3dcli.errors import UserError
    from o3dcli.matting import matting_warning
    from o3dcli.models.build import describe_weights
    from o3dcli.pipeline import BatchRunner
    from o3dcli.stages import generate_stages

    runners = {}
    generating = [v for v in variants if v.config is not None]
    for v in generating:
        v.assets_dir = out / "assets" if len(generating) == 1 else out / "assets" / v.name
        try:
            runners[v.name] = BatchRunner(v.assets_dir, v.config, generate_stages())
            unmattable = matting_warning(v.config.preprocess.matting, (runners[v.name].cache.root / "items").is_dir())
            describe_weights(v.config)
        except (UserError, ValueError) as e:
            raise EvalUsageError(f"variant {v.name}: {e}") from None
        if unmattable:  # the objects whose inputs are cached still score
            logging.getLogger("o3d").warning("variant %s: %s", v.name, unmattable)
    for v in generating:
        v.assets_dir.mkdir(parents=True, exist_ok=True)
        v.meta["seed"] = v.config.runtime.seed
        try:  # which bytes made the models: a weights file retrained in place keeps its path
            from o3dcli.stages import model_files

            files = model_files(v.config)
            if files:
                v.meta["sha256"] = {role: runners[v.name].digests(Path(p)) for role, p in files.items()}
        except (OSError, ValueError):
            pass  # checked above: a file gone since fails the generation itself, with its name
    return runners


def write_inputs(objects: list[BenchmarkObject], protocol: EvalProtocol, out: Path,
                 results: dict[tuple[str, str], ObjectResult], variants: list[Variant],
                 warned: set[str] | None = None) -> dict[str, Path]:
    """Render each object's input view to OUT/inputs/<file name>.png (rewritten only when its bytes
    change, so generate's cache keys stay the same on a re-run)."""
    import io

    from PIL import Image

    from o3dcli.atomic import atomic_write_bytes

    (out / "inputs").mkdir(parents=True, exist_ok=True)
    paths = {}
    for obj in objects:
        try:
            rgba = render_input_view(load_ground_truth(obj, warned if warned is not None else set()), protocol)
            buf = io.BytesIO()
            Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
            path = out / "inputs" / f"{obj.file_name or obj.name}.png"
            if not (path.is_file() and path.read_bytes() == buf.getvalue()):
                atomic_write_bytes(path, buf.getvalue())
            paths[obj.name] = path
        except Exception as e:  # a GT that does not load fails this object for every variant
            for v in variants:
                if v.config is not None:
                    _fail(results[obj.name, v.name], e)
    return paths


def generate_assets(variant: Variant, runner, inputs: dict[str, Path], results: dict[tuple[str, str], ObjectResult],
                    show_progress: bool = True, jobs: int = 1, threads_available: int | None = None) -> None:
    """Run o3d generate's stages over the inputs; record each object's asset folder and timings.
    `jobs` > 1: that many processes, as `o3d generate --jobs` (o3dcli.jobs), torch's
    `threads_available` threads divided among them unless runtime.threads is set."""
    import torch

    from o3dcli.jobs import end_workers, start_workers, threads_per_process
    from o3dcli.naming import assign_names
    from o3dcli.pipeline import run_batch

    names = list(inputs)
    items = assign_names([inputs[n] for n in names], variant.assets_dir)
    jobs = max(1, min(jobs, len(items)))
    threads = variant.config.runtime.threads
    if jobs > 1:
        threads = threads_per_process(jobs, threads, threads_available or torch.get_num_threads())
    if threads:
        torch.set_num_threads(threads)
    runner.shared = jobs > 1
    workers = None
    if jobs > 1:
        workers = start_workers(jobs - 1, items, variant.assets_dir, variant.source, variant.sets, None, False,
                                None if variant.config.runtime.threads else threads, variant.config, runner)
    try:
        batch = run_batch(items, runner, show_progress=show_progress,
                          before_report=lambda interrupted: end_workers(workers, stop=interrupted))
    except BaseException:
        end_workers(workers, stop=True)
        raise
    finally:
        if jobs > 1 and not variant.config.runtime.threads and threads_available:
            torch.set_num_threads(threads_available)  # scoring, and the next variant, use them all again
    for name, item, r in zip(names, items, batch.items):
        for warning in r.warnings:  # as o3d generate prints them with the item
            logging.getLogger("o3d").warning("%s (%s): %s", name, variant.name, warning)
        res = results[name, variant.name]
        # what generating the asset took, also when this run found it cached (then from the run
        # that computed it; this run's own lookup time where an old cache did not record it)
        made = [r.computed_seconds.get(s) for s in r.timings]
        res.gen_seconds = round(sum(made) if made and None not in made else sum(r.timings.values()), 3)
        res.gen_cached = bool(r.timings) and len(r.cached) == len(r.timings)
        if r.status != "ok":
            res.status, res.error, res.traceback = "failed", f"generation: {r.error or r.status}", r.traceback
        else:
            res.asset = str(variant.assets_dir / r.name)  # the name it got (another input may have held item.name)
        diffusion = r.stages.get("diffusion", {})
        if "weights" in diffusion:
            variant.meta.setdefault("weights", diffusion["weights"])
            variant.meta.setdefault("trained", diffusion.get("trained"))


def _save_comparison(path: Path, ref_views, pred_views) -> None:
    import torch

    from o3dcli.io.media import image_grid, save_png, to_uint8

    frames = to_uint8(torch.cat([ref_views.rgb, pred_views.rgb]))
    save_png(path, image_grid(frames, cols=len(ref_views.rgb)))


def _render_path(out: Path, variant: str, obj: BenchmarkObject) -> Path:
    """OUT/renders/<variant>/<object's file name>.png: ground truth above, prediction below."""
    return out / "renders" / variant / f"{obj.file_name or obj.name}.png"


OFF_FRAME = ("%s: %s is %s the ground truth's: --align none scores predictions where they stand; other tools' "
             "outputs usually need --align box (or icp)")


def _score_object(obj: BenchmarkObject, todo: list[tuple[Variant, ObjectResult]], protocol: EvalProtocol, out: Path,
                  lpips_model, warned: set[str], stage: Callable[[str], None],
                  off_frame: Callable[[str, str, str], None]) -> None:
    """Score one object's pending (variant, result) pairs, filling in the results; its GT is
    rendered and sampled once. `stage(text)` tells the progress display what is being done;
    `off_frame(variant, object, how)` is told of a prediction off the protocol's frame."""
    stage("ground truth")
    try:
        ref = prepare_reference(load_ground_truth(obj, warned), protocol, obj.appearance)
    except Exception as e:
        for _, res in todo:
            _fail(res, e)
        return
    for v, res in todo:
        stage(v.name)
        t0 = time.perf_counter()
        try:
            path = find_prediction(v.predictions, obj.prediction_names, protocol.asset) if v.predictions \
                else find_prediction(v.assets_dir, Path(res.asset).name, protocol.asset)
            res.asset = str(path)
            prediction = load_prediction(path)
            if protocol.align == "none":
                off = _off_frame(prediction, ref.mesh)
                if off:
                    off_frame(v.name, obj.name, off)
            score = score_prediction(ref, prediction, protocol, lpips_model)
            if all(value is None for value in score.metrics.values()):  # not "ok" with no number
                why = ("every metric is n/a" if obj.appearance else "the ground truth has no colour "
                       f"(no texture), so colour metrics are n/a, and --asset {protocol.asset} gives no geometry")
                raise ValueError(f"nothing could be scored: {why}")
            res.metrics, res.kind, res.alignment = score.metrics, score.kind, score.alignment.to_json()
            render = _render_path(out, v.name, obj)
            _save_comparison(render, ref.views, score.views)
            res.render, res.status = str(render), "ok"
        except Exception as e:  # isolate the object: record and go on
            _fail(res, e)
            if res.asset and res.error and Path(res.asset).name not in res.error:  # which file, where it did not say
                res.error = f"{res.asset}: {res.error}"
        res.eval_seconds = round(time.perf_counter() - t0, 3)


def score_all(objects: list[BenchmarkObject], variants: list[Variant], protocol: EvalProtocol, out: Path,
              results: dict[tuple[str, str], ObjectResult], lpips_model=None, show_progress: bool = True,
              on_result: Callable[[ObjectResult], None] | None = None, warned: set[str] | None = None,
              jobs: int = 1, threads: int = 1, lpips_files: list[str] | None = None,
              sent: list[Path] | None = None) -> None:
    """Score every (object, variant) whose asset exists; the GT is rendered and sampled once per
    object. `jobs` > 1: the objects are scored in that many processes of `threads` torch threads
    (see _score_in_processes), each loading the LPIPS model from `lpips_files` (when `lpips_model`
    is given; without them, here). `sent` gets the render paths the processes may have written
    (an interrupted run cannot tell which they did)."""
    from o3dcli.console import batch_progress

    warned = set() if warned is None else warned
    sent = [] if sent is None else sent
    told: set[str] = set()  # variants already told their predictions are not in the protocol's frame

    def off_frame(variant: str, name: str, how: str) -> None:
        if variant not in told:
            told.add(variant)
            logging.getLogger("o3d").warning(OFF_FRAME, variant, name, how)

    def pending(obj: BenchmarkObject) -> list[tuple[Variant, ObjectResult]]:
        return [(v, results[obj.name, v.name]) for v in variants if results[obj.name, v.name].status == "pending"]

    with batch_progress(disable=not show_progress) as prog:
        task = prog.add_task("scoring", total=len(objects) * len(variants), stage="")

        def done(obj: BenchmarkObject) -> None:
            for v in variants:
                prog.advance(task)
                if on_result:
                    on_result(results[obj.name, v.name])

        to_score = [obj for obj in objects if pending(obj)]
        if lpips_model is not None and not lpips_files:  # processes could not load it: score here
            jobs = 1
        if jobs > 1 and len(to_score) > 1:
            for obj in objects:
                if obj not in to_score:
                    done(obj)
            prog.update(task, description=f"{min(jobs, len(to_score))} processes", stage="")
            _score_in_processes(to_score, pending, protocol, out, lpips_files if lpips_model is not None else None,
                                min(jobs, len(to_score)), threads, warned, off_frame, done, sent)
        else:
            for obj in objects:
                todo = pending(obj)
                if todo:
                    _score_object(obj, todo, protocol, out, lpips_model, warned,
                                  lambda text, obj=obj: prog.update(task, description=obj.name, stage=text), off_frame)
                done(obj)
        prog.update(task, description="scored", stage="")


_worker_lpips: dict[tuple[str, ...], object] = {}


def _init_scoring_process(threads: int, parent: int, log_level: int) -> None:
    """A scoring process: it ends when the command's process `parent` does (on Linux, also when
    that is killed); Ctrl-C is the command's to handle (it stops the processes); torch on
    `threads` threads; o3d's log messages go back to the command (see _score_in_process)."""
    import os
    import signal

    from o3dcli.jobs import follow_parent

    if not follow_parent(parent):
        os._exit(143)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    import torch

    torch.set_num_threads(threads)
    log = logging.getLogger("o3d")
    log.propagate = False
    log.setLevel(log_level)  # what the command shows


class _Collect(logging.Handler):
    def __init__(self, into: list):
        super().__init__(logging.NOTSET)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append((record.levelno, record.getMessage()))


def _score_in_process(obj: BenchmarkObject, todo: list[tuple[Variant, ObjectResult]], protocol: EvalProtocol,
                      out: Path, lpips_files: list[str] | None):
    """In a scoring process: score one object; returns its results, the log messages it gave and
    the predictions found off the protocol's frame, for the command to tell."""
    lpips_model = None
    if lpips_files:
        key = tuple(lpips_files)
        if key not in _worker_lpips:
            from o3dcli.eval.lpips import load_lpips

            _worker_lpips[key] = load_lpips(list(lpips_files))
        lpips_model = _worker_lpips[key]
    messages: list[tuple[int, str]] = []
    offs: list[tuple[str, str, str]] = []
    log, handler = logging.getLogger("o3d"), _Collect(messages)
    log.addHandler(handler)
    try:
        _score_object(obj, todo, protocol, out, lpips_model, set(), lambda text: None,
                      lambda *off: offs.append(off))
    finally:
        log.removeHandler(handler)
    return [res for _, res in todo], messages, offs


def _score_in_processes(objects: list[BenchmarkObject], pending, protocol: EvalProtocol, out: Path,
                        lpips_files: list[str] | None, jobs: int, threads: int, warned: set[str],
                        off_frame, done, sent: list[Path]) -> None:
    """Score `objects` in `jobs` processes of `threads` torch threads, one object per task. Each
    result is taken in as it comes, its log messages told once. A process that dies (out of
    memory, killed) takes with it the objects the processes were on and those queued: they are
    scored again in new processes, and those lost a second time each alone, in a process of its
    own, then recorded as failed if that one dies too. Ctrl-C or SIGTERM stops the processes.
    `sent` gets the render paths of every object handed to a process."""
    import concurrent.futures as cf
    import multiprocessing
    import os

    # the processes get the variants' names and folders only (not their configs or models)
    lite = {}
    for obj in objects:
        for v, _ in pending(obj):
            lite.setdefault(v.name, Variant(v.name, predictions=v.predictions, assets_dir=v.assets_dir))

    def take(obj: BenchmarkObject, fut) -> None:
        try:
            scored, messages, offs = fut.result()
        except Exception as e:  # what the task itself could not hand back
            for _, res in pending(obj):
                _fail(res, e)
        else:
            for res, (_, mine) in zip(scored, pending(obj)):
                vars(mine).update(vars(res))
            with _warn_once(warned):
                for level, text in messages:
                    logging.getLogger("o3d").log(level, "%s", text)
            for off in offs:
                off_frame(*off)
        done(obj)

    def run_pool(todo: list[BenchmarkObject], workers: int, last_try: bool) -> list[BenchmarkObject]:
        """Score `todo`; returns the objects lost with a process that died (none on the last try:
        they are failed)."""
        broken = []
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_scoring_process,
                                      initargs=(max(1, threads), os.getpid(), logging.getLogger("o3d").getEffectiveLevel()))
        try:
            futures = {}
            for obj in todo:
                sent.extend(_render_path(out, v.name, obj) for v, _ in pending(obj))
                futures[pool.submit(_score_in_process, obj, [(lite[v.name], res) for v, res in pending(obj)],
                                    protocol, out, lpips_files)] = obj
            for fut in cf.as_completed(futures):
                obj = futures[fut]
                if isinstance(fut.exception(), cf.process.BrokenProcessPool):
                    if not last_try:
                        broken.append(obj)
                        continue
                    for _, res in pending(obj):
                        _fail(res, RuntimeError("the process scoring it ended abnormally (out of memory?)"),
                              with_traceback=False)
                    done(obj)
                    continue
                take(obj, fut)
        except BaseException:  # Ctrl-C, SIGTERM: stop the processes now, not after their objects
            procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.terminate()
            raise
        finally:
            pool.shutdown(wait=True)
        return broken

    lost = run_pool(objects, jobs, last_try=False)
    if lost:  # most were only queued behind the one that died: all of them again, side by side
        lost = run_pool(lost, min(jobs, len(lost)), last_try=False)
    for obj in lost:  # lost twice: each alone, so that one cannot take the others with it
        run_pool([obj], 1, last_try=True)


def run_eval(benchmark: str, data: Path | None, objects: list[BenchmarkObject], variants: list[Variant],
             protocol: EvalProtocol, out: Path, lpips_model=None, lpips_source: str | None = None,
             show_progress: bool = True, on_result: Callable[[ObjectResult], None] | None = None,
             jobs: int = 1, lpips_files: list[str] | None = None, threads: int = 0) -> EvalRun:
    """Generate (for variants with a config) and score every object, in `jobs` processes (see
    generate_assets and score_all; `lpips_files`: what the scoring processes load `lpips_model`
    from; `threads`: torch threads of each scoring process, 0 = divide those there are); returns
    the run (see report.py to write it)."""
    import torch

    started = time.time()
    jobs = max(1, min(jobs, len(objects)))
    threads_available = torch.get_num_threads()
    out = Path(out)
    runners = prepare_generation(variants, out)  # its usage errors before anything is written
    out.mkdir(parents=True, exist_ok=True)
    from o3dcli.inputs import EVAL_MARKER

    if not (out / EVAL_MARKER).is_file():  # a folder scan (o3d generate -r) passes over eval's outputs
        (out / EVAL_MARKER).write_text("o3d eval wrote this folder: eval.json, inputs/, assets/, renders/\n")
    results = {(o.name, v.name): ObjectResult(o.name, v.name) for o in objects for v in variants}
    warned: set[str] = set()
    sent: list[Path] = []  # renders scoring processes were asked for (see clean_renders)
    finished = False
    try:
        if runners:
            inputs = write_inputs(objects, protocol, out, results, variants, warned)
            for v in variants:
                if v.name in runners:
                    todo = {n: p for n, p in inputs.items() if results[n, v.name].status == "pending"}
                    if todo:
                        generate_assets(v, runners[v.name], todo, results, show_progress, jobs, threads_available)
        score_all(objects, variants, protocol, out, results, lpips_model, show_progress, on_result, warned,
                  jobs, threads or threads_available // max(1, jobs), lpips_files, sent)
        finished = True
    finally:
        written = [Path(r.render) for r in results.values() if r.render]
        clean_renders(out, written if finished else written + sent, finished)
    ordered = [results[o.name, v.name] for v in variants for o in objects]
    return EvalRun(benchmark, str(data) if data else None, protocol, objects, variants, ordered, lpips_source,
                   started, round(time.time() - started, 3), jobs)
