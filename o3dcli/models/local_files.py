"""The local files a config's models need, checked before anything runs: one line per problem.

Nothing is downloaded: the released Ouroboros3D checkpoints (model.published_unet,
model.published_recon), SVD's VAE folder (model.vae_path) and its CLIP image encoder
folder (denoiser.clip_path) are local paths. The checkpoints are compared by names and
shapes with the model the config builds (on the meta device; a zip checkpoint is
memory-mapped, so the 3.5 GB UNet file is read in a fraction of a second); a folder must
hold the right model's config.json and a weights file (diffusers' and transformers'
fp16 variant names count).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

from o3dcli.config import Config

VAE_WEIGHTS = {
    None: ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
           "diffusion_pytorch_model.bin"),
    "fp16": ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors.index.fp16.json",
             "diffusion_pytorch_model.fp16.bin"),
}
"""Weights file names of a diffusers model folder, plain and fp16 variant."""
CLIP_WEIGHTS = {
    None: ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
    "fp16": ("model.fp16.safetensors", "model.safetensors.index.fp16.json", "pytorch_model.fp16.bin"),
}
"""Weights file names of a transformers model folder, plain and fp16 variant."""
CLIP_EXTRA = "the transformers package (the clip extra: pip install \"o3dcli[clip]\", or pip install -e \".[clip]\" in a source checkout)"


def weights_variant(folder: Path, names: dict) -> str | None:
    """"fp16" when `folder` holds only the fp16 variant of the weights (the `variant` argument of
    diffusers' and transformers' from_pretrained), else None."""
    if any((folder / n).is_file() for n in names[None]):
        return None
    return "fp16" if any((folder / n).is_file() for n in names["fp16"]) else None


def expand_paths(cfg: Config) -> Config:
    """`cfg` with `~` expanded in the model's local paths (checkpoints, VAE and CLIP folders)."""
    def exp(p: str) -> str:
        return str(Path(p).expanduser()) if p.startswith("~") else p

    m, d = cfg.model, cfg.denoiser
    model = dataclasses.replace(m, published_unet=exp(m.published_unet), published_recon=exp(m.published_recon),
                                vae_path=exp(m.vae_path))
    return dataclasses.replace(cfg, model=model, denoiser=dataclasses.replace(d, clip_path=exp(d.clip_path)))


@dataclasses.dataclass(frozen=True)
class FolderKind:
    key: str
    what: str
    sub: str
    weights: dict


VAE = FolderKind("model.vae_path", "SVD's VAE (the vae/ folder of stable-video-diffusion-img2vid(-xt))", "vae", VAE_WEIGHTS)
CLIP = FolderKind("denoiser.clip_path", "SVD's CLIP image encoder (the image_encoder/ folder of "
                  "stable-video-diffusion-img2vid(-xt))", "image_encoder", CLIP_WEIGHTS)


def folder_problems(kind: FolderKind, path: str, cfg: Config) -> list[str]:
    """What is wrong with a VAE or CLIP folder (empty list when it looks loadable)."""
    p = Path(path)
    head = f"{kind.key}: {p}"
    if p.is_file():
        return [f"{head}: a file, not a folder; set it to {kind.what}"]
    if not p.is_dir():
        return [f"{head}: no such folder ({kind.what})"]
    config_file = p / "config.json"
    if not config_file.is_file():
        if (p / kind.sub / "config.json").is_file():
            return [f"{head}: holds no config.json; this looks like the SVD folder itself: set {kind.key}={p / kind.sub}"]
        return [f"{head}: holds no config.json; set it to {kind.what}"]
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        return [f"{head}: config.json is not readable JSON ({e})"]
    problems = []
    if kind is VAE:
        if config.get("_class_name") != "AutoencoderKLTemporalDecoder":
            found = config.get("_class_name") or ", ".join(config.get("architectures") or []) or config.get("model_type")
            other = " (swapped with denoiser.clip_path?)" if "CLIP" in str(found) or "clip" in str(found) else ""
            return [f"{head}: config.json is of {found or 'another model'}, not of SVD's AutoencoderKLTemporalDecoder{other}"]
        if int(config.get("latent_channels", 4)) != cfg.denoiser.latent_channels:
            problems.append(f"{head}: a VAE with {config.get('latent_channels')} latent channels; the denoiser takes "
                            f"{cfg.denoiser.latent_channels} (denoiser.latent_channels)")
    else:
        archs = config.get("architectures") or []
        if "CLIPVisionModelWithProjection" not in archs and config.get("model_type") != "clip_vision_model":
            found = config.get("_class_name") or ", ".join(archs) or config.get("model_type")
            other = " (swapped with model.vae_path?)" if config.get("_class_name", "").startswith("Autoencoder") else ""
            return [f"{head}: config.json is of {found or 'another model'}, not of a CLIPVisionModelWithProjection{other}"]
        dim = config.get("projection_dim")
        if dim is not None and int(dim) != cfg.denoiser.cross_attention_dim:
            problems.append(f"{head}: its image embedding has {dim} channels; the denoiser's cross-attention takes "
                            f"{cfg.denoiser.cross_attention_dim} (denoiser.cross_attention_dim)")
    weights = [p / n for names in kind.weights.values() for n in names if (p / n).is_file()]
    if not weights:
        names = ", ".join(kind.weights[None][::2] + kind.weights["fp16"][:1])
        problems.append(f"{head}: holds config.json but no weights file ({names})")
    for w in weights:
        if w.stat().st_size == 0:
            problems.append(f"{head}: {w.name} is an empty file")
        elif w.suffix == ".safetensors":
            try:
                from safetensors import safe_open

                with safe_open(str(w), framework="pt") as f:
                    f.keys()
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                problems.append(f"{head}: {w.name} is not a readable safetensors file ({e})")
    return problems


def local_file_problems(cfg: Config) -> list[str]:
    """Every problem with the local files `cfg`'s models need, one line each, naming the `--set` key:
    not set, not there, a file for a folder (or the reverse), unreadable, or not fitting the model."""
    from o3dcli.models.build import RELEASED

    cfg = expand_paths(cfg)
    m, d = cfg.model, cfg.denoiser
    problems = []
    if m.codec == "vae":
        if not m.vae_path:
            problems.append("model.vae_path is not set (a local folder of SVD's VAE: vae/)")
        else:
            problems += folder_problems(VAE, m.vae_path, cfg)
    if d.image_encoder == "clip":
        if not d.clip_path:
            problems.append("denoiser.clip_path is not set (a local folder of SVD's CLIP encoder: image_encoder/)")
        else:
            problems += folder_problems(CLIP, d.clip_path, cfg)
        if importlib.util.find_spec("transformers") is None:
            problems.append(f"denoiser.image_encoder=clip needs {CLIP_EXTRA}")
    files = {"model.published_unet": m.published_unet, "model.published_recon": m.published_recon}
    given = {k: p for k, p in files.items() if p}
    if not given:
        if m.weights == RELEASED:
            problems.append("model.weights=released needs model.published_unet=PATH/mv_model_unet.pth and "
                            "model.published_recon=PATH/recon_model.pth (or model.weights=none to run it untrained)")
        return problems
    for key, name in (("model.published_unet", "mv_model_unet.pth"), ("model.published_recon", "recon_model.pth")):
        if key not in given:
            other = next(iter(given))
            problems.append(f"{key} is not set: {other} needs it (PATH/{name} of the Ouroboros3D release)")
        elif Path(given[key]).is_dir():
            problems.append(f"{key}: {given[key]}: a folder, not a file (PATH/{name} of the Ouroboros3D release)")
        elif not Path(given[key]).is_file():
            problems.append(f"{key}: no such file {given[key]}")
    if d.image_encoder != "clip":
        problems.append(f"denoiser.image_encoder={d.image_encoder}: the released mv_model_unet.pth goes with SVD's "
                        "CLIP image encoder: set denoiser.image_encoder=clip and denoiser.clip_path=SVD/image_encoder")
    if len(given) == 2 and all(Path(p).is_file() for p in given.values()):
        problems += checkpoint_problems(cfg)
    return problems


def checkpoint_problems(cfg: Config) -> list[str]:
    """The released checkpoints' names and shapes against the model `cfg` builds (meta device), one line a file."""
    import torch

    from o3dcli.models.build import O3DModel
    from o3dcli.models.checkpoints import (
        CheckpointError, checkpoint_shapes, map_published_state_dict, published_unet_problem, state_dict_shapes)
    from o3dcli.models.recon_checkpoint import published_recon_problem, strip_recon_prefixes

    no_clip = dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, clip_path=""))  # CLIP: its own folder
    with torch.device("meta"):
        model = O3DModel(no_clip)
    expected = {"unet": state_dict_shapes(model.denoiser), "recon": state_dict_shapes(model.recon)}

    def unet_fit(shapes):
        return published_unet_problem(map_published_state_dict(shapes), expected["unet"])

    def recon_fit(shapes):
        return published_recon_problem(strip_recon_prefixes(shapes), expected["recon"])

    problems = []
    for key, path, fit, other_fit, other in (
            ("model.published_unet", cfg.model.published_unet, unet_fit, recon_fit, "recon_model.pth"),
            ("model.published_recon", cfg.model.published_recon, recon_fit, unet_fit, "mv_model_unet.pth")):
        try:
            shapes = checkpoint_shapes(path)
        except CheckpointError as e:
            problems.append(f"{key}: {e}")
            continue
        problem = fit(shapes)
        if problem and other_fit(shapes) is None:
            other_key = "model.published_recon" if key == "model.published_unet" else "model.published_unet"
            problem = f"this is {other}, not the file {key} takes (swapped with {other_key}?)"
        if problem:
            problems.append(f"{key}: {path}: {problem}")
    return problems
