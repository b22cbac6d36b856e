"""Reading USD files (.usd/.usda/.usdc/.usdz) for `o3d mesh` and `o3d render`, with Pixar's USD
(usd-core, the `usd` extra): `load_usd` walks the stage for its visible meshes, expanding
instances and PointInstancers; their materials are read by `o3dcli.io.usd_material`.
"""

from __future__ import annotations

import logging

import numpy as np

from o3dcli.geometry.mesh import TriMesh
from o3dcli.io.mesh_common import note_texture_format, solid_alpha_part
from o3dcli.io.usd_material import usd_material

_log = logging.getLogger("o3d")


def load_usd(path) -> tuple[list[TriMesh], str]:
    """The visible meshes of a USD file (.usd/.usda/.usdc/.usdz) in world coordinates, and the
    stage's up axis ("y" or "z"). Instances and PointInstancers (their unmasked instances) are
    expanded. Values are read at the stage's start time (animated files: their first frame). Units: metres where the stage authors metersPerUnit, else as stored (USD's fallback, 0.01,
    is not applied: files without it are mostly in metres). Polygons are fanned into triangles
    (holes dropped); left-handed meshes are turned round. Colour: a UsdPreviewSurface's
    diffuseColor texture (read with the texture coordinates its primvar reader names) or value,
    else the displayColor primvar; its opacity (the texture's alpha, or a value) is kept, as a
    cut-out under an opacityThreshold. Needs usd-core (the `usd` extra); raises ValueError with what
    went wrong."""
    try:
        from pxr import Usd, UsdGeom
    except ImportError:
        raise ValueError("reading USD needs Pixar's USD library: pip install \"o3dcli[usd]\"") from None
    try:
        stage = Usd.Stage.Open(str(path))
    except Exception as e:  # pxr raises Tf.ErrorException for files it cannot read
        raise ValueError(f"USD cannot open it ({_usd_error(e)})") from None
    if stage is None:
        raise ValueError("USD cannot open it")
    scale = UsdGeom.GetStageMetersPerUnit(stage) if UsdGeom.StageHasAuthoredMetersPerUnit(stage) else 1.0
    time = Usd.TimeCode(stage.GetStartTimeCode()) if stage.HasAuthoredTimeCodeRange() else Usd.TimeCode.EarliestTime()
    parts = _usd_parts(Usd.PrimRange.Stage(stage, Usd.TraverseInstanceProxies()), time, path, np.eye(4), scale)
    return parts, "z" if UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.z else "y"


_NESTING = 8  # PointInstancers inside prototypes, this many deep at most (a prototype may target its own instancer)


def _usd_parts(prims, time, path, relative: np.ndarray, scale: float, root=None, depth: int = 0) -> list[TriMesh]:
    """The visible meshes met in ``prims`` (a Usd.PrimRange), with their world transforms times
    ``relative`` (the inverse of a prototype's root transform, or the identity), times ``scale``.
    ``root``: the prototype being walked (its own visibility is not looked at: prototypes kept out
    of the scene are often made invisible there), or None for the whole stage."""
    from pxr import UsdGeom

    parts = []
    it = iter(prims)
    for prim in it:
        if prim.IsA(UsdGeom.PointInstancer):
            it.PruneChildren()  # its prototypes are drawn only where it places them
            if not _usd_hidden(prim, time, root):
                parts += _usd_instances(prim, time, path, relative, scale, depth)
            continue
        if not prim.IsA(UsdGeom.Mesh) or _usd_hidden(prim, time, root) or \
                UsdGeom.Imageable(prim).ComputePurpose() not in (UsdGeom.Tokens.default_, UsdGeom.Tokens.render):
            continue
        world = np.asarray(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(time), np.float64) @ relative
        part = _usd_mesh(prim, time, world, scale, path)
        if part is not None:
            parts.append(part)
    return parts


def _usd_hidden(prim, time, root) -> bool:
    """Whether ``prim`` is invisible: its own or an ancestor's visibility (below ``root``, when given)."""
    from pxr import UsdGeom

    if root is None:
        return UsdGeom.Imageable(prim).ComputeVisibility(time) == UsdGeom.Tokens.invisible
    while prim.IsValid() and prim != root:
        attr = UsdGeom.Imageable(prim).GetVisibilityAttr()
        if attr and attr.Get(time) == UsdGeom.Tokens.invisible:
            return True
        prim = prim.GetParent()
    return False


def _usd_instances(prim, time, path, relative: np.ndarray, scale: float, depth: int) -> list[TriMesh]:
    """A PointInstancer's instances that are not masked out (invisibleIds, inactiveIds), as one
    mesh per prototype mesh holding all its copies."""
    from pxr import Usd, UsdGeom

    if depth >= _NESTING:
        _log.warning("%s: %s: PointInstancers nested more than %d deep: the deeper ones skipped",
                     path, prim.GetPath(), _NESTING)
        return []
    inst = UsdGeom.PointInstancer(prim)
    cls = UsdGeom.PointInstancer
    # the mask is applied here: applying it in the call would drop masked transforms and
    # misalign the rest with protoIndices
    xforms = inst.ComputeInstanceTransformsAtTime(time, time, cls.IncludeProtoXform, cls.IgnoreMask)
    ids = np.asarray(inst.GetProtoIndicesAttr().Get(time) or [], np.int64)
    if len(ids) and (not xforms or len(xforms) != len(ids)):
        _log.warning("%s: %s: its instances' positions, orientations or scales do not match its %d protoIndices: "
                     "skipped", path, prim.GetPath(), len(ids))
        return []
    if len(ids) == 0:
        return []
    mats = np.asarray(xforms, np.float64).reshape(-1, 4, 4)
    mask = list(inst.ComputeMaskAtTime(time))
    shown = np.asarray(mask, bool) if mask else np.ones(len(ids), bool)
    targets = inst.GetPrototypesRel().GetTargets()
    if ((ids < 0) | (ids >= len(targets))).any():
        _log.warning("%s: %s: protoIndices name prototypes it does not have (%d targets): those instances skipped",
                     path, prim.GetPath(), len(targets))
    placed = mats @ (np.asarray(inst.ComputeLocalToWorldTransform(time), np.float64) @ relative)
    stage = prim.GetStage()
    # prototypes may sit under an "over" (defined nowhere else): walk those too
    walk = Usd.TraverseInstanceProxies(Usd.PrimIsActive & Usd.PrimIsLoaded & ~Usd.PrimIsAbstract)
    parts = []
    for j, target in enumerate(targets):
        chosen = shown & (ids == j)
        proto = stage.GetPrimAtPath(target)
        if not chosen.any():
            continue
        if not proto.IsValid():
            _log.warning("%s: %s: its prototype %s does not exist: skipped", path, prim.GetPath(), target)
            continue
        at_root = np.linalg.inv(np.asarray(UsdGeom.Xformable(proto).ComputeLocalToWorldTransform(time), np.float64)) \
            if proto.IsA(UsdGeom.Xformable) else np.eye(4)
        for part in _usd_parts(Usd.PrimRange(proto, walk), time, path, at_root, 1.0, proto, depth + 1):
            parts.append(_copies(part, placed[chosen], scale))
    return parts


def _copies(part: TriMesh, mats: np.ndarray, scale: float) -> TriMesh:
    """``part`` placed by each of ``mats`` [K, 4, 4] (row vectors, as USD's) and scaled: one mesh."""
    import dataclasses

    n = len(part.vertices)
    xyz = np.concatenate([part.vertices.astype(np.float64), np.ones((n, 1))], 1)
    vertices = np.einsum("vi,kij->kvj", xyz, mats)[..., :3].reshape(-1, 3) * scale
    mirrored = np.linalg.det(mats[:, :3, :3]) < 0  # a mirroring instance turns its faces round
    faces = np.where(mirrored[:, None, None], part.faces[None, :, ::-1], part.faces[None])
    faces = (faces + (np.arange(len(mats)) * n)[:, None, None]).reshape(-1, 3)
    k = len(mats)
    return dataclasses.replace(part, vertices=vertices, faces=faces,
                               uv=None if part.uv is None else np.tile(part.uv, (k, 1)),
                               vertex_colors=None if part.vertex_colors is None else np.tile(part.vertex_colors, (k, 1)))


def _usd_error(e: Exception) -> str:
    """The first line of a USD error, without its "Error in ..." prefix (the file, line and what is wrong)."""
    text = str(e).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else repr(e)
    if first.startswith("Error in") and " : '" in first:  # "Error in '<function>' at line N in file F : '<what>'"
        first = first.split(" : '", 1)[1].rstrip("'")
    import re

    return re.sub(r"pxrInternal_v\w+?__pxrReserved__::", "", first)  # USD's C++ namespace


def _usd_mesh(prim, time, world: np.ndarray, scale: float, path) -> TriMesh | None:
    """The mesh ``prim`` placed by ``world`` (4 x 4, row vectors) and scaled (None when it has no faces)."""
    from pxr import UsdGeom

    geom = UsdGeom.Mesh(prim)
    points = np.asarray(geom.GetPointsAttr().Get(time) or [], np.float64).reshape(-1, 3)
    counts = np.asarray(geom.GetFaceVertexCountsAttr().Get(time) or [], np.int64)
    indices = np.asarray(geom.GetFaceVertexIndicesAttr().Get(time) or [], np.int64)
    if len(points) == 0 or len(counts) == 0:
        return None
    if counts.sum() != len(indices) or (indices < 0).any() or (indices >= len(points)).any():
        raise ValueError(f"{prim.GetPath()}: face vertex counts and indices do not match its {len(points)} points")
    if not np.isfinite(points).all():
        raise ValueError(f"{prim.GetPath()}: its points are not all finite (NaN or infinity)")
    holes = np.asarray(geom.GetHoleIndicesAttr().Get(time) or [], np.int64)
    # fan every polygon of n >= 3 corners into n - 2 triangles, as corner numbers (into indices)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = counts >= 3
    keep[holes[(holes >= 0) & (holes < len(counts))]] = False  # faces marked as holes are not drawn
    first = np.repeat(starts[keep], counts[keep] - 2)
    step = np.arange(len(first)) - np.repeat(np.cumsum(counts[keep] - 2) - (counts[keep] - 2), counts[keep] - 2)
    corners = np.stack([first, first + step + 1, first + step + 2], 1)
    xyz = (np.concatenate([points, np.ones((len(points), 1))], 1) @ world)[:, :3] * scale
    flip = (geom.GetOrientationAttr().Get(time) == UsdGeom.Tokens.leftHanded) != (np.linalg.det(world[:3, :3]) < 0)
    if flip:
        corners = corners[:, ::-1]
    texture, color, uv_name, style = usd_material(prim, path)
    double = bool(geom.GetDoubleSidedAttr().Get(time))
    uv = _usd_primvar(geom, uv_name, len(points), len(indices), counts, 2) if texture is not None else None
    if texture is not None and uv is not None:
        note_texture_format(style.get("image_format"))
        if "alpha" in style:  # a plain opacity value over the texture
            texture = np.concatenate([texture[..., :3], np.full(texture.shape[:2] + (1,), round(style["alpha"] * 255),
                                                                np.uint8)], -1)
        alpha = {k: style[k] for k in ("alpha_mode", "alpha_cutoff") if k in style} if texture.shape[2] == 4 else {}
        # one vertex per distinct (point, uv) pair, as every loader here makes them
        keys = np.concatenate([indices[:, None].astype(np.float64), uv], 1)[corners.reshape(-1)]
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        return TriMesh(xyz[uniq[:, 0].astype(np.int64)], inverse.reshape(-1, 3), uv=uniq[:, 1:], texture=texture,
                       double_sided=double, **alpha)
    faces = indices[corners]
    if "alpha" in style and texture is None:  # a see-through plain colour (glass)
        return solid_alpha_part(xyz, faces, np.ones(3) if color is None else color, style["alpha"],
                                style["alpha_mode"], style.get("alpha_cutoff", 0.5), double)
    if color is None:
        shown = _usd_primvar(geom, "displayColor", len(points), len(indices), counts, 3)
        if shown is not None:  # per corner: averaged onto the points
            sums = np.zeros((len(points), 3))
            np.add.at(sums, indices, shown)
            seen = np.bincount(indices, minlength=len(points))[:, None]
            colours = np.where(seen > 0, sums / np.maximum(seen, 1), 1.0)
            return TriMesh(xyz, faces, vertex_colors=colours.clip(0, 1), double_sided=double)
    return TriMesh(xyz, faces, material_color=np.ones(3) if color is None else np.clip(color, 0, 1),
                   double_sided=double)


def _usd_primvar(geom, name: str, n_points: int, n_corners: int, counts: np.ndarray, width: int) -> np.ndarray | None:
    """The primvar's values per face corner [n_corners, width] (None when missing or unusable)."""
    from pxr import UsdGeom

    pv = UsdGeom.PrimvarsAPI(geom.GetPrim()).GetPrimvar(name)
    if not pv or not pv.HasValue():
        return None
    values = np.asarray(pv.ComputeFlattened() or [], np.float64).reshape(-1, width)
    how = pv.GetInterpolation()
    indices = np.asarray(geom.GetFaceVertexIndicesAttr().Get() or [], np.int64)
    if how in (UsdGeom.Tokens.vertex, UsdGeom.Tokens.varying) and len(values) == n_points:
        return values[indices]
    if how == UsdGeom.Tokens.faceVarying and len(values) == n_corners:
        return values
    if how == UsdGeom.Tokens.uniform and len(values) == len(counts):
        return np.repeat(values, counts, axis=0)
    if how == UsdGeom.Tokens.constant and len(values) >= 1:
        return np.repeat(values[:1], n_corners, axis=0)
    return None
