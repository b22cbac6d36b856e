"""The `o3d` command line (Typer + rich). Thin: parse, build a config, call stage functions.

Heavy libraries (torch, open3d, ...) are imported inside the commands so that
`o3d --help` answers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from o3dcli import __version__
from o3dcli.commands import path_param


def _flags_take_no_value() -> None:
    """Typer (0.2x) shows a flag's type in --help (`--force <bool>`), which reads as an option that takes
    true/false (`--force true` then takes "true" for an input). A flag's help shows no type here."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "_o3d_flags", False):
        return

    def display_type_rich(self, *args, **kwargs):
        return None if getattr(self, "is_flag", False) and self.metavar is None else shown(self, *args, **kwargs)

    display_type_rich._o3d_flags = True
    option.display_type_rich = display_type_rich


_flags_take_no_value()

app = typer.Typer(
    name="o3d",
    help="Turn folders of object photos into textured 3D assets (Ouroboros3D: recursive multi-view diffusion with 3D-aware feedback).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
presets_app = typer.Typer(help="List and inspect configuration presets.", no_args_is_help=True)



EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

PresetOpt = typer.Option("tiny", "--preset", "-p", help="Preset name (see `o3d presets list`), a YAML file, an asset folder (its config.yaml: the settings that made it) or an `o3d train` run folder.")
SetOpt = typer.Option(None, "--set", "-s", help="Override one config field, e.g. --set mesh.target_faces=20000 (repeatable).", metavar="SECTION.KEY=VALUE")


def _version_callback(value: bool):
    if value:
        typer.echo(f"o3d {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
):
    """o3d: image-to-3D from the command line."""
    from o3dcli.console import hold_interrupts_in_imports, keep_logging_state, setup_logging, stop_on_sigterm

    # the caller's own SIGTERM handling, logging and imports are back once the command ends
    ctx.call_on_close(stop_on_sigterm())
    ctx.call_on_close(keep_logging_state())
    ctx.call_on_close(hold_interrupts_in_imports())
    # warnings said while settings are read (a preset, the weights) show in every command, as the
    # console's; generate, mesh and eval then show their progress notes too (setup_logging(verbose))
    setup_logging(quiet=True)
    _short_openmp_spin()


def _short_openmp_spin() -> None:
    """Let torch's OpenMP threads (libgomp, Linux wheels) wait for work by spinning 1,000 times, not
    300,000, before they sleep, unless the user chose (OMP_WAIT_POLICY, GOMP_SPINCOUNT). The tiny
    model runs many small ops; with every core busy (another job, a training run) the spinning
    threads held the one doing the work off its core. Measured on 2 cores, 25 denoising steps:
    9.3 s idle (10.2 s with the short spin), and with two other torch processes busy 65 s for 5
    steps (5.8 s with the short spin). Read when torch is first imported, which is after this."""
    import os

    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")


def require_file_locks(command: str) -> None:
    """Usage error (exit 2) where POSIX file locks are missing (Windows): `command` locks what it
    writes (cache items, asset names, run folders, dataset objects). Called first in each such
    command's body, so that its --help still answers."""
    import importlib

    try:
        importlib.import_module("fcntl")  # POSIX: Linux, macOS
    except ImportError:
        raise _usage_error(f"o3d {command} needs POSIX file locks (fcntl), which this system lacks: run o3d "
                           "on Linux or macOS, or on Windows inside WSL") from None


def _usage_error(message: str) -> typer.Exit:
    from rich.markup import escape

    from o3dcli.console import console

    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def _load_config(preset: str, sets: Optional[List[str]], extra: list[str] = ()):
    """The config of `--preset`, `--set`s and `extra` (a command's shortcut options as `key=value`,
    applied last); a shortcut that contradicts a `--set` of the same key is a usage error."""
    from o3dcli.config import ConfigError, load_config, parse_override

    _warn_of_shadowed_folders(preset, sets)
    try:
        cfg = load_config(preset, list(sets or []) + list(extra))
        set_keys = {parse_override(s)[0] for s in sets or []}
        both = [k for k in (parse_override(e)[0] for e in extra) if k in set_keys]
        if both:
            from functools import reduce

            without = load_config(preset, list(sets or []))
            value = lambda c, key: reduce(getattr, key.split("."), c)  # noqa: E731
            same = lambda a, b: (sorted(a) == sorted(b)) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) \
                else a == b  # noqa: E731  (formats glb,obj and obj,glb are one choice)
            for key in both:
                if not same(value(without, key), value(cfg, key)):
                    raise ConfigError(f"{key} is given twice, {value(without, key)!r} by --set and {value(cfg, key)!r} "
                                      "by its shortcut option: give one")
        return cfg
    except ConfigError as e:
        raise _usage_error(str(e)) from None


def _current_context():
    """The running command's click context, or None: typer 0.2x runs its own copy of click
    (typer._click), older typers click itself."""
    import importlib

    for module in ("typer._click.globals", "click"):
        try:
            ctx = importlib.import_module(module).get_current_context(silent=True)
        except (ImportError, AttributeError):
            continue
        if ctx is not None:
            return ctx
    return None


def _warn_of_shadowed_folders(preset: str, sets: Optional[List[str]]) -> None:
    """Warn when a name the user gave (`--preset NAME`, `--set model.weights=NAME` or
    `train.init=NAME`) is o3d's own preset or weights and also a folder here (`o3d train -o tiny`
    makes one): o3d's is taken, as documented; `./NAME` is the folder."""
    from o3dcli.config import available_presets, parse_override
    from o3dcli.console import console
    from o3dcli.sysinfo import is_bare_name, named_weights

    given = []
    ctx = _current_context()
    if ctx is not None and getattr(ctx.get_parameter_source("preset"), "name", None) == "COMMANDLINE":
        given.append(("--preset", preset, str(preset) in available_presets()))
    for text in sets or []:
        try:
            key, value = parse_override(text)
        except Exception:  # load_config says what is wrong with it
            continue
        if key in ("model.weights", "train.init") and isinstance(value, str):
            given.append((f"--set {key}", value, named_weights(value) is not None))
    for option, name, ours in given:
        if ours and is_bare_name(str(name)) and Path(name).is_dir():
            console.print(f"[yellow]warning[/yellow]: {option} {name} takes o3d's {name}, not the folder {name} here; "
                          f"write ./{name} for the folder", soft_wrap=True)


def examples_dir() -> Path:
    return Path(__file__).parent / "assets" / "examples"


@app.command()
def generate(
    inputs: Optional[List[Path]] = typer.Argument(None, metavar="IMAGE", help="Image files and/or folders of images.", show_default=False, parser=path_param),
    output: Path = typer.Option(Path("o3d-output"), "--output", "-o", parser=path_param, metavar="<path>", help="Output folder: one sub-folder per input image."),
    preset: str = PresetOpt,
    sets: Optional[List[str]] = SetOpt,
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Also take images from sub-folders."),
    examples: bool = typer.Option(False, "--examples", help="Add the example images shipped with o3d to the inputs."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Shortcut for --set runtime.seed=N."),
    device: Optional[str] = typer.Option(None, "--device", help="Shortcut for --set runtime.device=DEV (auto, cpu, cuda, cuda:1, ..., mps)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Shortcut for --set runtime.dtype=DTYPE: float32, float16 or bfloat16 (16-bit needs CUDA)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Shortcut for --set diffusion.steps=N."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Shortcut for --set diffusion.guidance_max=G (guidance of the last view; the ramp starts at diffusion.guidance_min)."),
    formats: Optional[str] = typer.Option(None, "--formats", help="Shortcut for --set mesh.formats: comma-separated, any of glb, obj, usdz, stl (default: glb,obj; stl: for 3D printing, see mesh.stl_size_mm)."),
    save_intermediate: bool = typer.Option(False, "--save-intermediate", help="Also write every denoising step's views and RGB/CCM feedback maps (asset/intermediate/)."),
    stop_after: Optional[str] = typer.Option(None, "--stop-after", help="Run the stages up to this one only, in order: preprocess, diffusion (the views and Gaussians), mesh_fusion, mesh_simplify, mesh_uv, mesh_bake, export."),
    force: bool = typer.Option(False, "--force", help="Recompute every stage for these settings even when a cached result exists (cached results of other settings are kept)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar: a line per finished item instead (what o3d does where its output is not a terminal: a log file, a pipe, a batch job)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks of failed items."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Processes working on the batch at once, each on the next item no other holds (each loads the model: N times the memory); torch's threads are divided among them unless runtime.threads is set. On CUDA without a device index, spread over the visible GPUs."),
    worker_of: Optional[str] = typer.Option(None, "--worker-of", hidden=True),
    worker_threads: Optional[int] = typer.Option(None, "--worker-threads", hidden=True, min=1),
    worker_items: Optional[Path] = typer.Option(None, "--worker-items", hidden=True),
):
    """Generate a 3D asset for every input image.

    Each asset goes to OUTPUT/<image name>/. Finished stages are cached in OUTPUT/.o3d, so an interrupted batch resumes where it stopped.

    Exit code: 0 = all items succeeded, 1 = some failed, 2 = usage error, 130 = interrupted (Ctrl-C; 143 = SIGTERM).
    """
    require_file_locks("generate")
    if worker_of is not None:
        from o3dcli.jobs import follow_parent

        if not follow_parent():  # the command that started this worker is gone
            raise typer.Exit(143)

    from rich.markup import escape

    from o3dcli.console import console, interrupted_exit_code, setup_logging
    from o3dcli.errors import UserError
    from o3dcli.pipeline import BatchRunner, run_batch
    from o3dcli.batch_types import BatchInterrupted
    from o3dcli.jobs import end_workers
    from o3dcli.stages import generate_stages

    setup_logging(verbose)
    extra = []
    if seed is not None:
        extra.append(f"runtime.seed={seed}")
    if device is not None:
        extra.append(f"runtime.device={device}")
    if dtype is not None:
        extra.append(f"runtime.dtype={dtype}")
    if steps is not None:
        extra.append(f"diffusion.steps={steps}")
    if guidance is not None:
        extra.append(f"diffusion.guidance_max={guidance}")
    if save_intermediate:
        extra.append("diffusion.save_intermediate=true")
    if formats is not None:
        from o3dcli.mesh.config import parse_formats

        extra.append(f"mesh.formats=[{','.join(parse_formats(formats))}]")
    cfg = _load_config(preset, sets, extra)
    notes: list[str] = []
    if worker_items is not None:  # a worker of --jobs: the command's items
        from o3dcli.jobs import read_items

        items = read_items(worker_items)
    else:
        items = _generate_items(list(inputs or []), examples, output, recursive, notes)
    try:
        runner = BatchRunner(output, cfg, generate_stages(stop_after), force=force, all_stages=generate_stages(),
                             batch_id=worker_of)
    except (UserError, ValueError) as e:
        raise _usage_error(str(e)) from None
    runner.shared = jobs > 1 or worker_of is not None
    from o3dcli.matting import matting_warning

    try:
        unmattable = matting_warning(cfg.preprocess.matting, cached=not force and (runner.cache.root / "items").is_dir())
    except UserError as e:
        raise _usage_error(str(e)) from None
    weights = None
    if any(s.name == "diffusion" for s in runner.stages):
        from o3dcli.errors import ConfigError
        from o3dcli.models.build import describe_weights

        try:
            weights = describe_weights(cfg)
        except ConfigError as e:
            raise _usage_error(str(e)) from None
    if any(s.name.startswith("mesh_") for s in runner.stages):  # they load open3d and pymeshlab
        from o3dcli.native import cannot_run

        refused = cannot_run("the mesh stages")
        if refused:
            raise _usage_error(refused)
    # the output folder is made only once the settings are known to be usable
    output.mkdir(parents=True, exist_ok=True)
    jobs = min(jobs, len(items))
    threads = worker_threads or cfg.runtime.threads
    if threads or jobs > 1:
        import torch

        if jobs > 1:
            from o3dcli.jobs import threads_per_process

            threads = threads_per_process(jobs, cfg.runtime.threads, torch.get_num_threads())
        torch.set_num_threads(threads)
    processes = f", {jobs} processes of {threads} thread(s)" if jobs > 1 else ""
    console.print(f"o3d {__version__}: {len(items)} image(s) -> {escape(str(output))}  (preset {escape(preset)}, "
                  f"device {runner.device}{processes})")
    for note in notes:
        console.print(f"[yellow]note[/yellow]: {escape(note)}", soft_wrap=True)
    if weights is not None:
        console.print(f"model weights: {escape(weights)}", soft_wrap=True)
    if unmattable:
        console.print(f"[yellow]warning[/yellow]: {escape(unmattable)}", soft_wrap=True)

    # no bar where it cannot be drawn (rich draws it once, at the end, into a log file or a pipe):
    # a line per finished item instead, so that a long batch's log says how far it got
    plain = no_progress or not console.is_terminal
    finished = []

    def on_done(r):
        finished.append(r.name)
        count = f"[{len(finished)}/{len(items)}] " if plain else ""
        if r.status == "failed":
            # a later stage's error names no file: say which input the item is
            source = "" if r.input in (r.error or "") else f" ({escape(r.input)})"
            console.print(f"{count}[red]✗ {escape(r.name)}[/red]{source}: {escape(r.error or '')}", soft_wrap=True)
            if verbose and r.traceback:
                console.print(escape(r.traceback))
        for w in r.warnings:  # which input, as for an error (same-named inputs get fox, fox-2, ...)
            source = "" if r.input in w else f" ({escape(r.input)})"
            console.print(f"[yellow]! {escape(r.name)}[/yellow]{source}: {escape(w)}", soft_wrap=True)
        if plain and r.status == "ok":
            source = f" ({escape(r.input)})" if _renamed(r) else ""
            console.print(f"{count}[green]✓ {escape(r.name)}[/green]{source}: ok in {sum(r.timings.values()):.1f} s, "
                          f"{_cached_text(r)}", soft_wrap=True)

    workers = None
    if jobs > 1:
        from o3dcli.jobs import start_workers

        workers = start_workers(jobs - 1, items, output, preset, list(sets or []) + extra, stop_after, force,
                                None if cfg.runtime.threads else threads, cfg, runner)
    try:
        result = run_batch(items, runner, show_progress=not plain, on_item_done=on_done,
                           before_report=lambda interrupted: end_workers(workers, stop=interrupted))
    except BatchInterrupted as e:
        end_workers(workers, stop=True)
        _print_summary(e.result)
        console.print("[yellow]interrupted[/yellow]: finished stages are cached; run the same command again to resume.")
        raise typer.Exit(interrupted_exit_code())
    except BaseException:
        end_workers(workers, stop=True)
        raise
    _print_summary(result)
    # a worker of --jobs ends with 0 when its items failed too (the command reports them): 1 is a crash
    raise typer.Exit(EXIT_OK if result.ok or worker_of is not None else EXIT_SOME_FAILED)


def _generate_items(paths: list, examples: bool, output: Path, recursive: bool, notes: list[str]):
    """The batch's items (inputs and asset names) from the command's inputs; usage errors for none."""
    from o3dcli.errors import UserError
    from o3dcli.inputs import check_output_dir, collect_inputs, image_rank
    from o3dcli.naming import assign_names

    if examples:
        paths.append(examples_dir())
    if not paths:
        raise _usage_error("no inputs: give image files or folders, or --examples")
    try:
        check_output_dir(output)
        sources = collect_inputs(paths, recursive=recursive, notes=notes)
    except UserError as e:
        raise _usage_error(str(e)) from None
    if not sources:
        hint = ""
        if not recursive:  # said only where sub-folders hold images a recursive scan would take
            try:
                deeper = len(collect_inputs(paths, recursive=True, notes=[]))
            except UserError:
                deeper = 0
            hint = f" (use --recursive: {deeper} in sub-folders)" if deeper else ""
        raise _usage_error(f"no image files found in {', '.join(map(str, paths))}{hint}"
                           + "".join(f"; {n}" for n in notes))
    return assign_names(sources, output, rank=image_rank)


def _renamed(r) -> bool:
    """Whether item result `r`'s asset is named otherwise than its input (`a-2` for a.jpg beside
    a.png, a name taken by a folder not o3d's): the summary then says which input it is."""
    from o3dcli.naming import clean_name

    return r.name != clean_name(Path(r.input).stem)


def _cached_text(r, short: bool = False) -> str:
    """How many of item result `r`'s stages came from the cache ("2/7", "2 of 7 stages cached"),
    and, where this run resumed its denoising, from which step."""
    if not r.timings:
        return "-"
    text = f"{len(r.cached)}/{len(r.timings)}" if short else f"{len(r.cached)} of {len(r.timings)} stages cached"
    resumed = r.stages.get("diffusion", {}).get("resumed_from") if "diffusion" not in r.cached else None
    if isinstance(resumed, int) and resumed > 0:
        text += f" (denoising resumed at step {resumed})" if not short else f", resumed at step {resumed}"
    return text


def _print_summary(result) -> None:
    from rich.markup import escape
    from rich.table import Table

    from o3dcli.console import console

    table = Table(title="o3d generate", show_lines=False)
    for col in ("item", "status", "seconds", "stages cached", "error"):
        table.add_column(col, overflow="fold")
    for r in result.items:
        colour = {"ok": "green", "failed": "red"}.get(r.status, "yellow")
        status = f"{r.status} in {r.stage}" if r.stage and r.status == "failed" else r.status
        name = escape(r.name) + (f"\n[dim]<- {escape(r.input)}[/dim]" if _renamed(r) else "")
        table.add_row(name, f"[{colour}]{escape(status)}[/{colour}]", f"{sum(r.timings.values()):.2f}",
                      _cached_text(r, short=True), escape(r.error or ""))
    console.print(table)
    n_ok = sum(r.status == "ok" for r in result.items)
    if result.items and result.computed_stages == 0 and n_ok == len(result.items):
        console.print(f"all {n_ok} item(s) up to date: nothing recomputed (use --force to recompute)")
    else:
        report = "" if result.report_error else f"; report: {escape(str(result.report_path))}"
        console.print(f"{n_ok}/{len(result.items)} succeeded{report}")
    if result.report_error:
        console.print(f"[red]error[/red]: {escape(result.report_error)}; the results above are in their folders",
                      soft_wrap=True)


@presets_app.command("list")
def presets_list():
    """List the available presets."""
    from rich.table import Table

    from o3dcli.config import available_presets, preset_description
    from o3dcli.console import out

    table = Table(title="o3d presets")
    table.add_column("name")
    table.add_column("description", overflow="fold")
    for name, path in available_presets().items():
        table.add_row(name, preset_description(path))
    out.print(table)


@presets_app.command("show")
def presets_show(
    name: str = typer.Argument("tiny", metavar="PRESET", help="Preset name or YAML path (a config key here means: that key of tiny)."),
    keys: Optional[List[str]] = typer.Argument(None, metavar="KEY", help="Config keys or sections to explain in full, e.g. mesh.texture_format or mesh.", show_default=False),
    sets: Optional[List[str]] = SetOpt,
    long: bool = typer.Option(False, "--long", "-l", help="Every field's full meaning, type and default, one block a key."),
    as_yaml: bool = typer.Option(False, "--yaml", help="Print the resolved config as plain YAML (usable as a preset; with KEY, only those)."),
):
    """Show a preset's fields after defaults and overrides are applied.

    By default: the config as YAML (it loads as a preset), one field a line, each with the first sentence of its meaning as a comment cut to the terminal's width.

    KEY (a key or a section) or --long: the full text, type and default of those keys or of all of them. --yaml: the values alone.
    """
    import shlex

    from rich.text import Text

    from o3dcli.config import ConfigError, available_presets, dump_config, preset_description, resolve_preset_path
    from o3dcli.config_view import compact_lines, explain_lines, select_keys
    from o3dcli.console import out

    keys = list(keys or [])
    if long and as_yaml:
        raise _usage_error("--long and --yaml: choose one (--yaml prints the values alone, --long their full meaning)")
    if name not in available_presets() and not Path(name).is_file() and not name.endswith((".yaml", ".yml")):
        try:  # `o3d presets show mesh.texture_format`: a key of the default preset
            select_keys([name])
            name, keys = "tiny", [name] + keys
        except ConfigError:
            pass  # not a key either: the preset error below says what there is
    cfg = _load_config(name, sets)
    try:
        selected = select_keys(keys) if keys else None
    except ConfigError as e:
        raise _usage_error(str(e)) from None
    if as_yaml:
        text = dump_config(cfg, keys=selected)
        if selected:  # only those keys: on the preset they came from, so that the file is that preset, changed
            import yaml

            base = name if name in available_presets() else str(resolve_preset_path(name).resolve())
            text = yaml.safe_dump({"base": base}) + text  # ASCII (\u escapes): read back whatever the code page
        typer.echo(text, nl=False)
        return
    width = out.width
    if long or selected:
        typer.echo("\n".join(explain_lines(cfg, selected, width, preset_cfg=_load_config(name, None) if sets else None)))
        return
    description = " ".join(preset_description(resolve_preset_path(name)).split())
    header = [f"preset {name}{': ' + description if description else ''}",
              f"full text of a key or section: o3d presets show {shlex.quote(name)} KEY; of all: --long"]
    text = Text()
    for code, comment in compact_lines(cfg, width, header):
        text.append(code)
        text.append(comment, style="dim")
        text.append("\n")
    out.print(text, end="", soft_wrap=True)


def info(
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Also build this preset's models on the meta device and print parameter counts per module, and the weights it loads."),
    sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="Override one field of the preset (tiny unless --preset is given), e.g. --set model.weights=runs/mine (repeatable).", metavar="SECTION.KEY=VALUE"),
    as_json: bool = typer.Option(False, "--json", help="Print the same as one JSON object (for scripts and bug reports), tables left out."),
):
    """Versions, device, rasterizer backend and available model weights.

    With --preset or --set, also the weights those settings load and the device and precision they run on; exit code 2 when the weights cannot be loaded or the device or precision is not available here, so that a script can check a setting before a run."""
    from rich.markup import escape
    from rich.table import Table

    from o3dcli.console import out
    from o3dcli.sysinfo import collect_info

    if sets and preset is None:
        preset = "tiny"
    cfg = _load_config(preset, sets) if preset is not None else None  # a bad preset is an error before any output
    data = collect_info()
    if as_json:
        return _info_json(data, cfg, preset, sets)
    table = Table(title=f"o3d {__version__}", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for k, v in data.items():
        table.add_row(k, escape(str(v)))
    out.print(table)
    if cfg is not None:
        from o3dcli.models.build import describe_parameters

        counts = describe_parameters(cfg)
        title = " ".join([f"preset {preset}"] + [f"--set {x}" for x in sets or []])
        ptable = Table(title=f"{escape(title)}: parameters (built on the meta device)")
        ptable.add_column("module")
        ptable.add_column("parameters", justify="right")
        for k, v in counts.items():
            ptable.add_row(k, f"{v:,}")
        out.print(ptable)
        checked = _check_settings(cfg)  # problems said with the rest; the exit code says them (a check before a run)
        out.print(f"weights: {escape(checked.get('weights') or checked['weights_problem'])}", soft_wrap=True)
        runs_on = checked.get("runs_on")
        out.print(f"runs on: {escape(f'{runs_on[0]}, {runs_on[1]}' if runs_on else checked['runs_on_problem'])}",
                  soft_wrap=True)
        if "weights" not in checked or not runs_on:
            raise typer.Exit(2)


def _check_settings(cfg) -> dict:
    """What `o3d info` says of settings, checked as a run checks them before it starts: "weights"
    (where they come from) or "weights_problem", "runs_on" ((device, dtype)) or "runs_on_problem"."""
    from o3dcli.device import check_dtype, resolve_device
    from o3dcli.errors import ConfigError, UserError
    from o3dcli.models.build import describe_weights

    checked = {}
    try:
        checked["weights"] = describe_weights(cfg)
    except ConfigError as e:
        checked["weights_problem"] = str(e)
    try:
        device = resolve_device(cfg.runtime.device)
        check_dtype(device, cfg.runtime.dtype)
        checked["runs_on"] = (device, cfg.runtime.dtype)
    except UserError as e:
        checked["runs_on_problem"] = str(e)
    return checked


def _info_json(data: dict, cfg, preset: str | None, sets) -> None:
    """`o3d info --json`: what the tables say, as one JSON object on stdout ("o3d": the version;
    with settings, "settings": their parameter counts, weights and device, each problem as the text
    the tables give); exit code 2 as without --json."""
    import json
    import sys

    result = {"o3d": __version__, **data}
    failed = False
    if cfg is not None:
        from o3dcli.models.build import describe_parameters

        checked = _check_settings(cfg)
        if "runs_on" in checked:
            checked["runs_on"] = dict(zip(("device", "dtype"), checked["runs_on"]))
        failed = "weights" not in checked or "runs_on" not in checked
        result["settings"] = {"preset": preset, "set": list(sets or []), "parameters": describe_parameters(cfg),
                              **checked}
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    if failed:
        raise typer.Exit(2)


def _register_commands() -> None:
    # Command modules import only typer at module level; their work is imported lazily.
    # Registration order is the order `o3d --help` lists them in.
    from o3dcli.commands.cache import app as cache_app
    from o3dcli.commands.data import app as data_app
    from o3dcli.commands.eval import eval_cmd
    from o3dcli.commands.mesh import mesh
    from o3dcli.commands.render import render
    from o3dcli.commands.train import train_cmd

    app.command("mesh")(mesh)
    app.command("render")(render)
    app.command("eval")(eval_cmd)
    app.command("train")(train_cmd)
    app.add_typer(data_app, name="data")
    app.add_typer(cache_app, name="cache")
    app.add_typer(presets_app, name="presets")
    app.command("info")(info)


_register_commands()


def _writable_output() -> None:
    """Standard output that cannot encode every character (Windows' cp1252 when redirected to a
    file) escapes the others (\\u0141), as Python's standard error does, instead of stopping the
    command at the first path or name outside it."""
    import sys

    stream = sys.stdout
    if "utf" not in (getattr(stream, "encoding", None) or "utf-8").lower() and hasattr(stream, "reconfigure"):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (ValueError, OSError):  # a stream that cannot change its error handling keeps it
            pass


def main() -> None:
    _writable_output()
    try:
        app()
    except SystemExit as e:
        # An interrupt that no command caught (while it started: loading libraries, reading settings)
        # ends in typer's silent exit 130: say so, and give SIGTERM its own code.
        from o3dcli.console import console, interrupted_exit_code

        if e.code == 130 and isinstance(getattr(e.__context__, "__cause__", None), KeyboardInterrupt):
            console.print("[yellow]interrupted[/yellow]")
            raise SystemExit(interrupted_exit_code()) from None
        raise
    except (ImportError, OSError) as e:
        if problem := _torch_problem():  # a broken torch install, met before a command could check it
            from rich.markup import escape

            from o3dcli.console import console

            console.print(f"[red]error:[/red] {escape(problem)}", soft_wrap=True)
            raise SystemExit(2) from None
        raise e


def _torch_problem() -> str | None:
    """Why torch does not import, when it is installed and an import of it failed."""
    import importlib.util
    import sys

    if "torch" in sys.modules or importlib.util.find_spec("torch") is None:
        return None
    from o3dcli.native import torch_problem

    return torch_problem()  # imports torch again, and says how it fails


if __name__ == "__main__":
    main()
