"""The one rich Console of the program and progress helpers.

Library code (stages) never prints; the CLI and the batch runner use these.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True, highlight=False)
"""Progress, log lines, per-item results and errors: stderr, so that stdout stays clean."""
out = Console(highlight=False)
"""What a command is asked for (`o3d info`, `o3d presets`): stdout, to pipe or redirect."""
log = logging.getLogger("o3d")


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    log.setLevel(level)
    if not any(isinstance(h, RichHandler) for h in log.handlers):
        handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.propagate = False


def batch_progress(disable: bool = False) -> Progress:
    """Progress display with a batch bar and a line for the current item's stage."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stage]}"),
        console=console,
        disable=disable,
        transient=False,
    )
