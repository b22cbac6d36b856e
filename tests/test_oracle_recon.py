"""scripts/oracle_recon.py --floor: fixed solids cut to the input outline, the silhouette-only floor."""

import numpy as np
import pytest
import torch

from o3dcli.config import load_config
from o3dcli.mesh.fusion import gaussians_to_mesh
from o3dcli.stages import generation_cameras, input_silhouettes


@pytest.fixture(scope="module")
def oracle_mod(script_module):
    return script_module("oracle_recon")


def test_priors_fill_the_unit_box_as_named(oracle_mod):
    cube, ball, flat = (oracle_mod.prior_gaussians(k, n=10) for k in oracle_mod.PRIORS)
    assert len(cube) == 1000 and len(flat) < len(ball) < len(cube)
    for g in (cube, ball, flat):
        assert float(g.means.abs().max()) < 0.5 and bool((g.opacities == 1).all())
    # the squashed ball is half as deep along z (the input camera's axis) as it is wide along x
    flat = oracle_mod.prior_gaussians("half-depth ball", n=20)
    assert float(flat.means[:, 0].abs().max()) > 0.45
    assert 0.2 < float(flat.means[:, 2].abs().max()) <= 0.25
    with pytest.raises(ValueError, match="unknown prior 'cone'"):
        oracle_mod.prior_gaussians("cone")


def test_floor_mesh_is_the_prior_cut_to_the_outline(oracle_mod):
    """A disc outline seen by the input camera turns the cube into a cylinder along the camera axis:
    the mesh stays inside the disc's cone and is as deep as the cube."""
    cfg = load_config("tiny", ["preprocess.size=32"])
    yy, xx = np.mgrid[:32, :32]
    disc = ((xx - 15.5) ** 2 + (yy - 15.5) ** 2 <= 8.0**2).astype(np.float32)
    rgba = torch.cat([torch.ones(3, 32, 32), torch.from_numpy(disc)[None]])
    mesh = gaussians_to_mesh(oracle_mod.prior_gaussians("cube"), cfg.mesh, silhouettes=input_silhouettes(rgba, cfg))
    v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    cam = generation_cameras(cfg, 32)[:1]
    w2c = torch.linalg.inv(cam.c2w[0].double()).float()
    pc = v @ w2c[:3, :3].T + w2c[:3, 3]
    u = cam.fx[0] * pc[:, 0] / pc[:, 2] + cam.cx[0]
    w = cam.fy[0] * pc[:, 1] / pc[:, 2] + cam.cy[0]
    r = ((u - 16) ** 2 + (w - 16) ** 2).sqrt()
    assert float(r.max()) < 8.0 + 1.5  # inside the outline, up to the smoothing of the carve
    assert float(r.max()) > 8.0 - 1.5  # and filling it
    # the cut is a cylinder, not a ball: full depth along the camera axis (z)
    assert float(v[:, 2].max() - v[:, 2].min()) > 0.85
