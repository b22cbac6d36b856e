"""Model weights: import of the released Ouroboros3D denoiser, and o3d's own safetensors files.

The released `mv_model_unet.pth` is a pickled state dict whose names are our
module's names once wrapper prefixes are stripped (`unet.*` = diffusers' SVD
UNet, `cond_encoder.{0,1}.*`, `{down,mid,up}_plucker.*`; see
the name and shape lists in tests/data/*.keys.json). Import is a plain key mapping, no
reshaping; every mismatch is reported by name before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

WRAPPER_PREFIXES = ("module.", "_forward_module.")
"""Prefixes added by DDP / Lightning-Fabric wrappers."""
PUBLISHED_MODEL_PREFIX = "mv_model."
"""Name of the denoiser inside the published training system."""
EXTERNAL_PREFIXES = ("image_encoder.",)
"""Our parameters that the released file does not hold (CLIP comes from SVD's folder)."""


class CheckpointError(ValueError):
    """A weights file does not fit the model; the message names the file and the differing tensors."""


@dataclass
class StateDictDiff:
    """How a state dict differs from a model's: names only in the model, only in the file, and shape clashes."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        def listing(title: str, items: list) -> str:
            more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
            return f"{len(items)} {title}: " + ", ".join(map(str, items[:limit])) + more

        parts = []
        if self.missing:
            parts.append(listing("missing (in the model, not in the file)", self.missing))
        if self.unexpected:
            parts.append(listing("unexpected (in the file, not in the model)", self.unexpected))
        if self.mismatched:
            shapes = [f"{k} file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
            parts.append(listing("with different shapes", shapes))
        return "; ".join(parts) if parts else "no differences"


def state_dict_shapes(module_or_state: nn.Module | Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor in a state dict (works on meta-device models)."""
    sd = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    return {k: tuple(v.shape) for k, v in sd.items()}


def compare_shapes(file_shapes: Mapping[str, tuple], model_shapes: Mapping[str, tuple]) -> StateDictDiff:
    """Names and shapes of a file's tensors against a model's."""
    return StateDictDiff(
        missing=[k for k in model_shapes if k not in file_shapes],
        unexpected=[k for k in file_shapes if k not in model_shapes],
        mismatched=[
            (k, tuple(file_shapes[k]), tuple(s)) for k, s in model_shapes.items()
            if k in file_shapes and tuple(file_shapes[k]) != tuple(s)
        ],
    )


def published_key(key: str) -> str:
    """A released checkpoint's name -> ours: drop everything up to and including 'mv_model.', and wrapper prefixes."""
    at = key.find(PUBLISHED_MODEL_PREFIX)
    if at >= 0:
        return key[at + len(PUBLISHED_MODEL_PREFIX):]
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def map_published_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Released (or training-run) state dict -> our names; a full training system keeps only its mv_model part."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # a Lightning checkpoint
    if any(PUBLISHED_MODEL_PREFIX in k for k in state):
        state = {k: v for k, v in state.items() if PUBLISHED_MODEL_PREFIX in k}
    return {published_key(k): v for k, v in state.items()}


def _read_pickled(path: Path) -> Mapping[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_into(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """load_state_dict(strict=False) on the given keys; a meta-device model gets the tensors assigned (cast to its dtype)."""
    own = model.state_dict()
    if any(t.is_meta for t in own.values()):
        state = {k: v.to(own[k].dtype) for k, v in state.items()}
        model.load_state_dict(state, strict=False, assign=True)
    else:
        model.load_state_dict(state, strict=False)  # copy_ casts fp16 files to the model's dtype


def load_published_denoiser(source: str | Path | Mapping[str, Tensor], model: nn.Module, strict: bool = True) -> StateDictDiff:
    """Load the released `mv_model_unet.pth` (a path or its state dict) into a `MultiViewDenoiser`.

    strict: any missing, unexpected or reshaped tensor raises CheckpointError
    (nothing is loaded). Not strict: tensors that fit are loaded, the rest reported.
    Our `image_encoder.*` tensors may be absent from the file (CLIP is loaded from SVD's folder).
    """
    name = str(source) if isinstance(source, (str, Path)) else "published state dict"
    state = _read_pickled(Path(source)) if isinstance(source, (str, Path)) else source
    mapped = map_published_state_dict(state)
    diff = compare_shapes(state_dict_shapes(mapped), state_dict_shapes(model))
    diff.missing = [k for k in diff.missing if not k.startswith(EXTERNAL_PREFIXES)]  # loaded from elsewhere
    if strict and diff:
        raise CheckpointError(f"{name}: does not match the denoiser's configuration: {diff.describe()}")
    bad = set(diff.unexpected) | {k for k, _, _ in diff.mismatched}
    _load_into(model, {k: v for k, v in mapped.items() if k not in bad})
    return diff


def _config_json(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return json.dumps(dataclasses.asdict(cfg)) if dataclasses.is_dataclass(cfg) else None


def save_weights(model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the model's state dict as safetensors (atomically: temporary name, then rename).

    The model's dataclass config, if any, is stored as JSON under the metadata key "config".
    """
    from o3dcli.cache import atomic_save_tensors

    path = Path(path)
    meta = {"format": "o3d"}
    if (cfg := _config_json(model)) is not None:
        meta["config"] = cfg
    meta.update(metadata or {})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_save_tensors(tensors, path, metadata=meta)
    return path


def convert_weights(src: str | Path, dst: str | Path, dtype: torch.dtype) -> Path:
    """Copy an o3d weights file with its floating-point tensors cast to `dtype`.

    Metadata is kept (plus "dtype"); loading casts back to the model's dtype, so a
    float16 file halves the size on disk and works on any device.
    """
    from safetensors.torch import load_file

    from o3dcli.cache import atomic_save_tensors

    src, dst = Path(src), Path(dst)
    meta = read_metadata(src)
    meta["dtype"] = str(dtype).removeprefix("torch.")
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in load_file(str(src)).items()}
    atomic_save_tensors(tensors, dst, metadata=meta)  # readable by all, as weights to ship must be
    return dst


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (o3d stores "format" and "config")."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> dict[str, str]:
    """Load o3d safetensors weights; every name and shape must match unless strict=False. Returns the metadata."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    diff = compare_shapes(state_dict_shapes(state), state_dict_shapes(model))
    if strict and diff:
        raise CheckpointError(f"{path}: weights do not fit this model (was it saved with another preset?): {diff.describe()}")
    bad = set(diff.unexpected) | {k for k, _, _ in diff.mismatched}
    _load_into(model, {k: v for k, v in state.items() if k not in bad})
    return read_metadata(path)


def count_parameters(module: nn.Module, depth: int = 1) -> dict[str, int]:
    """Parameters per submodule, grouped by the first `depth` name components, plus "total"."""
    counts: dict[str, int] = {}
    for name, p in module.named_parameters():
        key = ".".join(name.split(".")[:depth])
        counts[key] = counts.get(key, 0) + p.numel()
    counts["total"] = sum(p.numel() for p in module.parameters())
    return counts
