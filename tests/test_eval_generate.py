"""`o3d eval` generating its own assets: one synthetic object end to end, then a cached re-run."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from o3dcli.cli import app

TINY = ["--set", "diffusion.steps=1", "--set", "preprocess.size=16", "--size", "32", "--points", "2000", "--no-progress",
        "--set", "mesh.target_faces=2000", "--set", "mesh.texture_size=128", "--set", "mesh.resolution=48",
        "--set", "mesh.fusion_views=8", "--set", "mesh.fusion_size=48"]


@pytest.mark.slow
def test_generate_then_score_one_synthetic_object(tmp_path):
    out = tmp_path / "ev"
    args = ["eval", "--benchmark", "synthetic", "--limit", "1", "-o", str(out), *TINY]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    inp = np.asarray(Image.open(out / "inputs" / "synth_01000000.png"))
    assert inp.shape == (32, 32, 4) and inp[0, 0, 3] == 0 and inp[16, 16, 3] == 255  # object on transparency
    assert (out / "assets" / "synth_01000000" / "gaussians.ply").is_file()
    rep = json.loads((out / "eval.json").read_text())
    r = rep["results"][0]
    # an o3d asset is scored from its mesh when it has one
    assert r["status"] == "ok" and r["kind"] == "mesh" and r["asset"].endswith("model.glb")
    m = r["metrics"]
    assert 0 < m["psnr"] < 60 and -1 <= m["ssim"] <= 1 and 0 <= m["mask_iou"] <= 1
    assert m["chamfer"] > 0 and 0 <= m["fscore@0.1"] <= 1
    assert m["volume_iou"] is None or 0 <= m["volume_iou"] <= 1
    assert r["gen_seconds"] > 0 and r["gen_cached"] is False
    assert rep["variants"][0]["name"] == "tiny" and rep["variants"][0]["meta"]["seed"] == 0
    # the report keeps the config that made the assets and the digest of the weights' bytes
    import hashlib

    from o3dcli.models.build import resolve_weights

    assert rep["variants"][0]["config"]["diffusion"]["steps"] == 1
    weights = resolve_weights("tiny")
    assert rep["variants"][0]["meta"]["sha256"] == {"weights": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert f"sha256 weights {rep['variants'][0]['meta']['sha256']['weights'][:12]}" in (out / "eval.md").read_text()
    # a re-run reuses generate's cache (same input bytes, same config) and gives the same scores
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    again = json.loads((out / "eval.json").read_text())["results"][0]
    assert again["gen_cached"] is True and again["metrics"] == m
    # ...and still says what generating it took (from the cache's record), not the lookup time
    assert again["gen_seconds"] == r["gen_seconds"]


@pytest.mark.slow
def test_eval_generates_with_several_processes(tmp_path):
    """--jobs 2: a worker process generates some of the objects with the variant's settings (the
    same cache entries the command would make), and the run scores every object."""
    out = tmp_path / "ev"
    args = ["eval", "--benchmark", "synthetic", "--limit", "4", "-o", str(out), *TINY]
    res = CliRunner().invoke(app, [*args, "--jobs", "2"])
    assert res.exit_code == 0, res.output
    assert "(tiny), 2 processes" in " ".join(res.output.split())
    made = [json.loads(p.read_text()) for p in sorted((out / "assets" / ".o3d" / "items").glob("*/diffusion-*/manifest.json"))]
    # one entry per object (a worker with other settings would have made entries the command then
    # made again), made by both processes of one batch
    assert len(made) == 4 and len({m["batch"] for m in made}) == 1
    assert len({m["pid"] for m in made}) == 2, "the worker generated none of the objects"
    rep = json.loads((out / "eval.json").read_text())
    assert rep["jobs"] == 2 and "in 2 processes" in (out / "eval.md").read_text()
    assert [r["status"] for r in rep["results"]] == ["ok"] * 4
    assert all(r["gen_cached"] is False for r in rep["results"])  # made in this run, by either process
    assert not (out / "assets" / ".o3d" / "logs").exists()  # the worker ended normally
    # one process again: everything is cached, the scores are the same
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    again = json.loads((out / "eval.json").read_text())["results"]
    assert all(r["gen_cached"] is True for r in again)
    assert [r["metrics"] for r in again] == [r["metrics"] for r in rep["results"]]
    # the same assets scored as another tool's predictions, in 2 processes: the same numbers
    res = CliRunner().invoke(app, ["eval", "--benchmark", "synthetic", "--limit", "4", "--predictions",
                                   str(out / "assets"), "-o", str(tmp_path / "ev2"), "--jobs", "2", "--size", "32", "--points", "2000",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    scored = json.loads((tmp_path / "ev2" / "eval.json").read_text())["results"]
    assert [r["metrics"] for r in scored] == [r["metrics"] for r in rep["results"]]
    assert sorted(p.name for p in (tmp_path / "ev2" / "renders" / "assets").iterdir()) == \
        [f"synth_0100000{i}.png" for i in range(4)]


@pytest.mark.slow
def test_a_scoring_process_that_dies_fails_its_object_alone(tmp_path):
    import os
    from functools import partial

    from o3dcli.eval.benchmarks import BenchmarkObject, synthetic_objects
    from o3dcli.eval.protocol import EvalProtocol
    from o3dcli.eval.runner import ObjectResult, Variant, score_all
    from o3dcli.synth.dataset import write_obj

    good = synthetic_objects(limit=3)
    preds = tmp_path / "p"
    preds.mkdir()
    for obj in good:
        write_obj(preds / f"{obj.name}.obj", obj.load())
    # loading this one's ground truth ends the process at once, as the out-of-memory killer would
    dies = BenchmarkObject("dies", "test", partial(os._exit, 3))
    write_obj(preds / "dies.obj", good[0].load())
    objects = [good[0], dies, *good[1:]]
    variants = [Variant("p", predictions=preds)]
    results = {(o.name, "p"): ObjectResult(o.name, "p") for o in objects}
    told, sent = [], []
    score_all(objects, variants, EvalProtocol(size=32, surface_points=2000), tmp_path / "out", results,
              show_progress=False, on_result=told.append, jobs=2, threads=1, sent=sent)
    assert results["dies", "p"].status == "failed" and "ended abnormally" in results["dies", "p"].error
    assert all(results[o.name, "p"].status == "ok" for o in good), [results[o.name, "p"].error for o in good]
    assert sorted(r.object for r in told) == sorted(o.name for o in objects)  # each reported once
    assert all((tmp_path / "out" / "renders" / "p" / f"{o.name}.png").is_file() for o in good)
    # what an interrupted run would list as possibly written (eval.renders): every render asked for
    assert {p.name for p in sent} == {f"{o.name}.png" for o in objects}
