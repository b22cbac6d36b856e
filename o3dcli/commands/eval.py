"""`o3d eval`: score generated (or any tool's) 3D assets against ground truth with one documented protocol."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from o3dcli.commands import path_param

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


EVAL_MAX_VIEW_PIXELS = 1 << 26
"""--views x --size^2 at most (the ground truth's and the prediction's views are held at once in floats,
16 bytes a pixel or more each: about 2 GB at this bound; the default 8 x 256^2 is 0.5 M)."""

def _split(text: Optional[str]) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _unique(name: str, taken: set[str]) -> str:
    base, n = name, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def _no_prediction_at_all(pred_dir: Path, objs, asset: str) -> str | None:
    """None when `pred_dir` has a prediction for at least one object, else why the first has none
    (a folder with nothing to score is a usage error, not a table of failures)."""
    from o3dcli.eval.benchmarks import find_prediction

    first = None
    for o in objs:
        try:
            find_prediction(pred_dir, o.prediction_names, asset)
            return None
        except OSError as e:
            first = first or str(e)
    return first


def eval_cmd(
    benchmark: str = typer.Option("synthetic", "--benchmark", "-b", help="gso (a Google Scanned Objects folder), synthetic (procedural objects, seeds 1,000,000+; nothing to download) or folder (any folder of GLB/glTF/OBJ/PLY/STL/USD meshes)."),
    data: Optional[Path] = typer.Option(None, "--data", parser=path_param, metavar="<path>", help="The benchmark's folder (gso and folder benchmarks)."),
    objects: Optional[str] = typer.Option(None, "--objects", help="Comma-separated object names to evaluate (default: all, in sorted order; synthetic: the first 10)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate only the first N objects."),
    predictions: Optional[str] = typer.Option(None, "--predictions", help="Score assets already in DIR instead of generating: DIR/<object>/ holding model.glb, model.obj or gaussians.ply, or a file DIR/<object>.EXT (glb, gltf, obj, ply, stl, usdz, usd, usda, usdc); comma-separated DIRs are compared side by side."),
    preset: str = typer.Option("tiny", "--preset", "-p", help="Preset (or YAML file) to generate with."),
    sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="Override one config field of generation, e.g. --set diffusion.steps=10 (repeatable).", metavar="SECTION.KEY=VALUE"),
    variants: Optional[str] = typer.Option(None, "--variants", help="Comma-separated presets, YAML files or o3d train run folders (e.g. two runs: their settings and weights) to generate with and compare; each gets its own assets folder."),
    lpips_weights: Optional[str] = typer.Option(None, "--lpips-weights", help="Local LPIPS-VGG weights: torchvision vgg16 features + LPIPS lin0..4 heads, one file or two comma-separated. Without it LPIPS is n/a."),
    align: str = typer.Option("none", "--align", help="none (score in the protocol's camera frame), box (move the prediction's bounding box to the unit box, as the ground truth's) or icp (box, then ICP with scale onto the ground truth)."),
    views: Optional[int] = typer.Option(None, "--views", min=1, max=360, help="Score N views at elevation 0, azimuths 360*i/N (default: the 8 generation cameras, azimuths 0..337.5)."),
    novel_views: bool = typer.Option(False, "--novel-views", help="Image metrics over the novel views only, leaving out view 0 (the input view, which o3d's textures take from the input photo)."),
    size: int = typer.Option(256, "--size", min=16, max=2048, help="Side in pixels of the input view and the scored views."),
    points: int = typer.Option(100_000, "--points", min=100, max=2_000_000, help="Surface points sampled per mesh for Chamfer, F-score and normal consistency."),
    asset: str = typer.Option("auto", "--asset", help="What to score in o3d asset folders: auto (model.glb, else model.obj, else gaussians.ply), mesh, gaussians (the Gaussian renders) or views (views.png, the diffusion's own images: PSNR/SSIM, and LPIPS with --lpips-weights; no geometry)."),
    mesh_shading: str = typer.Option("lambert", "--mesh-shading", help="How predicted meshes are rendered: lambert (colours are albedo, like the ground truth) or unlit (colours already hold lighting)."),
    output: Path = typer.Option(Path("o3d-eval"), "--output", "-o", parser=path_param, metavar="<path>", help="Output folder: inputs/, assets/, renders/, eval.json, eval.csv, eval.md."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Generation seed (shortcut for --set runtime.seed=N)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Processes working at once: generating the assets, as o3d generate --jobs (each loads the model: N times the memory; on CUDA without a device index, spread over the visible GPUs), then scoring them, one object per process at a time. torch's threads are divided among the processes unless runtime.threads is set."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks of failed objects."),
):
    """Evaluate image-to-3D results: image metrics (PSNR, SSIM, LPIPS, mask IoU) and geometry metrics (Chamfer, F-score, volume IoU, normal consistency) under one fixed protocol (docs/eval-protocol.md).

    Without --predictions, each object's input view is rendered to OUTPUT/inputs/ and o3d generate runs on it (cached: a re-run only scores).

    Exit code: 0 = every object scored, 1 = some failed, 2 = usage error, 130 = interrupted (Ctrl-C; 143 = SIGTERM).
    """
    from o3dcli.cli import require_file_locks

    require_file_locks("eval")

    from rich.markup import escape

    from o3dcli.console import console, interrupted_exit_code, setup_logging

    setup_logging(verbose)

    def usage(message: str) -> typer.Exit:
        console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
        return typer.Exit(EXIT_USAGE)

    from o3dcli.eval.benchmarks import BENCHMARKS, BenchmarkError, benchmark_objects
    from o3dcli.eval.protocol import ASSET_KINDS, EvalProtocol

    # choices are read in any case, as in --set and presets (--align ICP, --asset Mesh)
    benchmark, align, mesh_shading, asset = (v.strip().lower() for v in (benchmark, align, mesh_shading, asset))
    if benchmark not in BENCHMARKS:
        raise usage(f"--benchmark must be one of {', '.join(BENCHMARKS)}, got '{benchmark}'")
    if align not in ("none", "box", "icp"):
        raise usage(f"--align must be none, box or icp, got '{align}'")
    if mesh_shading not in ("lambert", "unlit"):
        raise usage(f"--mesh-shading must be lambert or unlit, got '{mesh_shading}'")
    for flag, value in (("--predictions", predictions), ("--variants", variants), ("--lpips-weights", lpips_weights)):
        if value is not None and not _split(value):  # "$PRED" unset: not a silent switch to generating
            raise usage(f"{flag}: an empty value (an unset variable?); give the path(s), comma-separated")
    if predictions and variants:
        raise usage("--predictions scores existing assets and --variants generates new ones: give one of them")
    threads = 0  # runtime.threads, where set: each scoring process's too
    if predictions and sets:  # scoring runs in torch too: runtime.threads is honoured, generating settings are not
        from o3dcli.config import ConfigError, parse_override

        try:
            parsed = [(text, *parse_override(text)) for text in sets]
        except ConfigError as e:
            raise usage(str(e)) from None
        for text, key, value in parsed:
            if key == "runtime.threads":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise usage(f"--set {text}: runtime.threads must be a whole number >= 0 (0 = torch's default)")
                if value:
                    import torch

                    torch.set_num_threads(value)
                    threads = value
        sets = [text for text, key, _ in parsed if key != "runtime.threads"]
    if predictions and (sets or seed is not None or preset != "tiny"):
        given = [o for o, on in (("--set", sets), ("--seed", seed is not None), ("--preset", preset != "tiny")) if on]
        console.print(f"[yellow]note[/yellow]: {', '.join(given)} {'is' if len(given) == 1 else 'are'} not used: they "
                      "set how assets are generated, and --predictions scores existing ones", soft_wrap=True)
    if benchmark == "synthetic" and data is not None:
        raise usage("--data names the folder of a gso or folder benchmark; the synthetic benchmark makes its "
                    "objects (seeds 1,000,000+) and reads no folder")
    from o3dcli.errors import UserError
    from o3dcli.inputs import check_output_dir

    try:
        check_output_dir(output)
    except UserError as e:
        raise usage(str(e)) from None
    given = [("--data", data, "the ground truth")] if data is not None else []
    given += [("--predictions", Path(p), "the predictions") for p in _split(predictions)]
    for option, folder, what in given:  # eval.*, renders/ and .o3d-eval written in among them
        if folder.is_dir() and output.resolve() == folder.resolve():
            raise usage(f"-o {output} is the {option} folder: the reports and renders would be written among "
                        f"{what}; give another -o")
    try:
        objs = benchmark_objects(benchmark, data, _split(objects) or None, limit)
    except BenchmarkError as e:
        raise usage(str(e)) from None
    if asset not in ASSET_KINDS:
        raise usage(f"--asset must be one of {', '.join(ASSET_KINDS)}, got '{asset}'")
    if asset == "views" and align != "none":
        raise usage("--asset views scores images at the protocol's cameras: they cannot be aligned (use --align none)")
    try:
        protocol = EvalProtocol(size=size, surface_points=points, align=align, mesh_shading=mesh_shading, asset=asset,
                                novel_views=novel_views)
        if views is not None:
            protocol = protocol.with_views(views)
    except ValueError as e:
        raise usage(str(e).removeprefix("protocol: ").replace("novel_views", "--novel-views")) from None
    rendered = len(protocol.azimuths) * size * size
    if rendered > EVAL_MAX_VIEW_PIXELS:  # each side's views are held at once, in floats
        raise usage(f"--views {len(protocol.azimuths)} at --size {size} is {rendered:,} pixels per object, over the "
                    f"{EVAL_MAX_VIEW_PIXELS:,} scored at once; give fewer views or a smaller size")

    from o3dcli.eval.runner import EvalUsageError, Variant, run_eval

    lpips_model = None
    if lpips_weights:
        from o3dcli.eval.lpips import LpipsWeightsError, load_lpips

        try:
            lpips_model = load_lpips(_split(lpips_weights))
        except LpipsWeightsError as e:
            raise usage(str(e)) from None

    chosen: list[Variant] = []
    taken: set[str] = set()
    if predictions:
        for d in _split(predictions):
            p = Path(d)
            if not p.is_dir():
                raise usage(f"--predictions {p}: not a folder")
            problem = _no_prediction_at_all(p, objs, asset)
            if problem:
                inner = [d for d in [p / "assets", *sorted((p / "assets").glob("*"))]
                         if d.is_dir() and _no_prediction_at_all(d, objs, asset) is None]
                hint = (f"; it looks like an o3d eval output, whose assets are in {', '.join(str(d) for d in inner)}"
                        if inner else "")
                raise usage(f"--predictions {p}: none of the {len(objs)} benchmark objects has a prediction there "
                            f"(the first: {problem}){hint}")
            chosen.append(Variant(_unique(p.resolve().name, taken), source=str(p), predictions=p))
    else:
        from o3dcli.config import ConfigError, load_config, parse_override

        extra = [f"runtime.seed={seed}"] if seed is not None else []
        for ref in _split(variants) or [preset]:
            try:
                cfg = load_config(ref, list(sets or []) + extra)
            except ConfigError as e:
                raise usage(str(e)) from None
            label = Path(ref).parent.name if Path(ref).name == "config.yaml" else Path(ref).stem
            weights = [str(value) for key, value in map(parse_override, sets or []) if key == "model.weights"]
            if weights:  # --set model.weights=runs/mine: "tiny-mine", not "tiny"
                label += f"-{Path(weights[-1]).stem}"
            chosen.append(Variant(_unique(label, taken), config=cfg, source=ref, sets=list(sets or []) + extra))
            threads = threads or cfg.runtime.threads

    from o3dcli.native import cannot_run

    refused = cannot_run("o3d eval")  # scoring and meshing load open3d and pymeshlab
    if refused:
        raise usage(refused)

    def on_result(r) -> None:
        if r.status == "failed":
            console.print(f"[red]✗ {escape(r.object)}[/red] ({escape(r.variant)}): {escape(r.error or '')}", soft_wrap=True)
            if verbose and r.traceback:
                console.print(escape(r.traceback))

    processes = f", {min(jobs, len(objs))} processes" if jobs > 1 and len(objs) > 1 else ""
    console.print(f"o3d eval: {len(objs)} object(s) of benchmark {benchmark}, {len(chosen)} variant(s) "
                  f"({', '.join(escape(v.name) for v in chosen)}){processes} -> {escape(str(output))}")
    try:
        run = run_eval(benchmark, data, objs, chosen, protocol, output, lpips_model, lpips_weights,
                       show_progress=not no_progress, on_result=on_result, jobs=jobs,
                       lpips_files=_split(lpips_weights), threads=threads)
    except EvalUsageError as e:
        raise usage(str(e)) from None
    except KeyboardInterrupt:
        from o3dcli.eval.report import REPORT_FILES

        # the reports are written once every object is scored: say what is kept and what is not
        kept = ("the assets generated so far are cached, so running the same command again resumes; "
                if any(v.config is not None for v in chosen) else "")
        earlier = [name for name in REPORT_FILES if (output / name).is_file()]
        stale = (f"; the {', '.join(earlier)} in {output} {'is' if len(earlier) == 1 else 'are'} an earlier run's, "
                 "not this one's" if earlier else "")
        console.print(f"[yellow]interrupted[/yellow]: {kept}no scores were written (they are when every object is "
                      f"scored){escape(stale)}", soft_wrap=True)
        raise typer.Exit(interrupted_exit_code()) from None

    from o3dcli.eval.report import comparison_table, object_table, write_reports

    paths = write_reports(run, output)
    for v in run.variants:
        console.print(object_table(run, v))
    if len(run.variants) > 1:
        console.print(comparison_table(run))
    if lpips_model is None:
        console.print("LPIPS: n/a (give --lpips-weights to compute it)")
    n_failed = sum(r.status != "ok" for r in run.results)
    console.print(f"{len(run.results) - n_failed}/{len(run.results)} scored; report: "
                  + ", ".join(escape(str(p)) for p in paths), soft_wrap=True)
    raise typer.Exit(EXIT_OK if run.ok else EXIT_SOME_FAILED)
