"""Build the models of a config and load their weights (ours, or the released Ouroboros3D files).

o3d's own weights are one safetensors file holding `denoiser.*` and `recon.*`
(the state dict of `O3DModel`), with the preset's model sections as metadata.
`model.weights` names it: "none" (seeded random init), a bare name looked up in
the weights folders (the package's `assets/weights/`, then $O3D_WEIGHTS_DIR),
a path, or an `o3d train` run folder (its `model.safetensors`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from o3dcli.config import Config
from o3dcli.errors import ConfigError


class O3DModel(nn.Module):
    """The two trained networks of o3d under one state dict: `denoiser.*`, `recon.*`."""

    def __init__(self, cfg: Config, load_image_encoder: bool = True):
        """load_image_encoder=False: a CLIP image encoder is built from its folder's config without reading its
        weights (for a model built on the meta device: CLIP's from_pretrained refuses a meta context)."""
        super().__init__()
        from o3dcli.models.denoiser import MultiViewDenoiser
        from o3dcli.models.reconstructor import GaussianReconstructor

        self.denoiser = MultiViewDenoiser(cfg.denoiser, load_image_encoder=load_image_encoder)
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


RUN_WEIGHTS = "model.safetensors"
"""The EMA weights file in an `o3d train` run folder: a run folder names its weights."""


def resolve_weights(spec: str, field: str = "model.weights") -> Path | None:
    """None for "none"; else the weights file for a name, a path or a training run's folder
    (ConfigError naming `field` if not found)."""
    from o3dcli.sysinfo import is_bare_name, named_weights, weights_dirs

    if spec in ("", "none"):
        return None
    if spec == RELEASED:
        raise ConfigError(f"{field}=released takes the released Ouroboros3D checkpoints: set "
                          "model.published_unet=PATH/mv_model_unet.pth and model.published_recon=PATH/recon_model.pth "
                          f"(or {field}=none to run this architecture untrained)")
    p = Path(spec).expanduser()
    named = p.suffix != ".safetensors" and is_bare_name(spec)
    found = named_weights(spec)
    if found is not None:
        return found
    if p.is_dir():
        if (p / RUN_WEIGHTS).is_file():
            return p / RUN_WEIGHTS
        raise ConfigError(f"{field}: {p} is a folder without {RUN_WEIGHTS} (an o3d train run folder has one "
                          "once its first checkpoint is saved)")
    if not named:
        if not p.is_file():
            raise ConfigError(f"{field}: no such file {p}")
        return p
    raise ConfigError(f"{field}: no weights named '{spec}' in {', '.join(map(str, weights_dirs()))}")


_WARNED: set[str] = set()
"""Warnings said in this process (the weights are resolved again by each stage that needs them)."""


def check_local_files(cfg: Config) -> None:
    """ConfigError naming every local file or folder the models need that is not set, not there or not usable
    (SVD's VAE for the "vae" codec, its CLIP encoder for denoiser.image_encoder=clip, the released
    checkpoints, compared by names and shapes with the model): found before anything is written, not per item."""
    from o3dcli.models.local_files import local_file_problems

    problems = local_file_problems(cfg)
    if problems:
        raise ConfigError("the model's local files are not usable (found before anything is written; nothing is "
                          "downloaded):\n  " + "\n  ".join(problems))


def describe_weights(cfg: Config) -> str:
    """Where `build_models` will take the weights from, in words (raises ConfigError if they, or
    other files the models need, are missing or unusable)."""
    from o3dcli.models.local_files import expand_paths

    check_local_files(cfg)
    m = expand_paths(cfg).model
    if m.published_unet or m.published_recon:
        return f"released Ouroboros3D checkpoints ({m.published_unet}, {m.published_recon})"
    path = resolve_weights(m.weights)
    if path is None:
        return "none: seeded random init (model.weights=none), the output is not a trained model's"
    check_weights_fit(path, cfg)
    from o3dcli.models.checkpoints import read_metadata

    step = read_metadata(path).get("step")
    return f"{path} (training step {int(step):,})" if step and str(step).isdigit() else str(path)


def check_weights_fit(path: Path, cfg: Config, sampling: bool = True) -> None:
    """ConfigError naming the settings that differ when `path` was trained with another architecture;
    `sampling`: also warn when a run's weights are run at another resolution or camera rig than it
    trained them at (not when they start a new training run, which may change them on purpose)."""
    from o3dcli.models.checkpoints import read_metadata

    try:
        stored = read_metadata(path).get("model")
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        hint = ""
        if (Path(path).parent / RUN_WEIGHTS).is_file() and Path(path).name == "checkpoint.pt":
            hint = (f"; {Path(path).name} is the training run's checkpoint, its weights are {RUN_WEIGHTS} "
                    f"beside it: --set model.weights={Path(path).parent}")
        elif Path(path).suffix in (".pt", ".pth", ".ckpt", ".bin"):
            hint = ("; o3d weights are .safetensors files (o3d train writes them); the released Ouroboros3D "
                    ".pth checkpoints go to model.published_unet and model.published_recon")
        raise ConfigError(f"{path}: not a readable safetensors file ({e}){hint}") from None
    if stored:
        # a setting added after the file was written is absent from its metadata: the file was
        # trained with that setting's default, so compare against the default there
        defaults = json.loads(json.dumps(model_sections(Config())))
        stored_full = _fill_missing(json.loads(stored), defaults)
        current = json.loads(json.dumps(model_sections(cfg)))
        differ = _differing_keys(stored_full, current)
        if differ:
            shown = differ[:6]
            trained = [f"{k}={_set_value(_dotted(stored_full, k))}" for k in shown]
            here = ", ".join(f"{_set_value(_dotted(current, k))}" for k in shown)
            raise ConfigError(
                f"{path}: these weights were trained with other model settings: {', '.join(trained)}"
                f"{', ...' if len(differ) > 6 else ''} (this config has {here}); to use them, add "
                + " ".join(f"--set {t}" for t in trained)
                + (" and the others (the run's config.yaml has them all)" if len(differ) > 6 else "")
                + ", or set model.weights=none to run this config's model untrained")
    if sampling:
        _warn_if_run_settings_differ(Path(path), cfg)


def _sampling_setting(key: str) -> bool:
    """What a run trained its model at besides the architecture: the resolution and the camera rig,
    which the weights' metadata does not hold (only the run's config.yaml does)."""
    return key == "preprocess.size" or key.startswith("cameras.")


def _warn_if_run_settings_differ(path: Path, cfg: Config) -> None:
    """Warn when `path` is a training run's weights and the run's config.yaml trained them at another
    resolution or camera rig than `cfg` runs them at (`--set model.weights=RUN` takes the weights
    alone; `--preset RUN` takes the settings too)."""
    from o3dcli.config import load_config
    from o3dcli.config_view import describe

    from o3dcli.config import available_presets
    from o3dcli.sysinfo import weights_dirs

    shipped = path.parent.resolve() == weights_dirs()[0].resolve() and path.stem in available_presets()
    saved = available_presets()[path.stem] if shipped else path.parent / "config.yaml"
    if not shipped and (path.name != RUN_WEIGHTS or not saved.is_file()):
        return
    try:
        run = {k: v for k, v, _, _ in describe(load_config(saved))}
    except Exception:  # an unreadable run config: the weights' own check is what counts
        return
    now = {k: v for k, v, _, _ in describe(cfg)}
    differ = [k for k in now if _sampling_setting(k) and k in run and run[k] != now[k]]
    if differ:
        from o3dcli.console import warn_once
        from o3dcli.sysinfo import is_bare_name

        trained = ", ".join(f"{k}={run[k]}" for k in differ)
        here = ", ".join(f"{now[k]}" for k in differ)
        if shipped:  # the weights o3d ships, trained at their preset's settings
            warn_once(f"the {path.stem} model (shipped with o3d) was trained at {trained} (its preset's) and "
                      f"runs here at {here}: expect worse results there; its preset's values are what it was "
                      "made for (a higher resolution does not add detail it never learned)", _WARNED)
            return
        run_dir = f"./{path.parent}" if is_bare_name(str(path.parent)) else str(path.parent)  # not o3d's preset
        warn_once(f"{path} was trained at {trained} (its run's config.yaml), and runs here at {here}"
                  f": --preset {run_dir} runs it with the settings it was trained with", _WARNED)


def model_differences(a: Config, b: Config) -> list[tuple[str, str, str]]:
    """(dotted key, value in `a`, value in `b`) for each architecture setting (`model_sections`) that
    differs, the values as `--set` takes them."""
    ta, tb = (json.loads(json.dumps(model_sections(c))) for c in (a, b))
    return [(k, _set_value(_dotted(ta, k)), _set_value(_dotted(tb, k))) for k in _differing_keys(ta, tb)]


def _dotted(tree, key: str):
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _set_value(value) -> str:
    """`value` as `--set` reads it (YAML): plain words bare, else compact JSON (a YAML subset)."""
    if isinstance(value, str) and value.replace("_", "").replace("-", "").isalnum():
        return value
    return json.dumps(value, separators=(",", ":"))


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
    touch the global RNG, so the same config always gives the same models. The released
    checkpoints are loaded into a model built on the meta device, each tensor straight into
    `dtype` on `device` (peak host memory about one copy of the weights).
    """
    from o3dcli.models.checkpoints import load_weights
    from o3dcli.models.codecs import build_codec
    from o3dcli.models.local_files import expand_paths

    cfg = expand_paths(cfg)
    m = cfg.model
    published = bool(m.published_unet or m.published_recon)
    if published:
        check_local_files(cfg)  # names every problem at once (the CLI has checked already: cheap)
        model = _build_published(cfg, device, dtype_of(dtype))
        source = f"released Ouroboros3D weights ({m.published_unet}, {m.published_recon})"
        own = None
    else:
        own = resolve_weights(m.weights)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.runtime.seed if seed is None else seed)
            model = O3DModel(cfg)
        if own is not None:
            check_weights_fit(own, cfg)
            load_weights(model, own)
            source = str(own)
        else:
            source = "seeded random init (no trained weights loaded)"
    codec = build_codec(m.codec, m.vae_path or None, dtype_of(dtype))
    model = model.to(device=device, dtype=dtype_of(dtype)).eval()
    codec = codec.to(device=device, dtype=dtype_of(dtype)).eval()
    return LoadedModels(model, codec, source, trained=published or own is not None)


def _build_published(cfg: Config, device: str, dtype: torch.dtype) -> O3DModel:
    """The released model: built on the meta device in `dtype`, the checkpoints' tensors assigned on `device`
    (memory-mapped files, one tensor converted at a time), CLIP loaded from its folder."""
    from o3dcli.models.checkpoints import load_published_denoiser
    from o3dcli.models.image_encoder import ClipImageEncoder
    from o3dcli.models.recon_checkpoint import load_published_reconstructor

    m = cfg.model
    with torch.device("meta"):
        model = O3DModel(cfg, load_image_encoder=False).to(dtype)
    load_published_denoiser(m.published_unet, model.denoiser, device=device)
    load_published_reconstructor(m.published_recon, model.recon, device=device)
    if cfg.denoiser.clip_path:
        model.denoiser.image_encoder = ClipImageEncoder.from_pretrained(cfg.denoiser.clip_path, dtype).to(device)
    left = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # every tensor must come from a file: the rest would be uninitialised
        raise ConfigError(f"the released checkpoints do not set {len(left)} of the model's tensors "
                          f"({', '.join(left[:3])}{', ...' if len(left) > 3 else ''})")
    return model


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
        check_weights_fit(path, cfg, sampling=False)
    load_weights(model, path, strict=False)
    return list(diff.missing)


def save_model(model: O3DModel, cfg: Config, path: Path, extra: dict | None = None) -> Path:
    """Write o3d weights (safetensors) with the architecture sections as metadata."""
    from o3dcli.models.checkpoints import save_weights

    meta = {"model": json.dumps(model_sections(cfg))}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return save_weights(model, path, metadata=meta)


def describe_parameters(cfg: Config) -> dict[str, int]:
    """Parameter counts per module, built on the meta device (no memory, no weights read: a CLIP encoder
    is built from its folder's config.json; without transformers or that file it is left out)."""
    from o3dcli.models.checkpoints import count_parameters
    from o3dcli.models.local_files import expand_paths

    cfg = expand_paths(cfg)
    try:
        with torch.device("meta"):
            model = O3DModel(cfg, load_image_encoder=False)
    except (ImportError, OSError, ValueError):  # CLIP: no transformers, no (readable) config.json
        with torch.device("meta"):
            model = O3DModel(dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, clip_path="")))
    out = {f"denoiser.{k}": v for k, v in count_parameters(model.denoiser).items() if k != "total"}
    out["denoiser (total)"] = sum(p.numel() for p in model.denoiser.parameters())
    out["reconstructor (total)"] = sum(p.numel() for p in model.recon.parameters())
    out["total"] = out["denoiser (total)"] + out["reconstructor (total)"]
    return out
