"""What `o3d info` reports: library versions, device, rasterizer backend, model weights."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "diffusers", "gsplat", "open3d", "pymeshlab", "xatlas", "trimesh", "numpy", "pillow", "safetensors")
IMPORT_NAMES = {"pillow": "PIL"}
EXTRAS = (  # optional packages: (distribution, o3d extra that installs it, what it is for)
    ("transformers", "clip", "the published preset's CLIP image encoder"),
    ("rembg", "rembg", "background removal of photos without alpha"),
    ("pillow-heif", "heif", "reading HEIF/HEIC photos (the iPhone's format)"),
    ("imageio-ffmpeg", "video", "MP4 turntables"),
    ("DracoPy", "draco", "reading Draco-compressed GLB/glTF meshes, and writing them (mesh.draco)"),
    ("usd-core", "usd", "reading USD files; binary layers in USDZ packages, for older Apple software"),
)


def library_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


USED_FROM = {"diffusers": "EulerDiscreteScheduler"}
"""What o3d takes from a library beyond importing it, where that is what breaks: diffusers loads
its classes lazily, so a diffusers that does not work beside its dependencies (huggingface_hub)
imports and fails at the first class taken from it."""


def import_problem(module: str, attr: str | None = None) -> str | None:
    """None if `module` imports (and has `attr`), else the error."""
    import importlib

    try:
        m = importlib.import_module(module)
        if attr:
            getattr(m, attr)
    except Exception as e:  # report any import failure, it is what the user needs to see
        return f"{type(e).__name__}: {e}"
    return None


def weights_dirs() -> list[Path]:
    """Folders searched for model weights: the package's own, then $O3D_WEIGHTS_DIR."""
    dirs = [Path(__file__).parent / "assets" / "weights"]
    if os.environ.get("O3D_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["O3D_WEIGHTS_DIR"]).expanduser())  # ~ in quotes is not expanded by the shell
    return dirs


def is_bare_name(spec: str) -> bool:
    """A name with no folder in it, not even "./" ("./tiny" is the folder tiny here, which pathlib
    would read as "tiny")."""
    return bool(spec) and "/" not in spec and os.sep not in spec and spec not in (".", "..") and not spec.startswith("~")


def named_weights(spec: str) -> Path | None:
    """The weights file a bare name ("tiny": no folder, no .safetensors) stands for in the weights
    folders, or None when `spec` is no such name or none is there. A name wins over a file or
    folder of that name in the working folder."""
    if not is_bare_name(spec) or Path(spec).suffix == ".safetensors":
        return None
    return next((d / f"{spec}.safetensors" for d in weights_dirs() if (d / f"{spec}.safetensors").is_file()), None)


def available_weights(shadowed: list[Path] | None = None) -> list[Path]:
    """The weights files `model.weights NAME` takes, one per name, from the first folder of
    `weights_dirs` that has it; files further on with a name taken already are appended to
    `shadowed` (when given). Folders and broken links named *.safetensors are no weights."""
    found: dict[str, Path] = {}
    for d in weights_dirs():
        for p in sorted(d.glob("*.safetensors")) if d.is_dir() else []:
            if not p.is_file():
                continue
            if p.stem in found and shadowed is not None:
                shadowed.append(p)
            found.setdefault(p.stem, p)
    return sorted(found.values())


def collect_info() -> dict[str, str]:
    info: dict[str, str] = {"python": platform.python_version(), "platform": platform.platform()}
    unusable = set()  # libraries that are not installed or fail to import
    for lib in LIBRARIES:
        v = library_version(lib)
        if v == "not installed":
            unusable.add(lib)
        torch_broken = lib == "numpy" and "torch" in unusable  # said in torch's row
        if v != "not installed" and lib in ("open3d", "pymeshlab", "numpy") and not torch_broken:
            from o3dcli.native import library_problem

            problem = library_problem(lib)  # names a missing system library and its package
            if problem:
                v += f" (not usable: {problem})"
        elif v != "not installed" and lib != "numpy":
            problem = import_problem(IMPORT_NAMES.get(lib, lib), USED_FROM.get(lib))
            if problem:
                v += f" (fails to import: {problem})"
                unusable.add(lib)
        info[lib] = v
    for dist, extra, use in EXTRAS:
        v = library_version(dist)
        if v == "not installed":
            v = f"not installed; {use} needs it: pip install \"o3dcli[{extra}]\""
        elif dist == "imageio-ffmpeg":
            from o3dcli.io.media import mp4_problem

            if problem := mp4_problem():
                v += f" (not usable: {problem})"
        info[f"{dist} (optional)"] = v
    info["input formats"] = _input_formats()
    if "torch" in unusable:
        info["device"] = info["rasterizer"] = "unknown: torch does not import (see its row)"
    else:
        _device_info(info)
    shadowed: list[Path] = []
    weights = available_weights(shadowed)
    info["model weights"] = ", ".join(str(p) for p in weights) if weights else "none found (models start from a seeded random init)"
    if shadowed:
        info["model weights"] += ("; not used by name (a file before has that name; give the full path to use "
                                  "them): " + ", ".join(map(str, shadowed)))
    if os.environ.get("O3D_WEIGHTS_DIR"):
        extra = weights_dirs()[-1]
        info["O3D_WEIGHTS_DIR"] = str(extra) + ("" if extra.is_dir() else " (not a folder: no weights are looked up there)")
    return info


def _device_info(info: dict[str, str]) -> None:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        info["device"] = f"cuda ({names}; CUDA {torch.version.cuda})"
        backend = _cuda_rasterizer()
    else:
        info["device"] = f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
        backend = "torch (gsplat needs CUDA)"
    info["rasterizer"] = backend


def _input_formats() -> str:
    """The image formats `o3d generate` reads here, and how to add the ones it does not."""
    from o3dcli.io.images import HEIF_HINT, avif_hint, readable_formats

    formats = readable_formats()
    missing = []
    if "HEIF" not in formats:
        missing.append(f"not HEIC: {HEIF_HINT}")
    if "AVIF" not in formats:
        missing.append(f"not AVIF: {avif_hint()}")
    return ", ".join(formats) + (f" ({'; '.join(missing)})" if missing else "")


def _cuda_rasterizer() -> str:
    """What "auto" will render with on this CUDA machine, without building gsplat's kernels (which
    `o3dcli.render.gaussians.gsplat_problem` does at the first render: minutes, once)."""
    if library_version("gsplat") == "not installed":
        return "torch (gsplat not installed)"
    import importlib.util
    import shutil

    if importlib.util.find_spec("gsplat.csrc") is not None:  # a build with its kernels compiled in
        return "gsplat"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None and shutil.which("nvcc") is None:
        return "torch (gsplat needs the CUDA toolkit's nvcc to build its kernels, and none was found)"
    return "gsplat (its kernels are built at the first render if not yet: minutes, once per machine)"
