"""The device a run computes on: `runtime.device` resolved ("auto" -> cuda or cpu) and checked,
and `runtime.dtype` checked against it. torch is imported when a device is resolved, not on import.
"""

from __future__ import annotations

from o3dcli.errors import UserError


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"runtime.device={name} but CUDA is not available (torch {torch.__version__})")
    return name


def check_dtype(device: str, dtype: str) -> None:
    if dtype != "float32" and not device.startswith("cuda"):
        raise UserError(f"runtime.dtype={dtype} needs a CUDA device (device is {device}); use float32 on the CPU")

