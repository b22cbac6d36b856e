"""`o3d train`: joint training of the denoiser and the reconstructor, resumable."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import List, Optional

import typer

from o3dcli.commands import path_param

SKIPS_SHOWN = 10
"""Unusable training objects named one by one; the rest are counted."""
EXIT_UNFINISHED = 3
"""`o3d train`'s exit code when --time-limit stopped the run before its last step."""

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """'90m', '2h', '1h30m', '45s', '1.5h' -> seconds (> 0). ValueError with the reason otherwise."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or m is None or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration; write it with units, e.g. 45s, 90m, 2h, 1h30m")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    seconds = 3600 * h + 60 * mi + s
    if seconds <= 0:
        raise ValueError(f"{text!r}: the time limit must be positive")
    return seconds


def changed_settings(old, new) -> list[tuple[str, str, str]]:
    """(key, old value, new value) of every setting that differs between two configs, but
    train.steps: the run's total, which a resume is expected to change."""
    from o3dcli.config_view import describe

    before = {key: value for key, value, _, _ in describe(old)}
    return [(key, before.get(key, "(unset)"), value) for key, value, _, _ in describe(new)
            if key != "train.steps" and before.get(key) != value]


RUN_DATA = "data.json"
"""What a run folder's last start trained on: the data folder, --limit and the usable objects' count."""


def record_run_data(path: Path, data: Path, limit, objects: int, resumed: bool) -> list[tuple[str, object, object]]:
    """Write what this start trains on to `path`; on a resumed run, return what changed since the
    last start ([(what, before, now)]): the data is not part of config.yaml, and a resume on another
    folder (or --limit) would otherwise go unsaid. An unreadable earlier record is replaced."""
    import json

    from o3dcli.atomic import atomic_write_text

    now = {"data": str(Path(data).resolve()), "limit": limit, "objects": objects}
    before = None
    if resumed:
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError):
            before = None
    atomic_write_text(path, json.dumps(now, indent=1) + "\n")
    if not isinstance(before, dict):
        return []
    return [(k, before.get(k), now[k]) for k in now if before.get(k) != now[k]]


RUN_HISTORY = "starts.jsonl"
"""A run folder's history: a JSON line per start (time, step, o3d version, device, the settings and
data changed since the start before), where config.yaml and data.json hold only the latest."""


def record_start(path: Path, step: int, device: str, changed: list, data_changes: list) -> None:
    """Append this start's line to the run's RUN_HISTORY (see there)."""
    import datetime
    import json

    from o3dcli import __version__

    line = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "step": step,
            "o3d": __version__, "device": device,
            "settings_changed": {k: [a, b] for k, a, b in changed},
            "data_changed": {k: [a, b] for k, a, b in data_changes}}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def saved_settings_changes(saved: Path, cfg) -> list[tuple[str, str, str]]:
    """The settings changed since a run's config.yaml (`changed_settings`); UserError, in one line,
    when the file cannot be read (an empty one included) or holds another model architecture."""
    import yaml

    from o3dcli.config import ConfigError, dump_config, load_config
    from o3dcli.errors import UserError

    try:
        text = saved.read_text()
    except (OSError, UnicodeDecodeError) as e:
        problem = getattr(e, "strerror", None) or str(e)
    else:
        if text == dump_config(cfg):
            return []
        problem = "the file is empty" if not text.strip() else None
    if problem is None:
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = f"not valid YAML: {getattr(e, 'problem', None) or e}{where}"
    if problem is None:
        try:
            old = load_config(saved)
        except ConfigError as e:
            problem = " ".join(str(e).split())
    if problem is not None:
        raise UserError(f"{saved}: the run's settings cannot be read ({problem}); use a new --output")
    # read as a preset, a run's config.yaml names the run's own weights; it recorded train.init there
    old = dataclasses.replace(old, model=dataclasses.replace(old.model, weights=old.train.init))
    if (old.denoiser, old.recon, old.model.codec) != (cfg.denoiser, cfg.recon, cfg.model.codec):
        from o3dcli.models.build import model_differences

        differ = model_differences(old, cfg)
        shown = "; ".join(f"{k}: the run {a}, now {b}" for k, a, b in differ[:4]) + ("; ..." if len(differ) > 4 else "")
        raise UserError(f"{saved.parent} holds a run with another model architecture ({shown}); resume it with "
                        f"its own settings (--preset {saved}), or use a new --output")
    return changed_settings(old, cfg)


def train_cmd(
    data: Path = typer.Option(..., "--data", "-d", parser=path_param, metavar="<path>", help="Folder of rendered objects (o3d data synth, or Objaverse-style renders with meta.json)."),
    output: Path = typer.Option(..., "--output", "-o", parser=path_param, metavar="<path>", help="Run folder: checkpoint.pt, model.safetensors (EMA weights), losses.csv, config.yaml, data.json (the data it trains on)."),
    preset: str = typer.Option("tiny", "--preset", "-p", help="Preset name or YAML path."),
    sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="Override a config field (repeatable).", metavar="SECTION.KEY=VALUE"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Shortcut for --set train.steps=N (total steps of the run)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Shortcut for --set runtime.seed=N."),
    device: Optional[str] = typer.Option(None, "--device", help="Shortcut for --set runtime.device=DEV (auto, cpu, cuda, cuda:1, ..., mps)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N usable objects of the data folder."),
    time_limit: Optional[str] = typer.Option(None, "--time-limit", metavar="DURATION",
                                             help="Stop once this much wall time has passed (e.g. 90m, 2h, 1h30m; checked between "
                                                  "steps, after at least one step), saving a checkpoint; run the same command "
                                                  "again to continue."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
):
    """Train (or resume training) a model on rendered objects.

    Run it again with the same --output to continue from the last checkpoint; Ctrl-C saves a checkpoint before stopping. One o3d train at a time writes into an --output folder: a second one is refused. Works unchanged under torchrun.

    Exit code: 0 = the run has all its steps, 3 = --time-limit stopped it first (checkpoint saved; run the same command again), 130 = Ctrl-C (143 = SIGTERM) stopped it (checkpoint saved once training had started), 1 = error, 2 = usage error.
    """
    from o3dcli.cli import require_file_locks

    require_file_locks("train")

    import time

    import torch

    from o3dcli.cli import _load_config, _usage_error
    from o3dcli.config import ConfigError
    from o3dcli.device import check_dtype, resolve_device
    from o3dcli.errors import UserError
    from o3dcli.models.build import check_local_files, resolve_weights
    from o3dcli.train.lock import RunLock
    from o3dcli.train.trainer import CHECKPOINT

    started = time.monotonic()  # the limit counts data loading too: it is the job's wall time
    limit_s = None
    if time_limit is not None:
        try:
            limit_s = parse_duration(time_limit)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--time-limit") from None
    extra = [f"train.steps={steps}"] if steps is not None else []
    extra += [f"runtime.seed={seed}"] if seed is not None else []
    extra += [f"runtime.device={device}"] if device is not None else []
    cfg = _load_config(preset, sets, extra)
    # A run starts from train.init (default: from scratch), never silently from the preset's
    # shipped weights; the run's config.yaml records what it started from.
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=cfg.train.init))
    try:
        if not (output / CHECKPOINT).is_file():  # a resumed run takes its weights from its checkpoint
            resolve_weights(cfg.train.init, field="train.init")  # named as the user set it, before anything is written
        check_local_files(cfg)  # the VAE, the CLIP encoder, released checkpoints: before any data is loaded
        dev = resolve_device(cfg.runtime.device)
        check_dtype(dev, cfg.runtime.dtype)  # the run's config.yaml is a preset: one generate would refuse
    except (UserError, ConfigError) as e:
        raise _usage_error(str(e)) from None
    if cfg.runtime.dtype != "float32" and int(os.environ.get("RANK", 0)) == 0:
        from o3dcli.console import console

        console.print(f"note: training runs in float32; runtime.dtype={cfg.runtime.dtype} is kept in the run's "
                      "config.yaml for sampling with it (o3d generate --preset RUN)", soft_wrap=True)
    rank_dev, note = rank_device(dev, os.environ)
    if rank_dev != dev:
        if note and int(os.environ.get("RANK", 0)) == 0:
            from o3dcli.console import console

            console.print(f"[yellow]warning[/yellow]: {note}", soft_wrap=True)
        dev = rank_dev
        torch.cuda.set_device(dev)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    from o3dcli.inputs import check_output_dir

    try:
        check_output_dir(output)
    except UserError as e:
        raise _usage_error(str(e)) from None
    if data.is_dir() and (output.resolve() == data.resolve() or data.resolve() in output.resolve().parents):
        raise _usage_error(f"-o {output} is the data folder {data} or inside it: a run's files would sit among "
                           "the training objects; give a run folder elsewhere")
    # One o3d train at a time per run folder (torchrun: rank 0 holds it for every rank). An existing
    # folder is locked now, so a second run is refused at once; a new one just before it is written.
    with RunLock(output, enabled=int(os.environ.get("RANK", 0)) == 0) as run_lock:
        _train_locked(run_lock, cfg, dev, data, output, limit, no_progress, time_limit, started, limit_s)


def finished_step(output: Path, steps: int) -> int | None:
    """The step of the run in `output` when it already has `steps` steps and its checkpoint and EMA
    weights are at the same step; None otherwise (the trainer then resumes it, repairing or
    reporting what is wrong)."""
    from o3dcli.models.checkpoints import load_torch_file, read_metadata
    from o3dcli.train.trainer import CHECKPOINT, EMA_WEIGHTS

    if not (output / CHECKPOINT).is_file():
        return None
    try:  # memory-mapped: the step is read, not the weights and optimiser state
        step = int(load_torch_file(output / CHECKPOINT, mmap=True)["step"])
        weights_step = read_metadata(output / EMA_WEIGHTS).get("step")
    except Exception:  # a damaged file: the trainer says what is wrong with it
        return None
    return step if step >= steps and weights_step == str(step) else None


def _nothing_to_do(output: Path, done: int, steps: int) -> str:
    from rich.markup import escape

    return f"{escape(str(output))} already has {done} steps (>= {steps}); nothing to do (give a larger --steps to train on)"


def rank_device(dev: str, env) -> tuple[str, str | None]:
    """The device of this process under torchrun (WORLD_SIZE > 1): CUDA runs one GPU per process,
    cuda:LOCAL_RANK, whatever CUDA device was asked for (with a note when one was: every rank on
    that one GPU fails at its first collective). Else `dev` as it is. (device, note or None)."""
    if int(env.get("WORLD_SIZE", 1)) <= 1 or not dev.startswith("cuda"):
        return dev, None
    own = f"cuda:{int(env.get('LOCAL_RANK', 0))}"
    note = None if dev in ("cuda", own) else (f"--device {dev} under torchrun: each process trains on its own GPU, "
                                               "cuda:LOCAL_RANK (choose the GPUs with CUDA_VISIBLE_DEVICES)")
    return own, note


def _train_locked(run_lock, cfg, dev, data, output, limit, no_progress, time_limit, started, limit_s):
    """The rest of `train_cmd`, the run folder's lock in hand (`run_lock.take()` locks it)."""
    import signal
    import time

    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from o3dcli.cli import _usage_error
    from o3dcli.config import ConfigError, started_run
    from o3dcli.console import console, interrupted_exit_code
    from o3dcli.errors import UserError, disk_full
    from o3dcli.train.data import DatasetError, load_dataset
    from o3dcli.train.lock import RunInUse
    from o3dcli.train.trainer import CHECKPOINT, EMA_WEIGHTS, RUN_CONFIG, NonFiniteLoss, Trainer, train

    saved = output / RUN_CONFIG
    checked = False
    changed = []

    def lock_and_check() -> None:
        nonlocal checked, changed
        try:
            run_lock.take()
            if saved.is_file() and not checked:
                if not started_run(output):
                    raise UserError(f"{output} holds a {RUN_CONFIG} that is not an o3d train run's (a preset, or the "
                                    "settings of an asset), which training would replace; give another --output")
                checked = True
                changed = saved_settings_changes(saved, cfg)
                modules = next(((a, b) for k, a, b in changed if k == "train.modules"), None)
                # "denoiser" freezes the reconstructor: its optimiser state fits no other mode's (all and
                # recon train the same parameters, and a run may go from one to the other)
                if modules and "denoiser" in modules and (output / CHECKPOINT).is_file() \
                        and finished_step(output, cfg.train.steps) is None:
                    raise UserError(f"{output} trains train.modules={modules[0]}; a run cannot change to or from "
                                    f"train.modules=denoiser, which trains other parameters. To go on from its "
                                    f"weights training {modules[1]}, give a new --output and "
                                    f"--set train.init={output / EMA_WEIGHTS}")
        except (RunInUse, UserError) as e:
            raise _usage_error(str(e)) from None

    if output.is_dir():
        lock_and_check()
        done = finished_step(output, cfg.train.steps)
        if done is not None:  # said before the training data is loaded (minutes, for a large set)
            if os.environ.get("RANK", "0") == "0":
                console.print(_nothing_to_do(output, done, cfg.train.steps), soft_wrap=True)
                if changed:
                    console.print(f"settings changed since the run's {escape(str(saved))}, not applied: "
                                  + "; ".join(f"{k} {escape(a)} -> {escape(b)}" for k, a, b in changed), soft_wrap=True)
            raise typer.Exit(0)
    skipped = []

    def on_skip(folder, message):
        skipped.append(folder)
        if len(skipped) <= SKIPS_SHOWN and os.environ.get("RANK", "0") == "0":  # torchrun: one rank reports
            console.print(f"[yellow]skipped[/yellow] {escape(message)}", soft_wrap=True)

    notes = []

    def on_note(message):
        notes.append(message)
        if len(notes) <= SKIPS_SHOWN and os.environ.get("RANK", "0") == "0":
            console.print(f"note: {escape(message)}", soft_wrap=True)

    try:
        with console.status("loading training data"):
            objects = load_dataset(data, cfg, limit=limit, on_skip=on_skip, on_note=on_note)
    except DatasetError as e:
        raise _usage_error(str(e)) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow] while loading the training data; nothing to save")
        raise typer.Exit(interrupted_exit_code()) from None
    from o3dcli.models.checkpoints import CheckpointError

    lock_and_check()  # a new run folder: locked before the trainer makes it
    try:
        trainer = Trainer(cfg, objects, output, dev)
        resumed = trainer.load()
    except (CheckpointError, ConfigError) as e:  # a damaged checkpoint.pt, train.init weights that do not fit
        raise _usage_error(str(e)) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow] before training started; nothing to save")
        raise typer.Exit(interrupted_exit_code()) from None
    say = console.print if trainer.rank == 0 else (lambda *a, **k: None)  # torchrun: one voice
    if trainer.repaired_weights:
        say(f"{escape(str(output / 'model.safetensors'))} {trainer.repaired_weights}, not at the checkpoint's step "
            f"{trainer.step_count} (a save was cut short): rewritten from the checkpoint's EMA weights", soft_wrap=True)
    if resumed and trainer.step_count >= cfg.train.steps:  # nothing to train: the run's files stay as they are
        say(_nothing_to_do(output, trainer.step_count, cfg.train.steps), soft_wrap=True)
        raise typer.Exit(0)
    if skipped:
        shown = "the reasons are above" if len(skipped) <= SKIPS_SHOWN else f"the first {SKIPS_SHOWN} reasons are above"
        say(f"[yellow]{len(skipped)} object folder(s) skipped[/yellow] ({shown}); "
            f"training on the {len(objects)} usable one{'s' if len(objects) != 1 else ''}", soft_wrap=True)
    from o3dcli.synth.dataset import benchmark_objects

    seen = benchmark_objects(o.name for o in objects)
    if seen:
        say(f"[yellow]warning[/yellow]: {len(seen)} of {len(objects)} objects ({escape(', '.join(seen[:3]))}"
            f"{', ...' if len(seen) > 3 else ''}) are the synthetic benchmark's (seeds from 1,000,000 on): "
            "o3d eval --benchmark synthetic would score this model on objects it trained on; make training "
            "data with seeds below 1,000,000", soft_wrap=True)
    small = [o.render_size for o in objects if o.render_size < cfg.preprocess.size]
    if small:
        say(f"[yellow]{len(small)} of {len(objects)} objects have renders smaller than the model's resolution[/yellow] "
            f"({min(small)} px, preprocess.size is {cfg.preprocess.size}): they are upsampled, so the model learns "
            f"from blurred views; render them at {cfg.preprocess.size} px or more (o3d data synth --size)", soft_wrap=True)
    meshless = sum(o.points is None for o in objects)
    if meshless:
        say(f"{meshless} of {len(objects)} objects have no ground-truth mesh: the reconstructor learns from "
            "their images only, without the per-pixel surface-point loss", soft_wrap=True)
    say(f"o3d train: {len(objects)} object{'s' if len(objects) != 1 else ''} from {escape(str(data))} -> {escape(str(output))}; "
        + (f"resuming at step {trainer.step_count}" if resumed else "starting at step 0")
        + f" of {cfg.train.steps} (device {dev})", soft_wrap=True)
    if changed:
        seeded = " (runtime.seed changes nothing in a resumed run: its random state is the checkpoint's)" \
            if resumed and any(k == "runtime.seed" for k, _, _ in changed) else ""
        say(f"settings changed since the run's {escape(str(saved))}: "
            + "; ".join(f"{k} {escape(a)} -> {escape(b)}" for k, a, b in changed) + seeded
            + f"; each start's changes are kept in {escape(str(output / RUN_HISTORY))}", soft_wrap=True)
    if trainer.rank == 0:
        written = output / RUN_DATA
        try:
            data_changes = record_run_data(written, data, limit, len(objects), resumed)
            written = output / RUN_HISTORY
            record_start(written, trainer.step_count, str(dev), changed, data_changes)
        except OSError as e:  # a full disk at start-up: said before any training
            console.print(f"[red]error[/red]: cannot write {escape(str(written))}: {escape(e.strerror or str(e))}",
                          soft_wrap=True)
            raise typer.Exit(1) from None
        if data_changes:
            say(f"training data changed since this run's last start ({escape(str(output / RUN_DATA))}): "
                + "; ".join(f"{k} {escape(str(a))} -> {escape(str(b))}" for k, a, b in data_changes), soft_wrap=True)
    if trainer.new_parameters and not resumed:
        names = sorted({".".join(n.split(".")[:3]) for n in trainer.new_parameters})
        say(f"{escape(cfg.train.init)} lacks {len(trainer.new_parameters)} tensors of this model; "
            f"they start from the seeded init: {escape(', '.join(names))}", soft_wrap=True)
    stop = {"flag": False, "timed_out": False, "signal": 0}
    deadline = None if limit_s is None else started + limit_s
    first_step = trainer.step_count

    def should_stop() -> bool:
        # at least one step per run, however short the limit: a limit shorter than start-up (data
        # loading, a busy machine) must not make a job resubmitted on exit 3 loop without progress
        if (deadline is not None and not stop["flag"] and trainer.step_count > first_step
                and time.monotonic() >= deadline):
            stop["timed_out"] = True
        return stop["flag"] or stop["timed_out"]

    def on_signal(signum, frame):
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        stop["signal"] = signum
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
        say(f"stopping after this step; saving a checkpoint ({again} to abort without saving)")

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                      TimeRemainingColumn(), console=console, disable=no_progress or trainer.rank != 0) as prog:
            task = prog.add_task("train", total=cfg.train.steps, completed=trainer.step_count, info="")

            def on_step(step, parts, dt):
                info = (f"loss {parts.loss:.4f} diff {parts.diffusion:.4f} "
                        f"rec {parts.recon_gt:.4f}/{parts.recon_pred:.4f} {dt:.2f}s/step")
                prog.update(task, completed=step, info=info)
                if no_progress and step % cfg.train.checkpoint_every == 0:  # a line per checkpoint for logs
                    say(f"step {step}/{cfg.train.steps}: {info} (this step's; losses.csv holds means); checkpoint saved")

            done = train(trainer, cfg.train.steps, on_step, should_stop=should_stop)
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, without saving
        where = (f"the last checkpoint is in {escape(str(output))}" if (output / "checkpoint.pt").is_file()
                 else "no checkpoint had been saved yet: the next run starts at step 0")
        say(f"[yellow]aborted[/yellow] without saving; {where}", soft_wrap=True)
        raise typer.Exit(interrupted_exit_code()) from None
    except NonFiniteLoss as e:  # a bad object, a learning rate too high: never saved over a good checkpoint
        step = trainer.saved_step
        kept = (f"the checkpoint in {output / CHECKPOINT} (step {step}) is unchanged" if step is not None
                else "no checkpoint had been saved yet")
        say(f"[red]error[/red]: {escape(str(e))}. Training stopped before the step changed the weights; "
            f"{escape(kept)}. Look for extreme values in those objects' renders and cameras and take them out of "
            "the data, or lower the learning rate (--set train.lr=...), then run again to continue from there",
            soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as e:  # a full disk while saving: said plainly; what was saved before stays
        if not (isinstance(e, OSError) or disk_full(e)):
            raise
        what = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        name = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
        kept = (f"the last complete checkpoint is in {output / 'checkpoint.pt'}" if (output / "checkpoint.pt").is_file()
                else "no checkpoint had been saved yet")
        advice = "free some space (or give another -o) and run" if disk_full(e) else "run"
        console.print(f"[red]error[/red]: cannot write the run in {escape(str(output))}: {escape(what)}{escape(name)}; "
                      f"{escape(kept)}; {advice} the same command again", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    if done < cfg.train.steps:  # under torchrun every rank reports the signal one of them got
        stop["signal"] = trainer.max_rank(int(stop["signal"]))
        stop["flag"] = stop["signal"] > 0
    if done < cfg.train.steps and stop["timed_out"] and not stop["flag"]:
        say(f"time limit {escape(time_limit)} reached; run the same command again to continue from step {done}")
    elif done < cfg.train.steps:
        say(f"interrupted; run the same command again to continue from step {done}")
    say(f"step {done}/{cfg.train.steps}; checkpoint {escape(str(output / 'checkpoint.pt'))}, "
        f"EMA weights {escape(str(output / 'model.safetensors'))}", soft_wrap=True)
    # scripts chaining runs must not go on from an unfinished one: 0 only when it has every step
    if done >= cfg.train.steps:
        raise typer.Exit(0)
    raise typer.Exit(128 + int(stop["signal"]) if stop["flag"] else EXIT_UNFINISHED)
