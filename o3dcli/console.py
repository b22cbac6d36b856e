"""The one rich Console of the program and progress helpers.

Library code (stages) never prints; the CLI and the batch runner use these.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class _Console(Console):
    """A Console that, when its reader goes away (`o3d generate ... | head`, quitting `less`), goes
    quiet and lets the command finish: rich's default exits at once with code 1, which stopped a
    batch mid-way, unreported. The stream's descriptor is pointed at /dev/null so that nothing
    later (Python's own flush at exit) fails on it either."""

    def on_broken_pipe(self) -> None:
        import os

        self.quiet = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.file.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no descriptor (a test's buffer): quiet is enough
            pass


console = _Console(stderr=True, highlight=False)
"""Progress, log lines, per-item results and errors: stderr, so that stdout stays clean."""
out = _Console(highlight=False)
"""What a command is asked for (`o3d info`, `o3d presets`): stdout, to pipe or redirect."""
log = logging.getLogger("o3d")


_stopped_by: list[int] = []


def stop_on_sigterm():
    """Make SIGTERM (kill, timeout, docker stop, job schedulers) stop a command the way Ctrl-C
    does: finished work is kept and reported, and the exit code says which (see
    `interrupted_exit_code`). `o3d train` puts its own handler in place while it trains.
    Returns a function that puts the previous handler back."""
    import signal
    import threading

    _stopped_by.clear()
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum, frame):
        _stopped_by.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_term:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return restore


NATIVE_LIBRARIES = frozenset({
    "torch", "numpy", "scipy", "open3d", "pymeshlab", "trimesh", "xatlas", "diffusers", "transformers",
    "gsplat", "PIL", "pillow_heif", "rembg", "onnxruntime", "pxr", "DracoPy", "imageio", "imageio_ffmpeg",
    "safetensors", "lpips"})
"""Libraries whose first import takes seconds and is no place for an interrupt: a KeyboardInterrupt
raised inside it can leave the library half set up (open3d's module init turns it into "ImportError:
initialization failed", and every later use fails) or be swallowed by a broad `except` there (so
Ctrl-C is lost)."""


def hold_interrupts_in_imports():
    """While a library of NATIVE_LIBRARIES is first imported, hold Ctrl-C and SIGTERM and act on
    them once it is loaded (a second or two later). Returns a function that undoes it."""
    import builtins
    import sys
    import threading

    original = builtins.__import__
    busy = []

    def loaded(name, fromlist) -> bool:
        """Whether importing `name` (and the names `from name import ...` takes) loads nothing new:
        a submodule in `fromlist` not yet loaded (`from scipy import ndimage`), or a lazy package's
        attribute not yet made (`from diffusers import UNet...`), is loaded by this import."""
        module = sys.modules.get(name)
        if module is None:
            return False
        return all(item == "*" or f"{name}.{item}" in sys.modules or item in vars(module) for item in fromlist or ())

    def guarded(name, globals=None, locals=None, fromlist=(), level=0):
        if level or busy or name.partition(".")[0] not in NATIVE_LIBRARIES or loaded(name, fromlist) \
                or threading.current_thread() is not threading.main_thread():  # signals reach the main thread
            return original(name, globals, locals, fromlist, level)
        from o3dcli.publish import signals_deferred

        busy.append(name)
        try:
            with signals_deferred():
                return original(name, globals, locals, fromlist, level)
        finally:
            busy.pop()

    builtins.__import__ = guarded

    def restore() -> None:
        if builtins.__import__ is guarded:
            builtins.__import__ = original

    return restore


def interrupted_exit_code() -> int:
    """The exit code of a command stopped by an interrupt: 143 after SIGTERM, 130 after Ctrl-C
    (the shell's 128 + the signal's number)."""
    return 128 + _stopped_by[-1] if _stopped_by else 130


def keep_logging_state():
    """Snapshot the `o3d` logger (level, handlers, propagation) that `setup_logging` changes.
    Returns a function that puts it back, so a command run from Python (a script, a notebook, a
    test) leaves the caller's logging as it found it."""
    saved = log.level, list(log.handlers), log.propagate

    def restore() -> None:
        log.setLevel(saved[0])
        log.handlers[:] = saved[1]
        log.propagate = saved[2]

    return restore


def warn_once(message: str, said: set[str]) -> None:
    """Log `message` as a warning unless it is in `said` (the caller's record: per process, or
    cleared per input), then record it."""
    if message not in said:
        said.add(message)
        log.warning("%s", message)


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
