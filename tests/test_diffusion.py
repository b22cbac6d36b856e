"""EDM helpers and the RecursiveSampler: schedule, guidance, feedback wiring, determinism, resume."""

from __future__ import annotations

import math

import pytest
import torch

from o3dcli.cache import StateStore
from o3dcli.config import load_config
from o3dcli.diffusion.edm import (
    edm_coefficients,
    edm_x0,
    guidance_ramp,
    loss_weight,
    make_scheduler,
    sample_schedule_sigma,
)
from o3dcli.diffusion.sampler import RecursiveSampler, feedback_at
from o3dcli.models.build import build_models
from o3dcli.stages import generation_cameras

SIZE = 16


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    cfg = load_config("tiny", [f"preprocess.size={SIZE}", "diffusion.steps=4", "diffusion.save_every=1"])
    models = build_models(cfg, "cpu")
    cams = generation_cameras(cfg, SIZE)
    cond = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    return cfg, models, cams, cond


def sampler_for(cfg, models, **diffusion):
    d = cfg.diffusion.__class__(**{**cfg.diffusion.__dict__, **diffusion})
    return RecursiveSampler(models.model.denoiser, models.model.recon, models.codec, d)


def test_edm_coefficients_match_the_formulas():
    s = torch.tensor([0.01, 0.5, 1.0, 80.0])
    c_skip, c_out, c_in, c_noise = edm_coefficients(s)
    torch.testing.assert_close(c_skip, 1 / (s**2 + 1))
    torch.testing.assert_close(c_out, -s / torch.sqrt(s**2 + 1))
    torch.testing.assert_close(c_in, 1 / torch.sqrt(s**2 + 1))
    torch.testing.assert_close(c_noise, torch.log(s) / 4)
    torch.testing.assert_close(loss_weight(torch.tensor(2.0)), torch.tensor(5 / 4))
    # a network that outputs the v-target recovers x0 exactly
    x0, n, sigma = torch.randn(2, 3), torch.randn(2, 3), torch.tensor(1.7)
    x = x0 + sigma * n
    v = (n - sigma * x0) / torch.sqrt(sigma**2 + 1)  # F* = (x0 - c_skip x) / c_out
    torch.testing.assert_close(edm_x0(v, x, sigma), x0, atol=1e-5, rtol=1e-5)


def test_scheduler_is_karras_euler():
    sched = make_scheduler(10, 0.002, 80.0)
    s = sched.sigmas
    assert len(s) == 11 and s[-1] == 0 and math.isclose(float(s[0]), 80.0, rel_tol=1e-4)
    rho = 7.0
    ramp = torch.linspace(0, 1, 10, dtype=torch.float64)
    karras = (80.0 ** (1 / rho) + ramp * (0.002 ** (1 / rho) - 80.0 ** (1 / rho))) ** rho
    torch.testing.assert_close(s[:-1].double(), karras, rtol=1e-4, atol=1e-6)
    x, x0 = torch.randn(4), torch.randn(4)
    sched.set_begin_index(3)
    out = sched.step(x0, sched.timesteps[3], x).prev_sample
    torch.testing.assert_close(out, x + (x - x0) / s[3] * (s[4] - s[3]))


def test_schedule_sigma_sampling_matches_where_the_sampler_steps():
    """train.sigma_sampling=schedule: the share of draws above a step's sigma is that step's place in the schedule."""
    steps = make_scheduler(25, 0.002, 80.0).sigmas[:-1]
    draws = sample_schedule_sigma(24000, torch.Generator().manual_seed(0), 0.002, 80.0)
    assert float(draws.min()) >= 0.002 and float(draws.max()) <= 80.0
    for k in (3, 6, 12, 18, 21):
        above = float((draws >= steps[k]).double().mean())
        assert abs(above - k / 24) < 0.015, (k, above)


def test_guidance_ramp_and_feedback_schedule():
    torch.testing.assert_close(guidance_ramp(8, 1.0, 3.0), torch.tensor([1.0 + 2.0 * i / 7 for i in range(8)]))
    cfg = load_config("tiny").diffusion
    assert [feedback_at(i, cfg) for i in range(4)] == [True] * 4
    cfg.feedback_start, cfg.feedback_every = 3, 2  # maps from step 3 on, refreshed every 2 steps
    assert [i for i in range(10) if feedback_at(i, cfg)] == [2, 4, 6, 8]
    cfg.feedback = False
    assert not any(feedback_at(i, cfg) for i in range(10))


class Recorder(torch.nn.Module):
    """Wraps the denoiser and records what each call received."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []
        self.config = inner.config

    def encode_image(self, image):
        return self.inner.encode_image(image)

    def forward(self, noisy, c_noise, cond_latent, plucker, image_embeds=None, rgb_map=None, ccm_map=None):
        self.calls.append(dict(cond_latent=cond_latent.clone(), embeds=image_embeds.clone(),
                               rgb=None if rgb_map is None else rgb_map.clone(), ccm=None if ccm_map is None else ccm_map.clone()))
        return self.inner(noisy, c_noise, cond_latent, plucker, image_embeds=image_embeds, rgb_map=rgb_map, ccm_map=ccm_map)


def test_feedback_wiring_zero_maps_first_and_uncond_keeps_maps(tiny):
    cfg, models, cams, cond = tiny
    rec = Recorder(models.model.denoiser)
    s = RecursiveSampler(rec, models.model.recon, models.codec, cfg.diffusion)
    s.sample(cond, cams, torch.Generator().manual_seed(0))
    assert len(rec.calls) == cfg.diffusion.steps
    first = rec.calls[0]
    assert first["rgb"].abs().max() == 0 and first["ccm"].abs().max() == 0  # zero maps at the first step
    later = rec.calls[1]
    assert later["rgb"].abs().max() > 0 and later["ccm"].abs().max() > 0  # maps rendered from step 0's Gaussians
    # batch = [conditional, unconditional]: the image condition is dropped, the maps are kept
    assert later["cond_latent"][1].abs().max() == 0 and later["embeds"][1].abs().max() == 0
    assert later["cond_latent"][0].abs().max() > 0
    torch.testing.assert_close(later["rgb"][0], later["rgb"][1])
    torch.testing.assert_close(later["ccm"][0], later["ccm"][1])


def test_feedback_maps_rgb_over_background_and_ccm_over_grey():
    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.geometry.gaussians import Gaussians
    from o3dcli.diffusion.sampler import render_feedback_maps

    g = Gaussians(torch.tensor([[0.2, -0.1, 0.3]]), torch.full((1, 3), 0.05), torch.tensor([[1.0, 0, 0, 0]]),
                  torch.tensor([0.99]), torch.tensor([[0.1, 0.6, 0.9]]))
    cams = orbit_cameras([0.0, 0.0], [0.0, 90.0], 1.7417, 39.6, 32)
    rgb, ccm = render_feedback_maps(g, cams, (1.0, 0.0, 1.0), 32)
    assert rgb.shape == ccm.shape == (2, 3, 32, 32)
    torch.testing.assert_close(rgb[0, :, 0, 0], torch.tensor([1.0, 0.0, 1.0]))  # empty: the background colour
    torch.testing.assert_close(ccm[0, :, 0, 0], torch.full((3,), 0.5))  # empty: the origin's colour
    # at the Gaussian's centre pixel (alpha 0.99): colour and xyz + 0.5, nearly unmixed
    u, v, z = cams.K()[0] @ (cams.viewmats()[0, :3, :3] @ g.means[0] + cams.viewmats()[0, :3, 3])
    px, py = int(u / z), int(v / z)
    a = rgb[0, 1, py, px] / 0.6  # green: a * 0.6 + (1 - a) * 0
    assert a > 0.8
    bg = torch.tensor([1.0, 0.0, 1.0])
    torch.testing.assert_close(rgb[0, :, py, px], a * g.colors[0] + (1 - a) * bg, atol=1e-4, rtol=0)
    torch.testing.assert_close(ccm[0, :, py, px], a * (g.means[0] + 0.5) + (1 - a) * 0.5, atol=1e-4, rtol=0)


def test_no_feedback_means_zero_maps_throughout(tiny):
    cfg, models, cams, cond = tiny
    rec = Recorder(models.model.denoiser)
    d = cfg.diffusion.__class__(**{**cfg.diffusion.__dict__, "feedback": False})
    RecursiveSampler(rec, models.model.recon, models.codec, d).sample(cond, cams, torch.Generator().manual_seed(0))
    assert all(c["rgb"].abs().max() == 0 and c["ccm"].abs().max() == 0 for c in rec.calls)


def test_no_guidance_runs_a_single_branch(tiny):
    cfg, models, cams, cond = tiny
    rec = Recorder(models.model.denoiser)
    d = cfg.diffusion.__class__(**{**cfg.diffusion.__dict__, "guidance_min": 1.0, "guidance_max": 1.0})
    RecursiveSampler(rec, models.model.recon, models.codec, d).sample(cond, cams, torch.Generator().manual_seed(0))
    assert all(c["cond_latent"].shape[0] == 1 for c in rec.calls)


def test_deterministic_and_seed_dependent(tiny):
    cfg, models, cams, cond = tiny
    s = sampler_for(cfg, models)
    a = s.sample(cond, cams, torch.Generator().manual_seed(5))
    b = s.sample(cond, cams, torch.Generator().manual_seed(5))
    c = s.sample(cond, cams, torch.Generator().manual_seed(6))
    assert torch.equal(a.views, b.views) and torch.equal(a.gaussians.means, b.gaussians.means)
    assert not torch.equal(a.views, c.views)
    assert a.views.shape == (8, 3, SIZE, SIZE) and len(a.gaussians) == cfg.recon.num_gaussians


def test_resume_without_feedback_adapters(tmp_path):
    cfg = load_config("tiny", [f"preprocess.size={SIZE}", "diffusion.steps=3", "diffusion.save_every=1",
                               "denoiser.feedback_rgb=false", "denoiser.feedback_ccm=false", "diffusion.feedback=false",
                               "model.weights=none"])  # another architecture than the shipped weights'
    models = build_models(cfg, "cpu")
    cams, cond = generation_cameras(cfg, SIZE), torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    s = RecursiveSampler(models.model.denoiser, models.model.recon, models.codec, cfg.diffusion)
    ref = s.sample(cond, cams, torch.Generator().manual_seed(2))
    store = StateStore(tmp_path / "state")
    with pytest.raises(KeyboardInterrupt):
        s.sample(cond, cams, torch.Generator().manual_seed(2), state=store, interrupt_after=1)
    out = s.sample(cond, cams, torch.Generator().manual_seed(0), state=store)
    assert out.resumed_from == 1 and (out.views - ref.views).abs().max() <= 1e-6


def _run_and_interrupted_run(tiny, tmp_path, stop_after):
    """A sampler saving every step, its uninterrupted result (seed 11), and the store a run of it
    interrupted after `stop_after` steps left."""
    cfg, models, cams, cond = tiny
    s = sampler_for(cfg, models, save_every=1)
    ref = s.sample(cond, cams, torch.Generator().manual_seed(11))
    store = StateStore(tmp_path / "state")
    with pytest.raises(KeyboardInterrupt):
        s.sample(cond, cams, torch.Generator().manual_seed(11), state=store, interrupt_after=stop_after)
    return s, ref, store


@pytest.mark.parametrize("stop_after", [1, 2, 3])
def test_mid_denoising_resume_matches_uninterrupted(tiny, tmp_path, stop_after):
    cfg, models, cams, cond = tiny
    s, ref, store = _run_and_interrupted_run(tiny, tmp_path, stop_after)
    assert store.load()[1]["next_step"] == stop_after
    # the resumed run gets a fresh generator (as a new process would): its state comes from the store
    out = s.sample(cond, cams, torch.Generator().manual_seed(999), state=store)
    assert out.resumed_from == stop_after and out.steps_run == cfg.diffusion.steps - stop_after
    assert (out.views - ref.views).abs().max() <= 1e-6
    assert (out.gaussians.means - ref.gaussians.means).abs().max() <= 1e-6
    assert (out.gaussians.colors - ref.gaussians.colors).abs().max() <= 1e-6


def test_a_state_saved_on_another_kind_of_device_starts_over(tiny, tmp_path, caplog):
    # a CUDA generator's state is 16 bytes, a CPU one's 5,056: set on the other, it raised, and
    # the item failed on every rerun (the state survives the failure) until --force
    cfg, models, cams, cond = tiny
    s, ref, store = _run_and_interrupted_run(tiny, tmp_path, 2)
    tensors, meta = store.load()
    store.save({**tensors, "generator": torch.zeros(16, dtype=torch.uint8)}, meta)  # as a CUDA run leaves it
    with caplog.at_level("WARNING", logger="o3d"):
        out = s.sample(cond, cams, torch.Generator().manual_seed(11), state=store)
    assert out.resumed_from == 0 and out.steps_run == cfg.diffusion.steps
    assert torch.equal(out.views, ref.views)
    assert "made on another kind of device than cpu: denoising starts over" in caplog.text


def test_reduced_precision_models_sample(tmp_path):
    """bfloat16 weights on the CPU take the same dtype casts as float16 on CUDA (which needs a GPU to test)."""
    cfg = load_config("tiny", [f"preprocess.size={SIZE}", "diffusion.steps=2"])
    models = build_models(cfg, "cpu", "bfloat16")
    assert next(models.model.parameters()).dtype == torch.bfloat16
    s = RecursiveSampler(models.model.denoiser, models.model.recon, models.codec, cfg.diffusion)
    cond = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    out = s.sample(cond, generation_cameras(cfg, SIZE), torch.Generator().manual_seed(0))
    assert out.views.dtype == torch.float32 and out.gaussians.means.dtype == torch.float32
    assert torch.isfinite(out.views).all() and torch.isfinite(out.gaussians.means).all()
