"""Import of the released Ouroboros3D reconstructor weights (`recon_model.pth`).

The file is a pickled state dict of LGM big + a noise-level embedding; our
`GaussianReconstructor` built from `ReconConfig.published()` has the same names
and shapes, so the import is a prefix strip and a strict load (no reshaping).
Checkpoints cut out of training runs may carry wrappers' prefixes
(`module.`, `_forward_module.`) and the owning attribute (`... recon_model.`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

WRAPPER_PREFIXES = ("module.", "_forward_module.")
OWNER = "recon_model."


def strip_recon_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys relative to the reconstructor: drop everything up to and including `recon_model.`.

    When any key names `recon_model.`, keys without it (the denoiser's, in a full
    training checkpoint) are dropped; otherwise only wrapper prefixes are removed.
    """
    if any(OWNER in k for k in state):
        return {k.split(OWNER, 1)[1]: v for k, v in state.items() if OWNER in k}
    out = {}
    for k, v in state.items():
        while k.startswith(WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def _describe(keys, limit: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


TIME_EMBEDDING = ("time_embed.", "emb_layers.")
"""Names of the noise-level embedding Ouroboros3D adds to LGM (absent from LGM's own checkpoints)."""


def published_recon_problem(file_shapes: Mapping[str, tuple], model_shapes: Mapping[str, tuple]) -> str | None:
    """Why a checkpoint's tensors (prefixes already stripped) do not fit the reconstructor, in words for the
    person who chose the file; None when they fit."""
    missing, unexpected = model_shapes.keys() - file_shapes.keys(), file_shapes.keys() - model_shapes.keys()
    shapes = [k for k in model_shapes.keys() & file_shapes.keys() if tuple(file_shapes[k]) != tuple(model_shapes[k])]
    if not (missing or unexpected or shapes):
        return None
    if missing and not unexpected and not shapes and all(any(t in k for t in TIME_EMBEDDING) for k in missing):
        return (f"lacks the {len(missing)} tensors of the noise-level embedding ({_describe(missing, 2)}): an LGM "
                "checkpoint, not Ouroboros3D's recon_model.pth (which adds that embedding to LGM)")
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_describe(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_describe(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} with other shapes: "
                        + _describe(f"{k} {list(file_shapes[k])} vs {list(model_shapes[k])}" for k in shapes))
    return (f"not a checkpoint of this reconstructor ({'; '.join(problems)}): is it Ouroboros3D's recon_model.pth, "
            "with the recon.* settings at the preset's values?")


def load_published_reconstructor(path_or_state_dict: str | Path | Mapping[str, Tensor], model: nn.Module,
                                 device: str | torch.device | None = None) -> nn.Module:
    """Load released reconstructor weights into `model` (a `GaussianReconstructor`) in place and return it.

    path_or_state_dict: a `.pth` file (read with `weights_only=True`, memory-mapped; a Lightning
    checkpoint's `state_dict` entry is used if present), a safetensors file, or an already loaded dict.
    Tensors are cast to the model's dtype (the release is likely fp16). A model built on the meta
    device gets the loaded tensors assigned, on `device` (default cpu), one tensor at a time.
    Raises CheckpointError (a ValueError) naming the source and the missing, unexpected or mis-shaped keys.
    """
    from o3dcli.models.checkpoints import CheckpointError, read_state_dict

    source = "state dict" if isinstance(path_or_state_dict, Mapping) else str(path_or_state_dict)
    state = dict(path_or_state_dict) if isinstance(path_or_state_dict, Mapping) else read_state_dict(path_or_state_dict)
    state = strip_recon_prefixes(state)
    expected = model.state_dict()
    problem = published_recon_problem({k: tuple(v.shape) for k, v in state.items()},
                                      {k: tuple(v.shape) for k, v in expected.items()})
    if problem:
        raise CheckpointError(f"{source}: {problem}")
    on_meta = any(t.is_meta for t in expected.values())
    target = device or "cpu"
    cast = {k: state[k].to(dtype=expected[k].dtype, device=target if on_meta else expected[k].device) for k in expected}
    model.load_state_dict(cast, strict=True, assign=on_meta)
    return model
