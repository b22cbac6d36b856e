"""Vertex normals for export with hard edges kept ("auto smooth", as Blender, Unity and three.js's
toCreasedNormals do it): normals are averaged across an edge only where the two faces meet at
less than a crease angle, and vertices are split along the sharper edges, so a box stays flat
and a scanned or generated surface stays smooth. Hand-written: trimesh's `graph.smooth_shade`
splits along sharp edges but treats a UV seam (two vertices at one position) as an open edge,
so seams would show in the shading, and it gives no map back to the source vertices, which the
OBJ writer needs for its vn indices.
"""

from __future__ import annotations

import numpy as np

from o3dcli.geometry.mesh import TriMesh


def crease_groups(mesh: TriMesh, crease_angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(group [F, 3], normal [G, 3]): every face corner's smoothing group and each group's unit
    normal. Corners of one position (UV seams and vertex order do not matter) share a group when
    their faces are joined across edges of that corner where the faces' normals differ by less
    than ``crease_angle_deg``. An edge at that angle or more is a crease (so a hexagonal prism's
    sides stay flat at 60 degrees), and so is an edge of one or of more than two faces, or between
    faces wound opposite ways. A group's normal is the area-weighted mean of its faces'; a
    group of degenerate faces only gets the smooth normal of its position, else +Y."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from o3dcli.mesh.cleanup import weld_vertices

    welded, _ = weld_vertices(mesh)
    wf = welded.faces.astype(np.int64)  # [F, 3] position of every corner
    n_faces = len(wf)
    tri = welded.vertices[wf].astype(np.float64)
    area_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 x area
    length = np.linalg.norm(area_n, axis=1, keepdims=True)
    unit = np.divide(area_n, length, out=np.zeros_like(area_n), where=length > 0)
    # half-edges: face f's edge k runs from corner k to corner k + 1
    face = np.repeat(np.arange(n_faces), 3)
    k0 = np.tile(np.arange(3), n_faces)
    k1 = (k0 + 1) % 3
    a, b = wf[face, k0], wf[face, k1]
    key = np.minimum(a, b) * len(welded.vertices) + np.maximum(a, b)
    order = np.argsort(key, kind="stable")
    uniq, start, count = np.unique(key[order], return_index=True, return_counts=True)
    two = start[count == 2]  # edges of exactly two faces
    h1, h2 = order[two], order[two + 1]
    f1, f2 = face[h1], face[h2]
    cos_limit = np.cos(np.radians(min(max(crease_angle_deg, 0.0), 180.0)))
    smooth = (np.einsum("ij,ij->i", unit[f1], unit[f2]) > cos_limit + 1e-6) & (a[h1] == b[h2])
    smooth &= crease_angle_deg > 0
    h1, h2 = h1[smooth], h2[smooth]
    # join the corners at both ends: h1 runs a -> b, h2 (wound the same way) runs b -> a
    corner = lambda f, k: f * 3 + k  # noqa: E731
    rows = np.concatenate([corner(face[h1], k0[h1]), corner(face[h1], k1[h1])])
    cols = np.concatenate([corner(face[h2], k1[h2]), corner(face[h2], k0[h2])])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(3 * n_faces, 3 * n_faces))
    n_groups, group = connected_components(graph, directed=False)
    normal = np.zeros((n_groups, 3))
    np.add.at(normal, group, np.repeat(area_n, 3, axis=0))
    length = np.linalg.norm(normal, axis=1)
    bad = length < 1e-20
    normal[~bad] /= length[~bad, None]
    if bad.any():  # degenerate faces only: the smooth normal of the position, as before
        from o3dcli.mesh.fusion import vertex_normals

        smooth_at = vertex_normals(welded)
        first = np.zeros(n_groups, np.int64)
        first[group] = np.arange(3 * n_faces)  # a corner of each group: all of a group's share one position
        normal[bad] = smooth_at[wf.reshape(-1)[first[bad]]]
        still = np.linalg.norm(normal, axis=1) < 0.5  # isolated or degenerate: any unit vector is valid
        normal[still] = (0.0, 1.0, 0.0)
    return group.reshape(n_faces, 3), normal.astype(np.float32)


def split_at_creases(mesh: TriMesh, crease_angle_deg: float) -> tuple[TriMesh, np.ndarray, np.ndarray]:
    """(mesh, normals [S, 3], source [S]): ``mesh`` with a vertex for each (vertex, smoothing
    group) of its corners (`crease_groups`), so each vertex has one normal; ``source`` is every new
    vertex's index in ``mesh``. UVs, vertex colours and everything else are kept. A vertex no face
    uses is kept, with the normal +Y. At 180 degrees only edges that are creases whatever the angle
    (see `crease_groups`) split vertices; at 0 every face is flat."""
    group, normal = crease_groups(mesh, crease_angle_deg)
    n_groups = len(normal)
    used = np.zeros(len(mesh.vertices), bool)
    used[mesh.faces.reshape(-1)] = True
    # unused vertices are kept too, each with a group of its own (normal +Y)
    pairs = np.concatenate([mesh.faces.reshape(-1).astype(np.int64) * (n_groups + 1) + group.reshape(-1),
                            np.flatnonzero(~used).astype(np.int64) * (n_groups + 1) + n_groups])
    uniq, inverse = np.unique(pairs, return_inverse=True)
    inverse = inverse.reshape(-1)
    source, grp = uniq // (n_groups + 1), uniq % (n_groups + 1)
    normals = np.vstack([normal, [[0.0, 1.0, 0.0]]]).astype(np.float32)[grp]
    faces = inverse[: mesh.faces.size].reshape(-1, 3)
    split = mesh.replace(vertices=mesh.vertices[source], faces=faces,
                         uv=None if mesh.uv is None else mesh.uv[source],
                         vertex_colors=None if mesh.vertex_colors is None else mesh.vertex_colors[source])
    return split, normals, source
