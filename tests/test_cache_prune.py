"""`o3d cache prune`: an output folder's cache keeps what its assets are made from, and nothing else."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from o3dcli.cache import Cache
from o3dcli.cli import app

runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()


def generate(*args):
    return runner.invoke(app, ["generate", "--no-progress", "--stop-after", "preprocess", *map(str, args)])


def prune(out: Path, *args):
    return runner.invoke(app, ["cache", "prune", str(out), *args])


def says(res, words: str) -> bool:
    """`words` are in the table (its cells wrapped over lines at any width)."""
    return "".join(words.split()) in "".join(res.output.split()).replace("│", "")


def entries(out: Path, name: str) -> set[str]:
    return {p.name for p in (out / ".o3d" / "items" / name).iterdir() if p.name != ".lock"}


def cached(out: Path) -> dict[str, list[str]]:
    return {i["name"]: i["cached"] for i in json.loads((out / "o3d-report.json").read_text())["items"]}


def run_stage_as(monkeypatch, name: str, run=None):
    """Make o3dcli.stages' stage `name` ("DIFFUSION", "MESH_FUSION") run `run`, or fail as a run that
    stopped there ("stopped here"); returns the stage's own run, to put back the same way."""
    import dataclasses

    import o3dcli.stages as stages

    def failing(ctx):
        raise ValueError("stopped here")

    real = getattr(stages, name)
    monkeypatch.setattr(stages, name, dataclasses.replace(real, run=run or failing))
    return real.run


@pytest.fixture
def photos(good_images, tmp_path) -> Path:
    """A folder of two photos, apple.png and pear.png."""
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("apple.png", "pear.png"):
        shutil.copy(good_images / name, d / name)
    return d


def test_prune_keeps_what_the_assets_are_made_from(photos, tmp_path):
    out = tmp_path / "out"
    assert generate(photos, "-o", out).exit_code == 0
    first = entries(out, "apple")
    assert generate(photos, "-o", out, "--set", "preprocess.foreground_ratio=0.7").exit_code == 0
    current = entries(out, "apple") - first
    assert len(current) == 1 and len(first) == 1  # two settings' preprocess entries, side by side
    # a saved state of an interrupted denoising, and a killed write's leftover, of other settings
    (out / ".o3d" / "items" / "apple" / "diffusion-0123456789abcdef.state").mkdir()
    (out / ".o3d" / "items" / "apple" / ".tmp-preprocess-0123456789abcdef-99999").mkdir()

    res = prune(out, "--dry-run")
    assert res.exit_code == 0, res.output + res.stderr
    assert "would free" in res.stderr and entries(out, "apple") == first | current | {
        "diffusion-0123456789abcdef.state", ".tmp-preprocess-0123456789abcdef-99999"}
    res = prune(out)
    assert res.exit_code == 0, res.output + res.stderr
    assert entries(out, "apple") == current and len(entries(out, "pear")) == 1
    assert "freed" in res.stderr and "(4 cache entries)" in res.stderr  # apple: 3, pear: its earlier setting
    # the same command again is answered from what was kept; the earlier settings are recomputed
    assert generate(photos, "-o", out, "--set", "preprocess.foreground_ratio=0.7").exit_code == 0
    assert cached(out) == {"apple": ["preprocess"], "pear": ["preprocess"]}
    assert generate(photos, "-o", out).exit_code == 0
    assert cached(out) == {"apple": [], "pear": []}


def test_a_deleted_assets_cache_goes_unless_the_last_report_lists_it_unfinished(photos, tmp_path):
    out = tmp_path / "out"
    assert generate(photos, "-o", out).exit_code == 0
    shutil.rmtree(out / "apple")  # the user deleted a finished asset: its cache goes at once
    res = prune(out)
    assert res.exit_code == 0 and entries(out, "apple") == set() and len(entries(out, "pear")) == 1
    assert "its asset folder is gone" in " ".join(res.output.split())
    # an item the last batch did not finish (failed, interrupted) keeps what it computed for the next run
    assert generate(photos, "-o", out).exit_code == 0
    shutil.rmtree(out / "apple")
    report = json.loads((out / "o3d-report.json").read_text())
    for item in report["items"]:
        if item["name"] == "apple":
            item["status"] = "failed"
    (out / "o3d-report.json").write_text(json.dumps(report))
    res = prune(out)
    assert res.exit_code == 0 and len(entries(out, "apple")) == 1
    assert "lists it unfinished" in " ".join(res.output.split())


def test_items_in_use_and_assets_that_record_no_entries_are_left_alone(good_images, tmp_path):
    out = tmp_path / "out"
    assert generate(good_images / "apple.png", good_images / "pear.png", "-o", out).exit_code == 0
    for name in ("apple", "pear"):
        (out / ".o3d" / "items" / name / "preprocess-0123456789abcdef").mkdir()  # another setting's
    meta = out / "pear" / "o3d-asset.json"  # as o3d wrote it before it recorded the entries
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "cache"}))
    lock = Cache(out).item("apple").lock()
    lock.acquire()  # another o3d process is working on apple
    try:
        res = prune(out)
    finally:
        lock.release()
    assert res.exit_code == 0, res.output + res.stderr
    assert "preprocess-0123456789abcdef" in entries(out, "apple") and "preprocess-0123456789abcdef" in entries(out, "pear")
    said = " ".join(res.output.split())
    assert "an o3d process is working on it" in said and "run o3d generate on it once" in said
    assert "2 item(s) left as they are" in res.stderr


def test_a_folder_without_a_cache_is_a_usage_error(tmp_path):
    res = prune(tmp_path)
    assert res.exit_code == 2 and "holds no o3d cache" in res.stderr
    assert runner.invoke(app, ["cache", "prune", "--help"]).exit_code == 0


def test_a_file_an_asset_folder_or_the_cache_given_say_what_to_give(photos, tmp_path):
    out = tmp_path / "out"
    assert generate(photos, "-o", out).exit_code == 0
    for given, said in ((out / "apple" / "input.png", "a file, not a folder"),
                        (out / "apple", f"an asset folder; give the output folder it is in, {out}"),
                        (out / ".o3d", f"the cache itself; give the output folder it is in, {out}")):
        res = prune(given)
        assert res.exit_code == 2 and said in " ".join(res.stderr.split()), res.stderr


def test_an_entry_that_cannot_be_removed_is_named_and_the_rest_pruned(photos, tmp_path, monkeypatch):
    import shutil as shutil_module

    out = tmp_path / "out"
    assert generate(photos, "-o", out).exit_code == 0
    for name in ("apple", "pear"):
        (out / ".o3d" / "items" / name / "preprocess-0123456789abcdef").mkdir()  # another setting's
    real = shutil_module.rmtree

    def rmtree(path, *a, **k):
        if "apple" in str(path):
            raise PermissionError(13, "Permission denied")
        return real(path, *a, **k)

    monkeypatch.setattr(shutil_module, "rmtree", rmtree)
    res = prune(out)
    assert res.exit_code == 1
    assert "preprocess-0123456789abcdef" in entries(out, "apple") and "preprocess-0123456789abcdef" not in entries(out, "pear")
    stuck = out / ".o3d" / "items" / "apple" / "preprocess-0123456789abcdef"
    assert f"error: {stuck}: cannot remove it (Permission denied)" in res.stderr
    assert "(1 cache entries); 1 could not be removed (named above)" in res.stderr


def test_a_linked_item_folder_is_left_alone_with_what_it_points_to(photos, tmp_path):
    out = tmp_path / "out"
    assert generate(photos, "-o", out).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    (elsewhere / "important.txt").write_text("precious")
    (out / ".o3d" / "items" / "zzz").symlink_to(elsewhere, target_is_directory=True)
    res = prune(out)
    assert res.exit_code == 0, res.output + res.stderr
    assert (elsewhere / "important.txt").read_text() == "precious" and (elsewhere / "sub").is_dir()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["important.txt", "sub"]  # not even a lock file
    assert says(res, "all: a link to another folder, not o3d's")


def test_an_unfinished_asset_and_a_folder_without_its_record_keep_their_cache(photos, tmp_path):
    out = tmp_path / "out"
    assert generate(photos, "-o", out).exit_code == 0
    for name in ("apple", "pear"):
        (out / ".o3d" / "items" / name / "preprocess-0123456789abcdef").mkdir()  # another setting's
    # apple: as a killed run leaves it (its folder claimed: o3d-asset.json without entries, nothing published)
    meta = out / "apple" / "o3d-asset.json"
    claimed = {k: v for k, v in json.loads(meta.read_text()).items() if k not in ("cache", "files")}
    shutil.rmtree(out / "apple")
    (out / "apple").mkdir()
    meta.write_text(json.dumps(claimed))
    (out / "pear" / "o3d-asset.json").unlink()  # pear: its folder is there, its record is not
    report = json.loads((out / "o3d-report.json").read_text())
    report["items"] = []  # no report lists them unfinished
    (out / "o3d-report.json").write_text(json.dumps(report))
    res = prune(out)
    assert res.exit_code == 0, res.output + res.stderr
    assert len(entries(out, "apple")) == 2 and len(entries(out, "pear")) == 2
    assert says(res, "all: its asset is unfinished (run o3d generate again to finish it)") and not says(res, "made before")
    assert says(res, "all: its asset folder has no o3d-asset.json") and not says(res, "is gone")


def test_a_dry_run_reads_where_no_lock_can_be_taken(photos, tmp_path, monkeypatch):
    import errno

    from o3dcli.cache import ItemLock

    out = tmp_path / "out"
    assert generate(photos, "-o", out).exit_code == 0
    (out / ".o3d" / "items" / "apple" / "preprocess-0123456789abcdef").mkdir()

    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(ItemLock, "acquire", read_only)
    res = prune(out, "--dry-run")
    assert res.exit_code == 0, res.output + res.stderr
    assert "would free" in res.stderr and "(1 cache entries)" in res.stderr
    res = prune(out)  # removing needs the lock: nothing removed, and the exit code says so
    assert res.exit_code == 1 and says(res, "all: cannot lock it (Read-only file system)")
    assert "2 item(s) could not be pruned" in " ".join(res.stderr.split())
    assert "preprocess-0123456789abcdef" in entries(out, "apple")


def test_what_an_unfinished_run_made_is_kept_whatever_ran_since(photos, good_images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    steps = ["--stop-after", "diffusion", "--steps", "1", "--set", "preprocess.size=16"]
    # a new item whose denoising failed (or was interrupted): no asset, its preprocessing cached
    run_diffusion = run_stage_as(monkeypatch, "DIFFUSION")
    assert generate(photos / "apple.png", "-o", out, *steps).exit_code == 1
    # and an asset whose rerun with other settings failed the same way
    run_stage_as(monkeypatch, "DIFFUSION", run_diffusion)
    assert generate(photos / "pear.png", "-o", out, *steps).exit_code == 0
    run_stage_as(monkeypatch, "DIFFUSION")
    assert generate(photos / "pear.png", "-o", out, *steps, "--seed", "5",
                    "--set", "preprocess.foreground_ratio=0.7").exit_code == 1
    apple, pear = entries(out, "apple"), entries(out, "pear")
    (out / ".o3d" / "items" / "apple" / "preprocess-0123456789abcdef").mkdir()  # another setting's
    # any later run (the last report then lists neither as unfinished) changes nothing of that
    run_stage_as(monkeypatch, "DIFFUSION", run_diffusion)
    assert generate(good_images / "plum.jpg", "-o", out, *steps).exit_code == 0
    res = prune(out)
    assert res.exit_code == 0, res.output + res.stderr
    assert entries(out, "apple") == apple and entries(out, "pear") == pear
    assert len([e for e in pear if e.startswith("preprocess-")]) == 2  # the asset's and the rerun's
    assert says(res, "what an unfinished run made (run it again to resume)")
    # the run again resumes from them, and then its asset records them instead
    assert generate(photos / "apple.png", "-o", out, *steps).exit_code == 0
    assert cached(out) == {"apple": ["preprocess"]}
    # --drop-unfinished lets them go
    res = prune(out, "--drop-unfinished")
    assert res.exit_code == 0 and entries(out, "pear") < pear and len(entries(out, "pear")) == 2


def test_a_missing_folder_is_not_found(tmp_path):
    res = prune(tmp_path / "nowhere")
    assert res.exit_code == 2 and "nowhere: not found" in res.stderr


def test_saved_steps_stay_through_later_runs_of_the_same_item(photos, tmp_path, monkeypatch):
    import torch

    out = tmp_path / "out"
    steps = ["--stop-after", "diffusion", "--steps", "1", "--set", "preprocess.size=16"]

    def stopped(ctx):  # denoising that saved its state, then stopped (as Ctrl-C stops it)
        ctx.state.save({"x": torch.zeros(1)}, {"next_step": 1})
        raise ValueError("stopped here")

    run_diffusion = run_stage_as(monkeypatch, "DIFFUSION", stopped)
    assert generate(photos / "apple.png", "-o", out, *steps).exit_code == 1
    state = next(e for e in entries(out, "apple") if e.endswith(".state"))
    run_stage_as(monkeypatch, "DIFFUSION", run_diffusion)
    # the crops checked with the same settings (the asset now records the unmade diffusion entry) ...
    assert generate(photos / "apple.png", "-o", out, "--set", "preprocess.size=16").exit_code == 0
    # ... and a whole run with another seed: the saved steps are still the first settings' progress
    assert generate(photos / "apple.png", "-o", out, *steps, "--seed", "7").exit_code == 0
    res = prune(out)
    assert res.exit_code == 0, res.output + res.stderr
    assert state in entries(out, "apple") and says(res, "what an unfinished run made")
    # running the first settings again finishes them; the record of them goes
    assert generate(photos / "apple.png", "-o", out, *steps).exit_code == 0
    assert "unfinished.json" not in entries(out, "apple")


def test_an_unfinished_runs_finished_stages_stay_when_another_run_of_the_item_publishes(photos, tmp_path,
                                                                                          monkeypatch):
    out = tmp_path / "out"
    steps = ["--steps", "1", "--set", "preprocess.size=16", "--stop-after", "mesh_fusion"]
    # a run that failed after its denoising was done, then another seed's run that finished
    run_fusion = run_stage_as(monkeypatch, "MESH_FUSION")
    assert generate(photos / "apple.png", "-o", out, *steps).exit_code == 1
    first = {e for e in entries(out, "apple") if e.startswith("diffusion-")}
    run_stage_as(monkeypatch, "MESH_FUSION", run_fusion)
    assert generate(photos / "apple.png", "-o", out, *steps, "--seed", "7").exit_code == 0
    assert prune(out).exit_code == 0
    assert first <= entries(out, "apple")  # the first run's denoising stays for it
    assert generate(photos / "apple.png", "-o", out, *steps).exit_code == 0
    assert cached(out) == {"apple": ["preprocess", "diffusion"]}


def test_drop_unfinished_removes_what_a_killed_run_left_whose_input_is_gone(photos, tmp_path, monkeypatch):
    from o3dcli.naming import mark_asset_dir

    out = tmp_path / "out"
    photo = tmp_path / "kiwi.png"
    shutil.copy(photos / "apple.png", photo)

    run_stage_as(monkeypatch, "DIFFUSION")
    assert generate(photo, "-o", out, "--stop-after", "diffusion", "--set", "preprocess.size=16").exit_code == 1
    mark_asset_dir(out / "kiwi", photo)  # as a killed run leaves its folder: claimed, never published
    # a record cut short by a kill is tidied by the next run that takes the item
    (out / ".o3d" / "items" / "kiwi" / ".unfinished.json.tmp-99999").write_text("{")
    photo.unlink()
    res = prune(out)
    assert res.exit_code == 0 and says(res, f"its input {photo} is no longer there: --drop-unfinished removes it"), res.output
    assert any(e.startswith("preprocess-") for e in entries(out, "kiwi"))
    res = prune(out, "--drop-unfinished")
    assert res.exit_code == 0 and entries(out, "kiwi") == set(), res.output
    from o3dcli.cache import Cache

    ic = Cache(out).item("apple")
    ic.dir.mkdir(parents=True)
    (ic.dir / ".unfinished.json.tmp-99999").write_text("{")
    (ic.dir / ".tmp-preprocess-0123456789abcdef-99999").mkdir()
    ic.clean_stale()
    assert list(ic.dir.iterdir()) == []
