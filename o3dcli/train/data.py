"""Training data: rendered-object folders (o3d's own, or the published Objaverse render layout).

Each object becomes a `TrainObject` held in memory at the model's resolution:
the target views at the preset's camera rig (view 0 = the input view), a few
extra views for novel-view supervision of the reconstruction, the condition
image (train.cond_image: the input view itself, pixel-aligned with view 0's
target, or recentred as `o3d generate` prepares a photo), and, when the ground-truth mesh is
known, the surface point and mask behind every pixel of the reconstructor's
input views (direct supervision that keeps the Gaussians from collapsing to
transparency; docs/design.md section 6).

Two layouts are read:
- o3d rendered-object folders (`o3d data synth`; format in o3dcli.synth.dataset);
- the layout of published Objaverse renders: per object `render_XXXX.png|webp`
  (or `XXX.png`) and `meta.json` with `camera_angle_x` and
  `locations[].transform_matrix` (Blender/OpenGL convention). A view is used
  as the input view when the object also has renders at every other rig
  camera relative to it (same elevation, azimuth offsets of the rig, 1 deg
  tolerance); the model always sees the preset's fixed rig, as published.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from o3dcli.config import Config

RIG_TOLERANCE_DEG = 1.0


class DatasetError(ValueError):
    """A training folder cannot be used; the message names it."""


@dataclass
class TrainObject:
    name: str
    views: Tensor
    """[V, 4, S, S] straight RGBA at the rig cameras (view 0 = input view)."""
    cond: list[Tensor]
    """Condition images [3, S, S] (train.cond_image: the input view itself, or recentred at several ratios)."""
    extra_views: Tensor
    """[E, 4, S, S] views at other cameras (may be E = 0)."""
    extra_c2w: Tensor
    """[E, 4, 4] their camera-to-world matrices (same intrinsics as the rig)."""
    points: Tensor | None
    """[Vin, 3, s, s] surface points behind the reconstructor's input pixels (s = splat size), or None."""
    point_mask: Tensor | None
    """[Vin, 1, s, s] 1 where a ray of the input view hits the object."""
    render_size: int = 0
    """Side in pixels of the object's renders before they were resized to the model's (S)."""


def resize_rgba(rgba: Tensor, size: int) -> Tensor:
    """[N, 4, H, W] straight RGBA -> [N, 4, size, size], area-averaged on premultiplied colour."""
    if rgba.shape[-1] == size:
        return rgba.clone()
    pre = torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], 1)
    pre = F.interpolate(pre, size=(size, size), mode="area")
    a = pre[:, 3:]
    rgb = torch.where(a > 1e-6, pre[:, :3] / a.clamp_min(1e-6), torch.zeros_like(pre[:, :3]))
    return torch.cat([rgb.clamp(0, 1), a.clamp(0, 1)], 1)


def composite(rgba: Tensor, background) -> Tensor:
    """Straight RGBA [..., 4, H, W] over a background colour -> RGB [..., 3, H, W]."""
    bg = torch.as_tensor(background, dtype=rgba.dtype, device=rgba.device).reshape(3, 1, 1)
    return rgba[..., :3, :, :] * rgba[..., 3:, :, :] + bg * (1 - rgba[..., 3:, :, :])


def _orbit_params(c2w: Tensor) -> tuple[float, float, float]:
    """(elevation, azimuth, radius) in degrees of a camera centre (docs/design.md orbit convention)."""
    x, y, z = (float(v) for v in c2w[:3, 3])
    r = math.sqrt(x * x + y * y + z * z)
    return math.degrees(math.asin(max(-1.0, min(1.0, y / max(r, 1e-9))))), math.degrees(math.atan2(x, z)) % 360.0, r


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def match_rig(c2ws: Tensor, cfg: Config) -> list[list[int]]:
    """For each view usable as the input view, the view indices of the whole rig relative to it."""
    params = [_orbit_params(m) for m in c2ws]
    rig = list(zip(cfg.cameras.elevations, cfg.cameras.azimuths))
    matches = []
    for i, (el_i, az_i, _) in enumerate(params):
        if abs(el_i - rig[0][0]) > RIG_TOLERANCE_DEG:
            continue
        chosen = []
        for el, az in rig:
            want = (az_i + az - rig[0][1]) % 360.0
            hit = [j for j, (e, a, _) in enumerate(params) if abs(e - el) <= RIG_TOLERANCE_DEG and _angle_diff(a, want) <= RIG_TOLERANCE_DEG]
            if not hit:
                break
            chosen.append(hit[0])
        if len(chosen) == len(rig):
            matches.append(chosen)
    return matches


FOV_TOLERANCE_DEG = 0.5
RADIUS_TOLERANCE = 0.02
"""Relative difference allowed between a training camera's distance and cameras.radius."""


def rig_requirement(cfg: Config) -> str:
    """The preset's camera rig in words, for messages about training data that does not fit it."""
    c = cfg.cameras
    offsets = ", ".join(f"{(a - c.azimuths[0]) % 360:g}" for a in c.azimuths)
    els = sorted(set(c.elevations))
    el = f"elevation {els[0]:g}" if len(els) == 1 else "elevations " + ", ".join(f"{e:g}" for e in c.elevations)
    return (f"renders at {el} and azimuths {offsets} degrees relative to one of its views (within "
            f"{RIG_TOLERANCE_DEG:g} degree), fov {c.fov_deg:g} degrees, distance {c.radius:g}")


def describe_views(c2ws: Tensor) -> str:
    """Where an object's cameras are, in words: how many, their elevations and distances."""
    params = [_orbit_params(m) for m in c2ws]
    if not params:
        return "no views"
    els = sorted({round(e, 1) for e, _, _ in params})
    rs = [r for _, _, r in params]
    el_text = ", ".join(f"{e:g}" for e in els[:6]) + (", ..." if len(els) > 6 else "")
    return f"{len(params)} views at elevation {el_text} degrees, distance {min(rs):.3g}-{max(rs):.3g}"


AIM_TOLERANCE_DEG = 5.0
"""How far a rig view's forward axis may be from the object's centre (the origin), and its right
axis from level: the model's rig cameras look at the origin, unrolled."""
EXTRA_AIM_LIMIT_DEG = 45.0
"""How far an extra view's forward axis may be from the origin: beyond it the object is out of frame."""


def check_poses(where: Path, c2ws: Tensor, rig: list[int], labels: list[str], axes: str) -> None:
    """DatasetError naming the view when a camera is not a rotation, does not look at the object
    (the origin; a rig view within AIM_TOLERANCE_DEG, another within EXTRA_AIM_LIMIT_DEG) or a rig
    view is rolled: the usual signs of a matrix in the other camera convention (`axes`, the
    convention the file should be in, says which). `labels[i]` names view i."""
    for i, m in enumerate(c2ws):
        rot, centre = m[:3, :3].double(), m[:3, 3].double()
        hint = f"; the matrix should be camera-to-world in {axes} camera axes"
        if (rot.T @ rot - torch.eye(3, dtype=rot.dtype)).abs().max() > 1e-2 or float(torch.linalg.det(rot)) < 0:
            raise DatasetError(f"{where}: {labels[i]}: its rotation is not one (scaled, sheared or mirrored){hint}")
        dist = float(centre.norm())
        if dist < 1e-6:
            raise DatasetError(f"{where}: {labels[i]}: the camera is at the object's centre (the origin)")
        off = math.degrees(math.acos(max(-1.0, min(1.0, float(rot[:, 2] @ -centre) / dist))))
        limit = AIM_TOLERANCE_DEG if i in rig else EXTRA_AIM_LIMIT_DEG
        if off > limit:
            raise DatasetError(f"{where}: {labels[i]}: the camera looks {off:.0f} degrees away from the object's "
                               f"centre (the origin; at most {limit:g}){hint}")
        level = math.degrees(math.asin(min(1.0, abs(float(rot[1, 0])))))  # the right axis' tilt
        upside_down = float(rot[1, 1]) > 0  # the image's down axis points up the world
        if i in rig and abs(float(centre[1])) / dist < 0.99 and (level > AIM_TOLERANCE_DEG or upside_down):
            how = "upside down" if upside_down else f"{level:.0f} degrees"
            raise DatasetError(f"{where}: {labels[i]}: the camera is rolled ({how}; the preset's rig cameras are "
                               f"level){hint}")


def alpha_problem(alpha: Tensor) -> str | None:
    """What is wrong with a render's alpha [H, W] in [0, 1] as the object's mask, or None: opaque
    everywhere (a render without a transparent background) or transparent everywhere (the object is
    not in it)."""
    if float(alpha.min()) >= 254.5 / 255:
        return "its alpha is opaque everywhere; training renders need a transparent background, the object's " \
               "mask is read from it"
    if float(alpha.max()) < 0.5 / 255:
        return "its alpha is transparent everywhere: the object is not in this render"
    return None


def usable_extra_views(images: Tensor, extra: list[int], labels: list[str], rig: list[int], on_note=None) -> list[int]:
    """DatasetError naming the first rig view whose alpha cannot be its mask (`alpha_problem`); the
    `extra` views whose alpha cannot are left out, `on_note(message)` told. `labels[i]` names view i."""
    for i in rig:
        problem = alpha_problem(images[i, 3])
        if problem:
            raise DatasetError(f"{labels[i]}: {problem}")
    kept = []
    for i in extra:
        problem = alpha_problem(images[i, 3])
        if problem is None:
            kept.append(i)
        elif on_note is not None:
            on_note(f"{labels[i]}: {problem}; this extra view is left out")
    return kept


def check_intrinsics(where: Path, fov_deg: float, c2ws: Tensor, cfg: Config) -> None:
    """DatasetError when the rig views' field of view or distance is not the preset's: the model
    has one fixed rig, and views taken otherwise would teach it the wrong geometry."""
    c = cfg.cameras
    if abs(fov_deg - c.fov_deg) > FOV_TOLERANCE_DEG:
        hint = " (camera_angle_x is in radians; this looks like degrees)" if fov_deg > 180 else ""
        raise DatasetError(f"{where}: field of view {fov_deg:.2f} degrees{hint}, the preset's cameras have "
                           f"{c.fov_deg:g} (cameras.fov_deg); render with it, or train a preset with yours")
    radii = [_orbit_params(m)[2] for m in c2ws]
    off = max(radii, key=lambda r: abs(r - c.radius))
    if abs(off - c.radius) > RADIUS_TOLERANCE * c.radius:
        raise DatasetError(f"{where}: a camera is {off:.4g} from the origin, the preset's cameras are at "
                           f"{c.radius:g} (cameras.radius); render at that distance, or train a preset with yours")


def surface_points(mesh_path: Path, cfg: Config) -> tuple[Tensor, Tensor]:
    """Surface points [Vin, 3, s, s] and hit mask [Vin, 1, s, s] at the reconstructor's input views."""
    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.io.mesh import load_mesh
    from o3dcli.render.mesh import MeshRaycaster

    s = cfg.recon.splat_size
    c = cfg.cameras
    idx = list(cfg.recon.input_views)
    cams = orbit_cameras([c.elevations[i] for i in idx], [c.azimuths[i] for i in idx], c.radius, c.fov_deg, s)
    out = MeshRaycaster(load_mesh(mesh_path)).render(cams)
    mask = (out.face_ids >= 0).float()[:, None]
    return out.points * mask, mask


def prepare_cond(view0: Tensor, cfg: Config, ratios: tuple[float, ...]) -> list[Tensor]:
    """Condition images [3, S, S] from the full-size input view [4, H, W] (train.cond_image):
    "view": the view itself at the model's size (one image, aligned with view 0's target);
    "recentred": as `o3d generate` would prepare it, one per foreground ratio."""
    import dataclasses

    from o3dcli.preprocess import preprocess_image

    if cfg.train.cond_image == "view":
        return [composite(resize_rgba(view0[None], cfg.preprocess.size)[0], cfg.preprocess.background)]
    out = []
    for r in ratios:
        pcfg = dataclasses.replace(cfg.preprocess, foreground_ratio=r, matting="alpha")
        out.append(preprocess_image(view0.permute(1, 2, 0).numpy(), pcfg).rgb.float())
    return out


def load_o3d_object(folder: Path, cfg: Config, ratios, on_note=None) -> TrainObject:
    from o3dcli.synth.dataset import RenderedObjectError, load_rendered_object

    try:
        obj = load_rendered_object(folder)
    except RenderedObjectError as e:
        raise DatasetError(str(e)) from None
    gen = obj.generation_indices
    matches = match_rig(obj.cameras.c2w[gen], cfg)
    if not matches or matches[0][0] != 0:
        raise DatasetError(f"{folder}: its generation views ({describe_views(obj.cameras.c2w[gen])}) do not match "
                           f"the preset's camera rig, which needs {rig_requirement(cfg)}; re-render it with the "
                           "preset's cameras")
    rig = [gen[i] for i in matches[0]]
    cams = obj.cameras
    check_intrinsics(folder / "cameras.json", math.degrees(2 * math.atan(0.5 * cams.width / float(cams.fx[rig[0]]))),
                     cams.c2w[rig], cfg)
    extra = [i for i, k in enumerate(obj.kinds) if k == "extra"]
    check_poses(folder / "cameras.json", cams.c2w[rig + extra], list(range(len(rig))),
                [f"view {i} ({obj.meta['views'][i].get('file')})" for i in rig + extra], "OpenCV")
    extra = usable_extra_views(obj.images, extra, [str(folder / v.get("file")) for v in obj.meta["views"]], rig,
                               on_note)
    size = cfg.preprocess.size
    views = resize_rgba(obj.images[rig], size)
    full0 = obj.images[rig[0]]
    pts, pmask = surface_points(obj.mesh_path, cfg) if obj.mesh_path.is_file() else (None, None)
    return TrainObject(folder.name, views, prepare_cond(full0, cfg, ratios),
                       resize_rgba(obj.images[extra], size) if extra else torch.zeros(0, 4, size, size),
                       obj.cameras.c2w[extra] if extra else torch.zeros(0, 4, 4), pts, pmask, full0.shape[-1])


def read_render(path: Path) -> Tensor:
    """A training render as straight RGBA [4, H, W] in [0, 1]; DatasetError naming the file when it
    cannot be read or has no alpha (the object's mask comes from it)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if not (im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info):
                raise DatasetError(f"{path}: no alpha channel (mode {im.mode}); training renders need a "
                                   "transparent background, the object's mask is read from it")
            arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except DatasetError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot read the image ({e})") from None
    return torch.from_numpy(arr).permute(2, 0, 1)


def load_objaverse_object(folder: Path, cfg: Config, ratios, on_note=None) -> TrainObject:
    """One object in the published Objaverse render layout (see the module docstring). A view
    whose render is missing is left out, `on_note(message)` told (the object is refused only when
    the views left do not hold the preset's rig); file names are matched in any case (.PNG)."""
    from o3dcli.geometry.convert import cameras_from_blender

    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8-sig"))  # a BOM, as Windows tools write
        mats = torch.tensor([loc["transform_matrix"] for loc in meta["locations"]], dtype=torch.float32)
        angle = float(meta["camera_angle_x"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise DatasetError(f"{folder / 'meta.json'}: cannot read camera_angle_x / locations[].transform_matrix ({e})") from e
    if len(mats) == 0:
        raise DatasetError(f"{folder / 'meta.json'}: no locations (no views)")
    if mats.shape[1:] not in ((4, 4), (3, 4)):
        raise DatasetError(f"{folder / 'meta.json'}: locations[].transform_matrix must be 4x4 (or 3x4), got "
                           f"{'x'.join(map(str, mats.shape[1:]))}")
    # a NaN or infinity would pass every later check (comparisons with NaN are false) and, trained
    # on, turn every weight of the model into NaN
    bad = [i for i in range(len(mats)) if not bool(torch.isfinite(mats[i]).all())]
    if bad:
        raise DatasetError(f"{folder / 'meta.json'}: locations[{bad[0]}].transform_matrix"
                           f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''} holds a value that is not a "
                           "finite number (NaN or infinity)")
    if not (math.isfinite(angle) and angle > 0):
        raise DatasetError(f"{folder / 'meta.json'}: camera_angle_x is {angle}; it must be the horizontal field of "
                           "view in radians, above 0")
    try:
        present = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list the renders ({e})") from None
    files, missing = [], []
    for i in range(len(mats)):
        cand = [f"render_{i:04d}.png", f"render_{i:04d}.webp", f"{i:03d}.png"]
        hit = next((present[c] for c in cand if c in present), None)
        if hit is None:
            missing.append(i)
        else:
            files.append(hit)
    if missing:
        what = f"view {missing[0]}" if len(missing) == 1 else f"{len(missing)} views ({', '.join(map(str, missing[:5]))}{', ...' if len(missing) > 5 else ''})"
        if not files:
            raise DatasetError(f"{folder}: no renders for its {len(mats)} views (render_XXXX.png|webp)")
        if on_note is not None:
            on_note(f"{folder}: no render for {what} (render_{missing[0]:04d}.png|webp, {missing[0]:03d}.png): "
                    "left out")
        mats = mats[[i for i in range(len(mats)) if i not in set(missing)]]
    imgs = [read_render(p) for p in files]
    for p, im in zip(files, imgs):
        if im.shape[-1] != im.shape[-2]:
            raise DatasetError(f"{p}: {im.shape[-1]}x{im.shape[-2]} pixels; renders must be square")
        if im.shape != imgs[0].shape:
            raise DatasetError(f"{folder}: renders of different sizes ({imgs[0].shape[-1]} px in {files[0].name}, "
                               f"{im.shape[-1]} px in {p.name})")
    images = torch.stack(imgs)
    cams = cameras_from_blender(mats, angle, images.shape[-1], images.shape[-2])
    matches = match_rig(cams.c2w, cfg)
    if not matches:
        lost = f" (without the {len(missing)} view(s) that have no render)" if missing else ""
        raise DatasetError(f"{folder}: its cameras{lost} ({describe_views(cams.c2w)}) do not include the preset's rig, "
                           f"which needs {rig_requirement(cfg)}")
    rig = matches[0]
    check_intrinsics(folder / "meta.json", math.degrees(angle), cams.c2w[rig], cfg)
    extra = [i for i in range(len(files)) if i not in rig]
    check_poses(folder / "meta.json", cams.c2w[rig + extra], list(range(len(rig))),
                [f"{p.name}'s transform_matrix" for p in [files[i] for i in rig + extra]], "Blender's (OpenGL)")
    extra = usable_extra_views(images, extra, [str(f) for f in files], rig, on_note)
    size = cfg.preprocess.size
    return TrainObject(folder.name, resize_rgba(images[rig], size), prepare_cond(images[rig[0]], cfg, ratios),
                       resize_rgba(images[extra], size) if extra else torch.zeros(0, 4, size, size),
                       cams.c2w[extra] if extra else torch.zeros(0, 4, 4), None, None, images.shape[-1])


COND_RATIO_SPREAD = 0.05
"""Condition images are prepared at preprocess.foreground_ratio and this much either side of it
(augmentation: a user's photo is recentred to that ratio, the object's true size is unknown)."""


def cond_ratios(cfg: Config) -> tuple[float, ...]:
    r = cfg.preprocess.foreground_ratio
    return tuple(min(max(x, 0.05), 1.0) for x in (r - COND_RATIO_SPREAD, r, r + COND_RATIO_SPREAD))


def load_dataset(root: Path, cfg: Config, ratios: tuple[float, ...] | None = None, limit: int | None = None,
                 on_object=None, on_skip=None, on_note=None) -> list[TrainObject]:
    """The usable objects under `root`, sorted by name (the first `limit` of them when given).

    An object that cannot be used (unreadable files, cameras off the preset's rig) is skipped:
    `on_skip(folder, message)` hears of it (default: a logged warning); what is left out of an
    object that is used (a view without its render) goes to `on_note(message)` (default: a logged
    warning). DatasetError when `root` has no object folders or none is usable.
    ratios: foreground ratios of the condition images (default: `cond_ratios(cfg)`)."""
    ratios = ratios or cond_ratios(cfg)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    folders = [p for p in subdirs if (p / "cameras.json").is_file() or (p / "meta.json").is_file()]
    if not folders:
        one = (root / "cameras.json").is_file() or (root / "meta.json").is_file() or any(root.glob("render_*.*"))
        parent = root.parent if root.parent.name else root.resolve().parent  # "." or "..": say where that is
        hint = f"; this looks like one object's folder: give its parent, {parent}" if one else ""
        raise DatasetError(f"{root}: no object folders (expected <object>/cameras.json or <object>/meta.json){hint}")
    from o3dcli.console import log

    if on_skip is None:
        on_skip = lambda folder, message: log.warning("skipped %s", message)  # noqa: E731
    if on_note is None:
        on_note = lambda message: log.warning("%s", message)  # noqa: E731
    objects, skipped = [], []
    object_folders = set(folders)
    for p in subdirs:
        if p not in object_folders:
            on_skip(p, f"{p}: neither cameras.json nor meta.json, not an object folder")
    for p in folders:
        if limit is not None and len(objects) >= limit:
            break
        try:
            if (p / "cameras.json").is_file():
                obj = load_o3d_object(p, cfg, ratios, on_note=on_note)
            else:
                obj = load_objaverse_object(p, cfg, ratios, on_note=on_note)
        except Exception as e:  # DatasetError, an image the preprocessing refuses, a broken mesh or metadata
            from o3dcli.io.mesh_common import MeshLoadError

            # o3d's own errors name the file and the problem; a library's says what it is
            text = str(e) if isinstance(e, (ValueError, OSError, MeshLoadError)) else f"{type(e).__name__}: {e}"
            message = text if str(p) in text else f"{p}: {text}"
            skipped.append(message)
            on_skip(p, message)
            continue
        objects.append(obj)
        if on_object:
            on_object(obj)
    if not objects:
        raise DatasetError(f"{root}: none of its {len(skipped)} object folders can be used; the first: {skipped[0]}")
    return objects


@dataclass
class Batch:
    views: Tensor        # [B, V, 4, S, S]
    cond: Tensor         # [B, 3, S, S]
    extra_views: list[Tensor]  # B x [E_b, 4, S, S]
    extra_c2w: list[Tensor]    # B x [E_b, 4, 4]
    points: Tensor | None      # [B, Vin, 3, s, s], zeros for objects without a mesh
    point_mask: Tensor | None  # [B, Vin, 1, s, s]
    has_points: Tensor | None  # [B] bool: which objects have surface points (None: none has)
    names: tuple[str, ...] = ()  # the objects' folder names, for messages


def sample_batch(objects: list[TrainObject], batch_size: int, extra: int, gen: torch.Generator) -> Batch:
    """A random batch (objects, condition variant, extra views) drawn from `gen` only.

    Each object takes min(extra, its extra views) extra views, and has its surface points when it
    has a mesh: an object with fewer renders, or none, does not take them from the others.
    """
    idx = torch.randint(len(objects), (batch_size,), generator=gen).tolist()
    chosen = [objects[i] for i in idx]
    conds, ev, ec = [], [], []
    for o in chosen:
        conds.append(o.cond[int(torch.randint(len(o.cond), (1,), generator=gen))])
        take = torch.randperm(len(o.extra_views), generator=gen)[:extra]
        ev.append(o.extra_views[take])
        ec.append(o.extra_c2w[take])
    pts = pmask = has = None
    with_points = [o for o in chosen if o.points is not None]
    if with_points:
        like = with_points[0]
        pts = torch.stack([o.points if o.points is not None else torch.zeros_like(like.points) for o in chosen])
        pmask = torch.stack([o.point_mask if o.points is not None else torch.zeros_like(like.point_mask)
                             for o in chosen])
        has = torch.tensor([o.points is not None for o in chosen])
    return Batch(torch.stack([o.views for o in chosen]), torch.stack(conds), ev, ec, pts, pmask, has,
                 tuple(o.name for o in chosen))
