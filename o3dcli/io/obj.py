"""The OBJ reader behind `o3dcli.io.mesh.load_mesh` (materials: `o3dcli.io.mtl`).

The OBJ parser is hand-written: OBJ indexes positions and texture coordinates
separately, and a renderable mesh needs one vertex per distinct (position, uv)
pair; writing that split ourselves keeps it exact and fast, and lets a GSO object
without its texture fall back to the MTL's Kd.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from o3dcli.geometry.mesh import TriMesh
from o3dcli.io.mesh_common import MeshLoadError, solid_alpha_part
from o3dcli.io.mesh_merge import merge_parts
from o3dcli.io.mtl import read_alpha, read_mtl, read_texture

_log = logging.getLogger("o3d")


def load_obj(path: Path) -> TriMesh:
    # utf-8-sig: a byte-order mark (Windows Notepad writes one) is not part of the first line
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
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
                materials.update(read_mtl(path.parent / mtl, path))
    if not f_rows:
        raise MeshLoadError(f"{path}: the file holds no faces ({_what_it_is(path)})")
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
    idx = _unfold_concave_polygons(idx, tri_face, pos[:, :3], path)
    face_mat = np.asarray(f_mat)[tri_face]
    parts = []
    for m in np.unique(face_mat):
        if m >= 0:
            props = materials.get(mat_names[m]) if materials else {}
            if props is None:
                props = _undefined_material(mat_names[m], materials, path)
        else:  # faces before any usemtl: the file's only material if it has one
            props = next(iter(materials.values())) if len(materials) == 1 else {}
        parts.append(_obj_part(idx[face_mat == m], pos, vt, colored, props, path))
    return merge_parts(parts)


def _undefined_material(name: str, materials: dict[str, dict], path: Path) -> dict:
    """The material a `usemtl` names that its MTL files do not define: the one whose name differs
    only in letter case when there is one (an MTL edited on Windows), else none; with a warning."""
    like = [m for m in materials if m.lower() == name.lower()]
    if len(like) == 1:
        _log.warning("%s: usemtl %s: no such material in its MTL files; using %s, which differs only in letter "
                     "case", path, name, like[0])
        return materials[like[0]]
    _log.warning("%s: usemtl %s: no such material in its MTL files (they define %s); its faces get no colour "
                 "or texture", path, name, ", ".join(sorted(materials)[:10]) + (", ..." if len(materials) > 10 else ""))
    return {}


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


def _unfold_concave_polygons(idx: np.ndarray, tri_face: np.ndarray, pos: np.ndarray, path: Path) -> np.ndarray:
    """`idx` ([T, 3, 2] corners of fan-triangulated faces, `tri_face` their faces) with each polygon
    the fan does not cover (one of its triangles turned against the polygon's normal: a concave
    polygon, such as an L-shaped cap, whose fan spills outside it) triangulated by ear clipping
    instead; the same number of triangles, in the same rows."""
    n_tri = np.bincount(tri_face)
    if len(n_tri) == 0 or n_tri.max() < 2:
        return idx  # triangles only
    rows = np.flatnonzero(n_tri[tri_face] > 1)  # the triangles of polygons of 4 corners or more
    p = pos[idx[rows, :, 0]].astype(np.float64)  # [R, 3, 3]
    cross = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    normal = np.zeros((len(n_tri), 3))
    for k in range(3):  # the fan's cross products sum to the polygon's (Newell) normal
        normal[:, k] = np.bincount(tri_face[rows], weights=cross[:, k], minlength=len(n_tri))
    face_normal = normal[tri_face[rows]]
    # a triangle turned against the polygon by more than a sliver (a corner on its neighbours' line
    # is not reason enough to clip)
    turned = (cross * face_normal).sum(1) < -1e-6 * (face_normal ** 2).sum(1)
    bad = np.unique(tri_face[rows][turned])
    if len(bad) == 0:
        return idx
    idx = idx.copy()
    starts = np.cumsum(n_tri) - n_tri
    failed = 0
    for f in bad.tolist():
        fan = np.arange(starts[f], starts[f] + n_tri[f])
        corners = np.concatenate([idx[fan[0], :2], idx[fan, 2]])  # the polygon's corners, in order
        order = _ear_clip(pos[corners[:, 0]].astype(np.float64), normal[f])
        if order is not None:
            idx[fan] = corners[order]
        else:
            failed += 1
    if failed:
        _log.warning("%s: %d polygon(s) cross themselves and cannot be triangulated inside their outline; "
                     "fan-triangulated as they are", path, failed)
    return idx


def _ear_clip(points: np.ndarray, normal: np.ndarray) -> np.ndarray | None:
    """Triangles [n - 2, 3] (indices into `points`, the corners of a planar polygon in order,
    counter-clockwise about `normal`) that cover the polygon, by clipping ears; None when the
    polygon is not simple enough to clip (self-intersecting: the fan is kept then). A corner
    repeated (a keyhole's bridge) does not block an ear. Each ear test is one numpy pass over the
    corners left, and the search goes on from the last ear: 2,000 corners take a fraction of a second."""
    axis = int(np.argmax(np.abs(normal)))
    xy = np.delete(points, axis, axis=1)  # projected along the normal's largest axis
    if normal[axis] * (1 if axis != 1 else -1) < 0:
        xy = xy[:, ::-1]  # keep the polygon counter-clockwise in the projection
    left, out, i, misses = list(range(len(points))), [], 0, 0
    while len(left) > 3:
        n = len(left)
        i %= n
        a, b, c = left[i - 1], left[i], left[(i + 1) % n]
        pa, pb, pc = xy[a], xy[b], xy[c]
        convex = (pb[0] - pa[0]) * (pc[1] - pa[1]) - (pb[1] - pa[1]) * (pc[0] - pa[0]) > 0
        if convex:
            q = xy[left]
            edge = lambda p0, p1: (p1[0] - p0[0]) * (q[:, 1] - p0[1]) - (p1[1] - p0[1]) * (q[:, 0] - p0[0])  # noqa: E731
            inside = (edge(pa, pb) >= 0) & (edge(pb, pc) >= 0) & (edge(pc, pa) >= 0)
            inside &= ~((q == pa).all(1) | (q == pb).all(1) | (q == pc).all(1))  # its own corners, or copies
        if convex and not inside.any():
            out.append((a, b, c))
            del left[i]
            misses = 0
            continue  # the next candidate is the corner that followed b
        i, misses = i + 1, misses + 1
        if misses > n:
            return None  # a full turn without an ear
    out.append(tuple(left))
    return np.array(out)


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


FILE_SIGNATURES = ((b"glTF", "a binary glTF (GLB) file named .obj? Rename it .glb"),
                   (b"ply", "a PLY file named .obj? Rename it .ply"),
                   (b"PK\x03\x04", "a ZIP archive (a USDZ?) named .obj"),
                   (b"solid", "an ASCII STL file named .obj? Rename it .stl"))
"""How other mesh files begin, for a .obj that holds no OBJ faces."""


def _what_it_is(path: Path) -> str:
    """What a .obj without faces seems to be, by its first bytes (else the plain question)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    return next((what for magic, what in FILE_SIGNATURES if head.startswith(magic)), "is it an OBJ file?")


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


def _obj_part(idx: np.ndarray, pos, vt, colored: bool, props: dict, path: Path) -> TriMesh:
    """One material's faces, with one vertex per distinct (position, texcoord) pair."""
    keys = idx[..., 0] * (len(vt) + 1) + (idx[..., 1] + 1)
    uniq, inverse = np.unique(keys.reshape(-1), return_inverse=True)
    vi, ti = uniq // (len(vt) + 1), uniq % (len(vt) + 1) - 1
    faces = inverse.reshape(-1, 3)
    uv = np.where(ti[:, None] >= 0, vt[np.maximum(ti, 0)] if len(vt) else 0.0, 0.0)
    has_uv = len(vt) > 0 and (ti >= 0).any()
    texture = read_texture(props["map_Kd"], path) if props.get("map_Kd") and has_uv else None  # no UVs: no use
    if props.get("map_Kd") and not has_uv:
        _log.warning("%s: texture %s is not used: the faces of its material have no texture coordinates (vt); "
                     "they take the material's colour", path, Path(props["map_Kd"]).name)
    elif texture is not None and (idx[..., 1] < 0).any():
        bare = int((idx[..., 1] < 0).any(axis=-1).sum())
        _log.warning("%s: %d of the %d triangles textured with %s have no texture coordinates (vt); they take "
                     "the colour at texture coordinate (0, 0), as other tools show them", path, bare, len(idx),
                     Path(props["map_Kd"]).name)
    if texture is not None:  # map_Kd -s / -o: looked up at uv * scale + offset (as Blender and three.js read them)
        uv = uv * props.get("uv_scale", 1.0) + props.get("uv_offset", 0.0)
    style = {}
    if texture is not None and has_uv and props.get("map_d"):
        alpha, mode = read_alpha(props["map_d"], texture.shape[:2], path)
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
