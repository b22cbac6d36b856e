"""MTL material libraries of OBJ files (`o3dcli.io.obj`): colours (Kd), opacity (d, Tr, map_d)
and textures (map_Kd with its -s and -o options), looked up beside the MTL and the OBJ and in
the Google Scanned Objects layout.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from o3dcli.io.mesh_common import MeshLoadError, eight_bit

_log = logging.getLogger("o3d")


def alpha_mode_of(alpha: np.ndarray) -> str:
    """"MASK" for an alpha map [H, W] uint8 that is a cut-out (at least 95 % of its texels within
    8 of 0 or 255), else "BLEND"."""
    a = np.asarray(alpha)
    binary = np.count_nonzero((a <= 8) | (a >= 247))
    return "MASK" if binary >= 0.95 * a.size else "BLEND"


def read_alpha(tex_path: Path, size: tuple[int, int], mesh_path: Path) -> tuple[np.ndarray | None, str]:
    """An MTL map_d as a [H, W] uint8 alpha map of the colour texture's size, and its mode.

    The map is the image's alpha channel when it has one that is not all opaque (the usual
    export: map_d names the RGBA colour texture), else its luminance (a separate greyscale
    mask). MTL has no cut-out/blend switch: the mode is :func:`alpha_mode_of` the map as stored
    (before resizing softens its edges), or "OPAQUE" (and no map) when it is all opaque. An
    unreadable map is warned about and the material loaded opaque, as a missing one is.
    """
    from PIL import Image

    try:
        with Image.open(tex_path) as im:
            im = eight_bit(im)
            a = im.convert("RGBA").getchannel("A") if _has_alpha(im) else None
            if a is None or np.asarray(a).min() == 255:  # no alpha, or an all-opaque one: a mask image
                a = im.convert("L")
            alpha = np.asarray(a)
    except Exception as e:
        _log.warning("%s: alpha texture %s cannot be read (%s); the material is loaded opaque", mesh_path, tex_path, e)
        return None, "OPAQUE"
    if alpha.min() >= 247:
        return None, "OPAQUE"
    mode = alpha_mode_of(alpha)
    if alpha.shape != tuple(size):
        alpha = np.asarray(Image.fromarray(alpha).resize((size[1], size[0]), Image.BILINEAR))
    return alpha, mode


def _has_alpha(im) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)


def read_mtl(mtl_path: Path, obj_path: Path) -> dict[str, dict]:
    """Materials of an MTL file: name -> {"Kd": (3,), "map_Kd" and "map_d": resolved texture Paths or None}.

    A missing MTL or texture is not an error: the mesh loads with the colours it has, and a
    warning names what is missing.
    """
    if not mtl_path.is_file():
        _log.warning("%s: its material library %s is missing; loading it without its colours", obj_path, mtl_path.name)
        return {}
    out: dict[str, dict] = {}
    cur = None
    for line in mtl_path.read_bytes().decode("utf-8", errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "newmtl":
            cur = out.setdefault(line.split(None, 1)[1].strip() if len(parts) > 1 else "", {})
        elif cur is not None and parts[0] == "Kd" and len(parts) >= 4:
            cur["Kd"] = np.clip(np.array([float(x) for x in parts[1:4]], np.float32), 0, 1)
        elif cur is not None and parts[0] == "map_Kd" and len(parts) >= 2:
            cur["map_Kd"] = _find_texture(parts[-1], mtl_path.parent, obj_path.parent)  # options precede the name
            cur["uv_scale"], cur["uv_offset"] = _map_options(parts[1:-1])
            if cur["map_Kd"] is None:
                _log.warning("%s: texture %s not found (looked beside the MTL and the OBJ); using the material's "
                             "colour instead", mtl_path, parts[-1])
        elif cur is not None and parts[0] in ("d", "Tr") and len(parts) >= 2:
            _mtl_dissolve(cur, parts, mtl_path)
        elif cur is not None and parts[0] == "map_d" and len(parts) >= 2:
            cur["map_d"] = _find_texture(parts[-1], mtl_path.parent, obj_path.parent)
            if cur["map_d"] is None:
                _log.warning("%s: alpha texture %s not found (looked beside the MTL and the OBJ); the material "
                             "is loaded opaque", mtl_path, parts[-1])
    return out


def _mtl_dissolve(material: dict, parts: list[str], mtl_path: Path) -> None:
    """An MTL's "d" (opacity) or "Tr" (transparency, 1 - d) as material["d"]; d wins when both are
    given. A fully transparent value is read as opaque, with a warning: exporters that mix the two
    up write it for opaque materials, and a material nobody can see is rarely meant."""
    try:
        value = float(parts[-1])  # "d -halo 0.5": the number comes last
    except ValueError:
        return
    if parts[0] == "Tr":
        if "d" in material:
            return
        value = 1.0 - value
    value = float(np.clip(value, 0.0, 1.0))
    if value == 0.0:
        _log.warning("%s: %s %s makes the material fully transparent; read as opaque", mtl_path, parts[0], parts[-1])
        value = 1.0
    material["d"] = value


def _map_options(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The -s (scale) and -o (offset) options of an MTL texture statement, as (u, v) pairs
    (1, 1) and (0, 0) when absent; other options are skipped. Each takes one to three numbers."""
    scale, offset = np.ones(2, np.float32), np.zeros(2, np.float32)
    i = 0
    while i < len(tokens):
        opt, values = tokens[i], []
        i += 1
        while i < len(tokens) and len(values) < 3:
            try:
                values.append(float(tokens[i]))
            except ValueError:
                break
            i += 1
        if opt in ("-s", "-o") and values:
            target = scale if opt == "-s" else offset
            target[: min(2, len(values))] = values[:2]  # one number sets u only, as the format says
        elif opt not in ("-s", "-o") and not values and i < len(tokens):
            i += 1  # a word-valued option (-clamp on, -imfchan m): skip its value
    return scale, offset


def _find_texture(name: str, mtl_dir: Path, obj_dir: Path) -> Path | None:
    base = Path(name.replace("\\", "/")).name
    candidates = [mtl_dir / name, mtl_dir / base, obj_dir / base,
                  mtl_dir.parent / "materials" / "textures" / base]  # Google Scanned Objects layout
    return next((c for c in candidates if c.is_file()), None)


def read_texture(tex_path: Path, mesh_path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(tex_path) as im:
            return np.asarray(eight_bit(im).convert("RGB"))
    except Exception as e:
        raise MeshLoadError(f"{mesh_path}: texture {tex_path} cannot be read ({e})") from e
