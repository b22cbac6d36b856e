"""A run folder stays whole: a save stopped anywhere (kill -9, a second Ctrl-C, a full disk) never
leaves a finished-looking run with weights of another step, one o3d train at a time writes into a
folder (a lock the kernel drops with the process), and config.yaml is written atomically."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from o3dcli.train.lock import RUN_LOCK, RunLock
from o3dcli.train.trainer import CHECKPOINT, EMA_WEIGHTS, Trainer

from test_train_cli import SMALL, data, logged_steps, train  # noqa: E402,F401  (data: the module's fixture)

REPO = Path(__file__).parents[1]
EVERY2 = ("--set", "train.checkpoint_every=2")
STEPS = 3  # checkpoints at steps 2 and 3


class Killed(BaseException):
    """Stands for kill -9: nothing of the process runs after it (no except, no message)."""


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run of STEPS steps."""
    run = tmp_path_factory.mktemp("ref") / "r"
    res = train(data, run, "--steps", STEPS, *EVERY2)
    assert res.exit_code == 0, res.output
    return run


def weights(run: Path) -> tuple[dict, dict]:
    with safe_open(str(run / EMA_WEIGHTS), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def assert_same_weights(run: Path, reference: Path) -> None:
    (got, meta), (want, want_meta) = weights(run), weights(reference)
    assert meta["step"] == want_meta["step"] == str(STEPS)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def checkpoint_step(run: Path) -> int:
    return int(torch.load(run / CHECKPOINT, weights_only=True)["step"])


def one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert "Traceback" not in output and len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def run_files(run: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir() if p.name != RUN_LOCK}


# -- 1. the last save stopped part way ------------------------------------------------------------------

def stop_in_last_save(monkeypatch, data, out, after: int, exc: type[BaseException]):
    """Train STEPS steps into `out`, stopping with `exc` right after the `after`-th file of the
    run's last save is in place (as killon.py kills right after a file is replaced)."""
    real_save, real_replace = Trainer.save, os.replace
    replaced = []

    def replace(src, dst):
        real_replace(src, dst)
        if Path(dst).parent == out:
            replaced.append(Path(dst).name)
            if len(replaced) == after:
                raise exc()

    def save(self):
        if self.step_count < STEPS:
            return real_save(self)
        monkeypatch.setattr(os, "replace", replace)
        try:
            return real_save(self)
        finally:
            monkeypatch.setattr(os, "replace", real_replace)

    monkeypatch.setattr(Trainer, "save", save)
    try:
        res = train(data, out, "--steps", STEPS, *EVERY2)
    except Killed:
        res = None
    monkeypatch.setattr(Trainer, "save", real_save)
    return res, replaced


@pytest.mark.interrupts
@pytest.mark.parametrize("after", [1, 2, 3])
@pytest.mark.parametrize("exc", [Killed, KeyboardInterrupt], ids=["kill -9", "second Ctrl-C"])
def test_a_run_stopped_anywhere_in_its_last_save_ends_with_the_weights_of_an_uninterrupted_run(
        data, reference, tmp_path, monkeypatch, after, exc):
    out = tmp_path / "k"
    res, replaced = stop_in_last_save(monkeypatch, data, out, after, exc)
    assert len(replaced) == after, replaced  # stopped there
    if exc is KeyboardInterrupt:  # a second Ctrl-C while the checkpoint is saved
        assert res.exit_code == 130 and "aborted" in res.output, res.output
    # never a finished-looking run with the weights of another step
    finished = checkpoint_step(out) == STEPS
    if finished:
        assert_same_weights(out, reference)
    # the same command again: the run is finished with the uninterrupted run's weights
    res = train(data, out, "--steps", STEPS, *EVERY2)
    assert res.exit_code == 0, res.output
    if not finished:
        assert f"resuming at step {STEPS - 1} of {STEPS}" in res.output, res.output
    assert checkpoint_step(out) == STEPS and logged_steps(out) == [1, 2, 3]
    assert_same_weights(out, reference)
    assert finished == (after == 3)  # the checkpoint, the commit point, is the last file written


@pytest.mark.parametrize("damage", ["behind", "missing"])
def test_weights_not_at_the_checkpoints_step_are_rewritten_from_it_in_one_line(data, reference, tmp_path, damage):
    # as an o3d that wrote the checkpoint before the weights left a run killed between the two
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    if damage == "missing":
        (run / EMA_WEIGHTS).unlink()
    else:
        from safetensors.torch import save_file

        tensors, meta = weights(run)
        save_file({k: v + 1 for k, v in tensors.items()}, str(run / EMA_WEIGHTS), metadata={**meta, "step": "2"})
    res = train(data, run, "--steps", STEPS, *EVERY2)
    assert res.exit_code == 0, res.output
    said = [ln for ln in res.output.splitlines() if "rewritten" in ln]
    why = "was missing" if damage == "missing" else "was at step 2"
    assert len(said) == 1 and f"{EMA_WEIGHTS} {why}, not at the checkpoint's step {STEPS}" in said[0], res.output
    assert "nothing to do" in res.output
    assert_same_weights(run, reference)
    res = train(data, run, "--steps", STEPS, *EVERY2)  # in step now: nothing more to say
    assert res.exit_code == 0 and "rewritten" not in res.output, res.output


# -- 2. one o3d train per run folder ------------------------------------------------------------------

STALLED_TRAIN = """
import sys
from o3dcli.cli import app
from o3dcli.train.trainer import Trainer

real = Trainer.step
def step(self):
    if self.step_count == 1:  # its first checkpoint is saved (checkpoint_every=1)
        print("TRAINING", flush=True)
        sys.stdin.readline()
    return real(self)
Trainer.step = step
app(sys.argv[1:])
"""


@pytest.mark.interrupts
def test_a_second_train_into_a_run_folder_in_use_is_refused_and_a_killed_one_leaves_no_lock(data, tmp_path):
    run = tmp_path / "c"
    sets = [a for kv in SMALL + ["train.checkpoint_every=1"] for a in ("--set", kv)]
    args = ["train", "--data", str(data), "-o", str(run), "--no-progress", "--steps", "3", *sets]
    first = subprocess.Popen([sys.executable, "-c", STALLED_TRAIN, *args], cwd=REPO, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = []
        for line in first.stdout:  # up to its marker: it trains (in step 2), the folder locked
            lines.append(line)
            if line.strip() == "TRAINING":
                break
        assert lines and lines[-1].strip() == "TRAINING", "".join(lines)
        files = run_files(run)
        res = train(data, run, "--steps", 3, "--set", "train.checkpoint_every=1")
        assert res.exit_code == 2, res.output
        line = one_error_line(res.output)
        assert str(run) in line and f"in use by another o3d train (pid {first.pid})" in line
        assert run_files(run) == files  # nothing read into, nothing written
    finally:
        first.kill()  # kill -9
        first.wait()
    res = train(data, run, "--steps", 3, "--set", "train.checkpoint_every=1")
    assert res.exit_code == 0, res.output  # the kernel dropped the killed process's lock
    assert "resuming at step 1 of 3" in res.output and logged_steps(run) == [1, 2, 3]


def test_torchrun_ranks_but_0_take_no_lock(data, reference, tmp_path, monkeypatch):
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    with RunLock(run) as lock:
        lock.take()  # as rank 0 of the same torchrun job holds it
        monkeypatch.setenv("RANK", "1")
        res = train(data, run, "--steps", STEPS, *EVERY2)
        assert res.exit_code == 0, res.output
        monkeypatch.setenv("RANK", "0")
        res = train(data, run, "--steps", STEPS, *EVERY2)
        assert res.exit_code == 2 and "in use by another o3d train" in res.output, res.output


def test_the_half_written_files_of_a_killed_save_are_removed_under_the_lock(data, reference, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    (run / f".{CHECKPOINT}.tmp-999999").write_bytes(b"half a checkpoint")
    (run / ".notes.txt.tmp-5").write_text("not o3d's")
    res = train(data, run, "--steps", STEPS, *EVERY2)
    assert res.exit_code == 0, res.output
    assert not (run / f".{CHECKPOINT}.tmp-999999").exists() and (run / ".notes.txt.tmp-5").is_file()


# -- 3. config.yaml -----------------------------------------------------------------------------------

class _FullDisk:
    """A file whose write puts half the data down, then fails as on a full disk."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_a_config_write_cut_short_leaves_the_runs_config_whole(data, reference, tmp_path, monkeypatch):
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    config = (run / "config.yaml").read_text()
    real_open = io.open

    def full_disk_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        named = isinstance(file, (str, os.PathLike)) and "config.yaml" in os.fspath(file)
        return _FullDisk(f) if named and "w" in mode else f

    monkeypatch.setattr(io, "open", full_disk_open)  # pathlib's
    monkeypatch.setattr("builtins.open", full_disk_open)
    res = train(data, run, "--steps", STEPS + 1, *EVERY2)
    monkeypatch.undo()
    assert res.exit_code == 1 and "No space left on device" in res.output, res.output  # one line, no traceback
    assert (run / "config.yaml").read_text() == config
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]
    res = train(data, run, "--steps", STEPS + 1, *EVERY2)
    assert res.exit_code == 0, res.output
    assert f"resuming at step {STEPS} of {STEPS + 1}" in res.output and "settings changed" not in res.output


@pytest.mark.parametrize("content", ["", "\n", "denoiser: {"], ids=["empty", "blank", "not YAML"])
def test_an_empty_or_unreadable_config_is_the_same_one_line_usage_error(data, reference, tmp_path, content):
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    (run / "config.yaml").write_text(content)
    files = run_files(run)
    res = train(data, run, "--steps", STEPS + 1, *EVERY2)
    assert res.exit_code == 2, res.output
    line = one_error_line(res.output)
    assert str(run / "config.yaml") in line and "the run's settings cannot be read" in line
    assert run_files(run) == files
