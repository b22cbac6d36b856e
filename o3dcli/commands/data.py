"""`o3d data ...`: make datasets of rendered objects (format: o3dcli.synth.dataset)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from o3dcli.commands import path_param

app = typer.Typer(
    help="Make datasets: procedural objects rendered into o3d's rendered-object folder format.",
    no_args_is_help=True,
)


class Shading(str, Enum):
    lambert = "lambert"
    unlit = "unlit"


@app.command("synth")
def synth(
    n: int = typer.Option(..., "-n", "--num", min=1, max=1_000_000, help="Number of objects (seeds SEED .. SEED+N-1)."),
    output: Path = typer.Option(..., "--output", "-o", parser=path_param, metavar="<path>", help="Dataset folder (created; re-running resumes)."),
    seed: int = typer.Option(0, "--seed", min=0, help="First seed; object i uses seed SEED+i."),
    size: int = typer.Option(128, "--size", min=8, max=2048, help="Image side in pixels (2x supersampled: 2048 px takes about 2 GB of memory per worker)."),
    extra_views: int = typer.Option(4, "--extra-views", min=0, max=120, help="Random views per object after the 8 generation views."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes."),
    shading: Shading = typer.Option(Shading.lambert, "--shading", help="lambert: headlight + ambient; unlit: base colour."),
):
    """Render N procedural objects (1-4 textured primitives each) into OUTPUT.

    Each object gets OUTPUT/synth_<seed, 8 digits>/ (synth_00000000, ...) with RGBA views, cameras.json, the ground-truth mesh (OBJ) and spec.json; OUTPUT/index.json lists them. Complete objects are skipped, so an interrupted run continues where it stopped.

    Exit code: 0 = done, 1 = failed (a full disk), 2 = usage error, 130 = interrupted (Ctrl-C; 143 = SIGTERM).
    """
    from o3dcli.cli import require_file_locks

    require_file_locks("data synth")

    import time

    from rich.markup import escape

    from o3dcli.console import batch_progress, console, interrupted_exit_code
    from o3dcli.synth.generate import synthesize

    from o3dcli.errors import UserError, disk_full
    from o3dcli.inputs import check_output_dir

    try:
        check_output_dir(output)
        _check_not_foreign(output)
    except UserError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    from o3dcli.eval.benchmarks import SYNTHETIC_FIRST_SEED

    if seed + n > SYNTHETIC_FIRST_SEED:
        first = max(seed, SYNTHETIC_FIRST_SEED)
        seeds = f"seed {first:,} is one of" if first == seed + n - 1 else f"seeds {first:,}-{seed + n - 1:,} are"
        console.print(f"[yellow]warning[/yellow]: {seeds} the synthetic benchmark's "
                      "objects (o3d eval --benchmark synthetic scores models on seeds from 1,000,000 on): keep them "
                      "out of training data (o3d train warns about them too)", soft_wrap=True)
    counts = {"made": 0, "skipped": 0, "seconds": 0.0}
    start = time.perf_counter()
    with batch_progress() as progress:
        task = progress.add_task("synth", total=n, stage="")

        def on_object(folder: Path, skipped: bool, seconds: float) -> None:
            counts["skipped" if skipped else "made"] += 1
            counts["seconds"] += seconds
            progress.update(task, advance=1, stage=f"{'skipped' if skipped else 'made'} {folder.name}")

        try:
            synthesize(output, n, seed, size=size, extra_views=extra_views, workers=workers,
                       shading=shading.value, on_object=on_object)
        except ValueError as e:
            counts["error"] = str(e)
            progress.remove_task(task)  # no bar left standing at 0 above the error
        except OSError as e:  # a full disk, say: the complete objects are kept, the half-written one is not
            counts["failed"] = f"cannot write in {output}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
            counts["full"] = disk_full(e)
        except KeyboardInterrupt:
            counts["interrupted"] = True
    if counts.get("error"):
        console.print(f"[red]error:[/red] {escape(counts['error'])}", soft_wrap=True)
        raise typer.Exit(2)
    if counts.get("failed"):
        advice = "free some space and run the same command again" if counts["full"] else "run the same command again"
        console.print(f"[red]error:[/red] {escape(counts['failed'])}; {counts['made']} objects made this time, complete "
                      f"ones are kept: {advice}", soft_wrap=True)
        raise typer.Exit(1)
    if counts.get("interrupted"):
        console.print(f"[yellow]interrupted[/yellow]: {counts['made']} objects made this time; complete ones "
                      "are kept, run the same command again to make the rest")
        raise typer.Exit(interrupted_exit_code())
    wall = time.perf_counter() - start
    per = f", {counts['seconds'] / counts['made']:.2f} s/object" if counts["made"] else ""
    console.print(f"[green]✓[/green] {counts['made']} made, {counts['skipped']} already complete in "
                  f"{escape(str(output))} ({wall:.1f} s{per})")


def _check_not_foreign(output: Path) -> None:
    """Raise UserError for an existing folder that holds files of other kinds and is no dataset
    (no index.json): a folder of photos, an o3d generate output. Its objects would be written in
    among them; a new or empty folder, or a dataset to add to, is what the command takes."""
    from o3dcli.errors import UserError

    if not output.is_dir() or (output / "index.json").exists():
        return
    other = sorted(p.name for p in output.iterdir() if not p.name.startswith((".", "synth_")))
    if other:
        shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
        raise UserError(f"{output}: holds other files ({shown}) and is not a dataset o3d data synth made (no "
                        "index.json): give a new or empty folder, or a dataset to add objects to")
