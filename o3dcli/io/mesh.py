"""Mesh loaders: OBJ (+MTL +texture, Google Scanned Objects folders), GLB/glTF, PLY, STL and USD -> TriMesh.

The OBJ parser is hand-written: OBJ indexes positions and texture coordinates
separately, and a renderable mesh needs one vertex per distinct (position, uv)
pair; writing that split ourselves keeps it exact and fast, and lets a GSO object
without its texture fall back to the MTL's Kd. GLB/glTF, PLY and STL go through
trimesh. Loaders never normalise: callers call ``TriMesh.normalized()``.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from pathlib import Path

import numpy as np

from o3dcli.geometry.mesh import TriMesh, scale_texture

_log = logging.getLogger("o3d")
USD_SUFFIXES = (".usd", ".usda", ".usdc", ".usdz")
MESH_EXTENSIONS = (".obj", ".glb", ".gltf", ".ply", ".stl") + USD_SUFFIXES


class MeshLoadError(Exception):
    """A mesh file is missing, corrupt, empty or of an unsupported format (the message names it)."""


def load_mesh(path, up: str = "auto") -> TriMesh:
    """Load a mesh file, or an object folder (Google Scanned Objects: ``meshes/model.obj``).

    Returns the mesh as stored (no normalisation); colour from the texture,
    vertex colours or material colour, in that order of preference.
    up: the file's up axis. "y" keeps coordinates (OBJ, glTF and PLY's usual
    frame, ours); "z" maps a Z-up file to our +Y-up world, (x, y, z) -> (x, z, -y);
    "auto" is "z" for Gazebo/GSO model folders (a ``model.sdf`` or
    ``model.config`` beside ``meshes/``; Gazebo is Z-up), for STL files (3D printing's
    frame, and o3d's STL export) and for USD files whose stage says upAxis "Z"; "y" otherwise.
    """
    if up not in ("auto", "y", "z"):
        raise ValueError(f"up must be 'auto', 'y' or 'z', got {up!r}")
    p = Path(path)
    if not p.exists():
        raise MeshLoadError(f"{p}: no such file or folder")
    if p.is_dir():
        p = _mesh_in_folder(p)
    ext = p.suffix.lower()
    if ext not in MESH_EXTENSIONS:
        raise MeshLoadError(f"{p}: unsupported mesh format '{ext}' (supported: {', '.join(MESH_EXTENSIONS)})")
    if p.stat().st_size == 0:
        raise MeshLoadError(f"{p}: empty file (0 bytes)")
    declared_up = None
    try:
        if ext == ".glb":
            _check_glb_header(p)
        if ext in USD_SUFFIXES:
            mesh, declared_up = _load_usd(p)
        else:
            mesh = _load_obj(p) if ext == ".obj" else _load_stl(p) if ext == ".stl" else _load_with_trimesh(p)
    except MeshLoadError:
        raise
    except Exception as e:  # a parser failing deep inside a library: report it against the file
        raise MeshLoadError(f"{p}: cannot read {ext[1:].upper()} file ({type(e).__name__}: {e})") from e
    if len(mesh.faces) == 0:
        raise MeshLoadError(f"{p}: the file holds no triangles")
    mesh = _without_non_finite(mesh, p)
    if ext == ".stl":  # STL stores every facet's corners apart: join the corners that coincide
        from o3dcli.mesh.cleanup import weld_vertices

        mesh = weld_vertices(mesh)[0]
    if up == "z" or (up == "auto" and (is_gazebo_model(p) or ext == ".stl" or declared_up == "z")):
        x, y, z = mesh.vertices.T
        mesh = mesh.replace(vertices=np.stack([x, z, -y], axis=1))
    return mesh


def _without_non_finite(mesh: TriMesh, path: Path) -> TriMesh:
    """``mesh`` without the faces that use a vertex with a NaN or infinite coordinate (a broken
    export; no tool can place such a face), with a warning; non-finite texture coordinates and
    vertex colours become 0. MeshLoadError if no face is left."""
    bad = ~np.isfinite(mesh.vertices).all(1)
    if bad.any():
        keep = ~bad[mesh.faces].any(1)
        if not keep.any():
            raise MeshLoadError(f"{path}: every face has a vertex with non-finite coordinates (NaN or infinity)")
        _log.warning("%s: %d of %d vertices have non-finite coordinates (NaN or infinity); the %d faces that use "
                     "them are left out", path, int(bad.sum()), len(bad), int((~keep).sum()))
        faces = mesh.faces[keep]
        used = np.unique(faces)  # the vertices left, renumbered (bounds and normalising read every vertex)
        renumber = np.full(len(bad), -1, np.int64)
        renumber[used] = np.arange(len(used))
        mesh = mesh.replace(vertices=mesh.vertices[used], faces=renumber[faces],
                            **{k: getattr(mesh, k)[used] for k in ("uv", "vertex_colors") if getattr(mesh, k) is not None})
    for name in ("uv", "vertex_colors"):
        values = getattr(mesh, name)
        if values is not None and not np.isfinite(values).all():
            _log.warning("%s: %d %s values are not finite (NaN or infinity); set to 0", path,
                         int((~np.isfinite(values)).sum()), "texture coordinate" if name == "uv" else "vertex colour")
            mesh = mesh.replace(**{name: np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)})
    return mesh


def _load_usd(path: Path) -> tuple[TriMesh, str]:
    """A USD file's visible meshes as one TriMesh (see `o3dcli.io.usdz.load_usd`), and its up axis."""
    from o3dcli.io.usdz import load_usd

    try:
        parts, up = load_usd(path)
    except ValueError as e:
        raise MeshLoadError(f"{path}: {e}") from None
    if not parts:
        raise MeshLoadError(f"{path}: the file holds no triangles (no visible UsdGeom.Mesh)")
    return _merge_parts(parts), up


def _load_stl(path: Path) -> TriMesh:
    """An STL file: the text form ("solid ... facet ... endsolid") through trimesh, the binary form
    read here (trimesh reads a short or over-long binary file as empty). Shape only."""
    data = path.read_bytes()
    count = int.from_bytes(data[80:84], "little") if len(data) >= 84 else None
    head = data[:1024]
    if (head.lstrip().startswith(b"solid") and (count is None or len(data) != 84 + 50 * count)
            and head.isascii() and (b"facet" in head or b"endsolid" in head)):
        return _load_with_trimesh(path)  # text (a binary header may start with "solid" too: size and bytes tell)
    if count is None:
        raise MeshLoadError(f"{path}: not an STL file: {len(data)} bytes, shorter than a binary STL's 84-byte header")
    if len(data) < 84 + 50 * count:
        raise MeshLoadError(f"{path}: truncated binary STL: its header counts {count} facets "
                            f"({84 + 50 * count} bytes), the file has {len(data)} bytes")
    from o3dcli.io.export import STL_FACET

    facets = np.frombuffer(data, STL_FACET, count, 84)
    vertices = facets["v"].reshape(-1, 3)  # bytes after the last facet are ignored, as other readers do
    return TriMesh(vertices, np.arange(3 * count, dtype=np.int64).reshape(-1, 3))


def is_gazebo_model(mesh_path: Path) -> bool:
    """True for ``<model>/meshes/<file>`` with a Gazebo ``model.sdf`` or ``model.config`` in <model>
    (the Google Scanned Objects layout), whose meshes are Z-up."""
    model = Path(mesh_path).parent.parent
    return Path(mesh_path).parent.name == "meshes" and \
        ((model / "model.sdf").is_file() or (model / "model.config").is_file())


def _mesh_in_folder(folder: Path) -> Path:
    gso = folder / "meshes" / "model.obj"
    if gso.is_file():
        return gso
    found = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in MESH_EXTENSIONS)
    if len(found) == 1:
        return found[0]
    what = "no mesh file" if not found else f"{len(found)} mesh files ({', '.join(f.name for f in found)})"
    raise MeshLoadError(f"{folder}: expected meshes/model.obj or a single mesh file, found {what}")


# ----------------------------------------------------------------------------------------- OBJ

def _load_obj(path: Path) -> TriMesh:
    text = path.read_bytes().decode("utf-8", errors="replace")
    v_rows, vt_rows, f_rows, f_nv, f_nt, f_mat = [], [], [], [], [], []
    materials: dict[str, dict] = {}
    mat_names: list[str] = []
    current = -1
    for line in text.splitlines():  # collect rows as text; numbers are parsed in bulk below
        head = line[:2]
        if head == "v ":  # the common keywords first, without splitting the line
            v_rows.append(line[2:])
            continue
        if head == "f ":
            key, rest = "f", line[2:]
        elif head == "vt" and line[2:3] == " ":
            key, rest = "vt", line[3:]
        elif head == "vn" or head[:1] == "#":  # normals are recomputed from faces when needed
            continue
        else:
            parts = line.split(None, 1)
            if not parts:
                continue
            key, rest = parts[0], (parts[1] if len(parts) > 1 else "")
        if key == "v":
            v_rows.append(rest)
        elif key == "vt":
            vt_rows.append(rest)
        elif key == "f":
            f_rows.append(rest)
            f_nv.append(len(v_rows))  # for negative (relative) indices
            f_nt.append(len(vt_rows))
            f_mat.append(current)
        elif key == "usemtl":
            name = rest.strip()
            if name not in mat_names:
                mat_names.append(name)
            current = mat_names.index(name)
        elif key == "mtllib":
            rest = rest.strip()
            for mtl in [rest] if (path.parent / rest).is_file() else rest.split():
                materials.update(_read_mtl(path.parent / mtl, path))
    if not f_rows:
        raise MeshLoadError(f"{path}: the file holds no faces (is it an OBJ file?)")
    try:
        pos, colored = _obj_numbers(v_rows, float, min_cols=3)
        vt, _ = _obj_numbers(vt_rows, float, min_cols=1)
        vt = np.pad(vt, ((0, 0), (0, 1)))[:, :2].astype(np.float32)  # 'vt u' alone means v = 0
        idx, tri_face = _obj_faces(f_rows, np.asarray(f_nv), np.asarray(f_nt))
    except ValueError:
        raise _locate_parse_error(text, path) from None
    if (idx[..., 0] < 0).any() or (idx[..., 0] >= len(pos)).any():
        raise MeshLoadError(f"{path}: a face refers to a vertex outside the {len(pos)} defined")
    if (idx[..., 1] >= len(vt)).any():
        raise MeshLoadError(f"{path}: a face refers to a texture coordinate outside the {len(vt)} defined")
    pos = pos[:, :6] if colored else pos[:, :3]
    face_mat = np.asarray(f_mat)[tri_face]
    parts = []
    for m in np.unique(face_mat):
        if m >= 0:
            props = materials.get(mat_names[m], {})
        else:  # faces before any usemtl: the file's only material if it has one
            props = next(iter(materials.values())) if len(materials) == 1 else {}
        parts.append(_obj_part(idx[face_mat == m], pos, vt, colored, props, path))
    return _merge_parts(parts)


def _obj_numbers(rows: list[str], dtype, min_cols: int) -> tuple[np.ndarray, bool]:
    """Rows of numbers -> ([N, max(C, 6 if all rows have 6)] array, all rows have >= 6 values).
    Raises ValueError on anything unreadable."""
    if not rows:
        return np.zeros((0, max(min_cols, 2))), False
    values = _fromstring(" ".join(rows), dtype)
    if values.size % len(rows) == 0:  # the usual case, one row length (a file mixing lengths
        counts = np.full(len(rows), values.size // len(rows))  # that average out would be malformed)
    else:
        counts = np.fromiter((len(r.split()) for r in rows), np.int64, len(rows))
    if counts.min() < min_cols:
        raise ValueError("too few values")
    cols = 6 if counts.min() >= 6 else min(int(counts.min()), 3)  # "v x y z r g b": vertex colours
    starts = np.cumsum(counts) - counts
    return values[starts[:, None] + np.arange(cols)], cols == 6


def _obj_faces(rows: list[str], nv_at: np.ndarray, nt_at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face rows -> corner indices [T, 3, 2] (0-based position, texcoord or -1) of the
    fan-triangulated polygons, and the source face of each triangle [T]."""
    token_list = " ".join(rows).split()
    n_tok = len(token_list)
    if n_tok in (3 * len(rows), 4 * len(rows)):  # all triangles or all quads (see _obj_numbers)
        counts = np.full(len(rows), n_tok // len(rows))
    else:
        counts = np.fromiter((len(r.split()) for r in rows), np.int64, len(rows))
    if counts.min() < 3:
        raise ValueError("a face with fewer than 3 corners")
    tokens = " ".join(token_list)
    slashes, doubles = token_list[0].count("/"), tokens.count("//")
    if tokens.count("/") == slashes * n_tok and doubles in (0, n_tok):  # one pattern: parse in bulk
        nums = _fromstring(tokens.replace("//", "/0/").replace("/", " "), np.int64, n_tok * (slashes + 1))
        nums = nums.reshape(n_tok, slashes + 1)  # 'v//vn' reads as v/0/vn: no texcoord
        v, t = nums[:, 0], (nums[:, 1] if nums.shape[1] > 1 else np.zeros(n_tok, np.int64))
    else:  # mixed 'v', 'v/vt', 'v//vn', 'v/vt/vn' corners
        fields = [tok.split("/") for tok in token_list]
        v = np.array([int(f[0]) for f in fields], np.int64)
        t = np.array([int(f[1]) if len(f) > 1 and f[1] else 0 for f in fields], np.int64)
    row = np.repeat(np.arange(len(rows)), counts)
    # OBJ indices are 1-based; negative ones count back from the last element defined so far
    v = np.where(v > 0, v - 1, np.where(v < 0, nv_at[row] + v, -1))
    t = np.where(t > 0, t - 1, np.where(t < 0, nt_at[row] + t, -1))
    ntri = counts - 2
    tri_face = np.repeat(np.arange(len(rows)), ntri)
    k = np.arange(int(ntri.sum())) - np.repeat(np.cumsum(ntri) - ntri, ntri) + 1
    first = (np.cumsum(counts) - counts)[tri_face]
    corner = np.stack([first, first + k, first + k + 1], axis=1)  # fan (0, k, k+1)
    return np.stack([v[corner], t[corner]], axis=-1), tri_face


def _fromstring(text: str, dtype, expected: int | None = None) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns when it stops at unreadable text
        try:
            out = np.fromstring(text, dtype=dtype, sep=" ")
        except (ValueError, DeprecationWarning) as e:
            raise ValueError(str(e)) from e
    if expected is not None and out.size != expected:
        raise ValueError("unreadable numbers")
    return out


def _locate_parse_error(text: str, path: Path) -> MeshLoadError:
    """Re-read line by line (only after the bulk parse failed) to name the offending line."""
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        try:
            if parts and parts[0] in ("v", "vt"):
                [float(x) for x in parts[1:]]
                if len(parts) < (4 if parts[0] == "v" else 2):
                    raise ValueError("too few values")
            elif parts and parts[0] == "f":
                if len(parts) < 4:
                    raise ValueError("a face needs 3 corners")
                [int(x) for tok in parts[1:] for x in tok.split("/") if x]
        except ValueError as e:
            return MeshLoadError(f"{path}: line {lineno}: cannot parse {line.strip()[:60]!r} ({e})")
    return MeshLoadError(f"{path}: cannot parse the OBJ file")


def solid_alpha_part(verts: np.ndarray, faces: np.ndarray, rgb: np.ndarray, alpha: float, mode: str = "BLEND",
                     cutoff: float = 0.5, double_sided: bool = False) -> TriMesh:
    """A plain colour with alpha (glass, a tinted window) as a mesh with a small solid RGBA texture
    that every vertex samples: TriMesh's material colour has no alpha, and a texture carries it
    through merging, decimation and every writer."""
    tile = np.empty((4, 4, 4), np.uint8)
    tile[..., :3] = np.round(np.clip(rgb, 0, 1) * 255)
    tile[..., 3] = round(float(np.clip(alpha, 0, 1)) * 255)
    return TriMesh(verts, faces, uv=np.full((len(verts), 2), 0.5), texture=tile, alpha_mode=mode,
                   alpha_cutoff=cutoff, double_sided=double_sided)


def _obj_part(idx: np.ndarray, pos, vt, colored: bool, props: dict, path: Path) -> TriMesh:
    """One material's faces, with one vertex per distinct (position, texcoord) pair."""
    keys = idx[..., 0] * (len(vt) + 1) + (idx[..., 1] + 1)
    uniq, inverse = np.unique(keys.reshape(-1), return_inverse=True)
    vi, ti = uniq // (len(vt) + 1), uniq % (len(vt) + 1) - 1
    faces = inverse.reshape(-1, 3)
    uv = np.where(ti[:, None] >= 0, vt[np.maximum(ti, 0)] if len(vt) else 0.0, 0.0)
    texture = _read_texture(props["map_Kd"], path) if props.get("map_Kd") else None
    if texture is not None:  # map_Kd -s / -o: looked up at uv * scale + offset (as Blender and three.js read them)
        uv = uv * props.get("uv_scale", 1.0) + props.get("uv_offset", 0.0)
    has_uv = len(vt) > 0 and (ti >= 0).any()
    style = {}
    if texture is not None and has_uv and props.get("map_d"):
        alpha, mode = _read_alpha(props["map_d"], texture.shape[:2], path)
        if alpha is not None:
            texture = np.concatenate([texture, alpha[..., None]], -1)
            # a cut-out card is seen from both sides in the tools that write map_d (Blender, 3ds Max)
            style = {"alpha_mode": mode, "double_sided": True}
    elif props.get("d", 1.0) < 1.0 and not colored:  # a see-through material (glass): the MTL's d
        if texture is not None and has_uv:
            alpha = np.full(texture.shape[:2] + (1,), round(props["d"] * 255), np.uint8)
            return TriMesh(pos[vi, :3], faces, uv=uv, texture=np.concatenate([texture, alpha], -1),
                           alpha_mode="BLEND")
        return solid_alpha_part(pos[vi, :3], faces, props.get("Kd", np.ones(3)), props["d"])
    return TriMesh(
        pos[vi, :3], faces,
        uv=uv if has_uv else None,  # kept without a texture too: one may be supplied later
        texture=texture if has_uv else None,
        vertex_colors=np.clip(pos[vi, 3:6], 0, 1) if colored else None,
        material_color=props.get("Kd", np.ones(3)), **style,
    )


def alpha_mode_of(alpha: np.ndarray) -> str:
    """"MASK" for an alpha map [H, W] uint8 that is a cut-out (at least 95 % of its texels within
    8 of 0 or 255), else "BLEND"."""
    a = np.asarray(alpha)
    binary = np.count_nonzero((a <= 8) | (a >= 247))
    return "MASK" if binary >= 0.95 * a.size else "BLEND"


def _read_alpha(tex_path: Path, size: tuple[int, int], mesh_path: Path) -> tuple[np.ndarray | None, str]:
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
            im = _eight_bit(im)
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


def _eight_bit(im):
    """A PIL image with 8-bit channels: 16-bit greyscale (modes I;16*, I) scaled by 1/257 rather
    than clipped at 255, as Pillow's convert does."""
    from PIL import Image

    from o3dcli.io.images import _SIXTEEN_BIT_GRAY_MODES

    if im.mode in _SIXTEEN_BIT_GRAY_MODES:
        return Image.fromarray((np.asarray(im).astype(np.float64) / 257.0).round().clip(0, 255).astype(np.uint8))
    if im.mode == "F":
        return Image.fromarray((np.asarray(im, np.float64) * 255.0).round().clip(0, 255).astype(np.uint8))
    return im


def _read_mtl(mtl_path: Path, obj_path: Path) -> dict[str, dict]:
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


def _read_texture(tex_path: Path, mesh_path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(tex_path) as im:
            return np.asarray(_eight_bit(im).convert("RGB"))
    except Exception as e:
        raise MeshLoadError(f"{mesh_path}: texture {tex_path} cannot be read ({e})") from e


# ------------------------------------------------------------------------------ GLB, glTF, PLY

GLTF_UNREADABLE = {
    "KHR_mesh_quantization": "quantized vertex data",
    "EXT_meshopt_compression": "meshopt compression",
    "KHR_meshopt_compression": "meshopt compression",
}
"""glTF extensions whose data o3d cannot decode (the reader would see wrong or zero vertices)."""
GLTF_APPROXIMATED = {
    "KHR_texture_transform": "texture offsets, scales and rotations are ignored where materials lack unique "
                             "names or use a second UV set, so textures may sit in the wrong place",
    "KHR_texture_basisu": "KTX2 textures cannot be read, so materials without another image lose their texture",
}
"""glTF extensions o3d reads around: the mesh loads, with a warning saying what is lost."""


def gltf_json(path: Path) -> dict:
    """The JSON of a .glb or .gltf file ({} if it cannot be read: the reader then reports the
    problem)."""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(20)
            if head[:4] == b"glTF" and len(head) == 20 and head[16:20] == b"JSON":
                doc = json.loads(f.read(struct.unpack("<I", head[12:16])[0]))
            elif path.suffix.lower() == ".gltf":
                doc = json.loads(head + f.read())
            else:
                return {}
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError, struct.error):
        return {}


def gltf_extensions(path: Path) -> tuple[set[str], set[str]]:
    """extensionsUsed and extensionsRequired of a .glb or .gltf file (empty if its JSON cannot be
    read)."""
    return _extension_sets(gltf_json(path))


def _extension_sets(doc: dict) -> tuple[set[str], set[str]]:
    try:
        return set(doc.get("extensionsUsed") or []), set(doc.get("extensionsRequired") or [])
    except TypeError:
        return set(), set()


def gltf_texture_transforms(doc: dict) -> dict[str, np.ndarray] | None:
    """The KHR_texture_transform of each material's base colour texture, by material name, as a
    2 x 3 matrix on glTF UVs (origin top-left); None when some transformed material cannot be told
    apart by name (trimesh keeps only the names), or uses a second UV set: those files load with
    their UVs as stored, and a warning."""
    out: dict[str, np.ndarray] = {}
    names = [m.get("name") for m in doc.get("materials") or [] if isinstance(m, dict)]
    for mat in doc.get("materials") or []:
        info = ((mat.get("pbrMetallicRoughness") or {}).get("baseColorTexture") or {})
        t = (info.get("extensions") or {}).get("KHR_texture_transform")
        if t is None:
            continue
        name = mat.get("name")
        if not name or names.count(name) > 1 or t.get("texCoord", info.get("texCoord", 0)) != 0:
            return None
        ox, oy = t.get("offset", (0.0, 0.0))
        sx, sy = t.get("scale", (1.0, 1.0))
        r = float(t.get("rotation", 0.0))
        c, s = np.cos(r), np.sin(r)
        # translation x rotation x scale, rotation [[c, s], [-s, c]] on UVs with v pointing down: what
        # Blender, Babylon.js and the Khronos sample viewer and test model do (the extension's GLSL
        # listing has the transpose, a known erratum: KhronosGroup/glTF issue 1563)
        out[name] = np.array([[c * sx, s * sy, ox], [-s * sx, c * sy, oy]], np.float64)
    return out


def _has_dracopy() -> bool:
    import importlib.util

    return importlib.util.find_spec("DracoPy") is not None


def _check_gltf_extensions(path: Path) -> tuple[set[str], dict[str, np.ndarray]]:
    """Refuse glTF files whose geometry o3d cannot decode; warn about what it reads only in part.
    Returns the extensions the file uses and its texture transforms by material name."""
    doc = gltf_json(path)
    used, required = _extension_sets(doc)
    used |= required
    transforms = gltf_texture_transforms(doc) if "KHR_texture_transform" in used else {}
    if transforms is None:  # cannot be applied: warned about below
        transforms = {}
    else:
        used = used - {"KHR_texture_transform"}
    if "KHR_draco_mesh_compression" in used and not _has_dracopy():
        raise MeshLoadError(f"{path}: the mesh is Draco-compressed (KHR_draco_mesh_compression); install DracoPy to "
                            "read it (pip install 'o3dcli[draco]') or export it without compression")
    bad = sorted(e for e in used if e in GLTF_UNREADABLE)
    if bad:
        what = ", ".join(f"{e} ({GLTF_UNREADABLE[e]})" for e in bad)
        raise MeshLoadError(f"{path}: uses {what}, which o3d cannot decode; export it without compression or "
                            "quantization")
    for e in sorted(used & GLTF_APPROXIMATED.keys()):
        _log.warning("%s: uses %s: %s", path, e, GLTF_APPROXIMATED[e])
    return used, transforms


def _check_glb_header(path: Path) -> None:
    """MeshLoadError naming ``path`` when it is not a whole GLB: no glTF magic, another GLB
    version, or shorter than its header's length or its JSON chunk (a cut-off download or copy).
    The parser's own errors say none of this ("buffer size must be a multiple of element size")."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"glTF":
        hint = ": a .gltf (text) file named .glb?" if head.lstrip()[:1] == b"{" else ""
        raise MeshLoadError(f"{path}: not a GLB file (it does not start with glTF's magic bytes 'glTF'){hint}")
    if len(head) < 20:
        raise MeshLoadError(f"{path}: truncated GLB file ({size} bytes, shorter than its 20-byte header)")
    version, length, chunk = struct.unpack("<III", head[4:16])
    if version != 2:
        raise MeshLoadError(f"{path}: GLB version {version}; o3d reads glTF 2.0 files (version 2): re-export it")
    if length > size or 20 + chunk > size:
        raise MeshLoadError(f"{path}: truncated GLB file ({size} bytes; its header says {max(length, 20 + chunk)})")
    if head[16:20] != b"JSON":
        raise MeshLoadError(f"{path}: damaged GLB file (its first chunk is not the JSON chunk)")


def _load_with_trimesh(path: Path) -> TriMesh:
    import trimesh

    used, transforms = _check_gltf_extensions(path) if path.suffix.lower() in (".glb", ".gltf") else (set(), {})
    scene = trimesh.load(str(path), force="scene", process=False)
    parts = []
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        geom = scene.geometry[geom_name]
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            continue  # point clouds, lines
        verts = trimesh.transform_points(np.asarray(geom.vertices, np.float64), transform)
        faces = np.asarray(geom.faces)
        if np.linalg.det(transform[:3, :3]) < 0:  # a mirroring node flips the winding
            faces = faces[:, ::-1]
        parts.append(_trimesh_part(geom, verts, faces, transforms))
    if not parts:
        raise MeshLoadError(f"{path}: the file holds no triangles (a point cloud or an empty scene?)")
    if "KHR_draco_mesh_compression" in used and all(not p.vertices.any() for p in parts):
        # trimesh leaves zeros where a decoder failed or is missing (older trimesh), and only logs it
        raise MeshLoadError(f"{path}: the Draco-compressed mesh could not be decoded (trimesh {trimesh.__version__}"
                            "; decoding needs trimesh 5.1 or later with DracoPy: pip install 'o3dcli[draco]')")
    return _merge_parts(parts)


def _trimesh_part(geom, verts: np.ndarray, faces: np.ndarray, transforms: dict | None = None) -> TriMesh:
    vis = geom.visual
    if vis.kind == "texture":
        mat = vis.material
        image = getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None)
        factor = getattr(mat, "baseColorFactor", None)
        factor = getattr(mat, "diffuse", None) if factor is None else factor
        factor = np.ones(3) if factor is None else np.asarray(factor, np.float64)[:3] / 255.0
        uv = getattr(vis, "uv", None)
        transform = (transforms or {}).get(getattr(mat, "name", None))
        if uv is not None and transform is not None:  # KHR_texture_transform, on glTF's top-left UVs
            gl = np.stack([uv[:, 0], 1.0 - uv[:, 1], np.ones(len(uv))], 1) @ transform.T
            uv = np.stack([gl[:, 0], 1.0 - gl[:, 1]], 1)
        double = bool(getattr(mat, "doubleSided", False))
        colors = getattr(vis, "vertex_attributes", {}).get("color")  # COLOR_0 beside a material
        if image is None and colors is not None and len(colors) == len(verts):
            # glTF: the base colour factor multiplies COLOR_0 (Blender writes both)
            colors = np.asarray(colors)
            scale = np.iinfo(colors.dtype).max if colors.dtype.kind in "ui" else 1.0  # normalised ints, or floats
            colors = colors.astype(np.float64) / scale
            return TriMesh(verts, faces, vertex_colors=colors[:, :3] * factor, double_sided=double)
        if image is not None and uv is not None and len(uv) == len(verts):
            # glTF: the base colour factor multiplies the texture (done on the stored values)
            mode = str(getattr(mat, "alphaMode", None) or "OPAQUE").upper()
            if mode in ("MASK", "BLEND"):  # alpha is used: the texture's (1 if none) x the factor's
                rgba_factor = getattr(mat, "baseColorFactor", None)
                rgba_factor = np.asarray((255,) * 4 if rgba_factor is None else rgba_factor, np.float64).reshape(-1)
                a_factor = rgba_factor[3] / 255.0 if len(rgba_factor) > 3 else 1.0
                tex = np.asarray(_eight_bit(image).convert("RGBA"), np.float64) * np.append(factor, a_factor)
                cutoff = getattr(mat, "alphaCutoff", None)
                return TriMesh(verts, faces, uv=np.asarray(uv), texture=tex.round().astype(np.uint8), alpha_mode=mode,
                               alpha_cutoff=0.5 if cutoff is None else float(cutoff), double_sided=double)
            tex = np.asarray(_eight_bit(image).convert("RGB"), np.float64) * factor
            return TriMesh(verts, faces, uv=np.asarray(uv), texture=tex.round().astype(np.uint8), double_sided=double)
        mode = str(getattr(mat, "alphaMode", None) or "OPAQUE").upper()
        rgba_factor = np.asarray(getattr(mat, "baseColorFactor", None) if getattr(mat, "baseColorFactor", None)
                                 is not None else (255,) * 4, np.float64).reshape(-1)
        if mode in ("MASK", "BLEND") and len(rgba_factor) > 3 and rgba_factor[3] < 255:  # see-through plain colour
            cutoff = getattr(mat, "alphaCutoff", None)
            return solid_alpha_part(verts, faces, factor, rgba_factor[3] / 255.0, mode,
                                    0.5 if cutoff is None else float(cutoff), double)
        return TriMesh(verts, faces, material_color=factor, double_sided=double)
    if vis.kind == "vertex":
        return TriMesh(verts, faces, vertex_colors=np.asarray(vis.vertex_colors)[:, :3] / 255.0)
    if vis.kind == "face":  # one colour per face: give every face its own three vertices
        fc = np.asarray(vis.face_colors)[:, :3] / 255.0
        return TriMesh(verts[faces].reshape(-1, 3), np.arange(3 * len(faces)).reshape(-1, 3),
                       vertex_colors=np.repeat(fc, 3, axis=0))
    return TriMesh(verts, faces)


# ----------------------------------------------------------------------------------- merging

MAX_REPEAT = 8
"""A texture repeated more often than this per axis is wrapped per vertex in a merged atlas instead
of tiled (faces that cross a repeat boundary then sample the wrong place)."""
MAX_TILE_SIDE = 4096
UV_TOLERANCE = 1e-3
"""UVs this close past a whole number count as on it (exporters write 1.0000001 for 1)."""
ATLAS_GUTTER = 2
"""Texels of a tile's edge repeated around it in a merged atlas."""
MAX_ATLAS_SIDE = 8192
"""A merged atlas is scaled down to at most this side (what GPUs commonly accept)."""


def _face_colour_tiles(part: TriMesh) -> TriMesh:
    """A vertex-coloured part as a textured one: every face gets its own three vertices and a 2 x 2
    texel block of its mean colour (the colour varies per face, not within one)."""
    f = len(part.faces)
    n = int(np.ceil(np.sqrt(f)))
    colours = np.round(part.vertex_colors[part.faces].mean(1) * 255).astype(np.uint8)  # [F, 3]
    grid = np.zeros((n * n, 3), np.uint8)
    grid[:f] = colours
    tile = grid.reshape(n, n, 3).repeat(2, axis=0).repeat(2, axis=1)
    row, col = np.divmod(np.arange(f), n)
    uv_face = np.stack([(2 * col + 1) / (2 * n), 1.0 - (2 * row + 1) / (2 * n)], -1)
    return TriMesh(part.vertices[part.faces].reshape(-1, 3), np.arange(3 * f).reshape(-1, 3),
                   uv=np.repeat(uv_face, 3, axis=0), texture=tile)


def _unrepeat(part: TriMesh) -> TriMesh:
    """A textured part whose UVs leave [0, 1] (a repeating texture) with the texture tiled over the
    UVs' range and the UVs mapped into [0, 1], so it can share an atlas; unchanged otherwise."""
    eps = UV_TOLERANCE  # exporters' float noise (1.0000001) is not a second repeat
    lo, hi = np.floor(part.uv.min(0) + eps), np.ceil(part.uv.max(0) - eps)
    reps = np.maximum(hi - lo, 1).astype(int)
    if (lo == 0).all() and (reps == 1).all():
        return part.replace(uv=np.clip(part.uv, 0.0, 1.0))
    if reps.max() > MAX_REPEAT:
        return part.replace(uv=np.where((part.uv < 0) | (part.uv > 1), part.uv - np.floor(part.uv), part.uv))
    texture = part.texture
    h, w = texture.shape[:2]
    s = min(1.0, MAX_TILE_SIDE / max(h * reps[1], w * reps[0]))
    if s < 1.0:  # scaled before tiling: a 4096 px texture repeated 8 x 8 would be 3 GB tiled first
        texture = scale_texture(texture, s)
    return part.replace(uv=np.clip((part.uv - lo) / reps, 0.0, 1.0), texture=np.tile(texture, (reps[1], reps[0], 1)))

def _merge_parts(parts: list[TriMesh]) -> TriMesh:
    """One TriMesh from parts with their own colour sources.

    Without textures the parts' colours become vertex colours (or one material
    colour when they all agree). With textures, the distinct textures are laid
    side by side in one atlas and the UVs remapped: a plain colour gets a small
    solid tile, vertex colours a tile with one small block per face (the face's
    mean colour), and a texture its UVs repeat over (up to MAX_REPEAT times per
    axis) is tiled that many times first, so the repeats survive the atlas.
    """
    if len(parts) == 1:
        return parts[0]
    parts, style = _merged_alpha(parts)
    style["double_sided"] = any(p.double_sided for p in parts)
    if any(p.has_texture for p in parts):
        parts = [_face_colour_tiles(p) if p.vertex_colors is not None and not p.has_texture
                 and np.ptp(p.vertex_colors, axis=0).max() > 1 / 255 else p for p in parts]  # uniform: one solid tile
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
    verts = np.concatenate([p.vertices for p in parts])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])

    def plain_color(p: TriMesh) -> np.ndarray:
        if p.vertex_colors is not None:
            return p.vertex_colors
        return np.broadcast_to(p.material_color, (len(p.vertices), 3))

    if not any(p.has_texture for p in parts):
        if all(p.vertex_colors is None for p in parts) and \
                all(np.allclose(p.material_color, parts[0].material_color) for p in parts):
            return TriMesh(verts, faces, material_color=parts[0].material_color, **style)
        return TriMesh(verts, faces, vertex_colors=np.concatenate([plain_color(p) for p in parts]), **style)

    def distinct_tiles(parts: list[TriMesh]) -> tuple[list[np.ndarray], list[int]]:
        """The distinct images the parts sample (a plain colour: a small solid tile), and each part's."""
        tiles, tile_of, by_content = [], [], {}
        for p in parts:
            tile = p.texture if p.has_texture else np.full((4, 4, 3), np.round(plain_color(p).mean(0) * 255), np.uint8)
            if style.get("alpha_mode", "OPAQUE") != "OPAQUE" and tile.shape[2] == 3:  # opaque beside cut-outs
                tile = np.concatenate([tile, np.full(tile.shape[:2] + (1,), 255, np.uint8)], -1)
            key = (tile.shape, hashlib.sha1(tile.tobytes()).hexdigest())
            if key not in by_content:
                by_content[key] = len(tiles)
                tiles.append(tile)
            tile_of.append(by_content[key])
        return tiles, tile_of

    tiles, _ = distinct_tiles(parts)
    if len(tiles) == 1:  # every part samples the same texture: keep UVs as they are
        return TriMesh(verts, faces, uv=np.concatenate([p.uv for p in parts]), texture=tiles[0], **style)
    parts = [_unrepeat(p) if p.has_texture else p for p in parts]
    tiles, tile_of = distinct_tiles(parts)

    pad = ATLAS_GUTTER  # each tile's edge texels repeated around it: filtering at a tile's edge
    boxes = [(t.shape[0] + 2 * pad, t.shape[1] + 2 * pad) for t in tiles]  # does not pick up a neighbour
    # shelf packing into rows about as wide as the atlas is tall (side by side, five 1024 px
    # textures made a 5120 x 1024 image)
    row_width = max(max(w for _, w in boxes), int(np.ceil(np.sqrt(sum(h * w for h, w in boxes)))))
    origin, x, y, row_h = [], 0, 0, 0
    for h, w in boxes:
        if x + w > row_width:
            x, y, row_h = 0, y + row_h, 0
        origin.append((y, x))
        x, row_h = x + w, max(row_h, h)
    height, width = y + row_h, max(oy_x[1] + w for oy_x, (_, w) in zip(origin, boxes))
    atlas = np.zeros((height, width, tiles[0].shape[2]), np.uint8)
    for t, (oy, ox), (h, w) in zip(tiles, origin, boxes):
        atlas[oy: oy + h, ox: ox + w] = np.pad(t, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    uvs = []
    for p, i in zip(parts, tile_of):
        th, tw = tiles[i].shape[:2]
        oy, ox = origin[i]
        uv = np.full((len(p.vertices), 2), 0.5)
        if p.has_texture:  # in [0, 1] after _unrepeat, except beyond MAX_REPEAT (wrapped there)
            uv = np.where((p.uv < 0) | (p.uv > 1), p.uv - np.floor(p.uv), p.uv)
        uvs.append(np.stack([(ox + pad + uv[:, 0] * tw) / width,
                             1.0 - (oy + pad + (1.0 - uv[:, 1]) * th) / height], -1))
    if max(height, width) > MAX_ATLAS_SIDE:  # UVs are relative: scaling the whole image keeps them
        atlas = scale_texture(atlas, MAX_ATLAS_SIDE / max(height, width))
    return TriMesh(verts, faces, uv=np.concatenate(uvs), texture=atlas, **style)


def _merged_alpha(parts: list[TriMesh]) -> tuple[list[TriMesh], dict]:
    """The parts ready to share one material, and its alpha_mode and alpha_cutoff.

    Parts that agree keep theirs. Mixed ones (cut-outs with different thresholds, or cut-outs
    beside blended parts) get one: BLEND if any part blends, else MASK at 0.5, with each cut-out's
    alpha first set to exactly 0 or 255 at its own threshold, so every part looks as it did.
    """
    styles = {(p.alpha_mode, p.alpha_cutoff) for p in parts if p.has_alpha}
    if not styles:
        return parts, {}
    if len(styles) == 1:
        mode, cutoff = styles.pop()
        return parts, {"alpha_mode": mode, "alpha_cutoff": cutoff}
    mode = "BLEND" if any(m == "BLEND" for m, _ in styles) else "MASK"
    return [p.hard_alpha() for p in parts], {"alpha_mode": mode, "alpha_cutoff": 0.5}
