"""Multi-view denoiser, adapters, camera embedding, codecs and checkpoints (tiny random configs, CPU)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from o3dcli.config import ConfigError
from o3dcli.geometry.cameras import orbit_cameras
from o3dcli.geometry.rays import plucker_rays
from o3dcli.models.adapters import FeedbackAdapter
from o3dcli.models.camera_embed import harmonic_embedding, plucker_features, resize_plucker
from o3dcli.models.checkpoints import (
    CheckpointError, convert_weights, count_parameters, load_published_denoiser, load_weights, published_key,
    read_metadata, save_weights, state_dict_shapes,
)
from o3dcli.models.codecs import PixelCodec, VAECodec
from o3dcli.models.denoiser import DenoiserConfig, MultiViewDenoiser

MANIFEST = Path(__file__).parent / "data" / "mv_model_unet.keys.json"
B, V, R = 1, 2, 8  # small enough for fast tests; the tiny preset itself runs 8 views at 32 px


def make_inputs(batch=B, views=V, size=R, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        noisy=torch.randn(batch, views, 3, size, size, generator=g),
        c_noise=torch.full((batch,), 0.25 * math.log(2.0)),
        cond_latent=torch.randn(batch, 3, size, size, generator=g),
        plucker=torch.randn(batch, views, 6, size, size, generator=g),
        image_embeds=torch.randn(batch, 1, 64, generator=g),
        rgb_map=torch.rand(batch, views, 3, size, size, generator=g),
        ccm_map=torch.rand(batch, views, 3, size, size, generator=g),
    )


def build(seed=0, **changes) -> MultiViewDenoiser:
    torch.manual_seed(seed)
    return MultiViewDenoiser(dataclasses.replace(DenoiserConfig.tiny(), num_views=V, **changes)).eval()


def perturb(module: nn.Module, seed=1, scale=0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: one thread avoids thread hand-off stalls on a busy machine (10-30x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return build()


# --- camera embedding ---------------------------------------------------------------------


def test_harmonic_embedding_layout_by_hand():
    x = torch.tensor([0.3, -1.2, 0.05, 2.0, 0.7, -0.4])
    e = harmonic_embedding(x, 6)
    assert e.shape == (78,)
    d, k = 1, 4  # value 1, frequency 2^4: sine at d*6+k, cosine 36 later, raw values last
    assert e[d * 6 + k].item() == pytest.approx(math.sin(-1.2 * 16.0), abs=1e-6)
    assert e[36 + d * 6 + k].item() == pytest.approx(math.cos(-1.2 * 16.0), abs=1e-6)
    assert e[72 + 3].item() == pytest.approx(2.0)


def test_pooled_plucker_matches_rays_cast_at_coarse_resolution():
    cams = orbit_cameras([0.0, 20.0], [0.0, 90.0], size=32)
    fine = plucker_rays(cams)
    pooled = resize_plucker(fine, (8, 8))
    exact = plucker_rays(cams.resized(8, 8))
    assert (pooled - exact).abs().max().item() < 2e-3
    assert pooled[:, :3].norm(dim=1).sub(1).abs().max().item() < 1e-5


def test_published_plucker_order_and_transpose():
    p = torch.randn(2, 6, 4, 4)
    f = plucker_features(p, (4, 4), 6, moment_first=True, transpose=True)
    assert torch.allclose(f[..., 72:75], p[:, 3:].transpose(-1, -2).permute(0, 2, 3, 1))
    assert torch.allclose(f[..., 75:78], p[:, :3].transpose(-1, -2).permute(0, 2, 3, 1))


# --- adapters -----------------------------------------------------------------------------


def test_adapter_is_zero_at_init_and_matches_diffusers_full_adapter():
    from diffusers.models.adapter import FullAdapter

    ours = FeedbackAdapter((32, 64), in_channels=3, unshuffle=2, res_blocks=2)
    maps = torch.rand(2, 3, 16, 16)
    assert all(torch.equal(f, torch.zeros_like(f)) for f in ours(maps))
    perturb(ours, scale=0.1)
    ref = FullAdapter(3, [32, 64], num_res_blocks=2, downscale_factor=2)
    renamed = {}  # flat body.{stage*2+j} -> nested body.{stage}.resnets.{j}
    for k, v in ours.state_dict().items():
        if k.startswith("body."):
            _, i, rest = k.split(".", 2)
            stage, j = divmod(int(i), 2)
            k = f"body.{stage}.{rest}" if rest.startswith("in_conv") else f"body.{stage}.resnets.{j}.{rest}"
        renamed[k] = v
    ref.load_state_dict(renamed, strict=True)
    for a, b in zip(ours(maps), ref(maps)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
    assert [tuple(f.shape) for f in ours(maps)] == [(2, 32, 8, 8), (2, 64, 4, 4)]


# --- denoiser -----------------------------------------------------------------------------


def test_output_shape_and_batching(tiny):
    inp = make_inputs(batch=2)
    with torch.no_grad():
        out = tiny(**inp)
        per_view_cond = tiny(**{**inp, "cond_latent": inp["cond_latent"][:, None].expand(-1, V, -1, -1, -1)})
        first = tiny(**{k: v[:1] for k, v in inp.items()})
    assert out.shape == (2, V, 3, R, R)
    assert torch.allclose(out, per_view_cond)
    assert torch.allclose(out[:1], first, atol=1e-5)


def test_zero_init_keeps_a_pretrained_unet_unchanged():
    from diffusers import UNetSpatioTemporalConditionModel

    cfg = dataclasses.replace(DenoiserConfig.tiny(), num_views=V)
    torch.manual_seed(3)
    unet = UNetSpatioTemporalConditionModel(**cfg.unet_kwargs()).eval()
    model = MultiViewDenoiser(cfg, unet=unet).eval()
    inp = make_inputs()
    with torch.no_grad():
        ours = model(**inp)
        x = torch.cat([inp["noisy"], inp["cond_latent"][:, None].expand(-1, V, -1, -1, -1)], dim=2)
        ids = torch.tensor([cfg.added_time_ids])
        bare = unet(x, inp["c_noise"], inp["image_embeds"], ids).sample
    assert (ours - bare).abs().max().item() < 1e-5


def test_published_layout_runs_at_small_width():
    """SVD block layout (3 cross-attention down blocks + 1 plain), 4+4 latents, maps at 8x the latent size."""
    cfg = dataclasses.replace(
        DenoiserConfig.published(), block_out_channels=(32, 32, 64, 64), num_attention_heads=(1, 1, 2, 2),
        layers_per_block=1, cross_attention_dim=64, addition_time_embed_dim=8, image_encoder="conv", num_views=V,
    )
    torch.manual_seed(0)
    model = MultiViewDenoiser(cfg).eval()
    perturb(model.cond_encoder)
    perturb(model.down_plucker)
    g = torch.Generator().manual_seed(0)
    inp = dict(noisy=torch.randn(1, V, 4, 8, 8, generator=g), c_noise=torch.tensor([0.5]),
               cond_latent=torch.randn(1, 4, 8, 8, generator=g), plucker=torch.randn(1, V, 6, 64, 64, generator=g),
               image_embeds=torch.randn(1, 1, 64, generator=g), rgb_map=torch.rand(1, V, 3, 64, 64, generator=g))
    with torch.no_grad():
        out = model(**inp)
        assert out.shape == (1, V, 4, 8, 8)
        assert (out - model(**{**inp, "rgb_map": None})).abs().max().item() > 1e-4
    feats = model.adapter_features(inp["rgb_map"], None, (1, V), (8, 8))
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 8, 8), (32, 4, 4), (64, 2, 2), (64, 1, 1)]


def test_feedback_maps_matter_only_where_an_adapter_is_built():
    both = build()
    perturb(both.cond_encoder)
    perturb(both.down_plucker)
    no_rgb = build(feedback_rgb=False)
    assert not any(k.startswith("cond_encoder.0.") for k in no_rgb.state_dict())
    no_rgb.load_state_dict({k: v for k, v in both.state_dict().items() if not k.startswith("cond_encoder.0.")})
    inp = make_inputs()
    other_rgb = {**inp, "rgb_map": torch.rand_like(inp["rgb_map"])}
    with torch.no_grad():
        assert (both(**inp) - both(**other_rgb)).abs().max().item() > 1e-4
        assert (both(**inp) - both(**{**inp, "ccm_map": None})).abs().max().item() > 1e-4
        assert torch.equal(no_rgb(**inp), no_rgb(**other_rgb))
        assert torch.equal(no_rgb(**inp), no_rgb(**{**inp, "rgb_map": None}))
        zeros = {**inp, "rgb_map": torch.zeros_like(inp["rgb_map"]), "ccm_map": torch.zeros_like(inp["ccm_map"])}
        assert torch.allclose(both(**zeros), both(**{**inp, "rgb_map": None, "ccm_map": None}))


def test_cameras_matter_once_the_plucker_mlps_are_trained(tiny):
    model = build()
    perturb(model.up_plucker)
    inp = make_inputs()
    with torch.no_grad():
        assert torch.allclose(tiny(**inp), tiny(**{**inp, "plucker": -inp["plucker"]}), atol=1e-6)
        assert (model(**inp) - model(**{**inp, "plucker": -inp["plucker"]})).abs().max().item() > 1e-4


def test_deterministic_build_and_forward(tiny):
    other = build()
    assert all(torch.equal(a, b) for a, b in zip(tiny.state_dict().values(), other.state_dict().values()))
    inp = make_inputs()
    with torch.no_grad():
        assert torch.equal(tiny(**inp), tiny(**inp))


def test_gradient_checkpointing_gives_the_same_output_and_gradients():
    model = build()
    perturb(model.cond_encoder)
    model.train()
    inp = make_inputs()
    plain = model(**inp)
    model.enable_gradient_checkpointing()
    ckpt = model(**inp)
    ckpt.square().mean().backward()
    assert torch.allclose(plain, ckpt, atol=1e-5)
    assert model.cond_encoder[0].conv_in.weight.grad.abs().sum() > 0


def test_conv_image_encoder_tokens_and_clip_errors(tiny):
    img = torch.rand(2, 3, R, R)
    assert tiny.encode_image(img).shape == (2, 1, 64)
    clip_model = build(image_encoder="clip")
    assert clip_model.image_encoder is None
    with pytest.raises(RuntimeError, match="clip_path"):
        clip_model(**{**make_inputs(), "image_embeds": None, "cond_image": torch.rand(1, 3, R, R)})
    with pytest.raises((ImportError, FileNotFoundError), match="transformers|no CLIP image encoder"):
        build(image_encoder="clip", clip_path="/nonexistent/svd/image_encoder")


def test_clip_wrapper_preprocesses_like_clip():
    from types import SimpleNamespace

    from o3dcli.models.image_encoder import ClipImageEncoder

    class Stub(nn.Module):  # stands in for CLIPVisionModelWithProjection (transformers is optional)
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 8)

        def forward(self, pixel_values):
            self.seen = pixel_values
            return SimpleNamespace(image_embeds=self.proj(pixel_values.mean(dim=(-2, -1))))

    enc = ClipImageEncoder(Stub())
    tokens = enc(torch.full((2, 3, 40, 40), 0.5))
    assert tokens.shape == (2, 1, 8)
    assert enc.model.seen.shape == (2, 3, 224, 224)
    expected = (0.5 - 0.48145466) / 0.26862954  # red channel, by hand from OpenAI CLIP's statistics
    assert torch.allclose(enc.model.seen[:, 0], torch.full((2, 224, 224), expected), atol=1e-5)


def test_clip_statistics_match_transformers():
    transformers = pytest.importorskip("transformers")
    from o3dcli.models.image_encoder import CLIP_MEAN, CLIP_STD

    proc = transformers.CLIPImageProcessor()
    assert proc.image_mean == pytest.approx(list(CLIP_MEAN)) and proc.image_std == pytest.approx(list(CLIP_STD))


def test_bad_configs_and_inputs_are_refused(tiny):
    with pytest.raises(ConfigError, match="multiple of 32"):
        DenoiserConfig(block_out_channels=(32, 48, 128)).check()
    with pytest.raises(ConfigError, match="one entry per level"):
        DenoiserConfig(num_attention_heads=(1, 2)).check()
    inp = make_inputs()
    with pytest.raises(ValueError, match="rgb_map"):
        tiny(**{**inp, "rgb_map": torch.rand(B, V, 3, R // 2, R // 2)})
    with pytest.raises(ValueError, match="plucker"):
        tiny(**{**inp, "plucker": None})


# --- published layout and checkpoints -----------------------------------------------------


@pytest.fixture(scope="module")
def published_meta():
    with torch.device("meta"):
        return MultiViewDenoiser(DenoiserConfig.published())


def test_published_state_dict_equals_the_released_manifest(published_meta):
    manifest = json.loads(MANIFEST.read_text())
    expected = {k: tuple(s) for k, s in manifest["tensors"].items()}
    assert state_dict_shapes(published_meta) == expected
    counts = count_parameters(published_meta, depth=2)
    assert count_parameters(published_meta)["unet"] == 1_524_623_082
    assert counts["cond_encoder.0"] == counts["cond_encoder.1"] == 115_264_320
    plucker = sum(v for k, v in count_parameters(published_meta).items() if k.endswith("_plucker"))
    assert plucker == 9_881_600
    assert counts["total"] == manifest["num_params"] == 1_765_033_322


def test_published_import_maps_prefixes_and_reports_mismatches(published_meta):
    assert published_key("module._forward_module.mv_model.unet.conv_in.weight") == "unet.conv_in.weight"
    assert published_key("_forward_module.module.mid_plucker.embed.0.bias") == "mid_plucker.embed.0.bias"
    shapes = json.loads(MANIFEST.read_text())["tensors"]
    state = {f"module.mv_model.{k}": torch.empty(s, device="meta") for k, s in shapes.items()}
    state["recon_model.conv.weight"] = torch.empty(14, 14, 1, 1, device="meta")  # other half of a training system
    assert not load_published_denoiser(state, published_meta)
    del state["module.mv_model.cond_encoder.1.conv_in.bias"]
    state["module.mv_model.mid_plucker.embed.2.bias"] = torch.empty(7, device="meta")
    with pytest.raises(CheckpointError, match=r"cond_encoder\.1\.conv_in\.bias.*mid_plucker\.embed\.2\.bias file \[7\]"):
        load_published_denoiser(state, published_meta)


def test_published_import_loads_values_and_casts_fp16(tiny, tmp_path):
    state = {f"_forward_module.mv_model.{k}": (v + 0.1).half() for k, v in tiny.state_dict().items()}
    torch.save(state, tmp_path / "mv_model_unet.pth")
    target = build(seed=5)
    load_published_denoiser(tmp_path / "mv_model_unet.pth", target)
    got = target.state_dict()
    assert all(got[k].dtype == torch.float32 for k in got)
    assert all(torch.equal(got[k], (v + 0.1).half().float()) for k, v in tiny.state_dict().items())
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_published_denoiser(tmp_path / "nothing.pth", target)


def test_safetensors_round_trip_and_strict_errors(tiny, tmp_path):
    path = save_weights(tiny, tmp_path / "denoiser.safetensors")
    fresh = build(seed=7)
    meta = load_weights(fresh, path)
    assert json.loads(meta["config"]) == json.loads(json.dumps(dataclasses.asdict(tiny.config)))
    inp = make_inputs()
    with torch.no_grad():
        assert torch.equal(fresh(**inp), tiny(**inp))
    with pytest.raises(CheckpointError, match=r"denoiser\.safetensors.*unexpected.*cond_encoder\.0\."):
        load_weights(build(feedback_rgb=False), path)
    save_weights(nn.Linear(3, 4), tmp_path / "lin.safetensors")
    with pytest.raises(CheckpointError, match=r"weight file \[4, 3\] vs model \[5, 3\]"):
        load_weights(nn.Linear(3, 5), tmp_path / "lin.safetensors")
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_weights(tiny, tmp_path / "missing.safetensors")


def test_float16_export_loads_into_a_float32_model(tiny, tmp_path):
    src = save_weights(tiny, tmp_path / "full.safetensors", metadata={"step": "12"})
    dst = convert_weights(src, tmp_path / "half.safetensors", torch.float16)
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    meta = read_metadata(dst)
    assert meta["dtype"] == "float16" and meta["step"] == "12" and meta["config"] == read_metadata(src)["config"]
    fresh = build(seed=7)
    load_weights(fresh, dst)
    got, want = fresh.state_dict(), tiny.state_dict()
    assert all(got[k].dtype == want[k].dtype for k in want)  # cast back to the model's dtype
    assert all(torch.equal(got[k], want[k].half().to(want[k].dtype)) for k in want)
    inp = make_inputs()
    with torch.no_grad():
        a, b = fresh(**inp), tiny(**inp)
    assert (a - b).abs().max() <= 1e-2 * b.abs().max()


# --- codecs --------------------------------------------------------------------------------


def test_pixel_codec_round_trip():
    codec = PixelCodec()
    img = torch.rand(2, V, 3, 8, 8)
    z = codec.encode(img)
    assert z.min() >= -1 and z.max() <= 1 and torch.allclose(z, img * 2 - 1)
    assert torch.allclose(codec.decode(z), img, atol=1e-6)
    assert (codec.latent_channels, codec.downscale) == (3, 1)


def test_tiny_vae_codec_shapes_and_condition_scaling():
    torch.manual_seed(0)
    codec = VAECodec.from_config(dict(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                                      layers_per_block=1, latent_channels=4)).eval()
    img = torch.rand(1, 2, 3, 16, 16)
    with torch.no_grad():
        z = codec.encode(img)
        assert z.shape == (1, 2, 4, 8, 8) and codec.downscale == 2
        assert torch.allclose(codec.encode_condition(img) * codec.scaling_factor, z, atol=1e-6)
        out = codec.decode(z)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    sampled = codec.encode(img, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == z.shape and not torch.equal(sampled, z)


def test_grid_image_tokens_carry_where_things_are():
    from o3dcli.models.image_encoder import ConvImageEncoder

    torch.manual_seed(0)
    pooled = ConvImageEncoder(64, 8)
    grid = ConvImageEncoder(64, 8, grid=4)
    grid.load_state_dict(pooled.state_dict(), strict=False)
    img = torch.rand(2, 3, 32, 32)
    tokens = grid(img)
    assert tokens.shape == (2, 17, 64)  # pooled token + 4 x 4 cells
    assert torch.equal(tokens[:, :1], pooled(img))  # token 0 is the pooled one, unchanged
    # moving the object moves the cell tokens but hardly the pooled one
    shifted = torch.roll(img, 16, dims=-1)
    moved = grid(shifted)
    assert (moved[:, 1:] - tokens[:, 1:]).abs().mean() > 5 * (moved[:, 0] - tokens[:, 0]).abs().mean()
    # another input size resizes the position grid instead of failing
    assert grid(torch.rand(1, 3, 64, 64)).shape == (1, 65, 64)


def test_weights_from_before_a_setting_existed_still_fit_its_default(tmp_path):
    from safetensors.torch import load_file, save_file

    from o3dcli.config import load_config
    from o3dcli.models.build import check_weights_fit, resolve_weights
    from o3dcli.models.checkpoints import read_metadata

    src = resolve_weights("tiny")
    meta = read_metadata(src)
    model = json.loads(meta["model"])
    model["denoiser"].pop("conv_encoder_grid", None)  # as written before the setting was added
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(src)), str(old), metadata={**meta, "model": json.dumps(model)})
    check_weights_fit(old, load_config("tiny"))  # the default (0) is what those weights were trained with
    with pytest.raises(ConfigError, match="denoiser.conv_encoder_grid"):
        check_weights_fit(old, load_config("tiny", ["denoiser.conv_encoder_grid=4"]))


def test_weights_of_other_settings_are_refused_with_the_sets_that_fit_them(tmp_path):
    # e.g. the ablation's decoupled variant, trained with both feedbacks off: the message gives
    # the values to set, and setting them makes the weights fit
    import re

    from safetensors.torch import load_file, save_file

    from o3dcli.config import load_config
    from o3dcli.models.build import check_weights_fit, resolve_weights
    from o3dcli.models.checkpoints import read_metadata

    src = resolve_weights("tiny")
    meta = read_metadata(src)
    model = json.loads(meta["model"])
    model["denoiser"]["feedback_rgb"] = model["denoiser"]["feedback_ccm"] = False
    model["recon"]["up_channels"] = [64, 16]
    other = tmp_path / "decoupled.safetensors"
    save_file(load_file(str(src)), str(other), metadata={**meta, "model": json.dumps(model)})
    with pytest.raises(ConfigError) as err:
        check_weights_fit(other, load_config("tiny"))
    message = str(err.value)
    assert "(this config has true, true, [64,32])" in message, message
    sets = [s.rstrip(",") for s in re.findall(r"--set (\S+)", message)]
    assert sets == ["denoiser.feedback_ccm=false", "denoiser.feedback_rgb=false", "recon.up_channels=[64,16]"], message
    check_weights_fit(other, load_config("tiny", sets))
