"""Export a training run's EMA weights for shipping: cast to float16 (half the size) and
report what the cast changes.

    python scripts/export_weights.py runs/tiny/model.safetensors o3dcli/assets/weights/tiny.safetensors
    python scripts/export_weights.py runs/tiny/checkpoint.pt raw.safetensors   # the current, non-EMA weights

A run's checkpoint.pt gives its current (non-EMA) weights, with the metadata of the run's
model.safetensors: for comparing them with the EMA, which lags behind for about
1 / (1 - train.ema_decay) steps after a change of the training setup.

Prints the sizes, the parameter count and the largest relative rounding error of the cast.
The architecture metadata is kept, so `build_models` still checks the file against the preset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from o3dcli.models.build import dtype_of
from o3dcli.models.checkpoints import convert_weights, read_metadata


def raw_weights(checkpoint: Path, out: Path) -> Path:
    """The training checkpoint's current weights ("model", not "ema") as an o3d weights file."""
    from safetensors.torch import save_file

    ema = checkpoint.with_name("model.safetensors")
    if not ema.is_file():
        raise SystemExit(f"error: {ema}: missing (it holds the architecture metadata of {checkpoint})")
    from o3dcli.models.checkpoints import CheckpointError
    from o3dcli.train.checkpoint import read_checkpoint

    try:
        state = read_checkpoint(checkpoint)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    meta = read_metadata(ema)
    meta.update(step=str(int(state["step"])), weights="current (not EMA)")
    save_file({k: v.contiguous() for k, v in state["model"].items()}, str(out), metadata=meta)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                 epilog="Only o3d's own weights: the published model's .pth files are imported at load time "
                                        "(--set model.published_unet=... / model.published_recon=...), not exported.")
    ap.add_argument("src", type=Path, help="weights to export (a run's model.safetensors, or its checkpoint.pt)")
    ap.add_argument("dst", type=Path, help="where to write them")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    a = ap.parse_args()
    if not a.src.is_file():
        raise SystemExit(f"error: {a.src}: no such weights file")
    if a.src.suffix not in (".pt", ".safetensors"):
        raise SystemExit(f"error: {a.src}: give an o3d weights file (.safetensors, a run's model.safetensors) or a "
                         "run's checkpoint.pt")
    src = a.src
    if a.src.suffix == ".pt":
        src = raw_weights(a.src, a.dst.with_name(a.dst.name + ".raw.tmp"))
    try:
        convert_weights(src, a.dst, dtype_of(a.dtype))
        before, after = load_file(str(src)), load_file(str(a.dst))
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file: say which, in one line
        raise SystemExit(f"error: {a.src}: cannot read it as o3d weights ({type(e).__name__}: {e})") from None
    finally:
        if src != a.src:
            src.unlink(missing_ok=True)
    params = sum(v.numel() for v in before.values())
    worst, worst_abs, tiny = 0.0, 0.0, []
    for k, v in before.items():
        if v.is_floating_point() and v.numel():
            err = float((after[k].float() - v.float()).abs().max())
            top = float(v.float().abs().max())
            worst_abs = max(worst_abs, err)
            if top < 1e-3:  # e.g. unused biases decayed to ~1e-8: float16 flushes them towards 0
                tiny.append(k)
            else:
                worst = max(worst, err / top)
    meta = read_metadata(a.dst)
    print(f"{'file':<10}{'size (MB)':>12}")
    print(f"{'source':<10}{a.src.stat().st_size / 1e6:>12.2f}")
    print(f"{'exported':<10}{a.dst.stat().st_size / 1e6:>12.2f}")
    print(f"parameters: {params:,}; dtype {meta.get('dtype')}; training step {meta.get('step', '?')}")
    print(f"largest rounding error: {worst_abs:.2e} absolute; {worst:.2e} relative to the tensor's largest value "
          f"(tensors with values >= 1e-3); {len(tiny)} tensors entirely below 1e-3")
    finite = all(torch.isfinite(v.float()).all() for v in after.values() if v.is_floating_point())
    if not finite:
        raise SystemExit("error: the cast produced inf/nan (values beyond the dtype's range); keep float32")


if __name__ == "__main__":
    main()
