"""Mesh cleanup and simplification with pymeshlab: floaters, holes, duplicates, non-manifold
parts, isotropic remeshing and quadric edge-collapse decimation (texture-aware for textured meshes)."""

from __future__ import annotations

import logging
from functools import partial

import numpy as np

from o3dcli.geometry.mesh import TriMesh
from o3dcli.mesh.config import MeshConfig

log = logging.getLogger("o3d")

QUALITY_THRESHOLD = 0.3
"""Quadric collapse: penalise collapses that create triangles less regular than this (pymeshlab's default)."""
MAX_DECIMATION_PASSES = 3
"""Quadric collapse sometimes stops a little above the target; it is re-run at most this often."""
STOPS_SHORT = "the simplifier stops where going on would break the surface"
"""Why a decimated mesh has more faces than its target, unless a more particular reason is known."""


def _meshset(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None, ids: np.ndarray | None = None):
    """A MeshSet of one mesh; `ids` [V]: a number per vertex that the collapse carries (pymeshlab's
    vertex quality), the part each vertex belongs to."""
    import pymeshlab

    kw = {}
    if colors is not None:
        kw["v_color_matrix"] = np.concatenate([colors, np.ones((len(colors), 1))], 1).astype(np.float64)
    if ids is not None:
        kw["v_scalar_array"] = np.asarray(ids, np.float64)
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertices.astype(np.float64), faces.astype(np.int32), **kw))
    return ms


def _result(ms, like: TriMesh, keep_colors: bool) -> TriMesh:
    m = ms.current_mesh()
    colors = m.vertex_color_matrix()[:, :3] if keep_colors and m.has_vertex_color() else None
    return TriMesh(m.vertex_matrix(), m.face_matrix(), vertex_colors=colors, material_color=like.material_color)


def weld_vertices(mesh: TriMesh) -> tuple[TriMesh, np.ndarray]:
    """The mesh with vertices at identical positions merged (UVs and colours dropped), and the
    map old vertex -> new vertex [V]."""
    uniq, inverse = np.unique(mesh.vertices, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return TriMesh(uniq, inverse[mesh.faces], material_color=mesh.material_color), inverse


def face_components(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """Connected component label [F] of every face (faces sharing a vertex are connected)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(num_vertices, num_vertices))
    _, labels = connected_components(graph, directed=False)
    return labels[faces[:, 0]]


def keep_main_components(mesh: TriMesh, min_ratio: float) -> TriMesh:
    """Drop connected parts with fewer faces than ``min_ratio`` x the largest part's (floaters)."""
    if len(mesh.faces) == 0 or min_ratio <= 0:
        return mesh
    labels = face_components(mesh.faces, len(mesh.vertices))
    counts = np.bincount(labels)
    keep = counts[labels] >= min_ratio * counts.max()
    return _drop_unreferenced(mesh.replace(faces=mesh.faces[keep]))


SPLIT_OFF_MAX_RATIO = 0.01
"""Decimation: a piece it splits off a part is dropped when it has fewer faces than this fraction of the mesh."""


def vertex_parts(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """The connected part [V] of every vertex (-1: no face uses it)."""
    part = np.full(num_vertices, -1, np.int64)
    if len(faces):
        part[faces.reshape(-1)] = np.repeat(face_components(faces, num_vertices), 3)
    return part


def split_off_faces(faces: np.ndarray, vertices: np.ndarray, before_vertices: np.ndarray,
                    before_parts: np.ndarray) -> np.ndarray | None:
    """Faces to keep [F] after decimation, or None to keep all. Edge collapse can pinch a small
    pocket off a surface into a piece of its own (seen on a generated asset: closed shells of 4
    and 6 faces inside it, one touching it at a point, which a slicer would print as cavities).
    Each piece is traced to the part of the mesh before decimation that its vertices lie nearest
    (`before_vertices` [V0, 3] with their `before_parts` [V0], -1 for unused ones; collapse never
    joins parts); every part keeps its largest piece, and its other pieces are dropped when each
    is under SPLIT_OFF_MAX_RATIO of the faces. A part is never dropped whole, however small."""
    if len(faces) == 0:
        return None
    labels = face_components(faces, len(vertices))
    pieces = int(labels.max()) + 1
    if pieces == 1:
        return None
    from scipy.spatial import cKDTree

    used = before_parts >= 0
    _, nearest = cKDTree(before_vertices[used]).query(vertices[faces[:, 0]])
    face_part = before_parts[used][nearest]
    # each piece's part: the one most of its faces' first corners lie nearest
    piece_part = _piece_parts(labels, face_part, int(before_parts.max()) + 1)
    size = np.bincount(labels, minlength=pieces)
    order = np.lexsort((size, piece_part))  # by part, largest piece last
    largest = order[np.r_[piece_part[order][1:] != piece_part[order][:-1], True]]
    drop = np.setdiff1d(np.flatnonzero(size < SPLIT_OFF_MAX_RATIO * len(faces)), largest)
    return None if len(drop) == 0 else ~np.isin(labels, drop)


def _drop_unreferenced(mesh: TriMesh) -> TriMesh:
    used = np.zeros(len(mesh.vertices), bool)
    used[mesh.faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    kw = {k: getattr(mesh, k)[used] for k in ("uv", "vertex_colors") if getattr(mesh, k) is not None}
    return mesh.replace(vertices=mesh.vertices[used], faces=remap[mesh.faces], **kw)


SPLIT_VERTEX_SHIFT = 0.01
"""Where the repair has split a vertex into one per fan of faces (a pinch point) and the copies are
all kept, each moves this fraction of the way toward the centre of its own faces (`part_copies`):
copies left at one position make the surface touch itself there, and a file reader that joins
vertices by position (a slicer, `open_edges`) then finds edges of four faces (seen after decimation:
1 in 3 test objects, and on a rough published-size Gaussian set). 1 %: the copies end about 1e-4 of
the object's size apart at 20,000 faces."""


def part_copies(vertices: np.ndarray, faces: np.ndarray, shift: float = SPLIT_VERTEX_SHIFT) -> np.ndarray:
    """`vertices` with those that share a position moved `shift` of the way toward the centre of
    their own faces (see SPLIT_VERTEX_SHIFT); the others unchanged."""
    _, inverse, counts = np.unique(vertices, axis=0, return_inverse=True, return_counts=True)
    shared = counts[inverse.reshape(-1)] > 1
    if not shared.any():
        return vertices
    centres = vertices[faces].astype(np.float64).mean(1)
    total = np.zeros((len(vertices), 3))
    uses = np.zeros(len(vertices))
    np.add.at(total, faces.reshape(-1), np.repeat(centres, 3, axis=0))
    np.add.at(uses, faces.reshape(-1), 1.0)
    own = total / np.maximum(uses, 1.0)[:, None]
    moved = vertices.copy()
    moved[shared] = (vertices[shared] + shift * (own[shared] - vertices[shared])).astype(vertices.dtype)
    return moved


def _repair(ms, keep_faces: bool = False) -> None:
    """Duplicates, zero-area faces and non-manifold parts out (in that order: each can cause the next).
    A non-manifold edge loses faces until two are left (what a pinch needs: cut out, then closed),
    or, with `keep_faces`, has its vertices split: a fin on a closed box stays, and so does the box
    (removing faces took one of the box's, leaving a hole)."""
    ms.meshing_remove_duplicate_vertices()
    ms.meshing_remove_duplicate_faces()
    ms.meshing_remove_null_faces()
    ms.meshing_repair_non_manifold_edges(method="Split Vertices" if keep_faces else "Remove Faces")
    ms.meshing_repair_non_manifold_vertices()
    ms.meshing_remove_unreferenced_vertices()


def fill_holes(mesh: TriMesh, max_hole_edges: int) -> TriMesh:
    """Close holes bounded by at most ``max_hole_edges`` edges (after making the mesh manifold,
    which hole filling needs). Returns the repaired mesh without UVs."""
    ms = _meshset(mesh.vertices, mesh.faces, mesh.vertex_colors)
    _repair(ms)
    _close_holes(ms, max_hole_edges)
    return _result(ms, mesh, mesh.vertex_colors is not None)


def _close_holes(ms, max_hole_edges: int) -> None:
    import pymeshlab

    if max_hole_edges >= 3:
        try:
            ms.meshing_close_holes(maxholesize=max_hole_edges, newfaceselected=False, selfintersection=False)
        except pymeshlab.PyMeshLabException:  # hole filling refuses some borders: keep them open
            pass


def _is_closed_manifold(ms) -> bool:
    """Every edge between exactly two faces, every vertex a single fan (what a 3D printer's slicer
    and a watertightness check want)."""
    t = ms.get_topological_measures()
    return t["boundary_edges"] == 0 and t["non_two_manifold_edges"] == 0 and t["non_two_manifold_vertices"] == 0


def simplify_mesh(mesh: TriMesh, cfg: MeshConfig | None = None, keep_faces: bool = False) -> TriMesh:
    """Repair (duplicates, non-manifold parts), optionally remesh, and decimate to at most
    cfg.target_faces faces with quadric edge collapse, preserving boundaries and normals.

    A textured mesh is decimated with the texture-aware collapse and keeps its texture
    (and UVs); an untextured one keeps its vertex colours. A closed surface stays closed: what
    the collapse pinches is cut out and closed again, or, where that fails (hundreds of thin
    handles), the surface is decimated again keeping its handles, above the target if they need it.
    No separate part is lost: each keeps at least MIN_PART_FACES faces (`_keep_parts`).
    `keep_faces`: a non-manifold edge of the input has its vertices split rather than faces
    removed (`_repair`; a user's mesh, where removing faces punches holes).
    """
    cfg = cfg or MeshConfig()
    labels = _part_labels(mesh) if len(mesh.faces) > cfg.target_faces else None
    largest = mesh.faces if labels is None else mesh.faces[labels == np.bincount(labels).argmax()]
    part = mesh.vertices[largest.reshape(-1)]
    # a largest part of no extent (faces fanned at one point) says nothing of the size: the whole does
    scale = np.float32(unit_scale(part if len(part) and np.ptp(part, axis=0).max() > 0 else mesh.vertices))
    if scale != 1:  # pymeshlab's collapse is not scale-free: run at unit size, then scaled back
        mesh = mesh.replace(vertices=mesh.vertices / scale)
    one = _simplify_textured if mesh.has_texture else partial(_simplify_plain, keep_faces=keep_faces)
    if labels is not None and mesh.has_texture and labels.max() >= MAX_TEXTURED_PARTS:
        log.warning("%d separate parts: more than decimation can keep apart in a textured mesh (%d); they are "
                    "decimated as one, and small ones may go", labels.max() + 1, MAX_TEXTURED_PARTS)
        labels = None
    if labels is None:
        result, why, _ = one(mesh, cfg)
    else:
        result, why = _keep_parts(mesh, labels, cfg, one)
    _say_if_above(len(result.faces), cfg.target_faces, why)
    return result if scale == 1 else result.replace(vertices=(result.vertices * scale).astype(result.vertices.dtype))


def unit_scale(vertices: np.ndarray) -> float:
    """The power of two that brings the largest side of the vertices' box into (0.5, 1]: 1 for
    o3d's own meshes (in a unit box). pymeshlab's quadric collapse depends on the absolute size of
    what it decimates (its planar quadrics' weight is not scaled with it; measured on a sphere
    decimated to 500 faces: 1.00 of its radius kept at radius 1, 0.86 at radius 0.01): a 3 cm
    part in metres came out dented, losing 7-24 % of its volume. `simplify_mesh` scales by the
    largest part's (a chain's link, not the whole chain); a power of two scales there and back
    exactly."""
    if len(vertices) == 0:
        return 1.0
    side = float(np.max(np.max(vertices, 0) - np.min(vertices, 0)))
    if not np.isfinite(side) or side <= 0:
        return 1.0
    return float(2.0 ** np.ceil(np.log2(side)))


MIN_PART_FACES = 4
"""Decimation leaves every separate part of a mesh at least this many faces (a tetrahedron, the
smallest closed shape), or all of its own where it has fewer. Quadric collapse alone ranks the
collapses of the whole mesh by the error they add, and a small part's are the cheapest: it went
whole (measured: 1,000 separate cubes decimated to 2,000 faces kept 501 of them; a sphere with
300 beads at 5,000 faces lost two beads, with the report still saying ok)."""
MAX_TEXTURED_PARTS = 1 << 24
"""A textured mesh's part ids go through the collapse as three bytes of vertex colour."""
MAX_PART_ROUNDS = 3
"""`_keep_parts`: how often the parts decimated together are re-run after more of them were starved
(then every part is decimated apart)."""


def _part_labels(mesh: TriMesh) -> np.ndarray | None:
    """The separate part [F] of each face (vertices joined by position: a texture's seams part
    nothing), or None for a mesh of one part."""
    welded, _ = weld_vertices(mesh)
    labels = face_components(welded.faces, len(welded.vertices))
    return labels if len(labels) and labels.max() > 0 else None


def _vertex_ids(mesh: TriMesh, face_ids: np.ndarray) -> np.ndarray:
    """Per-vertex ids [V] from per-face ids [F] (the faces at a vertex share its part)."""
    ids = np.zeros(len(mesh.vertices), np.int64)
    ids[mesh.faces.reshape(-1)] = np.repeat(face_ids, 3)
    return ids


def _keep_parts(mesh: TriMesh, labels: np.ndarray, cfg: MeshConfig, one) -> tuple[TriMesh, str]:
    """`mesh` (with separate parts `labels` [F]) decimated by `one` to cfg.target_faces, no part
    below MIN_PART_FACES (or its own count). Each vertex carries its part through the collapse,
    so every face of a result is known to be its part's. Where the collapse starved parts, they
    and every part with no more faces than one of them are decimated apart from the others, each
    to its share of the target (proportional to its faces, at least its minimum): parts of about
    one size together (`_parts_apart`), since parts alike are collapsed evenly. The other parts
    keep what the collapse made of them, decimated further to what is left of the target (or made
    again from the input where the collapse left them far under it, REBUILD_BELOW); parts starved
    in that join the first set, at most MAX_PART_ROUNDS times, then every part is decimated apart.
    When the minimums exceed the target, the result is above it (said by the caller, with the
    reason returned)."""
    from dataclasses import replace

    counts = np.bincount(labels)
    floor = np.minimum(counts, MIN_PART_FACES)
    too_many = f"{len(counts)} separate parts, each kept with at least {MIN_PART_FACES} faces or all of its own"
    current, why, current_parts = one(mesh, cfg, _vertex_ids(mesh, labels))
    small = np.bincount(current_parts, minlength=len(counts)) < floor
    if not small.any():
        return current, too_many if floor.sum() > cfg.target_faces else why
    result = current
    share = _shares(counts, floor, cfg.target_faces)
    done = np.zeros(len(counts), bool)
    pieces: list[TriMesh] = []
    rest = None
    for round_ in range(MAX_PART_ROUNDS + 1):
        small |= counts <= counts[small].max()  # parts no larger than a starved one would starve next
        if round_ == MAX_PART_ROUNDS or cfg.target_faces - int(share[small].sum()) < floor[~small].sum():
            small[:] = True  # no room for the others' minimums (or still starving): every part apart
        pieces += _parts_apart(mesh, labels, np.flatnonzero(small & ~done), share, floor, cfg, one)
        done |= small
        if small.all():
            rest = None
            break
        # what the parts apart came to (a collapse can stop a little above its target)
        room = max(cfg.target_faces - sum(len(p.faces) for p in pieces), int(floor[~small].sum()))
        kept = np.flatnonzero(~small[current_parts])
        rest, rest_parts = _faces_of(current, kept), current_parts[kept]
        if len(rest.faces) > room:
            rest, why, rest_parts = one(rest, replace(cfg, target_faces=room, remesh=False), _vertex_ids(rest, rest_parts))
        elif len(rest.faces) < REBUILD_BELOW * room and len(rest.faces) < counts[~small].sum():
            # the first collapse left these parts far less than there is room for: made again from the input
            index = np.flatnonzero(~small[labels])
            others = _faces_of(mesh, index)
            rest, why, rest_parts = one(others, replace(cfg, target_faces=room), _vertex_ids(others, labels[index]))
        current, current_parts = rest, rest_parts
        more = ~small & (np.bincount(current_parts, minlength=len(counts)) < floor)
        if not more.any():
            break
        small |= more
    kept_meshes = ([rest] if rest is not None else []) + pieces
    return _concat(kept_meshes, result), too_many if floor.sum() > cfg.target_faces else why


REBUILD_BELOW = 0.9
"""`_keep_parts`: parts the first collapse left with fewer than this fraction of the room they now
have are decimated again from the input (the starved ones took less than the collapse gave up)."""


def _shares(counts: np.ndarray, floor: np.ndarray, target: int) -> np.ndarray:
    """Each part's share [P] of `target` faces: proportional to its faces, no less than its `floor`
    (those set at their floor, the others share what is left, until none falls below); every part
    at its floor where the floors fill the target."""
    fixed = np.zeros(len(counts), bool)
    while True:
        room = target - int(floor[fixed].sum())
        free = counts[~fixed].sum()
        if free == 0 or room <= 0:
            return floor.copy()
        share = np.where(fixed, floor, np.minimum(counts, (counts * room) // free))
        below = ~fixed & (share < floor)
        if not below.any():
            return np.maximum(share, floor)
        fixed |= below


def _piece_parts(piece: np.ndarray, face_part: np.ndarray, n_parts: int) -> np.ndarray:
    """The part [pieces] of each piece (`piece` [F] its faces' piece): the one most of its faces
    (`face_part` [F]) vote for."""
    pair, count = np.unique(piece.astype(np.int64) * n_parts + face_part, return_counts=True)
    piece_of, part_of = pair // n_parts, pair % n_parts
    order = np.lexsort((count, piece_of))  # by piece, most-voted part last
    last = np.r_[piece_of[order][1:] != piece_of[order][:-1], True]
    out = np.empty(int(piece.max()) + 1, np.int64)
    out[piece_of[order][last]] = part_of[order][last]
    return out


def _faces_of(mesh: TriMesh, face_index: np.ndarray) -> TriMesh:
    """The mesh of the faces `face_index`, in that order (and only the vertices they use)."""
    used, inverse = np.unique(mesh.faces[face_index], return_inverse=True)
    kw = {k: getattr(mesh, k)[used] for k in ("uv", "vertex_colors") if getattr(mesh, k) is not None}
    return mesh.replace(vertices=mesh.vertices[used], faces=inverse.reshape(-1, 3).astype(np.int32), **kw)


def _parts_apart(mesh: TriMesh, labels: np.ndarray, parts: np.ndarray, share: np.ndarray, floor: np.ndarray,
                 cfg: MeshConfig, one) -> list[TriMesh]:
    """`parts` of `mesh` (face `labels`) decimated apart from the rest, each to about its `share`
    and to no fewer than its `floor` faces: parts whose share is all of them kept whole; the others
    in groups of about one size (bounding-box diagonals within a factor of 2), each group decimated
    to the sum of its shares. A part the group's collapse still starves is decimated alone (kept
    whole where even that takes it below its floor), and the group's others are decimated further
    to what that leaves of the group's shares, in rounds while that starves more; a group still
    above its shares after MAX_PART_ROUNDS has each of its parts decimated alone."""
    from dataclasses import replace

    if len(parts) == 0:
        return []
    count = np.bincount(labels)
    order = np.argsort(labels, kind="stable")
    starts = np.r_[0, np.cumsum(count)]
    faces_of = lambda group: np.concatenate([order[starts[i]:starts[i + 1]] for i in group])  # noqa: E731
    whole = parts[share[parts] >= count[parts]]
    out = [_faces_of(mesh, faces_of(whole))] if len(whole) else []
    cut = np.setdiff1d(parts, whole)
    if len(cut) == 0:
        return out
    corners = mesh.vertices[mesh.faces[faces_of(cut)]].reshape(-1, 3)
    at = np.cumsum(np.r_[0, 3 * count[cut]])[:-1]
    size = np.linalg.norm(np.maximum.reduceat(corners, at) - np.minimum.reduceat(corners, at), axis=1)
    group_of = np.floor(np.log2(np.maximum(size, 1e-12))).astype(np.int64)

    def decimated(sub: TriMesh, sub_parts: np.ndarray, target: int) -> tuple[TriMesh, np.ndarray]:
        out_mesh, _, out_parts = one(sub, replace(cfg, target_faces=int(target), remesh=False), _vertex_ids(sub, sub_parts))
        return out_mesh, out_parts

    def alone(i: int) -> TriMesh:
        """Part i decimated by itself to its share; whole where even that starves it (a part of
        zero area, which the repair removes: its first `floor` faces)."""
        part = _faces_of(mesh, faces_of([i]))
        piece, _ = decimated(part, np.full(len(part.faces), i), share[i])
        if len(piece.faces) >= floor[i]:
            return piece
        return _faces_of(part, np.arange(floor[i])) if part.area() == 0 else part

    for g in np.unique(group_of):
        group = cut[group_of == g]
        if len(group) == 1:
            out.append(alone(int(group[0])))
            continue
        # the group's collapse, run again on what it made while it starves parts: those go alone
        # and the others pay for them, until none starves (after MAX_PART_ROUNDS: the last result
        # in which none did)
        index = faces_of(group)
        members, sub, sub_parts = group, _faces_of(mesh, index), labels[index]
        apart: list[TriMesh] = []
        kept = None
        for _ in range(MAX_PART_ROUNDS + 1):
            budget = int(share[group].sum()) - sum(len(p.faces) for p in apart)
            if kept is not None and (len(kept.faces) <= budget or budget < floor[members].sum()):
                break
            piece, piece_parts = decimated(sub, sub_parts, budget)
            got = np.bincount(piece_parts, minlength=len(count))
            starved = members[got[members] < floor[members]]
            if len(starved) == 0:
                kept = piece
                break
            apart += [alone(int(i)) for i in starved]
            members = np.setdiff1d(members, starved)
            remain = np.flatnonzero(~np.isin(piece_parts, starved))
            sub, sub_parts = _faces_of(piece, remain), piece_parts[remain]
            kept = sub
            if len(members) == 0:
                break
        budget = int(share[group].sum()) - sum(len(p.faces) for p in apart)
        if len(members) and len(kept.faces) > budget >= floor[members].sum():  # still above: each alone
            apart += [alone(int(i)) for i in members]
            kept = None
        out += ([kept] if kept is not None and len(kept.faces) else []) + apart
    return out


def _concat(pieces: list[TriMesh], like: TriMesh) -> TriMesh:
    """The pieces (decimated parts of one mesh: one texture or one material) as one TriMesh, with
    `like`'s texture, material and style."""
    offsets = np.cumsum([0] + [len(p.vertices) for p in pieces])
    kw = {}
    if like.has_texture:
        kw["uv"] = np.concatenate([p.uv for p in pieces]).astype(np.float32)
    if any(p.vertex_colors is not None for p in pieces):
        kw["vertex_colors"] = np.concatenate([
            p.vertex_colors if p.vertex_colors is not None else np.broadcast_to(p.material_color, (len(p.vertices), 3))
            for p in pieces]).astype(np.float32)
    return like.replace(vertices=np.concatenate([p.vertices for p in pieces]),
                        faces=np.concatenate([p.faces + o for p, o in zip(pieces, offsets)]).astype(np.int32), **kw)


def _simplify_plain(mesh: TriMesh, cfg: MeshConfig, ids: np.ndarray | None = None,
                    keep_faces: bool = False) -> tuple[TriMesh, str, np.ndarray | None]:
    """`simplify_mesh` of an untextured mesh, decimated as one: the mesh, why it is above the
    target if it is, and with `ids` [V] (each vertex's part) the part [F] of each of its faces."""
    ms = _meshset(mesh.vertices, mesh.faces, mesh.vertex_colors, ids)
    _repair(ms, keep_faces)
    closed = _is_closed_manifold(ms)
    m = ms.current_mesh()
    before = m.vertex_matrix(), vertex_parts(m.face_matrix(), m.vertex_number())
    if cfg.remesh:
        import pymeshlab

        diag = float(np.linalg.norm(mesh.vertices.max(0) - mesh.vertices.min(0)))
        ms.meshing_isotropic_explicit_remeshing(iterations=3, targetlen=pymeshlab.PureValue(cfg.remesh_edge_ratio * diag))
    why = STOPS_SHORT
    m = ms.current_mesh()  # kept as arrays for a second try below (a copy in the MeshSet costs 7x more)
    undecimated = (m.vertex_matrix(), m.face_matrix(), m.vertex_color_matrix()[:, :3] if m.has_vertex_color() else None,
                   m.vertex_scalar_array() if ids is not None else None)
    _decimate(ms, cfg.target_faces)
    ms.meshing_remove_unreferenced_vertices()
    if closed and cfg.max_hole_edges > 0 and not _is_closed_manifold(ms) and not _reclose(ms, max(cfg.max_hole_edges, 16)):
        # Too many pinches to cut out and close: a surface with many thin handles (a porous
        # fusion) pinches at each one it collapses. Decimated again, never collapsing a handle.
        pinched = ms.current_mesh_id()
        fresh = _meshset(*undecimated)  # held while its mesh is copied in: current_mesh() is a view into it
        ms.add_mesh(fresh.current_mesh())
        _decimate(ms, cfg.target_faces, keep_topology=True)
        ms.meshing_remove_unreferenced_vertices()
        if not _is_closed_manifold(ms):
            ms.set_current_mesh(pinched)
            log.warning(
                "decimation pinched the closed surface (%d edges shared by more than two faces) and the repair "
                "failed: the mesh is kept as decimated", ms.get_topological_measures()["non_two_manifold_edges"])
        elif ms.current_mesh().face_number() > cfg.target_faces:
            why = f"the surface has {ms.get_topological_measures()['genus']} handles (holes through it), kept closed"
    # after the repair, which also parts a pocket from the surface where they share a vertex
    m = ms.current_mesh()
    keep = split_off_faces(m.face_matrix(), m.vertex_matrix(), *before)
    if keep is not None:
        colors = m.vertex_color_matrix()[:, :3] if mesh.vertex_colors is not None and m.has_vertex_color() else None
        ms = _meshset(m.vertex_matrix(), m.face_matrix()[keep], colors, m.vertex_scalar_array() if ids is not None else None)
        ms.meshing_remove_unreferenced_vertices()
    result = _result(ms, mesh, mesh.vertex_colors is not None)
    parts = None
    if ids is not None:
        parts = np.rint(ms.current_mesh().vertex_scalar_array()).astype(np.int64)[result.faces[:, 0]]
    # after the pockets are gone: a vertex split only for a pocket dropped since stays where it was
    return result.replace(vertices=part_copies(result.vertices, result.faces)), why, parts


def _say_if_above(faces: int, target: int, why: str) -> None:
    if faces > target:
        log.warning("%d faces, above the target of %d (%s)", faces, target, why)


def _decimate(ms, target_faces: int, keep_topology: bool = False) -> None:
    """Quadric edge collapse of the current mesh down to `target_faces` (re-run when it stops
    short); `keep_topology`: no collapse that would close a handle or pinch the surface."""
    for _ in range(MAX_DECIMATION_PASSES):
        if ms.current_mesh().face_number() <= target_faces:
            break
        ms.meshing_decimation_quadric_edge_collapse(
            targetfacenum=target_faces, qualitythr=QUALITY_THRESHOLD, preserveboundary=True,
            preservenormal=True, optimalplacement=True, planarquadric=True, autoclean=True,
            preservetopology=keep_topology,
        )


def _reclose(ms, max_hole_edges: int, attempts: int = 3) -> bool:
    """Make a decimated closed surface closed and manifold again; True when done, else the mesh is
    left as it was. Edge collapse can pinch two sheets into one edge or vertex (seen on one
    generated asset in four): the faces there are cut out and the small holes left are closed.
    What hole filling refuses (e.g. a lone triangle the cut left) loses its border faces and is
    tried again."""
    before = ms.current_mesh_id()
    ms.generate_copy_of_current_mesh()  # the copy is worked on (it becomes the current mesh)
    for attempt in range(attempts):
        _repair(ms)
        _close_holes(ms, max_hole_edges)
        if _is_closed_manifold(ms):
            return True
        if attempt < attempts - 1:
            ms.compute_selection_from_mesh_border()
            ms.meshing_remove_selected_faces()
            ms.meshing_remove_unreferenced_vertices()
    ms.set_current_mesh(before)  # not closed: better pinched than holed
    return False


def _simplify_textured(mesh: TriMesh, cfg: MeshConfig,
                       ids: np.ndarray | None = None) -> tuple[TriMesh, str, np.ndarray | None]:
    """Texture-aware quadric collapse: UV seams are stored per face corner (wedges) so the
    collapse sees one connected surface and keeps each corner's texture coordinate. Returns the
    mesh, why it is above the target if it is, and with `ids` [V] (each vertex's part) the part
    [F] of each of its faces.

    The mesh goes in through a temporary OBJ (welded positions, one vt per corner):
    pymeshlab's texture-aware collapse needs per-wedge texture indices, which only its
    file importers set (a Mesh built from arrays is refused as "faces without texture"). The ids
    go in as the OBJ's vertex colours, three bytes each, which the collapse carries unchanged.
    """
    import tempfile
    from pathlib import Path

    import pymeshlab
    from PIL import Image

    welded, old_to_new = weld_vertices(mesh)
    before = welded.vertices, vertex_parts(welded.faces, len(welded.vertices))
    with tempfile.TemporaryDirectory(prefix="o3d-decimate-") as tmp:
        obj = Path(tmp) / "mesh.obj"
        Image.new("RGB", (1, 1)).save(Path(tmp) / "tex.png")  # content unused: the real texture is kept
        (Path(tmp) / "mesh.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd tex.png\n")
        v1, t1 = old_to_new[mesh.faces] + 1, mesh.faces + 1
        lines = ["mtllib mesh.mtl"]
        if ids is None:
            lines += [f"v {a:.9g} {b:.9g} {c:.9g}" for a, b, c in welded.vertices.tolist()]
        else:
            welded_ids = np.zeros(len(welded.vertices), np.int64)
            welded_ids[old_to_new] = ids
            # a byte b written as (b + 0.5) / 255: the importer truncates to bytes
            # (a colour above 1 makes the importer read all three as 0-255: 255 is written as 1)
            rgb = np.minimum((np.stack([welded_ids >> 16, welded_ids >> 8, welded_ids], 1) & 255) + 0.5, 255.0)
            lines += [f"v {a:.9g} {b:.9g} {c:.9g} {r / 255:.6f} {g / 255:.6f} {u / 255:.6f}"
                      for (a, b, c), (r, g, u) in zip(welded.vertices.tolist(), rgb.tolist())]
        lines += [f"vt {u:.9g} {v:.9g}" for u, v in mesh.uv.tolist()]
        lines.append("usemtl m")
        lines += [f"f {a}/{d} {b}/{e} {c}/{f}" for (a, b, c), (d, e, f) in zip(v1.tolist(), t1.tolist())]
        obj.write_text("\n".join(lines) + "\n")
        ms = pymeshlab.MeshSet()
        ms.load_new_mesh(str(obj))
    ms.meshing_remove_null_faces()
    for _ in range(MAX_DECIMATION_PASSES):
        if ms.current_mesh().face_number() <= cfg.target_faces:
            break
        ms.meshing_decimation_quadric_edge_collapse_with_texture(
            targetfacenum=cfg.target_faces, qualitythr=QUALITY_THRESHOLD, extratcoordw=1.0,
            preserveboundary=True, optimalplacement=True, preservenormal=True,
        )
    m = ms.current_mesh()
    faces, wedges = m.face_matrix(), m.wedge_tex_coord_matrix().reshape(-1, 3, 2)
    keep = split_off_faces(faces, m.vertex_matrix(), *before)
    if keep is not None:  # split_wedges keeps only the vertices the faces use
        faces, wedges = faces[keep], wedges[keep]
    if mesh.uv.size and mesh.uv.min() >= 0.0 and mesh.uv.max() <= 1.0:
        # the collapse can move a border corner a little past the atlas (seen: u = 1.0001); where
        # the input's UVs were all in it (an atlas, not a tiled texture), they stay in it
        wedges = np.clip(wedges, 0.0, 1.0)
    parts = None
    if ids is not None:
        rgb = np.rint(m.vertex_color_matrix()[:, :3] * 255).astype(np.int64)
        parts = ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])[faces[:, 0]]
    return (split_wedges(m.vertex_matrix(), faces, wedges, mesh.texture, mesh.material_color, **mesh.material_style),
            STOPS_SHORT, parts)


def split_wedges(vertices, faces, wedge_uv, texture, material_color=None, **style) -> TriMesh:
    """Per-corner UVs wedge_uv [F, 3, 2] -> one vertex per distinct (position, uv) pair.
    ``style``: the TriMesh's alpha_mode, alpha_cutoff and double_sided."""
    corner_v = faces.reshape(-1)
    uv = wedge_uv.reshape(-1, 2).astype(np.float32)
    keys = np.concatenate([corner_v[:, None].astype(np.float64), uv.astype(np.float64)], 1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    kw = dict(style) if material_color is None else {"material_color": material_color, **style}
    return TriMesh(np.asarray(vertices)[uniq[:, 0].astype(np.int64)], inverse.reshape(-1, 3),
                   uv=uniq[:, 1:], texture=texture, **kw)
