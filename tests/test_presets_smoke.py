"""Every preset's code path runs on the CPU for one step (the published one at toy widths)."""

from __future__ import annotations

import importlib.util

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import disk_rgba
from o3dcli.cli import app
from o3dcli.config import available_presets, load_config

MESH_SMALL = ["mesh.target_faces=1000", "mesh.texture_size=128", "mesh.resolution=48", "mesh.fusion_views=6",
              "mesh.fusion_size=48"]

# The published structure (SVD VAE latents, 4 UNet levels, adapters on PixelUnshuffle(8),
# released ray-map layout, LGM-style 6-level reconstructor with absolute positions) at toy widths.
PUBLISHED_TOY = [
    "preprocess.size=64",
    "denoiser.block_out_channels=[32, 32, 64, 64]", "denoiser.num_attention_heads=[1, 1, 2, 2]",
    "denoiser.layers_per_block=1", "denoiser.cross_attention_dim=32", "denoiser.addition_time_embed_dim=8",
    "denoiser.image_encoder=conv",
    "recon.input_size=64", "recon.down_channels=[8, 8, 16, 16, 32, 32]", "recon.up_channels=[32, 32, 16, 16, 8]",
    "recon.layers_per_block=1", "recon.norm_groups=8", "recon.attention_heads=2", "recon.time_proj_channels=16",
    "recon.time_embed_channels=32",
]


@pytest.fixture(scope="module")
def toy_vae(tmp_path_factory):
    from diffusers import AutoencoderKLTemporalDecoder

    path = tmp_path_factory.mktemp("vae")
    AutoencoderKLTemporalDecoder(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                                 layers_per_block=1).save_pretrained(path)
    return path


def test_every_preset_is_covered():
    assert set(available_presets()) == {"tiny", "ouroboros3d-svd-lgm"}


def _run(tmp_path, preset, sets):
    img = tmp_path / "ball.png"
    Image.fromarray(disk_rgba(96), "RGBA").save(img)
    out = tmp_path / "out"
    args = ["generate", str(img), "-o", str(out), "--preset", preset, "--steps", "1", "--no-progress"]
    for s in sets + MESH_SMALL:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    item = json.loads((out / "o3d-report.json").read_text())["items"][0]
    assert item["status"] == "ok" and (out / "ball" / "model.glb").is_file()
    return item


def test_tiny_preset_one_step(tmp_path):
    item = _run(tmp_path, "tiny", ["preprocess.size=16"])
    assert item["stages"]["diffusion"]["num_gaussians"] == 1024


def test_published_preset_structure_one_step(tmp_path, toy_vae):
    cfg = load_config("ouroboros3d-svd-lgm", PUBLISHED_TOY)
    assert cfg.model.codec == "vae" and cfg.denoiser.adapter_unshuffle == 8 and cfg.denoiser.plucker_moment_first
    # model.weights=none: the toy widths cannot take the released checkpoints, so run it untrained
    item = _run(tmp_path, "ouroboros3d-svd-lgm", PUBLISHED_TOY + [f"model.vae_path={toy_vae}", "model.weights=none"])
    assert item["stages"]["diffusion"]["num_gaussians"] == 4 * 32 * 32  # 4 input views x (64 / 2)^2


def test_published_preset_without_local_files_is_a_clear_error(tmp_path):
    Image.fromarray(disk_rgba(64), "RGBA").save(tmp_path / "ball.png")
    res = CliRunner().invoke(app, ["generate", str(tmp_path), "-o", str(tmp_path / "o"), "--preset",
                                   "ouroboros3d-svd-lgm", "--set", "model.published_unet=/nope/mv_model_unet.pth",
                                   "--set", "model.published_recon=/nope/recon_model.pth"])
    assert res.exit_code == 2 and "/nope/mv_model_unet.pth" in res.output
    # every missing file is named at once, and nothing was started
    assert "model.vae_path" in res.output and "denoiser.clip_path" in res.output
    # the CLIP encoder's package is an extra: its absence is named with the rest, not found mid-run
    assert ("o3dcli[clip]" in res.output) == (importlib.util.find_spec("transformers") is None)
    assert not (tmp_path / "o").exists()


def test_published_preset_without_its_checkpoints_is_refused_before_running(tmp_path, toy_vae):
    # the released architecture untrained is 2.2 B parameters of noise: without the checkpoints the
    # preset stops with the keys to set, unless model.weights=none asks for it untrained
    Image.fromarray(disk_rgba(64), "RGBA").save(tmp_path / "ball.png")
    res = CliRunner().invoke(app, ["generate", str(tmp_path), "-o", str(tmp_path / "o"), "--preset",
                                   "ouroboros3d-svd-lgm", "--set", f"model.vae_path={toy_vae}",
                                   "--set", f"denoiser.clip_path={toy_vae}"])
    assert res.exit_code == 2, res.output
    assert "model.published_unet" in res.output and "model.published_recon" in res.output
    assert not (tmp_path / "o").exists()
    # checking the crops needs no model files
    res = CliRunner().invoke(app, ["generate", str(tmp_path / "ball.png"), "-o", str(tmp_path / "o"), "--preset",
                                   "ouroboros3d-svd-lgm", "--stop-after", "preprocess", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "ball" / "input.png").is_file()
