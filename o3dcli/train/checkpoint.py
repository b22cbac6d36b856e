"""Reading a training run's checkpoint (checkpoint.pt, as `Trainer.save` writes it), each entry checked.

Kept apart from the trainer so that tools which only read a run (scripts/export_weights.py) do
not need it; `Trainer.load` resumes from what `read_checkpoint` gives.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from o3dcli.models.checkpoints import CheckpointError, load_torch_file

START_OVER = "delete it to start the run over from step 0, or train into another output folder"
"""What to do about a run checkpoint that cannot be resumed (the end of its CheckpointError)."""


def read_checkpoint(path: Path) -> dict:
    """A run checkpoint as `Trainer.save` writes it, with its entries checked: step (int),
    model / ema (state dicts), optimizer, generators (a list of random states; older
    checkpoints' single "generator" becomes a list of one). CheckpointError naming the file
    when it is truncated, damaged, not a checkpoint or lacks an entry.

    Read into CPU memory whatever device the run trains on: `load_state_dict` copies weights and
    optimiser state to their parameters' devices, and the random states belong to CPU generators
    (`Generator.set_state` takes only a CPU byte tensor: mapped to CUDA, resuming failed)."""
    try:
        state = load_torch_file(path, map_location="cpu")
    except CheckpointError as e:  # an empty, truncated or damaged file, not torch.save's
        raise CheckpointError(f"{e}; {START_OVER}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a run checkpoint (holds a {type(state).__name__}); {START_OVER}")
    gens = state["generators"] if "generators" in state else [state["generator"]] if "generator" in state else None
    missing = [k for k in ("step", "model", "ema", "optimizer") if k not in state] + (["generators"] if gens is None else [])
    if missing:
        raise CheckpointError(f"{path}: not a run checkpoint, it lacks {', '.join(missing)}; {START_OVER}")
    bad = [k for k in ("model", "ema") if not (isinstance(state[k], dict) and all(isinstance(v, Tensor) for v in state[k].values()))]
    bad += ["optimizer"] if not isinstance(state["optimizer"], dict) else []
    if not (isinstance(gens, list) and gens and all(isinstance(g, Tensor) and g.dtype == torch.uint8 for g in gens)):
        bad.append("generators")
    try:
        step = int(state["step"])
    except (TypeError, ValueError, RuntimeError):
        step = -1
    bad += ["step"] if step < 0 else []
    interval = state.get("log_interval")  # the steps since the last losses.csv row (optional: newer runs)
    if interval is not None and not (isinstance(interval, Tensor) and interval.is_floating_point()
                                     and interval.ndim == 2 and interval.shape[1] == 8):
        bad.append("log_interval")
    if bad:
        raise CheckpointError(f"{path}: damaged run checkpoint, unusable {', '.join(bad)}; {START_OVER}")
    return {**state, "step": step, "generators": [g.cpu() for g in gens]}
