"""The published preset's local files: released checkpoints, SVD's VAE and CLIP folders (toy widths).

Fakes with the released layout are made here: mv_model_unet.pth and recon_model.pth as
fp16 state dicts under the training system's prefixes, a toy VAE folder, and a toy CLIP
folder (with transformers; without it the tests that load CLIP skip).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import disk_rgba
from o3dcli.cli import app
from o3dcli.config import load_config
from o3dcli.errors import ConfigError
from o3dcli.models.build import O3DModel, build_models, check_local_files, describe_parameters
from o3dcli.models.checkpoints import CheckpointError, load_torch_file
from o3dcli.models.local_files import local_file_problems

TOY = [
    "preprocess.size=64",
    "denoiser.block_out_channels=[32, 32, 64, 64]", "denoiser.num_attention_heads=[1, 1, 2, 2]",
    "denoiser.layers_per_block=1", "denoiser.cross_attention_dim=32", "denoiser.addition_time_embed_dim=8",
    "recon.input_size=64", "recon.down_channels=[8, 8, 16, 16, 32, 32]", "recon.up_channels=[32, 32, 16, 16, 8]",
    "recon.layers_per_block=1", "recon.norm_groups=8", "recon.attention_heads=2", "recon.time_proj_channels=16",
    "recon.time_embed_channels=32",
]
CLIP_CONFIG = {"architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model",
               "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "image_size": 224, "patch_size": 32, "projection_dim": 32}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """{unet, recon, vae, clip}: toy files in the published layout (clip: config.json + a stand-in weights
    file, enough for the checks; `clip_model` makes a loadable one)."""
    from diffusers import AutoencoderKLTemporalDecoder
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("release")
    AutoencoderKLTemporalDecoder(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                                 layers_per_block=1).save_pretrained(root / "vae")
    (root / "image_encoder").mkdir()
    (root / "image_encoder" / "config.json").write_text(json.dumps(CLIP_CONFIG))
    save_file({"x": torch.zeros(1)}, str(root / "image_encoder" / "model.safetensors"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = O3DModel(load_config("ouroboros3d-svd-lgm", TOY + ["denoiser.image_encoder=conv", "model.weights=none"]))
    unet = {f"_forward_module.mv_model.{k}": v.half() for k, v in m.denoiser.state_dict().items()
            if not k.startswith("image_encoder.")}
    torch.save(unet, root / "mv_model_unet.pth")
    torch.save({f"recon_model.{k}": v.half() for k, v in m.recon.state_dict().items()}, root / "recon_model.pth")
    return {"unet": root / "mv_model_unet.pth", "recon": root / "recon_model.pth", "vae": root / "vae",
            "clip": root / "image_encoder"}


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
    """A loadable toy CLIP folder (needs transformers) and the model saved in it."""
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("clip")
    config = transformers.CLIPVisionConfig(**{k: v for k, v in CLIP_CONFIG.items() if k not in ("architectures", "model_type")})
    model = transformers.CLIPVisionModelWithProjection(config)
    model.save_pretrained(path)
    return path, model


def sets(release, **paths):
    files = {"unet": release["unet"], "recon": release["recon"], "vae": release["vae"], "clip": release["clip"]} | paths
    keys = {"unet": "model.published_unet", "recon": "model.published_recon", "vae": "model.vae_path",
            "clip": "denoiser.clip_path"}
    return TOY + [f"{keys[k]}={v}" for k, v in files.items() if v is not None]


def generate(tmp_path, extra):
    Image.fromarray(disk_rgba(64), "RGBA").save(tmp_path / "ball.png")
    args = ["generate", str(tmp_path / "ball.png"), "-o", str(tmp_path / "out"), "--preset", "ouroboros3d-svd-lgm",
            "--steps", "1", "--no-progress"]
    for s in extra:
        args += ["--set", s]
    return CliRunner().invoke(app, args)


# -- 1. CLIP loads outside the meta-device build; info does not read its weights ----------------------

def test_released_model_with_clip_loads_in_the_target_dtype(release, clip_model):
    path, clip = clip_model
    cfg = load_config("ouroboros3d-svd-lgm", sets(release, clip=path))
    loaded = build_models(cfg, "cpu", "float16")
    model = loaded.model
    assert loaded.trained and all(p.dtype == torch.float16 and not p.is_meta for p in model.parameters())
    got = model.denoiser.image_encoder.model.state_dict()
    assert all(torch.equal(got[k], v.half()) for k, v in clip.state_dict().items())
    unet = torch.load(release["unet"], weights_only=True)
    assert torch.equal(model.denoiser.unet.conv_in.weight, unet["_forward_module.mv_model.unet.conv_in.weight"])
    assert next(loaded.codec.parameters()).dtype == torch.float16


def test_info_counts_clip_from_its_config_without_reading_weights(release, clip_model, monkeypatch):
    import transformers

    path, clip = clip_model

    def refuse(*a, **k):
        raise AssertionError("weights read")

    monkeypatch.setattr(transformers.CLIPVisionModelWithProjection, "from_pretrained", refuse)
    counts = describe_parameters(load_config("ouroboros3d-svd-lgm", sets(release, clip=path)))
    assert counts["denoiser.image_encoder"] == sum(p.numel() for p in clip.parameters())


def test_info_with_clip_path_is_not_a_traceback(clip_model, tmp_path):
    from o3dcli.config import dump_config

    preset = tmp_path / "mine.yaml"  # a copy of the preset holding the CLIP folder (released files not given)
    preset.write_text(dump_config(load_config("ouroboros3d-svd-lgm", [f"denoiser.clip_path={clip_model[0]}"])))
    res = CliRunner().invoke(app, ["info", "--preset", str(preset)])
    assert res.exit_code == 2, res.output  # its weights cannot be used: the released files are not given
    assert "denoiser.image_encoder" in res.output and "Traceback" not in res.output
    assert "weights: the model's local files are not usable" in " ".join(res.output.split())


# -- 2./3./7. every problem with the checkpoints, up front, one line each, naming the key -----------

def _damaged(kind, release, tmp_path):
    p = tmp_path / f"{kind}.pth"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        raw = release["unet"].read_bytes()
        p.write_bytes(raw[: len(raw) // 2])
    elif kind == "list":
        torch.save([1, 2, 3], p)
    elif kind == "lightning":
        torch.save({"state_dict": {}, "hparams": argparse.Namespace(lr=1)}, p)
    elif kind == "unet alone":
        state = torch.load(release["unet"], weights_only=True)
        torch.save({k.split("mv_model.unet.")[1]: v for k, v in state.items() if "mv_model.unet." in k}, p)
    elif kind == "folder":
        p.mkdir()
    return p


@pytest.mark.parametrize("kind,words", [
    ("empty", "an empty file"), ("truncated", "truncated"), ("list", "holds a list"),
    ("lightning", "argparse.Namespace"), ("unet alone", "UNet alone"), ("folder", "a folder, not a file")])
def test_a_bad_unet_checkpoint_is_named_before_anything_runs(release, tmp_path, kind, words):
    res = generate(tmp_path, sets(release, unet=_damaged(kind, release, tmp_path)))
    assert res.exit_code == 2, res.output
    line = next(line for line in res.output.splitlines() if "model.published_unet" in line)
    assert words in line and f"{kind}.pth" in line and "\x1b" not in line
    assert "found before anything is written" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_recon_problems_name_their_key(release, tmp_path):
    state = torch.load(release["recon"], weights_only=True)
    lgm = {k: v for k, v in state.items() if "time_embed." not in k and "emb_layers." not in k}
    torch.save(lgm, tmp_path / "lgm.pth")
    res = generate(tmp_path, sets(release, recon=tmp_path / "lgm.pth"))
    assert res.exit_code == 2 and "model.published_recon" in res.output and "an LGM checkpoint" in res.output
    assert "ReconConfig" not in res.output
    swapped = generate(tmp_path, sets(release, unet=release["recon"], recon=release["unet"]))
    assert swapped.exit_code == 2 and swapped.output.count("swapped with") == 2
    only_one = generate(tmp_path, sets(release, recon=None))
    assert only_one.exit_code == 2 and "model.published_recon is not set" in only_one.output


def test_folders_are_checked_for_config_and_weights(release, tmp_path):
    root = tmp_path / "svd"
    shutil.copytree(release["vae"], root / "vae")
    shutil.copytree(release["clip"], root / "image_encoder")
    with pytest.raises(ConfigError) as e:
        check_local_files(load_config("ouroboros3d-svd-lgm", sets(release, vae=root, clip=release["vae"])))
    assert f"model.vae_path={root / 'vae'}" in str(e.value)
    assert "denoiser.clip_path" in str(e.value) and "swapped with model.vae_path" in str(e.value)
    (root / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"model.vae_path: .*no weights file"):
        check_local_files(load_config("ouroboros3d-svd-lgm", sets(release, vae=root / "vae")))


def test_conv_encoder_with_the_released_files_is_refused(release):
    with pytest.raises(ConfigError, match="denoiser.image_encoder=conv"):
        check_local_files(load_config("ouroboros3d-svd-lgm", sets(release) + ["denoiser.image_encoder=conv"]))


def test_torch_file_errors_name_the_file(tmp_path):
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match=r"text\.pth: not a PyTorch checkpoint"):
        load_torch_file(tmp_path / "text.pth")
    with pytest.raises(CheckpointError, match=r"nothing\.pth: no such checkpoint file"):
        load_torch_file(tmp_path / "nothing.pth")


# -- 4./5./6. ~ in paths, fp16-only folders, the CLIP folder in the cache key -----------------------

def test_tilde_paths_and_fp16_only_folders(release, tmp_path, monkeypatch):
    from o3dcli.models.codecs import VAECodec

    home = tmp_path / "home"
    shutil.copytree(release["vae"], home / "vae")
    os.rename(home / "vae" / "diffusion_pytorch_model.safetensors", home / "vae" / "diffusion_pytorch_model.fp16.safetensors")
    for k in ("unet", "recon"):
        shutil.copy(release[k], home / release[k].name)
    monkeypatch.setenv("HOME", str(home))
    cfg = load_config("ouroboros3d-svd-lgm", sets(release, unet="~/mv_model_unet.pth", recon="~/recon_model.pth",
                                                  vae="~/vae"))
    assert [p for p in local_file_problems(cfg) if "transformers" not in p] == []  # found, expanded
    codec = VAECodec.from_pretrained("~/vae")
    ref = VAECodec.from_pretrained(release["vae"])
    assert all(torch.equal(a, b) for a, b in zip(codec.parameters(), ref.parameters()))
    from o3dcli.stages import model_files

    files = model_files(cfg)
    assert files["published_unet"] == home / "mv_model_unet.pth"
    assert files["clip/config.json"] == release["clip"] / "config.json"  # the CLIP folder is part of the key
    assert "vae/diffusion_pytorch_model.fp16.safetensors" in files


def test_fp16_only_clip_folder_loads(clip_model, tmp_path):
    from o3dcli.models.image_encoder import ClipImageEncoder

    path, clip = clip_model
    shutil.copytree(path, tmp_path / "enc")
    os.rename(tmp_path / "enc" / "model.safetensors", tmp_path / "enc" / "model.fp16.safetensors")
    enc = ClipImageEncoder.from_pretrained(tmp_path / "enc")
    got = enc.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in clip.state_dict().items())
