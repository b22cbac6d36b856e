"""The Gaussian reconstructor: published layout, activations, conditioning, import."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from o3dcli.config import ConfigError
from o3dcli.geometry.cameras import orbit_cameras
from o3dcli.geometry.rays import plucker_rays
from o3dcli.models.recon_checkpoint import load_published_reconstructor, strip_recon_prefixes
from o3dcli.models.recon_unet import timestep_embedding
from o3dcli.models.reconstructor import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GaussianReconstructor,
    ReconConfig,
    activate_channels,
    count_parameters,
    gaussians_from_channels,
    noise_timestep,
)

MANIFEST = Path(__file__).parent / "data" / "recon_model.keys.json"
AZIMUTHS = [0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 337.5]




def micro_config(**overrides) -> ReconConfig:
    """The shipped tiny design at a quarter of its cost: 16 px in, 4 views x 8^2 = 256 Gaussians."""
    small = dict(input_size=16, down_channels=(8, 16, 16), up_channels=(16, 8), norm_groups=4,
                 time_proj_channels=16, time_embed_channels=32)
    return dataclasses.replace(ReconConfig.tiny(), **{**small, **overrides})


def tiny_model(seed: int = 0, **overrides) -> GaussianReconstructor:
    torch.manual_seed(seed)
    return GaussianReconstructor(micro_config(**overrides)).eval()


@pytest.fixture(scope="module")
def cams():
    return orbit_cameras(0.0, AZIMUTHS, size=16)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 8, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_published_layout_matches_released_checkpoint():
    manifest = json.loads(MANIFEST.read_text())
    cfg = ReconConfig.published()
    with torch.device("meta"):
        model = GaussianReconstructor(cfg)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest["tensors"]  # same names, same shapes, nothing extra
    assert list(ours) == list(manifest["tensors"])  # and the same order
    assert len(ours) == manifest["num_tensors"] == 438
    assert count_parameters(model) == manifest["num_params"] == 424_039_200
    assert (cfg.splat_size, cfg.num_gaussians) == (128, 4 * 128 * 128)


def test_tiny_output_shapes_and_count():
    torch.manual_seed(0)
    model = GaussianReconstructor(ReconConfig.tiny()).eval()
    assert ReconConfig.tiny().num_gaussians == 4 * 16 * 16
    assert count_parameters(model) == 663_264
    images = torch.rand(2, 8, 3, 64, 64)  # resized to 32 px inside
    with torch.no_grad():
        x, rays = model.forward_channels(images, orbit_cameras(0.0, AZIMUTHS, size=64), torch.tensor([0.0, 3.0]))
    assert x.shape == (2, 1024, 14) and rays[0].shape == (2, 1024, 3) == rays[1].shape
    gs = gaussians_from_channels(x, model.cfg, rays)
    assert len(gs) == 2 and all(len(g) == 1024 for g in gs)
    assert all(torch.isfinite(g.means).all() for g in gs)


def _check_bounds(p: dict, cfg: ReconConfig) -> None:
    assert p["opacities"].min() >= 0 and p["opacities"].max() <= 1
    assert p["colors"].min() >= 0 and p["colors"].max() <= 1
    assert p["scales"].min() >= cfg.scale_min and p["scales"].max() <= cfg.scale_max
    torch.testing.assert_close(p["quats"].norm(dim=-1), torch.ones(p["quats"].shape[:-1]))


def test_activations_stay_in_bounds_and_match_hand_values():
    x = 20 * torch.randn(2, 500, 14, generator=torch.Generator().manual_seed(0))
    pub = ReconConfig.published()
    p = activate_channels(x, pub)
    _check_bounds(p, pub)
    assert p["means"].abs().max() <= pub.position_bound
    torch.testing.assert_close(p["means"], x[..., :3].clamp(-1, 1))
    # Zero raw channels: the centres of every activation, computed by hand.
    p0 = activate_channels(torch.zeros(1, 1, 14), pub)
    assert p0["opacities"].item() == 0.5 and p0["colors"].flatten().tolist() == [0.5] * 3
    assert p0["scales"][0, 0, 0].item() == pytest.approx(0.1 * math.log(2.0))
    tiny = ReconConfig.tiny()
    foot, direction = torch.tensor([[[0.1, 0.2, 0.3]]]), torch.tensor([[[0.0, 0.0, -1.0]]])
    z = activate_channels(torch.zeros(1, 1, 14), tiny, (foot, direction))
    assert z["scales"][0, 0, 0].item() == pytest.approx((tiny.scale_min + tiny.scale_max) / 2)
    torch.testing.assert_close(z["means"], torch.tensor([[[0.1, 0.2, 0.3]]]))  # on the ray's foot point
    gs = gaussians_from_channels(x, dataclasses.replace(tiny, position_mode="absolute"))
    assert len(gs) == 2 and gs[0].means.abs().max() <= tiny.position_bound
    _check_bounds({k: getattr(gs[1], k) for k in p}, tiny)


def test_ray_positions_lie_near_the_input_rays(cams, images):
    model = tiny_model()
    cfg = model.cfg
    with torch.no_grad():
        x, (p0, d) = model.forward_channels(images, cams, 0.0)
        means = activate_channels(x, cfg, (p0, d))["means"]
    # Reference rays: through the centres of the 8x8 output pixels of the input views.
    ref = plucker_rays(cams[list(cfg.input_views)].resized(8, 8))  # [4, 6, 8, 8]
    ref_d = ref[:, :3].permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(d[0], ref_d, atol=2e-3, rtol=0)
    centres = cams.centers[list(cfg.input_views)].repeat_interleave(64, dim=0)
    assert (p0[0] * d[0]).sum(-1).abs().max() < 1e-5  # foot point is perpendicular to the ray
    assert torch.linalg.cross(centres - p0[0], d[0], dim=-1).norm(dim=-1).max() < 1e-4  # the ray passes the camera
    along = ((means - p0) * d).sum(-1)
    side = (means - p0 - along[..., None] * d).norm(dim=-1)
    assert along.abs().max() <= cfg.ray_depth_range and side.max() <= math.sqrt(2) * cfg.ray_offset + 1e-6


def test_network_input_is_imagenet_rgb_then_plucker(cams, images):
    model = tiny_model(plucker_layout="m_d")
    seen = {}

    def keep_input(module, args, output):
        seen["x"] = args[0]

    model.unet.conv_in.register_forward_hook(keep_input)
    with torch.no_grad():
        model(images[:1], cams, 0.0)
    x, idx = seen["x"], list(model.cfg.input_views)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(x[:, :3], (images[0, idx] - mean) / std)
    rays = plucker_rays(cams[idx])
    torch.testing.assert_close(x[:, 3:6], rays[:, 3:])  # LGM order: moment first
    torch.testing.assert_close(x[:, 6:], rays[:, :3])


def test_camera_forms_agree(cams, images):
    model = tiny_model()
    with torch.no_grad():
        a, _ = model.forward_channels(images, cams, 1.0)
        b, _ = model.forward_channels(images, plucker_rays(cams), 1.0)
        c, _ = model.forward_channels(images, [cams, cams], torch.tensor([1.0, 1.0]))
        d, _ = model.forward_channels(images, plucker_rays(cams)[None].expand(2, -1, -1, -1, -1), 1.0)
    assert torch.equal(a, c)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, d)
    with pytest.raises(ValueError, match="at least 7 views, got 4"):
        model.forward_channels(images[:, :4], cams[:4], 0.0)


def test_noise_timestep_and_sinusoid_reference():
    from diffusers.models.embeddings import get_timestep_embedding

    t = noise_timestep(torch.tensor([0.0, 1.0, math.exp(4.0), 0.002]), clean_timestep=-2.0)
    torch.testing.assert_close(t, torch.tensor([-2.0, 0.0, 1.0, 0.25 * math.log(0.002)]))
    ref = get_timestep_embedding(t, 128, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(timestep_embedding(t, 128), ref)


def test_time_embedding_starts_at_zero_then_conditions(cams, images):
    model = tiny_model()
    with torch.no_grad():
        clean, _ = model.forward_channels(images, cams, 0.0)
        noisy, _ = model.forward_channels(images, cams, 5.0)
        assert torch.equal(clean, noisy)  # zero-initialised emb_layers: sigma has no effect yet
        for name, p in model.named_parameters():
            if "emb_layers.1" in name:
                p.normal_(0.0, 0.05)
        clean, _ = model.forward_channels(images, cams, 0.0)
        noisy, _ = model.forward_channels(images, cams, 5.0)
    assert (clean - noisy).abs().max() > 1e-3


def test_views_meet_only_in_cross_view_attention(cams, images):
    changed = images.clone()
    changed[:, 2] = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))  # input view #1
    other = images.clone()
    other[:, 1] = 0.0  # not an input view
    for attention, expect_mixing in [(True, True), (False, False)]:
        kw = {} if attention else dict(down_attention=(False,) * 3, mid_attention=False, up_attention=(False,) * 2)
        model = tiny_model(**kw)
        with torch.no_grad():
            base, _ = model.forward_channels(images, cams, 0.0)
            moved, _ = model.forward_channels(changed, cams, 0.0)
            same, _ = model.forward_channels(other, cams, 0.0)
        view0 = slice(0, 64)  # Gaussians from input view 0's pixels
        assert ((base[:, view0] - moved[:, view0]).abs().max() > 1e-4) == expect_mixing
        assert (base[:, 64:128] - moved[:, 64:128]).abs().max() > 1e-4  # view 2's own Gaussians change
        assert torch.equal(base, same)


def test_gradients_reach_every_parameter(cams, images):
    model = tiny_model().train()
    params = model.forward_params(images, cams, torch.tensor([0.0, 2.0]))
    sum(v.square().mean() for v in params.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # The time MLP sits behind the zero-initialised emb_layers: no gradient until they grow.
        assert (p.grad.abs().max() > 0) != name.startswith("unet.time_embed."), name
    model.zero_grad()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "emb_layers.1" in name:
                p.normal_(0.0, 0.05)
    params = model.forward_params(images, cams, torch.tensor([0.0, 2.0]))
    sum(v.square().mean() for v in params.values()).backward()
    assert all(p.grad.abs().max() > 0 for p in model.unet.time_embed.parameters())


def test_deterministic(cams, images):
    a, b = tiny_model(seed=3), tiny_model(seed=3)
    with torch.no_grad():
        assert torch.equal(a.forward_channels(images, cams, 1.0)[0], b.forward_channels(images, cams, 1.0)[0])
        assert torch.equal(a.forward_channels(images, cams, 1.0)[0], a.forward_channels(images, cams, 1.0)[0])


def test_import_strips_prefixes_and_casts(tmp_path, cams, images):
    src = tiny_model(seed=5)
    state = {f"_forward_module.recon_model.{k}": v.half() for k, v in src.state_dict().items()}
    state["_forward_module.mv_model.unet.conv_in.weight"] = torch.zeros(3)  # the denoiser's: ignored
    torch.save({"state_dict": state}, tmp_path / "recon_model.pth")
    dst = load_published_reconstructor(tmp_path / "recon_model.pth", tiny_model(seed=6))
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v.half().float())
        assert dst.state_dict()[k].dtype == torch.float32
    assert strip_recon_prefixes({"module.conv.bias": 1}) == {"conv.bias": 1}
    with torch.device("meta"):
        meta = GaussianReconstructor(micro_config())
    load_published_reconstructor(src.state_dict(), meta)
    assert not any(p.is_meta for p in meta.parameters())
    with torch.no_grad():
        got = meta.eval().forward_channels(images, cams, 0.0)[0]
        torch.testing.assert_close(got, src.forward_channels(images, cams, 0.0)[0])


def test_import_refuses_another_layout(tmp_path):
    state = tiny_model().state_dict()
    state.pop("conv.bias")
    state["unet.conv_in.weight"] = torch.zeros(1, 9, 3, 3)
    with pytest.raises(ValueError, match=r"bad\.pth.*1 missing: conv\.bias.*other shapes: unet\.conv_in\.weight"):
        torch.save(state, tmp_path / "bad.pth")
        load_published_reconstructor(tmp_path / "bad.pth", tiny_model())


def test_config_check_names_the_field():
    with pytest.raises(ConfigError, match="recon.norm_groups"):
        GaussianReconstructor(dataclasses.replace(ReconConfig.tiny(), norm_groups=7))
    with pytest.raises(ConfigError, match="recon.up_attention"):
        dataclasses.replace(ReconConfig.tiny(), up_attention=(True,)).check()
    with pytest.raises(ConfigError, match="recon.input_size"):
        dataclasses.replace(ReconConfig.published(), input_size=200).check()
