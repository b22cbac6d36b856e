"""scripts/probe_denoiser.py: the x0 error per noise level against the mean-image reference."""

import pytest
import torch

from o3dcli.config import load_config
from o3dcli.synth.generate import synthesize
from o3dcli.train.data import composite, load_dataset

SMALL = ("preprocess.size=16",)


@pytest.fixture(scope="module")
def probe_mod(script_module):
    return script_module("probe_denoiser")


def test_probe_rows_and_mean_image_reference(probe_mod, tmp_path):
    synthesize(tmp_path, 3, seed=5, size=32, extra_views=1)
    rows, mean_err, details = probe_mod.probe("none", tmp_path, "tiny", n_objects=3, seed=0, overrides=SMALL)
    assert [r[0] for r in rows] == list(probe_mod.SIGMAS)
    # the reference is the spread of the clean views around their mean (pixel codec: the images)
    cfg = load_config("tiny", list(SMALL))
    views = torch.stack([o.views for o in load_dataset(tmp_path, cfg, limit=3)])
    x0 = composite(views, tuple(cfg.preprocess.background)) * 2 - 1  # the pixel codec's latents
    assert mean_err == pytest.approx(float(((x0 - x0.mean(0, keepdim=True)) ** 2).mean()), rel=1e-4)
    # whatever the network, EDM's skip connection keeps the lowest noise level nearly exact
    low = rows[0]
    assert all(0 <= e < 1e-2 for e in low[1:]) and low[1] < mean_err / 10
    # an untrained network at the highest noise level is no better than the mean image
    assert rows[-1][1] > mean_err * 0.9
    # the per-view errors average to the row's (equal view sizes); the copy reference is the
    # condition latent against view 0, which the pixel codec makes cond * 2 - 1
    for s, cond_err, *_ in rows:
        assert sum(details["per_view"][s]) / len(details["per_view"][s]) == pytest.approx(cond_err, rel=1e-5)
    objs = load_dataset(tmp_path, cfg, limit=3)
    cond = torch.stack([o.cond[len(o.cond) // 2] for o in objs]) * 2 - 1
    assert details["copy_view0"] == pytest.approx(float(((cond - x0[:, 0]) ** 2).mean()), rel=1e-4)


def test_probe_refuses_a_missing_weights_file_or_data_folder_by_name(probe_mod, tmp_path):
    with pytest.raises(SystemExit, match="no object folders"):
        probe_mod.main(["none", "--data", str(tmp_path)])
    synthesize(tmp_path / "data", 1, seed=5, size=32, extra_views=1)
    with pytest.raises(SystemExit, match="no such file .*missing.safetensors"):
        probe_mod.main([str(tmp_path / "missing.safetensors"), "--data", str(tmp_path / "data"), "--set", SMALL[0]])
    with pytest.raises(SystemExit, match="nowhere: not a folder"):
        probe_mod.main(["none", "--data", str(tmp_path / "nowhere")])
