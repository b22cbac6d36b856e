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


def load_published_reconstructor(path_or_state_dict: str | Path | Mapping[str, Tensor], model: nn.Module) -> nn.Module:
    """Load released reconstructor weights into `model` (a `GaussianReconstructor`) in place and return it.

    path_or_state_dict: a `.pth` file (read with `weights_only=True`; a Lightning
    checkpoint's `state_dict` entry is used if present) or an already loaded dict.
    Tensors are cast to the model's dtype (the release is likely fp16). A model
    built on the meta device gets the loaded tensors assigned. Raises ValueError
    naming the source and the missing, unexpected or mis-shaped keys.
    """
    source = "state dict" if isinstance(path_or_state_dict, Mapping) else str(path_or_state_dict)
    if isinstance(path_or_state_dict, Mapping):
        state = dict(path_or_state_dict)
    else:
        state = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ValueError(f"{source}: expected a state dict (name -> tensor), got {type(state).__name__}")
    state = strip_recon_prefixes(state)
    expected = model.state_dict()
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    shapes = [k for k in expected.keys() & state.keys() if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing: {_describe(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected: {_describe(unexpected)}")
        if shapes:
            problems.append(
                f"{len(shapes)} with other shapes: "
                + _describe(f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}" for k in shapes)
            )
        raise ValueError(
            f"{source}: not a checkpoint of this reconstructor ({'; '.join(problems)}); "
            "the released recon_model.pth needs ReconConfig.published()"
        )
    on_meta = any(t.is_meta for t in expected.values())
    cast = {k: state[k].to(dtype=expected[k].dtype, device="cpu" if on_meta else expected[k].device) for k in expected}
    model.load_state_dict(cast, strict=True, assign=on_meta)
    return model
