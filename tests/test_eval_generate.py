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
