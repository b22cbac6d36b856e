"""`o3d generate --jobs N`: worker processes share one batch through the per-item locks; what one
of them made counts as made (not cached) for the others, and --force recomputes only what was
made before the batch."""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from o3dcli.batch_types import Stage
from o3dcli.cli import app
from o3dcli.config import load_config
from o3dcli.jobs import (Workers, cuda_devices_for_workers, read_items, threads_per_process, worker_args,
                         write_items)
from o3dcli.naming import Item
from o3dcli.pipeline import BatchRunner, run_batch

runner = CliRunner()


def test_threads_are_divided_among_the_processes_unless_set():
    assert threads_per_process(2, 0, 8) == 4
    assert threads_per_process(3, 0, 8) == 2
    assert threads_per_process(16, 0, 8) == 1
    assert threads_per_process(4, 3, 8) == 3  # runtime.threads, as the user set it


@pytest.mark.parametrize("setting, kind, visible, count, expected", [
    ("auto", "cuda", None, 4, ["1", "2", "3"]),              # the command's process takes GPU 0
    ("cuda", "cuda", "2,5", 2, ["5", "2", "5"]),           # round the visible list again
    ("cuda:1", "cuda", None, 4, [None, None, None]),        # an explicit GPU, for every process
    ("auto", "cuda", None, 1, [None, None, None]),          # one GPU: all share it
    ("auto", "cpu", None, 0, [None, None, None]),
])
def test_workers_are_spread_over_the_visible_gpus(setting, kind, visible, count, expected):
    assert cuda_devices_for_workers(3, setting, kind, visible, count) == expected


def test_worker_arguments_repeat_the_command_and_the_items_are_the_commands(tmp_path):
    args = worker_args(tmp_path, "tiny", ["mesh.target_faces=5000", "runtime.seed=3"], stop_after="diffusion",
                       force=True, threads=2, batch_id="b1")
    assert args[0] == "generate"
    joined = " ".join(args)
    for part in (f"-o {tmp_path}", "--preset tiny", "--set mesh.target_faces=5000", "--set runtime.seed=3",
                 "--stop-after diffusion", "--force", "--worker-threads 2", "--worker-of b1", "--no-progress"):
        assert part in joined
    items = [Item(Path("/p/-a.png"), "-a"), Item(Path("/p/b c.png"), "b c-2")]  # odd names survive
    write_items(tmp_path / "items.json", items)
    assert read_items(tmp_path / "items.json") == items


def _apple(good_images, tmp_path) -> tuple[Path, list[Item]]:
    """An output folder, and a batch of one item: apple.png."""
    out = tmp_path / "out"
    out.mkdir()
    return out, [Item((good_images / "apple.png").absolute(), "apple")]


def _stages(calls):
    def make(ctx):
        calls.append(ctx.item.name)
        (ctx.work_dir / "a.txt").write_text(ctx.item.name)
        return {}

    return [Stage("make", 1, ("preprocess",), make, publish={"a.txt": "a.txt"})]


def test_what_another_process_of_the_batch_made_is_made_not_cached_and_force_spares_it(good_images, tmp_path):
    out, items = _apple(good_images, tmp_path)
    calls = []
    cfg = load_config("tiny")
    # a worker of batch B makes the item; the command's own process of B then finds it made
    assert run_batch(items, BatchRunner(out, cfg, _stages(calls), batch_id="B"), show_progress=False).ok
    res = run_batch(items, BatchRunner(out, cfg, _stages(calls), batch_id="B", force=True),
                    show_progress=False).items[0]
    assert calls == ["apple"] and res.status == "ok"
    assert res.cached == [] and "make" in res.timings  # made in this batch: not "cached"
    # another batch: cached; with --force, made again
    res = run_batch(items, BatchRunner(out, cfg, _stages(calls)), show_progress=False).items[0]
    assert res.cached == ["make"] and calls == ["apple"]
    assert run_batch(items, BatchRunner(out, cfg, _stages(calls), force=True), show_progress=False).ok
    assert calls == ["apple", "apple"]


def test_an_item_that_failed_in_the_batch_is_reported_not_run_again(good_images, tmp_path):
    out, items = _apple(good_images, tmp_path)
    calls = []

    def fail(ctx):
        calls.append(1)
        raise RuntimeError("the model ran out of memory")

    def runner_(batch):
        r = BatchRunner(out, load_config("tiny"), [Stage("make", 1, ("preprocess",), fail)], batch_id=batch)
        r.shared = True
        return r

    first = run_batch(items, runner_("B"), show_progress=False).items[0]
    second = run_batch(items, runner_("B"), show_progress=False).items[0]
    assert calls == [1] and first.status == second.status == "failed"
    assert second.error == first.error == "RuntimeError: the model ran out of memory"
    # where it failed, and the time it took there, as the process that ran it said
    assert second.stage == first.stage == "make" and second.timings == first.timings and first.timings["make"] > 0
    third = run_batch(items, runner_("C"), show_progress=False).items[0]  # another batch: run again
    assert calls == [1, 1] and third.status == "failed"
    assert [p.name for p in (out / ".o3d" / "items" / "apple").glob("failed-*")] == ["failed-C.json"]


def test_an_interrupt_while_the_workers_are_awaited_still_writes_the_report(good_images, tmp_path):
    from o3dcli.batch_types import BatchInterrupted

    out, items = _apple(good_images, tmp_path)
    seen = []

    def before_report(interrupted):
        seen.append(interrupted)
        if len(seen) == 1:
            raise KeyboardInterrupt  # Ctrl-C while waiting for the workers

    with pytest.raises(BatchInterrupted) as e:
        run_batch(items, BatchRunner(out, load_config("tiny"), _stages([])), show_progress=False,
                  before_report=before_report)
    assert seen == [False, True]  # asked again, to stop the workers
    assert e.value.result.items[0].status == "ok"
    report = json.loads((out / "o3d-report.json").read_text())
    assert report["interrupted"] is True and report["summary"] == {"ok": 1}


def _manifests(out: Path, stage: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / ".o3d" / "items").glob(f"*/{stage}-*/manifest.json"))]


@pytest.fixture
def photos(good_images, tmp_path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    img = Image.open(good_images / "apple.png").convert("RGB")
    for i in range(4):  # four photos, not one photo four times (that is reused, not made: see below)
        img.putpixel((i, 0), (i, 255 - i, 7))
        img.save(d / f"apple{i}.png")
    return d


def test_two_processes_share_a_batch(photos, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["generate", str(photos), "-o", str(out), "--jobs", "2", "--stop-after", "diffusion",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "2 processes of 1 thread(s)" in said and "4/4 succeeded" in said
    made = _manifests(out, "diffusion")
    assert len(made) == 4 and len({m["batch"] for m in made}) == 1
    assert len({m["pid"] for m in made}) == 2, "the worker made none of the items"
    report = json.loads((out / "o3d-report.json").read_text())
    assert report["summary"] == {"ok": 4} and [r["pid"] for r in report["runs"].values()] == [os.getpid()]
    assert all(i["cached"] == [] for i in report["items"])  # all made by this batch
    assert not (out / ".o3d" / "logs").exists()  # the worker ended normally: its log is gone
    # --force with --jobs: everything made again, once, by the new batch
    res = runner.invoke(app, ["generate", str(photos), "-o", str(out), "--jobs", "2", "--stop-after", "preprocess",
                              "--force", "--no-progress"])
    assert res.exit_code == 0 and "nothing recomputed" not in res.output, res.output
    again = _manifests(out, "preprocess")
    assert len(again) == 4 and len({m["batch"] for m in again}) == 1 and again[0]["batch"] != made[0]["batch"]


def test_the_same_photo_given_twice_with_jobs_is_made_once_and_copied(good_images, tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(3):
        shutil.copy(good_images / "apple.png", d / f"apple{i}.png")
    out = tmp_path / "out"
    res = runner.invoke(app, ["generate", str(d), "-o", str(out), "--jobs", "2", "--stop-after", "preprocess",
                              "--no-progress"])
    assert res.exit_code == 0 and "3/3 succeeded" in " ".join(res.output.split()), res.output
    report = json.loads((out / "o3d-report.json").read_text())
    made = {i["name"] for i in report["items"] if not i["cached"]}
    # one item made; the others copy it (a process that comes to a copy while another makes an
    # earlier one waits for it: tests/test_shared_output.py holds that moment, which here depends
    # on when the worker starts)
    assert len(made) == 1, report["items"]
    names = {i["name"] for i in report["items"]}
    for i in report["items"]:  # what an item did not make, it copied from another item of this batch
        assert set(i["cached"]) == set(i.get("reused_from", {})) and set(i.get("reused_from", {}).values()) <= names
    assert len({m["batch"] for m in _manifests(out, "preprocess")}) == 1


def test_a_bad_input_fails_alone_with_jobs(good_images, tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    shutil.copy(good_images / "apple.png", d / "apple.png")
    shutil.copy(good_images / "pear.png", d / "pear.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "out"
    res = runner.invoke(app, ["generate", str(d), "-o", str(out), "--jobs", "3", "--stop-after", "preprocess",
                              "--no-progress"])
    assert res.exit_code == 1, res.output
    said = " ".join(res.output.split())
    assert said.count("✗ broken") == 1 and "2/3 succeeded" in said
    assert "warning: worker" not in said  # a worker whose item failed ends normally
    assert (out / "apple" / "input.png").is_file() and (out / "pear" / "input.png").is_file()


def test_a_worker_that_ends_abnormally_is_named_with_its_log_which_is_kept(tmp_path):
    workers = Workers(tmp_path / "logs")
    workers.start(["generate", "--preset", "no-such-preset"], [], [None])  # a usage error (exit code 2)
    problems = workers.wait(timeout=120)
    assert len(problems) == 1 and "ended with exit code 2" in problems[0], problems
    log = next((tmp_path / "logs").glob("generate-*-worker1-kept.log"))
    assert str(log) in problems[0] and "no-such-preset" in log.read_text()
    assert workers.wait() == []  # once
    assert [p.name for p in (tmp_path / "logs").iterdir()] == [log.name]  # the item list is gone
    # the next command's workers leave it there (a dead command's other files go)
    (tmp_path / "logs" / "generate-999999999-worker1.log").write_text("")
    again = Workers(tmp_path / "logs")
    again.start(["generate", "--help"], [], [None])  # ends normally
    assert again.wait(timeout=120) == []
    assert [p.name for p in (tmp_path / "logs").iterdir()] == [log.name]


def test_python_m_o3dcli_is_the_o3d_command():
    import subprocess

    done = subprocess.run([sys.executable, "-m", "o3dcli", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("o3d "), done.stdout + done.stderr


def test_a_worker_that_cannot_be_started_leaves_the_others(tmp_path, monkeypatch):
    import subprocess

    real, started = subprocess.Popen, []

    def popen(*args, **kwargs):
        if started:
            raise OSError(11, "Resource temporarily unavailable")
        started.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    workers = Workers(tmp_path / "logs")
    problem = workers.start(["generate", "--help"], [], [None, None, None])
    assert problem == "started 1 of 3 worker processes: Resource temporarily unavailable"
    assert len(workers.procs) == 1 and workers.wait(timeout=120) == []


def test_an_interrupted_commands_summary_has_what_the_workers_got_to(good_images, tmp_path):
    # the command is stopped on its first item; a worker had finished the second one
    from o3dcli.batch_report import write_report
    from o3dcli.batch_types import BatchInterrupted, ItemResult

    out = tmp_path / "out"
    out.mkdir()
    items = [Item((good_images / "apple.png").absolute(), "apple"), Item((good_images / "pear.png").absolute(), "pear")]

    def stop(ctx):
        raise KeyboardInterrupt

    def worker_reports(interrupted):  # the workers end, and write their reports, before the command
        done = ItemResult(str(items[1].source), "pear", status="ok", timings={"make": 1.5})
        write_report(out, out / ".o3d", "cpu", [done, ItemResult(str(items[0].source), "apple", status="not-run")],
                     time.time(), interrupted=True)

    r = BatchRunner(out, load_config("tiny"), [Stage("make", 1, ("preprocess",), stop)])
    r.shared = True
    with pytest.raises(BatchInterrupted) as e:
        run_batch(items, r, show_progress=False, before_report=worker_reports)
    assert [(i.name, i.status) for i in e.value.result.items] == [("apple", "interrupted"), ("pear", "ok")]
    assert e.value.result.items[1].timings == {"make": 1.5}


def test_workers_do_not_import_the_working_folders_scripts(tmp_path):
    # a script of the user's named like one of Python's modules, beside where o3d runs
    import subprocess

    from o3dcli import __version__
    from o3dcli.jobs import worker_command

    (tmp_path / "grp.py").write_text("raise ImportError('the user script was imported')\n")
    (tmp_path / "colorsys.py").write_text("raise ImportError('the user script was imported')\n")  # rich imports it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # as the command's own (tests may set it)
    res = subprocess.run(worker_command(["--version"]), cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0 and __version__ in res.stdout, res.stdout + res.stderr
