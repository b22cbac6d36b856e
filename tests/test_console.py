"""The console and logging set-up of the `o3d` commands, seen from a Python caller."""

from __future__ import annotations

import logging

import pytest

from typer.testing import CliRunner

from o3dcli.cli import app


def test_a_command_run_from_python_leaves_the_o3d_logger_as_it_found_it(tmp_path, monkeypatch, caplog):
    log = logging.getLogger("o3d")
    mine = logging.NullHandler()
    monkeypatch.setattr(log, "handlers", [mine])
    monkeypatch.setattr(log, "propagate", True)
    monkeypatch.setattr(log, "level", logging.NOTSET)
    # `o3d mesh` sets up its rich log handler before it finds the input missing (exit 2)
    res = CliRunner().invoke(app, ["mesh", str(tmp_path / "missing.ply"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert log.handlers == [mine] and log.propagate is True and log.level == logging.NOTSET
    with caplog.at_level(logging.WARNING):
        logging.getLogger("o3d.caller").warning("a warning after the command")
    assert "a warning after the command" in caplog.text


def test_commands_that_lock_files_say_so_on_a_system_without_fcntl(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError, as on Windows
    res = CliRunner().invoke(app, ["generate", str(tmp_path), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "o3d generate needs POSIX file locks (fcntl)" in res.output and "WSL" in res.output
    assert not (tmp_path / "out").exists()
    for name, args in (("mesh", [str(tmp_path)]), ("eval", ["--benchmark", "synthetic"]),
                       ("train", ["--data", str(tmp_path)]), ("data synth", ["-n", "1"])):
        res = CliRunner().invoke(app, [*name.split(), *args, "-o", str(tmp_path / "out")])
        assert res.exit_code == 2 and f"o3d {name} needs POSIX file locks" in res.output, (name, res.output)
    assert not (tmp_path / "out").exists()
    # what takes no lock still works, and so does every command's --help
    assert CliRunner().invoke(app, ["presets", "list"]).exit_code == 0
    for command in (["generate"], ["mesh"], ["eval"], ["train"], ["data", "synth"]):
        res = CliRunner().invoke(app, [*command, "--help"])
        assert res.exit_code == 0 and "Usage:" in res.output, (command, res.output)


def test_openmp_threads_spin_briefly_unless_the_user_chose(monkeypatch):
    import os

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert CliRunner().invoke(app, ["presets", "list"]).exit_code == 0
    assert os.environ.get("GOMP_SPINCOUNT") == "1000"
    monkeypatch.setenv("GOMP_SPINCOUNT", "50000")
    assert CliRunner().invoke(app, ["presets", "list"]).exit_code == 0
    assert os.environ["GOMP_SPINCOUNT"] == "50000"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert CliRunner().invoke(app, ["presets", "list"]).exit_code == 0
    assert "GOMP_SPINCOUNT" not in os.environ


@pytest.mark.parametrize("command", ["generate", "mesh", "render", "eval", "train"])
def test_flags_show_no_value_type_in_help(command, monkeypatch):
    # `--force <bool>` read as an option taking true/false (`--force true` took "true" for an input)
    monkeypatch.setenv("COLUMNS", "200")
    res = CliRunner().invoke(app, [command, "--help"])
    assert res.exit_code == 0
    assert "<bool>" not in res.output and "--help" in res.output
    assert "<int>" in res.output or "<str>" in res.output or "<path>" in res.output  # other options keep theirs


@pytest.mark.parametrize("command, names", [
    (["generate"], ["IMAGE"]), (["mesh"], ["INPUT"]), (["render"], ["INPUT"]),
    (["presets", "show"], ["PRESET", "KEY"]), (["cache", "prune"], ["OUTPUT"])])
def test_usage_lines_name_the_arguments_in_capitals(command, names, monkeypatch):
    # they read "[inputs]..." and "{inputs}..." (typer takes a parameter's own name); how the names
    # are dressed depends on typer's version ("[IMAGE]...", "{INPUT}..." in 0.2x; "IMAGE" before)
    monkeypatch.setenv("COLUMNS", "200")
    res = CliRunner().invoke(app, [*command, "--help"])
    line = next(line for line in res.output.splitlines() if "Usage:" in line)
    words = [w.strip("[]{}.") for w in line.split("[OPTIONS]", 1)[1].split()]
    assert words == names, line


@pytest.mark.parametrize("command", [["generate"], ["mesh"], ["render"], ["eval"], ["train"], ["info"],
                                     ["data", "synth"], ["cache", "prune"], ["presets", "show"]])
def test_no_help_text_is_cut_short_at_80_columns(command, monkeypatch):
    # rich cuts a word longer than its column with "…": "--dtype ... float32|floa…"
    monkeypatch.setenv("COLUMNS", "80")
    res = CliRunner().invoke(app, [*command, "--help"])
    assert res.exit_code == 0 and "--help" in res.output
    assert "…" not in res.output, [line for line in res.output.splitlines() if "…" in line]


_SWALLOWING_LIBRARY = """
import os, signal, time
try:  # interrupted while it loads, and its broad except swallows it (as some libraries' imports do)
    os.kill(os.getpid(), signal.{sig})
    time.sleep(0.5)
except BaseException:
    pass
LOADED = True
"""


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
@pytest.mark.parametrize("how", ["import swallow.heavy", "import swallow; from swallow import heavy"])
def test_an_interrupt_while_a_library_loads_is_acted_on_once_it_has_loaded(tmp_path, sig, code, how):
    # Ctrl-C or SIGTERM while torch or open3d loads was lost (a library swallowed it) or left the
    # library broken; now it waits for the import, then stops the command with its exit code. A
    # submodule first loaded by `from package import submodule` (scipy's ndimage) counts too.
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "swallow").mkdir()
    (tmp_path / "swallow" / "__init__.py").write_text("")
    (tmp_path / "swallow" / "heavy.py").write_text(_SWALLOWING_LIBRARY.format(sig=sig))
    script = (
        "import signal, sys\n"
        # Ctrl-C as in a terminal: started in the background by a script (`cmd &`), the test run
        # and its children inherit SIGINT ignored, and an ignored Ctrl-C rightly stops nothing
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from o3dcli import cli, console, sysinfo\n"
        "console.NATIVE_LIBRARIES = getattr(console, 'NATIVE_LIBRARIES', frozenset()) | {'swallow'}\n"
        "def collect():\n"
        f"    {how}\n"
        "    print('not interrupted', flush=True)\n"
        "    return {}\n"
        "sysinfo.collect_info = collect\n"
        "sys.argv = ['o3d', 'info']\n"
        "try:\n"
        "    cli.main()\n"
        "finally:\n"
        "    print('loaded' if getattr(sys.modules.get('swallow.heavy'), 'LOADED', False) else 'not loaded', flush=True)\n")
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{Path(__file__).parents[1]}"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == code, (res.stdout, res.stderr)
    assert "not interrupted" not in res.stdout and res.stdout.strip().endswith("loaded") and "not loaded" not in res.stdout
    assert "interrupted" in res.stderr + res.stdout


def test_output_redirected_in_a_legacy_code_page_escapes_what_it_cannot_encode(tmp_path):
    # Windows' cp1252 when `o3d info > info.txt`: a path with Ł or 张 stopped the command
    import os
    import subprocess
    import sys
    from pathlib import Path

    weights = tmp_path / "Łukasz 张"
    weights.mkdir()
    (weights / "mine.safetensors").write_bytes(b"")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONIOENCODING": "cp1252", "O3D_WEIGHTS_DIR": str(weights), "PYTHONPATH": str(root),
           "COLUMNS": "400"}
    res = subprocess.run([sys.executable, "-m", "o3dcli.cli", "info"], env=env, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    assert b"\\u0141ukasz \\u5f20" in res.stdout and b"mine.safetensors" in res.stdout
