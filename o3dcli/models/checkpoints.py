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
import re
import zipfile
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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_torch_file(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False):
    """`torch.load(weights_only=True)` of a file, with CheckpointError "PATH: problem" (one line) when it is a
    folder, missing, empty, truncated, damaged, not torch.save's format, or holds objects other than tensors.

    mmap: memory-map a zip checkpoint (names and shapes are then read without reading the tensors;
    legacy pickles are read whole)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not head:
        raise CheckpointError(f"{path}: not a readable checkpoint (an empty file)")
    zipped = head.startswith(b"PK")
    if zipped:  # torch.save writes a zip archive, its directory last: a file cut short has none
        try:
            with zipfile.ZipFile(path) as z:
                pickled = any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist())
        except (zipfile.BadZipFile, OSError):
            raise CheckpointError(f"{path}: not a readable checkpoint (truncated or damaged: not a complete zip archive)") from None
        if not pickled:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (a zip archive without torch.save's data.pkl)")
    elif head[:1] != b"\x80":  # a legacy torch.save: a pickle (protocol 2+ starts with 0x80)
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle)")
    try:
        # a str: torch before 2.2 memory-maps only a file named by a string
        return torch.load(str(path), map_location=map_location, weights_only=True, mmap=mmap and zipped)
    except Exception as e:  # a damaged member, a truncated pickle, pickled objects other than tensors
        raise CheckpointError(f"{path}: {_load_problem(e)}") from None


def _load_problem(e: Exception) -> str:
    """torch.load's error in a few words: the cause, not the advice around it, without terminal colour codes."""
    text = _ANSI.sub("", str(e))
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:")[-1].strip()
        found = re.search(r"GLOBAL ([\w.]+)", reason)
        if found:
            return (f"holds Python objects besides tensors ({found.group(1)}, e.g. a training run's settings), which "
                    "o3d does not unpickle (weights_only, for safety); if you trust the file, save its state dict "
                    "alone: torch.save(torch.load(FILE, weights_only=False)['state_dict'], 'state_dict.pth')")
        text = reason
    first = (text.strip().splitlines() or [""])[0].split(". ")[0] or type(e).__name__
    if isinstance(e, EOFError) or "truncated" in first:
        return f"not a readable checkpoint, truncated ({type(e).__name__}: {first})"
    return f"not a readable checkpoint, damaged ({first})"


def is_safetensors(path: Path) -> bool:
    """Whether a file starts like safetensors: an 8-byte header length, then the JSON header."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def read_state_dict(path: str | Path, mmap: bool = True) -> dict[str, Tensor]:
    """A checkpoint's state dict (name -> tensor): a torch.save file (a Lightning checkpoint's `state_dict`
    entry if it has one; memory-mapped when `mmap`) or a safetensors file. CheckpointError naming the file
    when it is unreadable or holds something else."""
    path = Path(path)
    if path.is_file() and is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    state = load_torch_file(path, mmap=mmap)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a Lightning checkpoint
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: not a state dict (it holds a {type(state).__name__}, not names -> tensors)")
    for k, v in state.items():
        if not (isinstance(k, str) and isinstance(v, Tensor)):
            raise CheckpointError(f"{path}: not a state dict (entry {k!r} holds a {type(v).__name__}, not a tensor)")
    return dict(state)


def checkpoint_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """name -> shape of a checkpoint's tensors, cheaply: safetensors' header, or a memory-mapped zip checkpoint."""
    path = Path(path)
    if path.is_file() and is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    return state_dict_shapes(read_state_dict(path, mmap=True))


def _load_into(model: nn.Module, state: Mapping[str, Tensor], device: str | torch.device | None = None) -> None:
    """load_state_dict(strict=False) on the given keys. A meta-device model gets the tensors assigned, each
    cast to the model's dtype and moved to `device` (default cpu) one at a time: no second full copy."""
    own = model.state_dict()
    if any(t.is_meta for t in own.values()):
        state = {k: v.to(device=device or ("meta" if v.is_meta else "cpu"), dtype=own[k].dtype) for k, v in state.items()}
        model.load_state_dict(state, strict=False, assign=True)
    else:
        model.load_state_dict(state, strict=False)  # copy_ casts fp16 files to the model's dtype


def published_unet_problem(mapped_shapes: Mapping[str, tuple], model_shapes: Mapping[str, tuple]) -> str | None:
    """Why a checkpoint's tensors (names already mapped by `published_key`) do not fit the denoiser, in
    words for the person who chose the file; None when they fit. `image_encoder.*` may be absent."""
    diff = compare_shapes(mapped_shapes, model_shapes)
    diff.missing = [k for k in diff.missing if not k.startswith(EXTERNAL_PREFIXES)]  # loaded from elsewhere
    if not diff:
        return None
    unet = {k.removeprefix("unet."): s for k, s in model_shapes.items() if k.startswith("unet.")}
    bare = [k.removeprefix("unet.") for k in mapped_shapes]
    extras = any(k.startswith(("cond_encoder.", "down_plucker.", "mid_plucker.", "up_plucker.")) for k in mapped_shapes)
    if bare and not extras and sum(k in unet for k in bare) >= 0.9 * len(bare):
        return ("holds a UNet alone (Stable Video Diffusion's?), not Ouroboros3D's mv_model_unet.pth, which also "
                "holds the feedback adapters (cond_encoder.*) and the camera MLPs (*_plucker.*)")
    return (f"does not fit the preset's denoiser ({diff.describe(limit=3)}): is it Ouroboros3D's mv_model_unet.pth, "
            "with the denoiser.* settings at the preset's values?")


def load_published_denoiser(source: str | Path | Mapping[str, Tensor], model: nn.Module, strict: bool = True,
                            device: str | torch.device | None = None) -> StateDictDiff:
    """Load the released `mv_model_unet.pth` (a path or its state dict) into a `MultiViewDenoiser`.

    strict: any missing, unexpected or reshaped tensor raises CheckpointError
    (nothing is loaded). Not strict: tensors that fit are loaded, the rest reported.
    Our `image_encoder.*` tensors may be absent from the file (CLIP is loaded from SVD's folder).
    A model on the meta device gets the tensors in its dtype on `device` (default cpu).
    """
    name = str(source) if isinstance(source, (str, Path)) else "published state dict"
    state = read_state_dict(source) if isinstance(source, (str, Path)) else source
    mapped = map_published_state_dict(state)
    model_shapes = state_dict_shapes(model)
    if strict and (problem := published_unet_problem(state_dict_shapes(mapped), model_shapes)):
        raise CheckpointError(f"{name}: {problem}")
    diff = compare_shapes(state_dict_shapes(mapped), model_shapes)
    diff.missing = [k for k in diff.missing if not k.startswith(EXTERNAL_PREFIXES)]
    bad = set(diff.unexpected) | {k for k, _, _ in diff.mismatched}
    _load_into(model, {k: v for k, v in mapped.items() if k not in bad}, device)
    return diff


def _config_json(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return json.dumps(dataclasses.asdict(cfg)) if dataclasses.is_dataclass(cfg) else None


def save_weights(model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the model's state dict as safetensors (atomically: temporary name, then rename).

    The model's dataclass config, if any, is stored as JSON under the metadata key "config".
    """
    from o3dcli.atomic import atomic_save_tensors

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

    from o3dcli.atomic import atomic_save_tensors

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
