"""The device a run computes on: `runtime.device` resolved ("auto" -> cuda or cpu) and checked,
and `runtime.dtype` checked against it. torch is imported when a device is resolved, not on import.
"""

from __future__ import annotations

from o3dcli.errors import UserError


def resolve_device(name: str) -> str:
    from o3dcli.native import library_problem

    problem = library_problem("numpy")  # torch that does not import, or cannot exchange arrays
    if problem:
        raise UserError(problem)
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"runtime.device={name} is not a torch device ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"runtime.device={name} but CUDA is not available (torch {torch.__version__})")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UserError(f"runtime.device={name} but this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            why = "this torch is not built with MPS" if mps is None or not mps.is_built() else "no MPS device is available"
            raise UserError(f"runtime.device={name} but {why} (torch {torch.__version__})")
    return name


def device_key(setting: str, device: str) -> str:
    """runtime.device as stage keys hold it, for a run on `device` (the setting resolved): "auto"
    when `device` is of the type "auto" picks on this machine, else the type ("cpu", "cuda", "mps").
    The results of one device type differ only in the last bits (as with another thread count), so
    `--device cpu` where there is no CUDA, or `--device cuda:1` beside "auto" on a CUDA machine,
    reuses what "auto" made instead of recomputing it; keys made before held the setting's text,
    "auto" in most, which this keeps."""
    kind = device.split(":")[0]
    if setting == "auto" or kind == resolve_device("auto"):
        return "auto"
    return kind


def check_dtype(device: str, dtype: str) -> None:
    if dtype != "float32" and not device.startswith("cuda"):
        raise UserError(f"runtime.dtype={dtype} needs a CUDA device (device is {device}); use float32 on the CPU")

