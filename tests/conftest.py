"""Shared test helpers: small images with known foregrounds (tests make their own data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gltf_validator import gltf_validator  # noqa: E402,F401  (the fixture, shared by every test file)

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def signal_handling_is_left_as_found():
    """Every test (o3d commands run in this process among them) leaves the process's handling of
    Ctrl-C and SIGTERM as it found it: the handlers, and which signals are blocked. A process left
    ignoring or blocking SIGINT passes that on to every process it starts, which then cannot be
    interrupted (a Python caller's notebook, or a later test's child)."""
    import signal

    def state():
        try:  # as the system has them (Linux): a library may set them without Python's knowing
            with open("/proc/thread-self/status") as f:
                native = [line for line in f if line.startswith(("SigBlk:", "SigIgn:"))]
        except OSError:
            native = None
        return (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
                signal.pthread_sigmask(signal.SIG_BLOCK, []), native)

    before = state()
    yield
    after = state()
    assert after == before, f"signal handling changed: {before} -> {after}"


def disk_rgba(size: int = 96, radius: float = 0.3, center=(0.5, 0.5), color=(200, 40, 40)) -> np.ndarray:
    """An RGBA uint8 image with an opaque disk on a transparent background."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    inside = (xx - center[0] * size) ** 2 + (yy - center[1] * size) ** 2 <= (radius * size) ** 2
    img = np.zeros((size, size, 4), np.uint8)
    img[inside, :3] = color
    img[inside, 3] = 255
    return img


def disk_on_background(size: int = 96, radius: float = 0.3, bg=(255, 255, 255), color=(30, 90, 200)) -> np.ndarray:
    """An RGB uint8 photo-like image: a disk on a plain background."""
    rgba = disk_rgba(size, radius, color=color)
    out = np.empty((size, size, 3), np.uint8)
    out[:] = bg
    m = rgba[..., 3] > 0
    out[m] = rgba[m, :3]
    return out


@pytest.fixture(scope="session")
def script_module():
    """Import scripts/<name>.py as a module (the scripts are not a package): script_module("name")."""

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: the torch splatter slows down many times over when
    its 2 threads share busy cores (e.g. with the other pytest-xdist worker)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def good_images(tmp_path) -> Path:
    """A folder with three good inputs (two RGBA, one RGB on white)."""
    d = tmp_path / "images"
    d.mkdir()
    Image.fromarray(disk_rgba(96, 0.3, (0.4, 0.5)), "RGBA").save(d / "apple.png")
    Image.fromarray(disk_rgba(80, 0.2, (0.6, 0.4), (20, 160, 60)), "RGBA").save(d / "pear.png")
    Image.fromarray(disk_on_background(96, 0.25)).save(d / "plum.jpg", quality=95)
    return d


@pytest.fixture
def bad_images(tmp_path) -> Path:
    """A folder of inputs that must each be refused with a clear error."""
    d = tmp_path / "bad"
    d.mkdir()
    good = d / "_src.png"
    Image.fromarray(disk_rgba(64), "RGBA").save(good)
    data = good.read_bytes()
    good.unlink()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "noise.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    (d / "notes.jpg").write_text("this is not an image\n")
    Image.fromarray(np.zeros((64, 64, 4), np.uint8), "RGBA").save(d / "empty.png")
    full = np.full((64, 64, 4), 255, np.uint8)
    full[..., :3] = np.random.default_rng(1).integers(0, 256, (64, 64, 3))
    Image.fromarray(full, "RGBA").save(d / "wholeframe.png")
    return d


@pytest.fixture
def draco_decoding():
    """Skips a test that reads Draco-compressed GLBs where they cannot be read: trimesh decodes
    Draco (through DracoPy) from 5.1 on, and the core install allows trimesh 4.3.2 (the `draco`
    and `dev` extras ask for 5.1). With an older trimesh, the reader names the release it needs."""
    pytest.importorskip("DracoPy")
    import trimesh

    if tuple(int(p) for p in trimesh.__version__.split(".")[:2]) < (5, 1):
        pytest.skip(f"trimesh {trimesh.__version__} cannot decode Draco (5.1 can)")
