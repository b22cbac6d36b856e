"""Gaussian PLY files in the standard 3D Gaussian Splatting layout.

Written by hand on numpy structured arrays (no plyfile dependency): the format is
small and we need exact control over the bytes for an exact round trip.

Written layout (binary little endian, one ``vertex`` element of float32):
``x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0..rot_3``
with ``opacity`` = logit(alpha), ``scale_i`` = log(scale), ``rot`` = (w, x, y, z),
``f_dc`` = (rgb - 0.5) / SH_C0 and the normals zero (docs/design.md section 2).

Frame: splat viewers take a PLY's -Y as up (most 3DGS files come from COLMAP scenes, which
are so): SuperSplat, macOS Quick Look and others turn every PLY 180 degrees about Z on
load. o3d's world is +Y up, so its files are written turned 180 degrees about Z,
(x, y, z) -> (-x, -y, z), and say so in a header comment (`VIEWER_FRAME_COMMENT`): they
open upright there, and `load_gaussians` turns them back. Files without that comment (o3d's
before it, other tools') are read as they are.

Exact round trip: the activations (exp, sigmoid, affine SH) are not injective in
float32, so ``save_gaussians`` stores, per value, a fixed point of
"activate on load, invert on save" (found by iterating that monotone map, which
always converges). Hence save -> load -> save reproduces the file byte for byte,
and the loaded tensors differ from the saved ones by float32 rounding only
(relative ~1e-6; opacity absolute ~1e-7).

Reading accepts what other 3DGS tools write: any property order, extra
properties, ascii / binary little / big endian, float or double (or integer)
properties, unnormalised quaternions (normalised on load), higher SH degrees
(f_rest_* dropped: only the DC colour is kept) and plain coloured point clouds
(x y z + red green blue, no Gaussian properties), which become small isotropic
Gaussians sized by the spacing of their nearest neighbours (POINT_CLOUD_NEIGHBOURS).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from o3dcli.geometry.gaussians import Gaussians

log = logging.getLogger("o3d")

SH_C0 = 0.28209479177387814
"""Zeroth-order real spherical-harmonic constant, 1 / (2 sqrt(pi))."""
OPACITY_EPS = 1e-6
"""Opacities are clamped into [eps, 1 - eps] before the logit so 0 and 1 stay finite."""
MIN_SCALE = 1e-30
"""Scales are clamped below by this before the log (a zero scale would give -inf)."""
QUAT_NORM_TOL = 1e-6
"""Quaternions whose norm is within this of 1 are kept as stored (exact round trip)."""
WRITTEN_BY_COMMENT = "written by o3d (3D Gaussian Splatting layout)"
"""The header comment of every PLY o3d writes (with VIEWER_FRAME_COMMENT since it writes them turned;
before that, in o3d's +Y-up world)."""
VIEWER_FRAME_COMMENT = "o3d frame: -Y up as splat viewers take it (o3d's +Y-up world turned 180 degrees about Z)"
"""The header comment of o3d's PLY files written in the viewers' frame (see the module's docstring)."""

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_WRITE_NAMES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
_GAUSSIAN_PROPS = ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


class PlyError(ValueError):
    """A PLY file that cannot be read as Gaussians; the message names the file."""


# ----------------------------------------------------------------------------- activations
# Each pair is (activate: stored -> Gaussians value, invert: Gaussians value -> stored),
# computed in float64 and rounded to float32, both monotone non-decreasing.

def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).astype(np.float32)


def _sigmoid(v):
    return _f32(0.5 * (1.0 + np.tanh(0.5 * np.asarray(v, np.float64))))


def _logit(a):
    a = np.clip(np.asarray(a, np.float64), OPACITY_EPS, 1.0 - OPACITY_EPS)
    return _f32(np.log(a) - np.log1p(-a))


def _exp(v):
    return _f32(np.exp(np.asarray(v, np.float64)))


def _log(s):
    return _f32(np.log(np.maximum(np.asarray(s, np.float64), MIN_SCALE)))


def _sh_to_rgb(v):
    return _f32(np.clip(np.asarray(v, np.float64) * SH_C0 + 0.5, 0.0, 1.0))


def _rgb_to_sh(c):
    return _f32((np.asarray(c, np.float64) - 0.5) / SH_C0)


def _unit_quats(quats: np.ndarray) -> tuple[np.ndarray, int]:
    """Unit quaternions [N, 4] (float64) and how many were rescaled.

    Rows already unit length within QUAT_NORM_TOL are left untouched, so a float32
    quaternion normalised once stays bit-identical through later saves and loads;
    a zero quaternion becomes the identity rotation.
    """
    quats = np.array(quats, np.float64)
    norm = np.linalg.norm(quats, axis=1)
    zero = norm < 1e-12
    quats[zero], norm[zero] = [1.0, 0.0, 0.0, 0.0], 1.0
    off = np.abs(norm - 1.0) > QUAT_NORM_TOL
    quats[off] /= norm[off, None]
    return quats, int(off.sum())


def _turned_about_z(means: np.ndarray, quats: np.ndarray, back: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Positions and orientations (w, x, y, z) turned 180 degrees about Z (`back`: the inverse),
    exactly: signs and swaps only, so a file round-trips byte for byte. The turn is the
    quaternion (0, 0, 0, 1), applied on the left: q -> (-z, -y, x, w), and back (d, c, -b, -a)."""
    means = np.array(means, np.float64)
    means[:, :2] = -means[:, :2]
    a, b, c, d = np.asarray(quats, np.float64).T
    return means, np.stack([d, c, -b, -a] if back else [-d, -c, b, a], 1)


def _stored_fixed_point(value: np.ndarray, activate, invert, max_iter: int = 64) -> np.ndarray:
    """The float32 to store for ``value`` such that invert(activate(stored)) == stored.

    invert∘activate is monotone on a finite set, so iterating it from invert(value)
    moves in one direction and stops at a fixed point (in practice after 0-2 steps).
    """
    stored = invert(value)
    for _ in range(max_iter):
        again = invert(activate(stored))
        if np.array_equal(again, stored):
            break
        stored = again
    return stored


# ----------------------------------------------------------------------------- writing

def save_gaussians(path: str | os.PathLike, gaussians: Gaussians) -> Path:
    """Write ``gaussians`` to ``path`` as a binary little-endian 3DGS PLY (atomic rename)."""
    path = Path(path)
    g = gaussians.detach().to("cpu", torch.float64)
    arrays = {k: getattr(g, k).numpy() for k in ("means", "scales", "quats", "opacities", "colors")}
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            raise ValueError(f"cannot save {path}: Gaussians.{name} has non-finite values")
    means, quats = _turned_about_z(arrays["means"], _unit_quats(arrays["quats"])[0])  # the viewers' frame
    n = len(g)
    data = np.zeros(n, dtype=[(name, "<f4") for name in _WRITE_NAMES])
    for i, axis in enumerate("xyz"):
        data[axis] = means[:, i]
    f_dc = _stored_fixed_point(arrays["colors"], _sh_to_rgb, _rgb_to_sh)
    scales = _stored_fixed_point(arrays["scales"], _exp, _log)
    quats = _f32(quats)
    for i in range(3):
        data[f"f_dc_{i}"] = f_dc[:, i]
        data[f"scale_{i}"] = scales[:, i]
    for i in range(4):
        data[f"rot_{i}"] = quats[:, i]
    data["opacity"] = _stored_fixed_point(arrays["opacities"], _sigmoid, _logit)
    header = ["ply", "format binary_little_endian 1.0", f"comment {WRITTEN_BY_COMMENT}",
              f"comment {VIEWER_FRAME_COMMENT}", f"element vertex {n}", *(f"property float {name}" for name in _WRITE_NAMES), "end_header"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(data.tobytes())
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- reading

def _parse_header(path: Path, raw: bytes):
    """(format, elements [(name, count, [(prop, dtype or ('list', count_t, item_t))])], body offset,
    the header's comments)."""
    if not raw.startswith(b"ply"):
        raise PlyError(f"{path}: not a PLY file (it does not start with 'ply')")
    match = re.search(rb"end_header\r?\n", raw)
    if match is None:
        raise PlyError(f"{path}: PLY header has no 'end_header' line (truncated or not a PLY file)")
    fmt, elements, comments = None, [], []
    for line in raw[: match.start()].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if words and words[0] == "comment":
            comments.append(line.strip()[len("comment"):].strip())
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list" and len(words) == 5:
                elements[-1][2].append((words[4], ("list", _ply_type(path, words[2]), _ply_type(path, words[3]))))
            elif len(words) == 3:
                elements[-1][2].append((words[2], _ply_type(path, words[1])))
            else:
                raise PlyError(f"{path}: malformed PLY property line {line!r}")
        else:
            raise PlyError(f"{path}: malformed PLY header line {line!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise PlyError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements, match.end(), comments


def _ply_type(path: Path, name: str) -> str:
    if name not in _PLY_TYPES:
        raise PlyError(f"{path}: unknown PLY property type {name!r}")
    return _PLY_TYPES[name]


def _read_vertices(path: Path) -> tuple[np.ndarray, list[str]]:
    """The ``vertex`` element as a structured array (native byte order), and the header's comments."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PlyError(f"{path}: cannot read ({e.strerror})") from e
    fmt, elements, offset, comments = _parse_header(path, raw)
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise PlyError(f"{path}: PLY has no 'vertex' element")
    before = elements[: names.index("vertex")]
    _, count, props = elements[names.index("vertex")]
    if any(isinstance(t, tuple) for _, t in props):
        raise PlyError(f"{path}: list properties in the vertex element are not supported")
    if fmt == "ascii":
        lines = raw[offset:].decode("ascii", errors="replace").splitlines()
        skip = sum(e[1] for e in before)  # one line per element row in ascii PLY
        rows = [line.split() for line in lines[skip: skip + count]]
        if len(rows) < count or any(len(r) < len(props) for r in rows):
            raise PlyError(f"{path}: truncated ascii PLY: expected {count} vertex rows of {len(props)} values")
        table = np.array([r[: len(props)] for r in rows], dtype=np.float64).reshape(count, len(props))
        out = np.zeros(count, dtype=[(name, t) for name, t in props])
        for i, (name, _) in enumerate(props):
            out[name] = table[:, i]
        return out, comments
    order = "<" if fmt == "binary_little_endian" else ">"
    for name, n, eprops in before:
        if any(isinstance(t, tuple) for _, t in eprops):
            raise PlyError(f"{path}: element {name!r} with list properties before 'vertex' is not supported")
        offset += n * np.dtype([(p, order + t) for p, t in eprops]).itemsize
    dtype = np.dtype([(name, order + t) for name, t in props])
    need = count * dtype.itemsize
    if len(raw) - offset < need:
        raise PlyError(f"{path}: truncated PLY: expected {need} bytes of vertex data, found {max(len(raw) - offset, 0)}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).astype(dtype.newbyteorder("=")), comments


def _columns(path: Path, v: np.ndarray, names: list[str]) -> np.ndarray:
    missing = [n for n in names if n not in v.dtype.names]
    if missing:
        raise PlyError(f"{path}: PLY vertex element lacks required properties {missing}")
    return np.stack([v[n].astype(np.float64) for n in names], axis=1)


def _sh_degree(path: Path, names: tuple[str, ...]) -> int:
    n_rest = sum(1 for n in names if re.fullmatch(r"f_rest_\d+", n))
    for degree in range(4):
        if n_rest == 3 * ((degree + 1) ** 2 - 1):
            return degree
    log.warning("%s: %d f_rest properties match no SH degree; keeping the DC colour only", path, n_rest)
    return -1


POINT_CLOUD_NEIGHBOURS = 3
"""A point-cloud PLY's points become round Gaussians as wide as the root mean square distance to
their 3 nearest neighbours: how 3D Gaussian Splatting starts its Gaussians from structure-from-motion
points (Kerbl et al. 2023). Half the nearest distance, used before, left a point cloud sampled
evenly over a ball porous: its mesh had 781 holes through it."""


def _point_cloud_scales(means: np.ndarray) -> np.ndarray:
    """Isotropic scale per point: the RMS distance to its POINT_CLOUD_NEIGHBOURS nearest other
    positions (fewer where the cloud has fewer). Points repeated at one position (merged scans, a
    mesh's corners saved without faces) count once: their copies, at distance 0, made the
    Gaussians of a cloud written four times over 93 times too small."""
    positions, inverse = np.unique(means, axis=0, return_inverse=True)
    if len(positions) < 2:
        return np.full(len(means), 0.01)  # one position: nothing to size it by
    from scipy.spatial import cKDTree  # only point-cloud PLYs need it

    k = min(POINT_CLOUD_NEIGHBOURS, len(positions) - 1)
    dist, _ = cKDTree(positions).query(positions, k=k + 1)
    return np.sqrt(np.mean(dist[:, 1:] ** 2, axis=1))[inverse.reshape(-1)]


def load_gaussians(path: str | os.PathLike, return_info: bool = False, max_points: int | None = None):
    """Read a 3DGS PLY (or a coloured point-cloud PLY) as ``Gaussians`` (float32, CPU).

    ``max_points``: a point cloud with more points is thinned to that many first (a random choice,
    the same on every read), with a note in the log; 3DGS files are read whole.

    With ``return_info`` also returns a dict: ``sh_degree`` (0-3 from the number of
    f_rest properties, -1 if unrecognised), ``dropped_properties`` (vertex properties
    that were ignored, normals excepted), ``point_cloud`` (True when the file had no
    Gaussian properties), ``renormalized_quaternions`` (how many were rescaled) and
    ``dropped_nonfinite`` (Gaussians left out for NaN or infinite values, with a warning).
    Raises ``PlyError`` naming the file for anything unreadable.
    """
    path = Path(path)
    v, comments = _read_vertices(path)
    names = v.dtype.names
    present = [p for p in _GAUSSIAN_PROPS if p in names]
    point_cloud = not present
    if point_cloud and max_points is not None and len(v) > max_points:
        log.info("%s: %d points; %d of them are used (a random choice, the same every time)", path, len(v), max_points)
        v = v[np.sort(np.random.default_rng(0).choice(len(v), max_points, replace=False))]
    means = _columns(path, v, ["x", "y", "z"])
    used = {"x", "y", "z", "nx", "ny", "nz"}
    if point_cloud:
        ok = np.isfinite(means).all(1)  # non-finite points are dropped below; the neighbour search needs finite ones
        spacing = np.full(len(means), 0.01)
        spacing[ok] = _point_cloud_scales(means[ok])
        scales = np.repeat(spacing[:, None], 3, axis=1)
        quats = np.tile([1.0, 0.0, 0.0, 0.0], (len(v), 1))
        opacities = np.ones(len(v))
        n_renorm = 0
    else:
        gauss = _columns(path, v, _GAUSSIAN_PROPS)
        used.update(_GAUSSIAN_PROPS)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are dropped below, with a warning
            opacities = _sigmoid(gauss[:, 0])
            scales = _exp(gauss[:, 1:4])
            quats, n_renorm = _unit_quats(gauss[:, 4:8])
    if all(f"f_dc_{i}" in names for i in range(3)):
        colors = _sh_to_rgb(_columns(path, v, ["f_dc_0", "f_dc_1", "f_dc_2"]))
        used.update(f"f_dc_{i}" for i in range(3))
    elif all(c in names for c in ("red", "green", "blue")):
        rgb = _columns(path, v, ["red", "green", "blue"])
        integer = v.dtype["red"].kind in "iu"
        colors = np.clip(rgb / (np.iinfo(v.dtype["red"]).max if integer else 1.0), 0.0, 1.0)
        used.update(("red", "green", "blue"))
    elif point_cloud:
        colors = np.full((len(v), 3), 0.5)
    else:
        raise PlyError(f"{path}: PLY has neither f_dc_0..2 nor red/green/blue colour properties")
    dropped = [n for n in names if n not in used]
    degree = _sh_degree(path, names)
    if degree > 0:
        log.info("%s: SH degree %d; keeping the DC colour only (dropped %d f_rest properties)",
                 path, degree, 3 * ((degree + 1) ** 2 - 1))
    if VIEWER_FRAME_COMMENT in comments:  # written turned for splat viewers: back into o3d's world
        means, quats = _turned_about_z(means, quats, back=True)
    finite = np.isfinite(np.concatenate([means, scales, quats, opacities[:, None], colors], 1)).all(1)
    n_bad = int((~finite).sum())
    if n_bad == len(v) and n_bad:
        raise PlyError(f"{path}: every Gaussian has non-finite values (NaN or infinity)")
    if n_bad:  # what a diverged optimisation leaves: one such value spoils bounds, meshing and renders
        log.warning("%s: %d of %d Gaussians have non-finite values (NaN or infinity); dropped", path, n_bad, len(v))
        means, scales, quats, opacities, colors = (a[finite] for a in (means, scales, quats, opacities, colors))
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    gaussians = Gaussians(t(means), t(scales), t(quats), t(opacities), t(colors))
    if not return_info:
        return gaussians
    info = {"sh_degree": degree, "dropped_properties": dropped, "point_cloud": point_cloud,
            "renormalized_quaternions": n_renorm, "count": len(v), "dropped_nonfinite": n_bad}
    return gaussians, info


__all__ = ["PlyError", "SH_C0", "OPACITY_EPS", "VIEWER_FRAME_COMMENT", "WRITTEN_BY_COMMENT", "load_gaussians", "save_gaussians"]
