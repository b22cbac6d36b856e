"""Build the models of a config and load their weights (ours, or the released Ouroboros3D files).

o3d's own weights are one safetensors file holding `denoiser.*` and `recon.*`
(the state dict of `O3DModel`), with the preset's model sections as metadata.
`model.weights` names it: "none" (seeded random init), a bare name looked up in
the weights folders (the package's `assets/weights/`, then $O3D_WEIGHTS_DIR),
or a path.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from o3dcli.config import Config
from o3dcli.errors import ConfigError


class O3DModel(nn.Module):
    """The two trained networks of o3d under one state dict: `denoiser.*`, `recon.*`."""

    def __init__(self, cfg: Config):
        super().__init__()
        from o3dcli.models.denoiser import MultiViewDenoiser
        from o3dcli.models.reconstructor import GaussianReconstructor

        self.denoiser = MultiViewDenoiser(cfg.denoiser)
        self.recon = GaussianReconstructor(cfg.recon)


@dataclass
class LoadedModels:
    model: O3DModel
    codec: nn.Module
    weights: str
    """Where the weights came from, for people ("seeded random init" when untrained)."""
    trained: bool


def model_sections(cfg: Config) -> dict:
    """The config sections that fix the architecture (stored with the weights)."""
    return {"denoiser": asdict(cfg.denoiser), "recon": asdict(cfg.recon), "codec": cfg.model.codec}


RELEASED = "released"
"""`model.weights` value of the published preset: the weights come from model.published_unet/_recon."""


def resolve_weights(spec: str) -> Path | None:
    """None for "none"; else the weights file for a name or path (ConfigError if not found)."""
    from o3dcli.sysinfo import weights_dirs

    if spec in ("", "none"):
        return None
    if spec == RELEASED:
        raise ConfigError("model.weights=released takes the released Ouroboros3D checkpoints: set "
                          "model.published_unet=PATH/mv_model_unet.pth and model.published_recon=PATH/recon_model.pth "
                          "(or model.weights=none to run this architecture untrained)")
    p = Path(spec).expanduser()
    if p.suffix == ".safetensors" or p.parent != Path("."):
        if not p.is_file():
            raise ConfigError(f"model.weights: no such file {p}")
        return p
    for d in weights_dirs():
        if (d / f"{spec}.safetensors").is_file():
            return d / f"{spec}.safetensors"
    raise ConfigError(f"model.weights: no weights named '{spec}' in {', '.join(map(str, weights_dirs()))}")


def check_local_files(cfg: Config) -> None:
    """ConfigError naming every local file or folder the models need that is not set or not there
    (SVD's VAE for the "vae" codec, its CLIP encoder for denoiser.image_encoder=clip, the released
    checkpoints for model.weights=released): found before anything runs, not per item."""
    m, d = cfg.model, cfg.denoiser
    problems = []
    if m.codec == "vae":
        if not m.vae_path:
            problems.append("model.vae_path is not set (a local folder of SVD's VAE: vae/)")
        elif not Path(m.vae_path).is_dir():
            problems.append(f"model.vae_path: no such folder {m.vae_path}")
    if d.image_encoder == "clip":
        if not d.clip_path:
            problems.append("denoiser.clip_path is not set (a local folder of SVD's CLIP encoder: image_encoder/)")
        elif not Path(d.clip_path).is_dir():
            problems.append(f"denoiser.clip_path: no such folder {d.clip_path}")
        if importlib.util.find_spec("transformers") is None:
            problems.append("denoiser.image_encoder=clip needs the transformers package "
                            "(pip install 'o3dcli[clip]')")
    given = [p for p in (m.published_unet, m.published_recon) if p]
    if given:
        if len(given) == 1:
            problems.append("model.published_unet and model.published_recon must be given together")
        problems += [f"model.published_*: no such file {p}" for p in given if not Path(p).is_file()]
    elif m.weights == RELEASED:
        problems.append("model.weights=released needs model.published_unet=PATH/mv_model_unet.pth and "
                        "model.published_recon=PATH/recon_model.pth (or model.weights=none to run it untrained)")
    if problems:
        raise ConfigError("the model's local files are missing (nothing is downloaded): " + "; ".join(problems))


def describe_weights(cfg: Config) -> str:
    """Where `build_models` will take the weights from, in words (raises ConfigError if they, or
    other files the models need, are missing)."""
    check_local_files(cfg)
    m = cfg.model
    if m.published_unet or m.published_recon:
        for p in (m.published_unet, m.published_recon):
            if not Path(p).is_file():
                raise ConfigError(f"model.published_*: no such file {p}")
        return f"released Ouroboros3D checkpoints ({m.published_unet}, {m.published_recon})"
    path = resolve_weights(m.weights)
    if path is None:
        return "none: seeded random init (model.weights=none), the output is not a trained model's"
    check_weights_fit(path, cfg)
    return str(path)


def check_weights_fit(path: Path, cfg: Config) -> None:
    """ConfigError naming the settings that differ when `path` was trained with another architecture."""
    from o3dcli.models.checkpoints import read_metadata

    try:
        stored = read_metadata(path).get("model")
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ConfigError(f"{path}: not a readable safetensors file ({e})") from None
    if stored:
        # a setting added after the file was written is absent from its metadata: the file was
        # trained with that setting's default, so compare against the default there
        defaults = json.loads(json.dumps(model_sections(Config())))
        stored_full = _fill_missing(json.loads(stored), defaults)
        differ = _differing_keys(stored_full, json.loads(json.dumps(model_sections(cfg))))
        if differ:
            raise ConfigError(
                f"{path}: these weights were trained with other model settings ({', '.join(differ[:6])}"
                f"{', ...' if len(differ) > 6 else ''}); undo those --set overrides, or set model.weights=none "
                "to run the changed model untrained")


def _fill_missing(stored, defaults):
    """`stored` with the keys it lacks taken from `defaults` (nested dicts)."""
    if not (isinstance(stored, dict) and isinstance(defaults, dict)):
        return stored
    out = dict(stored)
    for k, v in defaults.items():
        out[k] = _fill_missing(stored[k], v) if k in stored else v
    return out


def _differing_keys(a, b, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (the stored vs the current model sections)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _differing_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def dtype_of(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def build_models(cfg: Config, device: str = "cpu", dtype: str = "float32", seed: int | None = None) -> LoadedModels:
    """Models of `cfg` on `device`, weights loaded as `cfg.model` says.

    Without weights the init is seeded (`seed`, default runtime.seed) and does not
    touch the global RNG, so the same config always gives the same models.
    """
    from o3dcli.models.checkpoints import load_published_denoiser, load_weights
    from o3dcli.models.codecs import build_codec
    from o3dcli.models.recon_checkpoint import load_published_reconstructor

    m = cfg.model
    published = bool(m.published_unet or m.published_recon)
    if published and not (m.published_unet and m.published_recon):
        raise ConfigError("model.published_unet and model.published_recon must be given together")
    own = None if published else resolve_weights(m.weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.runtime.seed if seed is None else seed)
        ctx = torch.device("meta") if published else contextlib.nullcontext()
        with ctx:
            model = O3DModel(cfg)
    if published:
        load_published_denoiser(m.published_unet, model.denoiser)
        load_published_reconstructor(m.published_recon, model.recon)
        source = f"released Ouroboros3D weights ({m.published_unet}, {m.published_recon})"
    elif own is not None:
        check_weights_fit(own, cfg)
        load_weights(model, own)
        source = str(own)
    else:
        source = "seeded random init (no trained weights loaded)"
    codec = build_codec(m.codec, m.vae_path or None)
    model = model.to(device=device, dtype=dtype_of(dtype)).eval()
    codec = codec.to(device=device, dtype=dtype_of(dtype)).eval()
    return LoadedModels(model, codec, source, trained=published or own is not None)


def load_init_weights(model: nn.Module, cfg: Config, spec: str) -> list[str]:
    """Fine-tuning start: load the weights `spec` into `model`; returns the parameters they lack.

    Every tensor of the file must fit the model (same names and shapes). The model
    may have more: modules a changed setting adds (e.g. denoiser.conv_encoder_grid)
    keep their seeded init, and their names are returned so the caller can say so.
    Without such additions the stored settings must also match (check_weights_fit).
    """
    from o3dcli.models.checkpoints import CheckpointError, compare_shapes, load_weights, state_dict_shapes
    from safetensors import safe_open

    path = resolve_weights(spec)
    if path is None:
        return []
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise ConfigError(f"{path}: not a readable safetensors file ({e})") from None
    diff = compare_shapes(shapes, state_dict_shapes(model))
    if diff.unexpected or diff.mismatched:
        raise CheckpointError(f"{path}: weights do not fit this model: {diff.describe()}")
    if not diff.missing:
        check_weights_fit(path, cfg)
    load_weights(model, path, strict=False)
    return list(diff.missing)


def save_model(model: O3DModel, cfg: Config, path: Path, extra: dict | None = None) -> Path:
    """Write o3d weights (safetensors) with the architecture sections as metadata."""
    from o3dcli.models.checkpoints import save_weights

    meta = {"model": json.dumps(model_sections(cfg))}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return save_weights(model, path, metadata=meta)


def describe_parameters(cfg: Config) -> dict[str, int]:
    """Parameter counts per module, built on the meta device (no memory, no weights needed)."""
    from o3dcli.models.checkpoints import count_parameters

    with torch.device("meta"):
        model = O3DModel(cfg)
    out = {f"denoiser.{k}": v for k, v in count_parameters(model.denoiser).items() if k != "total"}
    out["denoiser (total)"] = sum(p.numel() for p in model.denoiser.parameters())
    out["reconstructor (total)"] = sum(p.numel() for p in model.recon.parameters())
    out["total"] = out["denoiser (total)"] + out["reconstructor (total)"]
    return out
