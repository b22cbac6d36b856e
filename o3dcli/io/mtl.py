"""MTL material libraries of OBJ files (`o3dcli.io.obj`): colours (Kd), opacity (d, Tr, map_d)
and textures (map_Kd with its -s and -o options), looked up beside the MTL and the OBJ and in
the Google Scanned Objects layout. Hand-written: trimesh's MTL reader takes a map statement's
last word as its file name, so names with spaces and some options are lost.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from o3dcli.io.mesh_common import MeshLoadError, eight_bit, note_texture_format

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

    Keywords are read case-insensitively (exporters write "map_kd", "KD"); a map statement's
    options come before its file name, which is the rest of the line and may hold spaces
    ("Material #25.jpg") or Windows backslashes. A missing MTL or texture is not an error: the
    mesh loads with the colours it has, and a warning names what is missing.
    """
    if not mtl_path.is_file():
        _log.warning("%s: its material library %s is missing; loading it without its colours", obj_path, mtl_path.name)
        return {}
    out: dict[str, dict] = {}
    cur = None
    for line in mtl_path.read_bytes().decode("utf-8-sig", errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        key = parts[0].lower()
        if key == "newmtl":
            cur = out.setdefault(line.split(None, 1)[1].strip() if len(parts) > 1 else "", {})
        elif cur is None:
            continue
        elif key == "kd" and len(parts) >= 2:
            _mtl_colour(cur, parts, mtl_path)
        elif key in ("map_kd", "map_d") and len(parts) >= 2:
            name, options, last = map_statement(line)
            tex = _find_texture(name, mtl_path.parent, obj_path.parent) if name else None
            if tex is None and last != name:  # an option we do not know took the name's place
                tex = _find_texture(last, mtl_path.parent, obj_path.parent)
            cur[key.replace("kd", "Kd")] = tex
            if key == "map_kd":
                cur["uv_scale"], cur["uv_offset"] = _map_options(options)
            if tex is None:
                what, instead = (("texture", "using the material's colour instead") if key == "map_kd"
                                 else ("alpha texture", "the material is loaded opaque"))
                _log.warning("%s: %s %s not found (looked beside the MTL and the OBJ, and in ../materials/textures "
                             "as Google Scanned Objects keep it); %s", mtl_path, what, name or last, instead)
        elif key in ("d", "tr") and len(parts) >= 2:
            _mtl_dissolve(cur, parts, mtl_path)
    return out


def _mtl_colour(material: dict, parts: list[str], mtl_path: Path) -> None:
    """An MTL's "Kd r [g b]" as material["Kd"] (one number is grey, as the format says). The
    spectral and CIE XYZ forms ("Kd spectral file.rfl", "Kd xyz x y z") are skipped with a warning."""
    try:
        rgb = [float(x) for x in parts[1:4]]
    except ValueError:
        _log.warning("%s: '%s' is not an RGB colour; the material keeps its default colour", mtl_path,
                     " ".join(parts))
        return
    if len(rgb) < 3:
        rgb = [rgb[0]] * 3
    material["Kd"] = np.clip(np.array(rgb, np.float32), 0, 1)


def _mtl_dissolve(material: dict, parts: list[str], mtl_path: Path) -> None:
    """An MTL's "d" (opacity) or "Tr" (transparency, 1 - d) as material["d"]; d wins when both are
    given. A fully transparent value is read as opaque, with a warning: exporters that mix the two
    up write it for opaque materials, and a material nobody can see is rarely meant."""
    numbers = [t for t in parts[1:] if t.lower() != "-halo"]  # "d -halo 0.5"; "d 1.0 # opaque"
    try:
        value = float(numbers[0])
    except (ValueError, IndexError):
        return
    is_tr = parts[0].lower() == "tr"
    if is_tr:
        if "d" in material:
            return
        value = 1.0 - value
    value = float(np.clip(value, 0.0, 1.0))
    if value == 0.0:
        _log.warning("%s: %s %s makes the material fully transparent; read as opaque", mtl_path, parts[0], numbers[0])
        value = 1.0
    material["d"] = value


MAP_OPTIONS = {"-blendu": 1, "-blendv": 1, "-bm": 1, "-boost": 1, "-cc": 1, "-clamp": 1, "-imfchan": 1,
               "-mm": 2, "-o": 3, "-s": 3, "-t": 3, "-texres": 1, "-type": 1}
"""Options of an MTL texture statement and their most arguments (-o, -s and -t take one to three
numbers; the others exactly as many), from the MTL specification (Wavefront, Appendix B1)."""


def map_statement(line: str) -> tuple[str, list[str], str]:
    """(file name, option tokens, last token) of an MTL map statement such as
    "map_Kd -s 1 1 1 -clamp on Material #25.jpg": options with their arguments are skipped and
    the rest of the line, inner spaces kept, is the name. An unknown option is skipped with the
    numbers after it; the last token is the fallback name when the name found is not a file."""
    tokens = list(re.finditer(r"\S+", line))[1:]
    options: list[str] = []
    i = 0
    while i < len(tokens) and tokens[i].group().startswith("-") and len(tokens[i].group()) > 1:
        opt = tokens[i].group().lower()
        most = MAP_OPTIONS.get(opt, 3)
        options.append(opt)
        i += 1
        for _ in range(most):
            if i >= len(tokens) - 1:  # the name is never an option's argument
                break
            value = tokens[i].group()
            if opt in ("-o", "-s", "-t", "-mm", "-bm", "-boost", "-texres") or opt not in MAP_OPTIONS:
                if not _is_number(value):
                    break
            options.append(value)
            i += 1
    name = line[tokens[i].start():].strip() if i < len(tokens) else ""
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1]
    return name, options, tokens[-1].group() if tokens else ""


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


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
    """The texture file ``name`` names: as written, with "\\" read as "/" (Windows exporters), by
    its base name beside the MTL and the OBJ and in the Google Scanned Objects layout, and last
    by its base name in any letter case (files made on Windows and copied)."""
    posix = name.replace("\\", "/")
    base = Path(posix).name
    if not base:
        return None
    folders = [mtl_dir, obj_dir, mtl_dir.parent / "materials" / "textures"]  # the last: Google Scanned Objects
    candidates = [mtl_dir / name, mtl_dir / posix, obj_dir / posix] + [d / base for d in folders]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        for d in folders:
            try:
                found = next((c for c in sorted(d.iterdir()) if c.name.lower() == base.lower() and c.is_file()), None)
            except OSError:
                continue
            if found is not None:
                break
    return found


def read_texture(tex_path: Path, mesh_path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(tex_path) as im:
            note_texture_format(im.format)  # read only for a mesh part that keeps it (one with UVs)
            return np.asarray(eight_bit(im).convert("RGB"))
    except Exception as e:
        raise MeshLoadError(f"{mesh_path}: texture {tex_path} cannot be read ({e})") from e
