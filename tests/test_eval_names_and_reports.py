"""`o3d eval`: object names that are not file-safe, counts and fairness of the means, capped PSNR,
renders that agree with the report, one warning per object, hints for a wrong --data folder."""

import csv
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.eval.benchmarks import _with_file_names, find_prediction, folder_objects, gso_objects
from o3dcli.synth.dataset import write_obj
from o3dcli.synth.objects import make_object
from test_eval_cli import write_gso_object

FAST = ["--size", "32", "--points", "2000", "--no-progress"]


def run(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def report(out: Path) -> dict:
    return json.loads((out / "eval.json").read_text())


def test_folder_benchmark_finds_predictions_by_the_objects_own_names(tmp_path):
    import trimesh

    gt = tmp_path / "gt"
    gt.mkdir()
    chair, box = make_object(1_000_005)[0], make_object(1_000_006)[0]
    trimesh.Trimesh(chair.vertices, chair.faces).export(gt / "chair(1).ply")
    write_obj(gt / "box.obj", box)
    pred = tmp_path / "pred"
    pred.mkdir()
    trimesh.Trimesh(chair.vertices, chair.faces).export(pred / "chair(1).glb")  # the tool kept the name
    write_obj(pred / "box.obj", box)
    out = tmp_path / "out"
    res = run("--benchmark", "folder", "--data", gt, "--predictions", pred, "-o", out, *FAST)
    assert res.exit_code == 0, res.output
    by = {r["object"]: r for r in report(out)["results"]}
    assert by["chair(1)"]["status"] == "ok" and by["chair(1)"]["asset"] == str(pred / "chair(1).glb")
    assert by["chair(1)"]["metrics"]["chamfer"] == 0.0
    # the safe name only where a file is made
    assert by["chair(1)"]["render"] == str(out / "renders" / "pred" / "chair_1_.png")
    assert sorted(p.name for p in (out / "renders" / "pred").glob("*.png")) == ["box.png", "chair_1_.png"]
    # --objects takes the object's own name (and, as earlier o3d named it, the safe one)
    for name in ("chair(1)", "chair_1_"):
        res = run("--benchmark", "folder", "--data", gt, "--predictions", pred, "--objects", name, "-o", out, *FAST)
        assert res.exit_code == 0, res.output
        assert [r["object"] for r in report(out)["results"]] == ["chair(1)"]
    objs = folder_objects(gt)
    assert [(o.name, o.file_name) for o in objs] == [("box", "box"), ("chair(1)", "chair_1_")]
    # an o3d generate output made from images named after the objects: chair(1).png -> chair_1_/
    gen = tmp_path / "generated"
    (gen / "chair_1_").mkdir(parents=True)
    write_obj(gen / "chair_1_" / "model.obj", chair)
    (gen / "box").mkdir()
    write_obj(gen / "box" / "model.obj", box)
    assert find_prediction(gen, objs[1].prediction_names) == gen / "chair_1_" / "model.obj"
    res = run("--benchmark", "folder", "--data", gt, "--predictions", gen, "-o", tmp_path / "o2", *FAST)
    assert res.exit_code == 0, res.output
    assert all(r["status"] == "ok" for r in report(tmp_path / "o2")["results"])


def test_gso_names_that_share_a_safe_name_get_their_own_files(tmp_path):
    from o3dcli.eval.protocol import EvalProtocol
    from o3dcli.eval.runner import ObjectResult, Variant, write_inputs

    gso = tmp_path / "gso"
    for name, seed in (("mug(2)", 1_000_003), ("mug_2_", 1_000_004)):
        write_gso_object(gso, name, make_object(seed)[0], textured=True)
    objs = gso_objects(gso)
    assert [(o.name, o.file_name) for o in objs] == [("mug(2)", "mug_2_"), ("mug_2_", "mug_2_-2")]
    # "mug_2_" is the other object's own name: never mug(2)'s, so no two objects share a prediction
    assert objs[0].prediction_names == ("mug(2)",) and objs[1].prediction_names == ("mug_2_", "mug_2_-2")
    pred = tmp_path / "pred"
    (pred / "mug_2_").mkdir(parents=True)
    write_obj(pred / "mug_2_" / "model.obj", make_object(1_000_003)[0])
    assert find_prediction(pred, objs[1].prediction_names) == pred / "mug_2_" / "model.obj"
    with pytest.raises(FileNotFoundError, match=r"no prediction for 'mug\(2\)'"):
        find_prediction(pred, objs[0].prediction_names)
    # without a namesake, o3d generate's folder name is tried too
    assert _with_file_names(objs[:1])[0].prediction_names == ("mug(2)", "mug_2_")
    # eval's own files (input views, which generation names its asset folders after) never collide
    v = Variant("tiny", config=object())
    results = {(o.name, "tiny"): ObjectResult(o.name, "tiny") for o in objs}
    paths = write_inputs(objs, EvalProtocol(size=32), tmp_path / "out", results, [v])
    assert {k: p.name for k, p in paths.items()} == {"mug(2)": "mug_2_.png", "mug_2_": "mug_2_-2.png"}


def _predictions(tmp_path, name: str, objects: dict[str, object]) -> Path:
    d = tmp_path / name
    d.mkdir()
    for obj_name, mesh in objects.items():
        write_obj(d / f"{obj_name}.obj", mesh)
    return d


def test_means_by_variant_say_how_many_objects_they_cover(tmp_path):
    from o3dcli.eval.benchmarks import synthetic_objects

    objs = synthetic_objects(limit=3)
    gt = {o.name: o.load() for o in objs}
    a, b, c = (o.name for o in objs)
    pred = _predictions(tmp_path, "pred", {a: gt[a], b: gt[b]})
    pred_b = _predictions(tmp_path, "predB", {b: gt[b].replace(vertices=gt[b].vertices * 0.8)})
    out = tmp_path / "out"
    res = run("--benchmark", "synthetic", "--limit", "3", "--predictions", f"{pred},{pred_b}", "-o", out, *FAST)
    assert res.exit_code == 1, res.output
    md = (out / "eval.md").read_text()
    table = md.split("## Means by variant")[1].split("\n## ")[0]
    assert "| variant | scored |" in table
    assert "| pred | 2/3 |" in table and "| predB | 1/3 |" in table
    assert "The variants' means are over different objects (pred 2/3, predB 1/3 scored)" in table
    assert f"Means over the 1 object(s) every variant scored ({b})" in table
    rep = report(out)
    assert rep["comparison"]["same_objects"] is False and rep["comparison"]["common_objects"] == [b]
    common = rep["comparison"]["common_means"]
    assert common["pred"]["chamfer"] == 0.0 and common["predB"]["chamfer"] > 0  # both over object b only
    assert "different objects" in res.output and "Rows marked * are the means over those objects" in \
        " ".join(res.output.split())
    # variants that scored the same objects: no note
    res = run("--benchmark", "synthetic", "--objects", b, "--predictions", f"{pred},{pred_b}", "-o", tmp_path / "o2",
              *FAST)
    assert res.exit_code == 0, res.output
    md = (tmp_path / "o2" / "eval.md").read_text()
    assert "| pred | 1/1 |" in md and "different objects" not in md and "different objects" not in res.output
    assert report(tmp_path / "o2")["comparison"]["same_objects"] is True


def test_an_identical_object_gives_a_capped_psnr_and_finite_means(tmp_path):
    from o3dcli.eval.benchmarks import synthetic_objects
    from o3dcli.eval.protocol import EvalProtocol

    p = EvalProtocol()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    per_view = p.view_psnr(x, x, torch.tensor([True, True, False]).view(3, 1, 1, 1).expand(3, 1, 16, 16))
    assert per_view[:2].tolist() == [60.0, 60.0] and math.isnan(per_view[2])  # an empty mask stays n/a

    objs = synthetic_objects(limit=2)
    a, b = objs[0].load(), objs[1].load()
    pred = _predictions(tmp_path, "pred", {objs[0].name: a, objs[1].name: b.replace(vertices=b.vertices * 0.9)})
    out = tmp_path / "out"
    res = run("--benchmark", "synthetic", "--limit", "2", "--predictions", pred, "-o", out, *FAST)
    assert res.exit_code == 0, res.output
    rep = report(out)
    exact, other = (r["metrics"] for r in rep["results"])
    assert exact["psnr"] == exact["psnr_masked"] == 60.0 and other["psnr"] < 40
    mean = rep["variants"][0]["mean"]["psnr"]
    assert mean == pytest.approx((60.0 + other["psnr"]) / 2) and rep["protocol"]["psnr_max_db"] == 60.0
    rows = {r["object"]: r for r in csv.DictReader((out / "eval.csv").open())}
    assert rows["MEAN"]["psnr"] == f"{mean:.2f}"
    md = (out / "eval.md").read_text()
    assert f"| **mean** | 2/2 |  | {mean:.2f} |" in md and "capped at 60 dB" in md
    assert f"{mean:.2f}" in res.output and not re.search(r"\binf\b", res.output)
    assert rows["MEAN"]["error"] == "" and "scored)" not in res.output  # every object scored: nothing to say


def test_means_over_fewer_objects_than_the_benchmark_say_so_in_every_report(tmp_path):
    # one object scored of two gave a perfect-looking mean row (PSNR 60) with no count beside it
    from o3dcli.eval.benchmarks import synthetic_objects

    objs = synthetic_objects(limit=2)
    pred = _predictions(tmp_path, "pred", {objs[0].name: objs[0].load()})  # the other is missing
    out = tmp_path / "out"
    res = run("--benchmark", "synthetic", "--limit", "2", "--predictions", pred, "-o", out, *FAST)
    assert res.exit_code == 1, res.output
    rows = {r["object"]: r for r in csv.DictReader((out / "eval.csv").open())}
    assert rows["MEAN"]["error"] == "mean of the 1/2 objects scored; 1 failed" and rows["MEAN"]["psnr"] == "60.00"
    assert "| **mean** | 1/2 |" in (out / "eval.md").read_text()
    assert "mean (1/2" in res.output and "scored)" in res.output, res.output  # the table's mean row (folds)


def test_a_rerun_leaves_only_its_own_renders(tmp_path):
    from o3dcli.eval.benchmarks import synthetic_objects

    objs = synthetic_objects(limit=2)
    gt = {o.name: o.load() for o in objs}
    a, b = gt
    pred = _predictions(tmp_path, "pred", gt)
    pred_b = _predictions(tmp_path, "predB", gt)
    out = tmp_path / "e2"
    res = run("--benchmark", "synthetic", "--limit", "2", "--predictions", f"{pred},{pred_b}", "-o", out, *FAST)
    assert res.exit_code == 0, res.output
    renders = out / "renders"
    assert sorted(p.relative_to(renders).as_posix() for p in renders.rglob("*.png")) == \
        [f"pred/{a}.png", f"pred/{b}.png", f"predB/{a}.png", f"predB/{b}.png"]
    # a folder scan of it (o3d generate -r) passes over eval's output, renders included
    from o3dcli.inputs import collect_inputs

    notes = []
    assert collect_inputs([out], recursive=True, notes=notes) == []
    assert f"skipped 1 folder(s) of o3d's own outputs ({out})" in notes
    (renders / "predB" / "notes.txt").write_text("mine")  # the user's files are never removed
    (renders / "predB" / "mine.png").write_bytes(b"not eval's")
    res = run("--benchmark", "synthetic", "--objects", b, "--predictions", pred_b, "-o", out, *FAST)
    assert res.exit_code == 0, res.output
    assert [(r["variant"], r["object"]) for r in report(out)["results"]] == [("predB", b)]
    assert sorted(p.relative_to(renders).as_posix() for p in renders.rglob("*.png")) == \
        ["predB/mine.png", f"predB/{b}.png"]
    assert not (renders / "pred").exists() and (renders / "predB" / "notes.txt").read_text() == "mine"
    # an object that fails this time loses its earlier render too
    (pred_b / f"{b}.obj").write_text("not an OBJ\n")
    res = run("--benchmark", "synthetic", "--limit", "2", "--predictions", pred_b, "-o", out, *FAST)
    assert res.exit_code == 1, res.output
    assert sorted(p.name for p in (renders / "predB").glob("*.png")) == ["mine.png", f"{a}.png"]


def test_clean_renders_knows_what_an_older_eval_wrote(tmp_path):
    from o3dcli.eval.renders import clean_renders

    out = tmp_path / "e"
    for rel in ("pred/x.png", "pred/y.png", "other/z.png"):
        (out / "renders" / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / "renders" / rel).write_bytes(b"png")
    # an older o3d's report, with no manifest beside the renders: it scored pred/x and pred/y
    (out / "eval.json").write_text(json.dumps({"results": [{"variant": "pred", "object": o, "status": "ok"}
                                                           for o in ("x", "y")]}))
    now = out / "renders" / "pred" / "y.png"  # what this run wrote
    assert clean_renders(out, [now], finished=False) == []  # an interrupted run removes nothing
    assert clean_renders(out, [now]) == ["pred/x.png"]
    assert sorted(p.relative_to(out / "renders").as_posix() for p in (out / "renders").rglob("*.png")) == \
        ["other/z.png", "pred/y.png"]  # z.png: not eval's


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("jobs", ["1", "2"])  # 2: scored in other processes, told by the command
def test_a_missing_texture_is_told_once_per_object_per_run(tmp_path, monkeypatch, jobs):
    import o3dcli.eval.runner as runner

    gso = tmp_path / "gso"
    seeds = {"plain_a": 1_000_003, "plain_b": 1_000_004}
    for name, seed in seeds.items():
        write_gso_object(gso, name, make_object(seed)[0], textured=False)

    def fake_generate(variant, batch_runner, inputs, results, show_progress=True, *more):
        # o3d generate's work is not the point here: the asset is the ground truth itself
        for name, path in inputs.items():
            d = variant.assets_dir / path.stem
            d.mkdir(parents=True, exist_ok=True)
            write_obj(d / "model.obj", make_object(seeds[name])[0])
            results[name, variant.name].asset, results[name, variant.name].gen_cached = str(d), True

    monkeypatch.setattr(runner, "generate_assets", fake_generate)
    records = _Records()
    logging.getLogger("o3d").addHandler(records)
    try:
        for _ in range(2):  # a first run and a re-run
            records.messages.clear()
            res = run("--benchmark", "gso", "--data", gso, "-o", tmp_path / "out", "--align", "box", "--jobs", jobs,
                      *FAST)
            assert res.exit_code == 0, res.output
            told = [m for m in records.messages if "texture texture.png not found" in m]
            assert sorted(Path(m.split(":")[0]).parts[-3] for m in told) == ["plain_a", "plain_b"]
    finally:
        logging.getLogger("o3d").removeHandler(records)


@pytest.mark.parametrize("benchmark, where, message", [
    ("gso", "obj", "this looks like one object's folder: give its parent folder"),
    ("gso", "obj/meshes", "this looks like one object's meshes/ folder"),
    ("folder", "obj", "this looks like one object's folder: give its parent folder"),
    ("folder", ".", "it holds objects in the GSO layout: use --benchmark gso"),
])
def test_a_data_folder_that_is_one_object_gets_a_hint(tmp_path, benchmark, where, message):
    write_gso_object(tmp_path / "gso", "obj", make_object(1_000_003)[0], textured=True)
    res = run("--benchmark", benchmark, "--data", tmp_path / "gso" / where, "-o", tmp_path / "out", "--no-progress")
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    if where == "obj":
        assert str((tmp_path / "gso").resolve()) in "".join(res.output.split())


def test_two_objects_never_share_one_prediction(tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    for name, seed in (("chair(1)", 1_000_005), ("chair_1_", 1_000_006)):
        write_obj(gt / f"{name}.obj", make_object(seed)[0])
    pred = tmp_path / "pred"
    pred.mkdir()
    write_obj(pred / "chair_1_.obj", make_object(1_000_006)[0])
    objs = {o.name: o for o in folder_objects(gt)}
    assert find_prediction(pred, objs["chair_1_"].prediction_names) == pred / "chair_1_.obj"
    with pytest.raises(FileNotFoundError):
        find_prediction(pred, objs["chair(1)"].prediction_names)


def test_a_hand_edited_renders_manifest_cannot_remove_files_elsewhere(tmp_path):
    import json

    from o3dcli.eval.renders import RENDERS_MANIFEST, clean_renders

    import os

    out = tmp_path / "out"
    (out / "renders" / "v").mkdir(parents=True)
    (out / "renders" / "v" / "old.png").write_bytes(b"png")
    near = tmp_path / "x.png"
    near.write_bytes(b"png")
    # an absolute path of two parts ("/name.png") has the shape of a variant's render
    top = Path(os.path.abspath(os.sep)) / f"o3d-test-{os.getpid()}.png"
    if not os.access(top.parent, os.W_OK):
        pytest.skip("needs a writable file-system root")
    top.write_bytes(b"png")
    try:
        entries = [str(top), "v/old.png", "../x.png"]
        (out / "renders" / RENDERS_MANIFEST).write_text(json.dumps({"renders": entries}))
        assert clean_renders(out, []) == ["v/old.png"]
        assert top.is_file() and near.is_file()
    finally:
        top.unlink(missing_ok=True)


def test_what_scoring_processes_log_is_told_by_the_command(tmp_path):
    # predictions whose MTL names a texture that is not there: only loading the prediction, in a
    # scoring process, says so; the command tells it, once per file
    data, preds = tmp_path / "gt", tmp_path / "p"
    data.mkdir()
    preds.mkdir()
    for name, seed in (("a", 1_000_001), ("b", 1_000_002)):
        mesh = make_object(seed)[0]
        write_obj(data / f"{name}.obj", mesh)
        write_obj(preds / f"{name}.obj", mesh)
        text = (preds / f"{name}.obj").read_text()
        (preds / f"{name}.obj").write_text(f"mtllib {name}.mtl\nusemtl m\n" + text)
        (preds / f"{name}.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd gone.png\n")
    records = _Records()
    logging.getLogger("o3d").addHandler(records)
    try:
        res = run("--benchmark", "folder", "--data", data, "--predictions", preds, "-o", tmp_path / "o",
                  "--jobs", "2", *FAST)
    finally:
        logging.getLogger("o3d").removeHandler(records)
    assert res.exit_code == 0, res.output
    told = [m for m in records.messages if "texture gone.png not found" in m]
    assert sorted(Path(m.split(":")[0]).name for m in told) == ["a.mtl", "b.mtl"]


def test_an_interrupted_scoring_of_predictions_says_nothing_was_written_and_that_the_reports_there_are_old(
        tmp_path, monkeypatch):
    # it said "generated stages are cached; run the same command again to resume" with nothing
    # generated, beside the earlier run's eval.json that read as this one's
    from o3dcli.eval import runner
    from o3dcli.eval.benchmarks import synthetic_objects

    objs = synthetic_objects(limit=1)
    pred = _predictions(tmp_path, "pred", {objs[0].name: objs[0].load()})
    out = tmp_path / "out"
    assert run("--benchmark", "synthetic", "--limit", "1", "--predictions", pred, "-o", out, *FAST).exit_code == 0
    before = (out / "eval.json").read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_eval", interrupted)
    res = run("--benchmark", "synthetic", "--limit", "1", "--predictions", pred, "-o", out, *FAST)
    said = " ".join(res.output.split())
    assert res.exit_code == 130, res.output
    assert "interrupted: no scores were written (they are when every object is scored)" in said, said
    assert f"the eval.json, eval.csv, eval.md in {out} are an earlier run's, not this one's" in said, said
    assert "cached" not in said and (out / "eval.json").read_bytes() == before


def test_an_output_folder_that_is_the_data_or_a_predictions_folder_is_a_usage_error(tmp_path):
    from o3dcli.eval.benchmarks import synthetic_objects

    objs = synthetic_objects(limit=1)
    pred = _predictions(tmp_path, "pred", {objs[0].name: objs[0].load()})
    listed = sorted(p.name for p in pred.iterdir())
    res = run("--benchmark", "synthetic", "--limit", "1", "--predictions", pred, "-o", pred, *FAST)
    assert res.exit_code == 2, res.output
    assert f"-o {pred} is the --predictions folder" in " ".join(res.output.split()), res.output
    assert sorted(p.name for p in pred.iterdir()) == listed  # nothing written there


def test_a_prediction_that_cannot_be_scored_is_named_in_its_error(tmp_path):
    # "cannot sample the surface of a mesh with zero area": which file?
    from o3dcli.eval.benchmarks import synthetic_objects
    from o3dcli.geometry.mesh import TriMesh

    objs = synthetic_objects(limit=1)
    flat = TriMesh(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], np.float32), np.array([[0, 1, 2]]))
    pred = _predictions(tmp_path, "pred", {objs[0].name: flat})
    res = run("--benchmark", "synthetic", "--limit", "1", "--predictions", pred, "-o", tmp_path / "out", *FAST)
    assert res.exit_code == 1, res.output
    (row,) = report(tmp_path / "out")["results"]
    assert row["error"] == f"{pred / (objs[0].name + '.obj')}: cannot sample the surface of a mesh with zero area"


def test_a_huge_metric_is_shown_in_a_few_digits():
    # a prediction at another scale scored a Chamfer distance printed as 30 digits, breaking the table
    from o3dcli.eval.report import fmt

    assert fmt("chamfer", 5.6826626e29) == "5.68e+29" and fmt("chamfer", 0.0123456) == "0.01235"
    assert fmt("psnr", 12.3456) == "12.35" and fmt("fscore@0.05", 0.5) == "0.5000"
