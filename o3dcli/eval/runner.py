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
    """BatchRunners of the generating variants, built before any work (a bad device or setting
    is a usage error). Each variant writes into OUT/assets/ (one variant) or OUT/assets/<name>/."""
    from o3dcli.errors import UserError
    from o3dcli.pipeline import BatchRunner
    from o3dcli.stages import generate_stages

    runners = {}
    generating = [v for v in variants if v.config is not None]
    for v in generating:
        v.assets_dir = out / "assets" if len(generating) == 1 else out / "assets" / v.name
        v.assets_dir.mkdir(parents=True, exist_ok=True)
        try:
            runners[v.name] = BatchRunner(v.assets_dir, v.config, generate_stages())
        except (UserError, ValueError) as e:
            raise EvalUsageError(f"variant {v.name}: {e}") from None
        v.meta["seed"] = v.config.runtime.seed
        try:  # which bytes made the models: a weights file retrained in place keeps its path
            from o3dcli.stages import model_files

            files = model_files(v.config)
            if files:
                v.meta["sha256"] = {role: runners[v.name].digests(Path(p)) for role, p in files.items()}
        except (OSError, ValueError):
            pass  # missing model files fail the generation itself, with their names
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
                    show_progress: bool = True) -> None:
    """Run o3d generate's stages over the inputs; record each object's asset folder and timings."""
    import torch

    from o3dcli.naming import assign_names
    from o3dcli.pipeline import run_batch

    names = list(inputs)
    items = assign_names([inputs[n] for n in names], variant.assets_dir)
    if variant.config.runtime.threads:
        torch.set_num_threads(variant.config.runtime.threads)
    batch = run_batch(items, runner, show_progress=show_progress)
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


def score_all(objects: list[BenchmarkObject], variants: list[Variant], protocol: EvalProtocol, out: Path,
              results: dict[tuple[str, str], ObjectResult], lpips_model=None, show_progress: bool = True,
              on_result: Callable[[ObjectResult], None] | None = None, warned: set[str] | None = None) -> None:
    """Score every (object, variant) whose asset exists; the GT is rendered and sampled once per object."""
    from o3dcli.console import batch_progress

    warned = set() if warned is None else warned
    off_frame: set[str] = set()  # variants already told their predictions are not in the protocol's frame
    with batch_progress(disable=not show_progress) as prog:
        task = prog.add_task("scoring", total=len(objects) * len(variants), stage="")
        for obj in objects:
            todo = [v for v in variants if results[obj.name, v.name].status == "pending"]
            ref = None
            if todo:
                prog.update(task, description=obj.name, stage="ground truth")
                try:
                    ref = prepare_reference(load_ground_truth(obj, warned), protocol, obj.appearance)
                except Exception as e:
                    for v in todo:
                        _fail(results[obj.name, v.name], e)
            for v in variants:
                res = results[obj.name, v.name]
                if res.status == "pending" and ref is not None:
                    prog.update(task, description=obj.name, stage=v.name)
                    t0 = time.perf_counter()
                    try:
                        path = find_prediction(v.predictions, obj.prediction_names, protocol.asset) if v.predictions \
                            else find_prediction(v.assets_dir, Path(res.asset).name, protocol.asset)
                        res.asset = str(path)
                        prediction = load_prediction(path)
                        if protocol.align == "none" and v.name not in off_frame:
                            off = _off_frame(prediction, ref.mesh)
                            if off:
                                off_frame.add(v.name)
                                logging.getLogger("o3d").warning(
                                    "%s: %s is %s the ground truth's: --align none scores predictions where they "
                                    "stand; other tools' outputs usually need --align box (or icp)", v.name, obj.name, off)
                        score = score_prediction(ref, prediction, protocol, lpips_model)
                        if all(value is None for value in score.metrics.values()):  # not "ok" with no number
                            why = ("every metric is n/a" if obj.appearance else "the ground truth has no colour "
                                   f"(no texture), so colour metrics are n/a, and --asset {protocol.asset} gives no geometry")
                            raise ValueError(f"nothing could be scored: {why}")
                        res.metrics, res.kind, res.alignment = score.metrics, score.kind, score.alignment.to_json()
                        render = out / "renders" / v.name / f"{obj.file_name or obj.name}.png"
                        _save_comparison(render, ref.views, score.views)
                        res.render, res.status = str(render), "ok"
                    except Exception as e:  # isolate the object: record and go on
                        _fail(res, e)
                    res.eval_seconds = round(time.perf_counter() - t0, 3)
                prog.advance(task)
                if on_result:
                    on_result(res)
        prog.update(task, description="scored", stage="")


def run_eval(benchmark: str, data: Path | None, objects: list[BenchmarkObject], variants: list[Variant],
             protocol: EvalProtocol, out: Path, lpips_model=None, lpips_source: str | None = None,
             show_progress: bool = True, on_result: Callable[[ObjectResult], None] | None = None) -> EvalRun:
    """Generate (for variants with a config) and score every object; returns the run (see report.py to write it)."""
    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from o3dcli.inputs import EVAL_MARKER

    if not (out / EVAL_MARKER).is_file():  # a folder scan (o3d generate -r) passes over eval's outputs
        (out / EVAL_MARKER).write_text("o3d eval wrote this folder: eval.json, inputs/, assets/, renders/\n")
    runners = prepare_generation(variants, out)
    results = {(o.name, v.name): ObjectResult(o.name, v.name) for o in objects for v in variants}
    warned: set[str] = set()
    finished = False
    try:
        if runners:
            inputs = write_inputs(objects, protocol, out, results, variants, warned)
            for v in variants:
                if v.name in runners:
                    todo = {n: p for n, p in inputs.items() if results[n, v.name].status == "pending"}
                    if todo:
                        generate_assets(v, runners[v.name], todo, results, show_progress)
        score_all(objects, variants, protocol, out, results, lpips_model, show_progress, on_result, warned)
        finished = True
    finally:
        clean_renders(out, [Path(r.render) for r in results.values() if r.render], finished)
    ordered = [results[o.name, v.name] for v in variants for o in objects]
    return EvalRun(benchmark, str(data) if data else None, protocol, objects, variants, ordered, lpips_source,
                   started, round(time.time() - started, 3))
