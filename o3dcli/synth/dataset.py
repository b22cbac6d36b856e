"""Rendered-object folders: the on-disk format of o3d training and evaluation data.

FORMAT (version 1)
==================
::

    DIR/
      index.json            {"format": "o3d-rendered-object-index", "version": 1,
                             "objects": [{"id": "synth_00000042", "seed": 42}, ...],
                             "seed_range": [first, last] (null if empty),
                             "settings": {...how the objects were rendered...}}
      <object_id>/          written to DIR/.tmp/ first and renamed: a folder that exists is complete
                            (DIR/.tmp/<object_id>.<pid>/, locked by its .lock file while written,
                            so a later run removes the ones of killed processes)
        rgba/000.png ...    view i is rgba/{i:03d}.png: 8-bit RGBA, straight (not premultiplied)
                            alpha; fully transparent pixels hold the "background" colour
        cameras.json        see below
        mesh.obj            ground-truth mesh in the unit box (world +Y up, object faces +Z),
        mesh.mtl            counter-clockwise faces, "vt" origin bottom-left (OBJ's own convention)
        mesh_texture.png    the base-colour texture the MTL's map_Kd names (when textured)
        spec.json           how the object was made (synthetic objects: primitives, textures)

cameras.json::

    {"format": "o3d-rendered-object", "version": 1, "width": W, "height": H,
     "views": [{"file": "rgba/000.png", "c2w": 4x4 (OpenCV camera axes, world +Y up),
                "fx", "fy", "cx", "cy" (pixels, pixel centres at +0.5),
                "elevation", "azimuth" (degrees, docs/design.md orbit convention), "radius",
                "kind": "generation" | "extra"}, ...],
     "shading": "lambert" | "unlit", "ambient": 0.3, "light": "headlight" (both null when unlit),
     "ssaa": 2, "seed": 42, "background": [1, 1, 1], "mesh": "mesh.obj"}

Views of kind "generation" come first, in the order of the generation cameras
(azimuth 0 first: the input view); "extra" views follow. A "lambert" render is
base colour * (ambient + (1 - ambient) * max(0, n . l)) with the light at the camera.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from o3dcli.atomic import atomic_write_text
from o3dcli.geometry.mesh import TriMesh

if TYPE_CHECKING:  # torch stays out of this module's import cost
    from torch import Tensor

    from o3dcli.geometry.cameras import Cameras

FORMAT = "o3d-rendered-object"
INDEX_FORMAT = "o3d-rendered-object-index"
VERSION = 1
OBJECT_PREFIX = "synth_"


class RenderedObjectError(ValueError):
    """A rendered-object folder that cannot be read; the message names the file."""


@dataclass(frozen=True)
class RenderedObject:
    """One rendered object read back from its folder.

    images: [V, 4, H, W] float32 straight RGBA in [0, 1].
    cameras: the V cameras, in the order of cameras.json's "views".
    mesh_path: the ground-truth mesh file.
    meta: the parsed cameras.json (shading, seed, per-view elevation/azimuth/kind, ...).
    """

    images: Tensor
    cameras: Cameras
    mesh_path: Path
    meta: dict

    @property
    def kinds(self) -> list[str]:
        return [v["kind"] for v in self.meta["views"]]

    @property
    def generation_indices(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == "generation"]


def object_id(seed: int) -> str:
    """Folder name of the synthetic object made from ``seed``."""
    return f"{OBJECT_PREFIX}{seed:08d}"


def object_seed(name: str) -> int | None:
    """The seed of a synthetic object's folder name (`object_id`), None for another name."""
    digits = name[len(OBJECT_PREFIX):]
    return int(digits) if name.startswith(OBJECT_PREFIX) and digits.isdigit() else None


def benchmark_objects(names) -> list[str]:
    """Those of `names` that are synthetic benchmark objects (seeds from 1,000,000 on: o3d eval
    --benchmark synthetic scores a model on them, so a model trained on them is scored on what it saw)."""
    from o3dcli.eval.benchmarks import SYNTHETIC_FIRST_SEED

    return [n for n in names if (object_seed(n) or 0) >= SYNTHETIC_FIRST_SEED]


def is_complete(obj_dir: Path) -> bool:
    """True when ``obj_dir`` holds a finished object (folders appear only by atomic rename)."""
    return (Path(obj_dir) / "cameras.json").is_file()


def _dumps(data: dict) -> str:
    """JSON with one top-level key per line and each list item (a view, an object) on one line."""
    def value(v):
        if isinstance(v, list) and v and isinstance(v[0], dict):
            return "[\n" + ",\n".join("  " + json.dumps(x) for x in v) + "\n ]"
        return json.dumps(v)
    return "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in data.items()) + "\n}\n"


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, _dumps(data))


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_obj(path: Path, mesh: TriMesh, material_name: str = "material0") -> Path:
    """Write ``mesh`` as OBJ + MTL (+ ``<stem>_texture.png`` when textured).

    Hand-written (a few lines) so the data generator needs no export library.
    Positions and UVs use 9 significant digits, enough to read float32 back exactly.
    """
    path = Path(path)
    mtl, tex = path.with_suffix(".mtl"), path.with_name(path.stem + "_texture.png")
    textured = mesh.has_texture
    head = f"# o3d synthetic object\nmtllib {mtl.name}\nusemtl {material_name}\n"
    buf = io.StringIO()
    if mesh.vertex_colors is not None:
        np.savetxt(buf, np.hstack([mesh.vertices, mesh.vertex_colors]), fmt="v %.9g %.9g %.9g %.6g %.6g %.6g")
    else:
        np.savetxt(buf, mesh.vertices, fmt="v %.9g %.9g %.9g")
    idx = mesh.faces.astype(np.int64) + 1  # OBJ indices are 1-based
    if textured:
        np.savetxt(buf, mesh.uv, fmt="vt %.9g %.9g")
        np.savetxt(buf, np.repeat(idx, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
    else:
        np.savetxt(buf, idx, fmt="f %d %d %d")
    path.write_text(head + buf.getvalue())
    kd = "1 1 1" if textured else " ".join(f"{c:.6g}" for c in mesh.material_color)
    lines = [f"newmtl {material_name}", f"Kd {kd}", "Ka 0 0 0", "Ks 0 0 0", "d 1", "illum 1"]
    if textured:
        lines.append(f"map_Kd {tex.name}")
        tex.write_bytes(_png_bytes(mesh.texture))
    mtl.write_text("\n".join(lines) + "\n")
    return path


STAGING = ".tmp"
"""DIR/.tmp/: object folders being written (<object_id>.<pid>/) and their locks (<object_id>.<pid>.lock)."""


def _flock(path: Path, blocking: bool) -> int | None:
    """An open descriptor of ``path`` (created if need be) with an exclusive flock on it, checked to
    be the file now at ``path`` (a lock file removed by its holder is not a lock); None when another
    process holds it (blocking=False). FileNotFoundError when the folder is gone. On a file system
    that takes no locks (after a warning, as o3dcli.cache.ItemLock): the descriptor, unlocked, for a
    writer (blocking=True); None for a cleaner (blocking=False), which must not take a folder for
    abandoned that may be another process's."""
    import fcntl

    from o3dcli.cache import LOCKS_UNSUPPORTED, warn_unlocked

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as e:
            if e.errno not in LOCKS_UNSUPPORTED:
                os.close(fd)
                raise
            warn_unlocked(path, fd, e)
            if not blocking:
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed (or replaced) while we waited for it: lock the file there now


def clean_staging(root: str | os.PathLike) -> int:
    """Remove the half-written object folders (and their lock files) that killed processes left in
    ``root/.tmp``; ones whose writer is still at work (it holds their lock) are kept. Returns how
    many folders were removed."""
    staging = Path(root) / STAGING
    try:
        names = {p.name.removesuffix(".lock") for p in staging.iterdir()}
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for name in sorted(names):
        lock = staging / f"{name}.lock"
        try:
            fd = _flock(lock, blocking=False)
        except FileNotFoundError:  # another process, finishing, removed the empty .tmp
            return removed
        if fd is None:
            continue  # a writer at work
        try:
            left = staging / name
            if left.is_dir():
                shutil.rmtree(left, ignore_errors=True)
                removed += 1
            elif left.exists() or left.is_symlink():
                left.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return removed


def write_rendered_object(root: Path, name: str, rgba: np.ndarray, meta: dict, mesh: TriMesh,
                          spec: dict | None = None) -> Path:
    """Write one object folder ``root/name`` atomically.

    rgba: [V, H, W, 4] uint8 straight RGBA, in the order of meta["views"].
    meta: cameras.json content without "format" / "version" / "width" / "height".
    Returns the final folder; if another process finished it first, keeps theirs.
    The folder is written as ``root/.tmp/<name>.<pid>/``, under the lock of its ``.lock`` file
    (`clean_staging` removes the folder once no process holds it), then renamed.
    """
    root = Path(root)
    final = root / name
    tmp = root / STAGING / f"{name}.{os.getpid()}"
    lock = tmp.with_name(tmp.name + ".lock")
    for attempt in range(5):
        fd = None
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            fd = _flock(lock, blocking=True)  # a cleaner holds it only for a moment
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "rgba").mkdir(parents=True)
            break
        except FileNotFoundError:  # another process, finishing, removed the empty .tmp in between
            if fd is not None:
                os.close(fd)
            if attempt == 4:
                raise
    try:
        _write_object_files(tmp, final, rgba, meta, mesh, spec)
        try:
            os.rename(tmp, final)
        except OSError:
            if is_complete(final):
                shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer got there first
            else:  # left incomplete by something else (a copy cut short): replaced if it is o3d's
                _replace_incomplete(final, tmp, root / STAGING / f"{name}.{os.getpid()}.incomplete")
    except BaseException:  # an error or Ctrl-C: no half object left in .tmp
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        lock.unlink(missing_ok=True)  # before the lock goes: no other process takes it on the way
        os.close(fd)
    return final


OBJECT_FILES = frozenset({"cameras.json", "mesh.obj", "mesh.mtl", "mesh_texture.png", "spec.json", "rgba"})
"""The names an object folder holds (its images in rgba/)."""


def _replace_incomplete(final: Path, new: Path, aside: Path) -> None:
    """Put the object folder `new` in place of the incomplete `final` (checked by
    `_check_replaceable`): `final` is moved aside in one rename, so that another process doing the
    same finds either it or nothing there, never a folder half removed; whichever renames its own
    in first wins, and the other's copy (the same object) goes."""
    if is_complete(final):  # another process got there first
        shutil.rmtree(new, ignore_errors=True)
        return
    if final.exists() or final.is_symlink():
        try:
            _check_replaceable(final)
            os.rename(final, aside)
        except FileNotFoundError:  # another process moved it aside first (while it was looked at)
            pass
        else:
            shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(new, final)
    except OSError:
        if not is_complete(final):
            raise
        shutil.rmtree(new, ignore_errors=True)


def _check_replaceable(folder: Path) -> None:
    """Raise ValueError naming `folder` unless it is an incomplete object folder holding only files
    an object folder holds (what an interrupted copy of a dataset leaves), which may be replaced."""
    if not folder.is_dir() or folder.is_symlink():
        raise ValueError(f"{folder}: in the way of the object of that name (not an object folder): move or remove "
                         "it, then run the same command again")
    images = folder / "rgba"
    other = sorted(p.name for p in folder.iterdir() if p.name not in OBJECT_FILES)
    if images.is_dir() and not images.is_symlink():
        other += sorted(f"rgba/{p.name}" for p in images.iterdir() if p.suffix != ".png" or not p.is_file())
    elif images.exists() or images.is_symlink():
        other.append("rgba")
    if other:
        raise ValueError(f"{folder}: an incomplete object folder (no cameras.json) holding files o3d does not write "
                         f"({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}): move or remove it, then run "
                         "the same command again")


def _write_object_files(tmp: Path, final: Path, rgba: np.ndarray, meta: dict, mesh: TriMesh,
                        spec: dict | None) -> None:
    views = meta["views"]
    if len(views) != len(rgba):
        raise ValueError(f"{final}: {len(rgba)} images but {len(views)} views in the metadata")
    for view, image in zip(views, rgba):
        (tmp / view["file"]).write_bytes(_png_bytes(np.ascontiguousarray(image)))
    write_obj(tmp / "mesh.obj", mesh)
    if spec is not None:
        _write_json(tmp / "spec.json", spec)
    header = {"format": FORMAT, "version": VERSION, "width": int(rgba.shape[2]), "height": int(rgba.shape[1])}
    _write_json(tmp / "cameras.json", {**header, **meta, "mesh": "mesh.obj"})  # written last


def cameras_from_meta(meta: dict, where: Path):
    """The Cameras of a parsed cameras.json."""
    import torch

    from o3dcli.geometry.cameras import Cameras

    try:
        views = meta["views"]
        c2w = torch.tensor([v["c2w"] for v in views], dtype=torch.float32).reshape(-1, 4, 4)
        intr = {k: torch.tensor([float(v[k]) for v in views], dtype=torch.float32) for k in ("fx", "fy", "cx", "cy")}
        cameras = Cameras(c2w, intr["fx"], intr["fy"], intr["cx"], intr["cy"], int(meta["width"]), int(meta["height"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise RenderedObjectError(f"{where}: malformed camera entry ({e!r})") from e
    # a NaN or infinity would pass every later check (comparisons with NaN are false) and, trained
    # on, turn every weight of the model into NaN
    finite = torch.isfinite(c2w.flatten(1)).all(1)
    for k in ("fx", "fy", "cx", "cy"):
        finite &= torch.isfinite(intr[k])
    focal = (intr["fx"] > 0) & (intr["fy"] > 0)
    for ok, what in ((finite, "a camera value is not a finite number (NaN or infinity)"),
                     (focal, "its focal length (fx, fy) is not above 0")):
        if not bool(ok.all()):
            bad = [i for i in range(len(views)) if not bool(ok[i])]
            listed = ", ".join(str(i) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise RenderedObjectError(f"{where}: view{'s' if len(bad) > 1 else ''} {listed} "
                                      f"({views[bad[0]].get('file')}{', ...' if len(bad) > 1 else ''}): {what}")
    return cameras


def load_rendered_object(obj_dir: str | os.PathLike) -> RenderedObject:
    """Read a rendered-object folder (images as float32 [V, 4, H, W], cameras, mesh path, metadata)."""
    import torch
    from PIL import Image

    obj_dir = Path(obj_dir)
    cam_file = obj_dir / "cameras.json"
    try:
        meta = json.loads(cam_file.read_text())
    except FileNotFoundError as e:
        raise RenderedObjectError(f"{cam_file}: missing (not a complete rendered-object folder)") from e
    except json.JSONDecodeError as e:
        raise RenderedObjectError(f"{cam_file}: invalid JSON ({e})") from e
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise RenderedObjectError(
            f"{cam_file}: expected format {FORMAT!r} version {VERSION}, got {meta.get('format')!r} {meta.get('version')!r}")
    cameras = cameras_from_meta(meta, cam_file)
    images = []
    for view in meta["views"]:
        file = obj_dir / view["file"]
        try:
            with Image.open(file) as im:
                mode, alpha = im.mode, im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
                arr = np.asarray(im.convert("RGBA"))
        except (OSError, ValueError) as e:
            raise RenderedObjectError(f"{file}: cannot read image ({e})") from e
        if not alpha:  # read as opaque, the whole frame would be the object's mask
            raise RenderedObjectError(f"{file}: no alpha channel (mode {mode}); rendered views need a "
                                      "transparent background, the object's mask is read from it")
        if arr.shape[:2] != (cameras.height, cameras.width):
            raise RenderedObjectError(f"{file}: size {arr.shape[1]}x{arr.shape[0]} differs from "
                                      f"cameras.json's {cameras.width}x{cameras.height}")
        images.append(arr)
    images_t = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mesh_path = obj_dir / meta.get("mesh", "mesh.obj")
    return RenderedObject(images_t, cameras, mesh_path, meta)


def list_objects(root: str | os.PathLike) -> list[Path]:
    """Complete object folders under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir() and is_complete(p))


def write_index(root: str | os.PathLike, settings: dict) -> dict:
    """(Re)write ``root/index.json`` from the complete object folders present."""
    root = Path(root)
    objects = []
    for p in list_objects(root):
        seed = int(p.name[len(OBJECT_PREFIX):]) if p.name.startswith(OBJECT_PREFIX) else None
        objects.append({"id": p.name, "seed": seed})
    seeds = [o["seed"] for o in objects if o["seed"] is not None]
    index = {"format": INDEX_FORMAT, "version": VERSION, "objects": objects,
             "seed_range": [min(seeds), max(seeds)] if seeds else None, "settings": settings}
    _write_json(root / "index.json", index)
    return index


def read_index(root: str | os.PathLike) -> dict | None:
    """The parsed ``root/index.json``, or None when there is none."""
    path = Path(root) / "index.json"
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RenderedObjectError(f"{path}: invalid JSON ({e})") from e
    except OSError as e:
        raise RenderedObjectError(f"{path}: cannot read ({e.strerror or e})") from e
    if not isinstance(index, dict):
        raise RenderedObjectError(f"{path}: not an o3d rendered-object index (a JSON {type(index).__name__})")
    if index.get("format") != INDEX_FORMAT:
        raise RenderedObjectError(f"{path}: not an o3d rendered-object index (format {index.get('format')!r})")
    return index
