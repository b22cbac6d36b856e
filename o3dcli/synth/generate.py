"""Render procedural objects into rendered-object folders (format: o3dcli.synth.dataset).

Object i of a run uses seed ``seed + i``: a run of n objects from seed S covers
exactly the seeds S .. S+n-1, so training and evaluation sets made from disjoint
seed ranges never share an object. Each object is rendered at the generation
cameras plus ``extra_views`` random views (elevation uniform in [-10, 40] deg,
azimuth uniform in [0, 360), same radius and field of view), drawn from a second
numpy stream of the same seed so the object itself does not depend on the views.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from o3dcli.synth.dataset import clean_staging, object_id, read_index, write_index, write_rendered_object

# The published Ouroboros3D generation cameras (docs/design.md section 1); 337.5, not 315, is right.
GENERATION_AZIMUTHS = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 337.5)
GENERATION_ELEVATIONS = (0.0,) * 8
CAMERA_RADIUS = 1.7417
FOV_DEG = 39.6
EXTRA_ELEVATION_RANGE = (-10.0, 40.0)


@dataclass(frozen=True)
class SynthSettings:
    """How objects are rendered; stored in index.json so a folder is never mixed."""

    size: int = 128
    """Image side in pixels."""
    extra_views: int = 4
    """Random views per object after the generation views."""
    shading: str = "lambert"
    """"lambert" (headlight + ambient) or "unlit" (base colour)."""
    ambient: float = 0.3
    """Ambient share of the lambert shading."""
    ssaa: int = 2
    """Supersampling per axis: anti-aliased colour and fractional alpha at edges."""
    tile_px: int = 128
    """Side of each primitive's texture-atlas tile."""
    generation_elevations: tuple[float, ...] = GENERATION_ELEVATIONS
    generation_azimuths: tuple[float, ...] = GENERATION_AZIMUTHS
    radius: float = CAMERA_RADIUS
    fov_deg: float = FOV_DEG
    extra_elevation_range: tuple[float, float] = field(default=EXTRA_ELEVATION_RANGE)

    def __post_init__(self) -> None:
        if self.shading not in ("lambert", "unlit"):
            raise ValueError(f"shading must be 'lambert' or 'unlit', got {self.shading!r}")
        if len(self.generation_elevations) != len(self.generation_azimuths):
            raise ValueError("generation_elevations and generation_azimuths differ in length")
        if self.size < 8 or self.extra_views < 0 or self.ssaa < 1:
            raise ValueError(f"invalid settings: size={self.size}, extra_views={self.extra_views}, ssaa={self.ssaa}")

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def view_plan(seed: int, settings: SynthSettings) -> list[dict]:
    """Elevation, azimuth, radius and kind of every view of object ``seed``."""
    views = [{"elevation": float(e), "azimuth": float(a), "radius": settings.radius, "kind": "generation"}
             for e, a in zip(settings.generation_elevations, settings.generation_azimuths)]
    rng = np.random.default_rng([1, seed])  # the views' own stream of this seed
    lo, hi = settings.extra_elevation_range
    for _ in range(settings.extra_views):
        elevation, azimuth = rng.uniform(lo, hi), rng.uniform(0.0, 360.0)
        views.append({"elevation": float(elevation), "azimuth": float(azimuth), "radius": settings.radius,
                      "kind": "extra"})
    return views


def straight_rgba(rgb, alpha, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """uint8 [V, H, W, 4] straight RGBA from colour rendered over black [V,3,H,W] and alpha [V,1,H,W].

    Over black the rendered colour is premultiplied, so dividing by alpha recovers the
    surface colour at anti-aliased edges; empty pixels get ``background``.
    """
    rgb, alpha = rgb.numpy().astype(np.float64), alpha.numpy().astype(np.float64)
    straight = np.where(alpha > 0, rgb / np.maximum(alpha, 1e-8), np.asarray(background).reshape(1, 3, 1, 1))
    rgba = np.concatenate([straight, alpha], axis=1).transpose(0, 2, 3, 1)
    return (np.clip(rgba, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_object(seed: int, settings: SynthSettings):
    """Mesh, spec, views, cameras and uint8 RGBA renders [V, H, W, 4] of object ``seed``."""
    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.render.mesh import render_mesh
    from o3dcli.synth.objects import make_object

    mesh, spec = make_object(seed, tile_px=settings.tile_px)
    views = view_plan(seed, settings)
    cameras = orbit_cameras([v["elevation"] for v in views], [v["azimuth"] for v in views],
                            settings.radius, settings.fov_deg, settings.size)
    out = render_mesh(mesh, cameras, background=(0.0, 0.0, 0.0), shading=settings.shading,
                      ambient=settings.ambient, ssaa=settings.ssaa)
    return mesh, spec, views, cameras, straight_rgba(out.rgb, out.alpha)


def synthesize_object(root: Path, seed: int, settings: SynthSettings) -> tuple[Path, bool, float]:
    """Render and write object ``seed`` under ``root`` unless it is complete.

    Returns (folder, skipped, seconds).
    """
    root = Path(root)
    final = root / object_id(seed)
    if (final / "cameras.json").is_file():
        return final, True, 0.0
    start = time.perf_counter()
    mesh, spec, views, cameras, rgba = render_object(seed, settings)
    for i, view in enumerate(views):
        view["file"] = f"rgba/{i:03d}.png"
        view["c2w"] = cameras.c2w[i].tolist()
        for k in ("fx", "fy", "cx", "cy"):
            view[k] = float(getattr(cameras, k)[i])
    order = ("file", "kind", "elevation", "azimuth", "radius", "c2w", "fx", "fy", "cx", "cy")
    meta = {"views": [{k: v[k] for k in order} for v in views], "shading": settings.shading,
            "ambient": settings.ambient if settings.shading == "lambert" else None,
            "light": "headlight" if settings.shading == "lambert" else None,
            "ssaa": settings.ssaa, "fov_deg": settings.fov_deg, "seed": int(seed), "background": [1.0, 1.0, 1.0]}
    write_rendered_object(root, final.name, rgba, meta, mesh, spec)
    return final, False, time.perf_counter() - start


def _init_worker() -> None:
    import signal

    # Ctrl-C reaches the whole process group: the parent stops the pool (SIGTERM), and a worker
    # that took the SIGINT itself would print its own traceback first (the workers start with
    # SIGINT ignored, `_ignoring_sigint`; this keeps it so for any start method)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)  # one process per core; nested thread pools would oversubscribe


@contextlib.contextmanager
def _ignoring_sigint():
    """SIGINT ignored in this process meanwhile, where it can be set (the main thread): processes
    started meanwhile keep it ignored (an ignored signal stays so across exec, and Python then
    installs no handler of its own), so a Ctrl-C while they import torch prints no traceback of
    theirs. Held only while the pool starts its processes (about 20 ms for 2 workers, measured): a
    Ctrl-C in that moment is not seen."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _work(args) -> tuple[Path, bool, float]:
    return synthesize_object(*args)


def synthesize(
    out_dir: str | os.PathLike,
    n: int,
    seed: int,
    size: int = 128,
    extra_views: int = 4,
    workers: int = 1,
    shading: str = "lambert",
    *,
    settings: SynthSettings | None = None,
    on_object: Callable[[Path, bool, float], None] | None = None,
) -> list[Path]:
    """Render objects of seeds ``seed .. seed+n-1`` into ``out_dir`` (resumable).

    Complete object folders are skipped, so an interrupted run continues where it
    stopped. ``settings`` overrides size / extra_views / shading and sets the rest
    (cameras, supersampling); a folder whose index.json records other settings is
    refused rather than mixed. ``on_object(folder, skipped, seconds)`` is called as
    each object finishes (in completion order). Returns the folders in seed order.
    """
    if n < 0 or seed < 0:
        raise ValueError(f"n and seed must be >= 0, got n={n}, seed={seed}")
    settings = settings or SynthSettings(size=size, extra_views=extra_views, shading=shading)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    previous = read_index(root)
    if previous is not None and previous.get("settings") not in (None, settings.to_json()):
        old, new = previous["settings"], settings.to_json()
        differ = [f"{k} {old.get(k)!r} (asked {new.get(k)!r})" for k in sorted(set(old) | set(new))
                  if old.get(k) != new.get(k)] if isinstance(old, dict) else [repr(old)]
        raise ValueError(f"{root / 'index.json'}: this folder was rendered with other settings: "
                         f"{'; '.join(differ)}; use another output folder, or the same settings to add objects")
    write_index(root, settings.to_json())
    clean_staging(root)  # half-written objects of killed runs (not those of runs at work now)
    seeds = range(seed, seed + n)

    def todo():  # lazily: a large N starts rendering at once, not after looking at every folder
        for s in seeds:
            if (root / object_id(s) / "cameras.json").is_file():
                if on_object is not None:
                    on_object(root / object_id(s), True, 0.0)
            else:
                yield s

    try:
        # serially, lazily: the first object is made at once; with workers, the objects left are
        # looked at first, so that on_object runs in this thread only
        parallel = workers > 1 and n > 1
        left = list(todo()) if parallel else todo()
        if parallel and len(left) > 1:
            import multiprocessing as mp

            # spawn: the parent may hold torch / open3d thread pools that fork would copy broken
            with _ignoring_sigint():  # the workers start with it ignored (kept across exec)
                pool = mp.get_context("spawn").Pool(min(workers, len(left)), initializer=_init_worker)
            with pool:
                for result in pool.imap_unordered(_work, [(root, s, settings) for s in left]):
                    if on_object is not None:
                        on_object(*result)
        else:
            for s in left:
                result = synthesize_object(root, s, settings)
                if on_object is not None:
                    on_object(*result)
    finally:
        write_index(root, settings.to_json())
        with contextlib.suppress(OSError):  # the staging folder, once empty (another process may still use it)
            (root / ".tmp").rmdir()
    return [root / object_id(s) for s in seeds]
