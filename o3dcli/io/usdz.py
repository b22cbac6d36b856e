"""USDZ export (Apple Quick Look / AR, Reality Composer, USD tools): one package holding a USD
layer and the texture; and reading USD files (`load_usd`, with usd-core) for `o3d mesh` and
`o3d render`.

o3d writes the layer as ASCII USD (usda) itself, so no USD library is needed. Where Pixar's
USD is installed (the `usd` extra: `pip install 'o3dcli[usd]'`), the layer is converted to
the binary form (usdc), which older Apple software required of a package's first layer; the
content is the same.

The layer holds one Xform (the default prim), a Mesh and a UsdPreviewSurface material:
diffuse colour from the texture (its alpha as opacity; a cut-out's alpha made 0 or 1, with a
threshold), the vertex colours (the displayColor primvar, and their mean as the plain value)
or the material colour; metallic 0, roughness 1, as in the GLB. A double-sided mesh gets its
back faces written out, since Apple Quick Look ignores `doubleSided`. The world frame is
USD's too (+Y up, one unit one metre, right-handed), and USD's texture coordinates have their
origin at the bottom-left like o3d's, so nothing is flipped.

A .usdz is a zip archive whose files are stored uncompressed, each file's data starting at a
multiple of 64 bytes, with the layer first (Pixar's USDZ file format specification). The
alignment is made with padding in each local header's extra field.
"""

from __future__ import annotations

import io
import logging
import struct
import zipfile
from pathlib import Path

import numpy as np

from o3dcli.cache import atomic_write_bytes
from o3dcli.geometry.mesh import TriMesh
from o3dcli.mesh.config import MeshConfig

_log = logging.getLogger("o3d")

ALIGN = 64
_PAD_ID = 0x1986  # an unregistered extra-field id, used for padding only


def _floats(rows: np.ndarray) -> str:
    """USD array text of tuples: [(a, b, c), ...]."""
    return "[" + ", ".join("(" + ", ".join(f"{v:.9g}" for v in row) + ")" for row in rows.tolist()) + "]"  # float32 exact


def _ints(values: np.ndarray) -> str:
    return "[" + ", ".join(str(v) for v in values.tolist()) + "]"


def usda_text(mesh: TriMesh, texture_name: str = "texture.png") -> str:
    """The USD layer (usda) of the mesh; `texture_name` is the texture's path inside the package."""
    from o3dcli.io.export import ROUGHNESS, check_exportable, smooth_normals

    check_exportable(mesh)
    v = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces)
    normals = smooth_normals(mesh)
    per_vertex = {k: getattr(mesh, k) for k in ("uv", "vertex_colors") if getattr(mesh, k) is not None}
    if mesh.double_sided:
        # Quick Look draws one side whatever doubleSided says: the back faces are written out,
        # on their own vertices with the normals turned round
        faces = np.concatenate([faces, faces[:, ::-1] + len(v)])
        v, normals = np.concatenate([v, v]), np.concatenate([normals, -normals])
        per_vertex = {k: np.concatenate([a, a]) for k, a in per_vertex.items()}
    lo, hi = v.min(0), v.max(0)
    mat = "/model/Materials/material0"
    lines = [
        "#usda 1.0",
        "(",
        '    defaultPrim = "model"',
        "    metersPerUnit = 1",
        '    upAxis = "Y"',
        '    doc = "written by o3d"',
        ")",
        "",
        'def Xform "model" (',
        '    kind = "component"',
        ")",
        "{",
        '    def Mesh "mesh" (',
        '        prepend apiSchemas = ["MaterialBindingAPI"]',
        "    )",
        "    {",
        "        uniform bool doubleSided = 0",
        f"        float3[] extent = {_floats(np.stack([lo, hi]))}",
        f"        int[] faceVertexCounts = {_ints(np.full(len(faces), 3))}",
        f"        int[] faceVertexIndices = {_ints(faces.reshape(-1))}",
        f"        rel material:binding = <{mat}>",
        f"        normal3f[] normals = {_floats(normals)} (",
        '            interpolation = "vertex"',
        "        )",
        '        uniform token orientation = "rightHanded"',
        f"        point3f[] points = {_floats(v)}",
    ]
    if mesh.has_texture:
        lines += [f"        texCoord2f[] primvars:st = {_floats(np.asarray(per_vertex['uv'], np.float64))} (",
                  '            interpolation = "vertex"', "        )"]
    elif mesh.vertex_colors is not None:
        lines += [f"        color3f[] primvars:displayColor = {_floats(np.clip(per_vertex['vertex_colors'], 0, 1))} (",
                  '            interpolation = "vertex"', "        )"]
    lines += ['        uniform token subdivisionScheme = "none"', "    }", "",
              '    def Scope "Materials"', "    {", '        def Material "material0"', "        {",
              f"            token outputs:surface.connect = <{mat}/surface.outputs:surface>", "",
              '            def Shader "surface"', "            {",
              '                uniform token info:id = "UsdPreviewSurface"']
    if mesh.has_texture:
        lines.append(f"                color3f inputs:diffuseColor.connect = <{mat}/texture.outputs:rgb>")
        if mesh.has_alpha:
            lines.append(f"                float inputs:opacity.connect = <{mat}/texture.outputs:a>")
            if mesh.alpha_mode == "MASK":
                # the texture's alpha is 0 or 1 here (hard_alpha, in usdz_bytes): any threshold between cuts alike
                lines.append("                float inputs:opacityThreshold = 0.5")
    elif mesh.vertex_colors is not None:
        # the mean colour for renderers that do not read primvars (Quick Look shows no vertex colours)
        r, g, b = np.clip(mesh.vertex_colors, 0, 1).mean(0).tolist()
        lines += [f"                color3f inputs:diffuseColor = ({r:.7g}, {g:.7g}, {b:.7g})",
                  f"                color3f inputs:diffuseColor.connect = <{mat}/colors.outputs:result>"]
    else:
        r, g, b = np.clip(mesh.material_color, 0, 1).tolist()
        lines.append(f"                color3f inputs:diffuseColor = ({r:.7g}, {g:.7g}, {b:.7g})")
    lines += ["                float inputs:metallic = 0", f"                float inputs:roughness = {ROUGHNESS:.7g}",
              "                token outputs:surface", "            }"]
    if mesh.has_texture:
        lines += ["", '            def Shader "uv"', "            {",
                  '                uniform token info:id = "UsdPrimvarReader_float2"',
                  '                string inputs:varname = "st"', "                float2 outputs:result", "            }",
                  "", '            def Shader "texture"', "            {",
                  '                uniform token info:id = "UsdUVTexture"',
                  f"                asset inputs:file = @{texture_name}@",
                  '                token inputs:sourceColorSpace = "sRGB"',
                  f"                float2 inputs:st.connect = <{mat}/uv.outputs:result>",
                  '                token inputs:wrapS = "repeat"', '                token inputs:wrapT = "repeat"',
                  "                float4 inputs:fallback = (1, 1, 1, 1)",
                  "                float outputs:a", "                float3 outputs:rgb", "            }"]
    elif mesh.vertex_colors is not None:
        lines += ["", '            def Shader "colors"', "            {",
                  '                uniform token info:id = "UsdPrimvarReader_float3"',
                  '                string inputs:varname = "displayColor"', "                float3 outputs:result",
                  "            }"]
    lines += ["        }", "    }", "}", ""]
    return "\n".join(lines)


def _stored_aligned_zip(files: list[tuple[str, bytes]]) -> bytes:
    """A zip archive of `files` (name, data), in order, stored uncompressed, each file's data at a
    multiple of ALIGN bytes from the start."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # the same bytes on every platform
            header = 30 + len(name.encode())  # the local file header before the extra field
            pad = -(buf.tell() + header + 4) % ALIGN  # the extra field: 4 bytes of id and size, then padding
            info.extra = struct.pack("<HH", _PAD_ID, pad) + b"\0" * pad
            if len(data) >= 1 << 31:  # zipfile would add a zip64 field after the padding
                raise ValueError(f"{name}: {len(data)} bytes, too large for a USDZ package")
            zf.writestr(info, data)
    return buf.getvalue()


def usd_available() -> bool:
    """Whether usd-core is installed (USDZ layers are then binary), without importing it."""
    import importlib.util

    return importlib.util.find_spec("pxr") is not None


def _usdc_bytes(text: str) -> bytes | None:
    """The usda layer `text` in USD's binary form, or None when usd-core is not installed."""
    import os
    import tempfile

    try:
        from pxr import Sdf
    except ImportError:
        return None
    layer = Sdf.Layer.CreateAnonymous(".usda")
    if not layer.ImportFromString(text):
        raise ValueError("USD could not read the layer o3d wrote")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.usdc")
        if not layer.Export(path):
            raise ValueError("USD could not write the binary layer")
        with open(path, "rb") as f:
            return f.read()


def usdz_bytes(mesh: TriMesh, binary: bool | None = None, texture_format: str = "png",
               jpeg_quality: int = MeshConfig.jpeg_quality) -> bytes:
    """The mesh as a .usdz package: model.usdc (binary, `binary` True or None with usd-core
    installed) or model.usda (text), then texture.png (or texture.jpg, as
    `o3dcli.io.export.texture_file` says) when textured."""
    from o3dcli.io.export import texture_file

    image = None
    if mesh.has_texture:
        # a cut-out's alpha is made 0 or 255 at its cutoff: the same under opacityThreshold, and
        # under renderers that ignore it (Quick Look has)
        data, suffix, _ = texture_file(mesh.hard_alpha().texture, texture_format, jpeg_quality)
        image = ("texture" + suffix, data)
    text = usda_text(mesh, image[0] if image else "texture.png")
    usdc = _usdc_bytes(text) if binary in (None, True) else None
    if binary and usdc is None:
        raise ValueError("a binary USD layer needs usd-core: pip install 'o3dcli[usd]'")
    files = [("model.usdc", usdc) if usdc is not None else ("model.usda", text.encode())]
    return _stored_aligned_zip(files + ([image] if image else []))


def save_mesh_usdz(path, mesh: TriMesh, binary: bool | None = None, texture_format: str = "png",
                   jpeg_quality: int = MeshConfig.jpeg_quality) -> Path:
    """Write ``mesh`` to ``path`` as a .usdz (atomic; the arguments as in `usdz_bytes`). Returns the path."""
    path = Path(path)
    atomic_write_bytes(path, usdz_bytes(mesh, binary, texture_format, jpeg_quality))
    return path


# -- reading ------------------------------------------------------------------------------------

USD_SUFFIXES = (".usd", ".usda", ".usdc", ".usdz")


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
        raise ValueError("reading USD needs Pixar's USD library: pip install 'o3dcli[usd]'") from None
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
    texture, color, uv_name, style = _usd_material(prim, path)
    double = bool(geom.GetDoubleSidedAttr().Get(time))
    uv = _usd_primvar(geom, uv_name, len(points), len(indices), counts, 2) if texture is not None else None
    if texture is not None and uv is not None:
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
        from o3dcli.io.mesh import solid_alpha_part

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


def _usd_material(prim, path) -> tuple[np.ndarray | None, np.ndarray | None, str, dict]:
    """(texture [H, W, 3 or 4] uint8, colour [3], texture coordinate primvar, alpha style) of the
    UsdPreviewSurface bound to the prim (its preview binding, else the general one): a
    diffuseColor texture or a colour, or neither when there is no such material. Opacity: a
    texture's alpha (the "a" output of the diffuse texture connected to opacity) becomes the
    texture's fourth channel, a value below 1 the style's "alpha"; the style holds alpha_mode
    ("MASK" with opacityThreshold above 0, else "BLEND") and alpha_cutoff when the material is
    see-through, and is empty otherwise."""
    from pxr import UsdShade

    material = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial(UsdShade.Tokens.preview)[0]
    if not material:
        return None, None, "st", {}
    surface = material.ComputeSurfaceSource()
    shader = surface[0] if isinstance(surface, tuple) else surface
    if not shader or shader.GetIdAttr().Get() != "UsdPreviewSurface":
        return None, None, "st", {}
    style = _usd_opacity(shader)
    diffuse = shader.GetInput("diffuseColor")
    if not diffuse:
        return None, None, "st", style
    sources = diffuse.GetConnectedSources()[0]
    if sources:
        texture = UsdShade.Shader(sources[0].source.GetPrim())
        if texture.GetIdAttr().Get() != "UsdUVTexture" or not texture.GetInput("file"):
            return None, None, "st", style
        uv_name = "st"  # what the texture's coordinates come from: a primvar reader's varname
        st = texture.GetInput("st")
        readers = st.GetConnectedSources()[0] if st else []
        if readers:
            varname = UsdShade.Shader(readers[0].source.GetPrim()).GetInput("varname")
            uv_name = str(varname.Get()) if varname and varname.Get() else uv_name
        asset = texture.GetInput("file").Get()
        with_alpha = style.pop("texture", None) == texture.GetPrim().GetPath()
        image = _read_usd_asset(asset.resolvedPath, with_alpha) if asset and asset.resolvedPath else None
        if image is None:
            _log.warning("%s: the texture %s of %s cannot be read; the mesh is loaded white", path,
                         asset.path if asset else "(none)", prim.GetPath())
        elif with_alpha and image.shape[2] == 3:
            style = {}  # an opaque image: nothing to see through
        return image, None, uv_name, style
    style.pop("texture", None)  # an alpha texture beside a plain colour: not read
    value = diffuse.Get()
    return None, (np.asarray(value, np.float64) if value is not None else None), "st", style


def _usd_opacity(shader) -> dict:
    """The see-through part of a UsdPreviewSurface: {"texture": the path of the UsdUVTexture whose
    alpha is the opacity} or {"alpha": a value below 1}, with alpha_mode and alpha_cutoff; {} when opaque."""
    from pxr import UsdShade

    opacity = shader.GetInput("opacity")
    if not opacity:
        return {}
    threshold = shader.GetInput("opacityThreshold")
    cutoff = float(threshold.Get()) if threshold and threshold.Get() is not None else 0.0
    mode = {"alpha_mode": "MASK", "alpha_cutoff": cutoff} if cutoff > 0 else {"alpha_mode": "BLEND"}
    sources = opacity.GetConnectedSources()[0]
    if sources:
        source = UsdShade.Shader(sources[0].source.GetPrim())
        if source.GetIdAttr().Get() == "UsdUVTexture" and str(sources[0].sourceName) == "a":
            return {"texture": source.GetPrim().GetPath(), **mode}
        return {}
    value = opacity.Get()
    return {"alpha": float(np.clip(value, 0, 1)), **mode} if value is not None and value < 1 else {}


def _read_usd_asset(resolved: str, with_alpha: bool = False) -> np.ndarray | None:
    """An image USD resolved (a file, or a file inside a .usdz, nested ones too) as RGB uint8 (with
    ``with_alpha``: RGBA when the image has alpha), or None."""
    from PIL import Image
    from pxr import Ar

    try:
        asset = Ar.GetResolver().OpenAsset(Ar.ResolvedPath(resolved))
        data = bytes(asset.GetBuffer()) if asset else None
        if data is None:
            return None
        image = Image.open(io.BytesIO(data))
        alpha = with_alpha and (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info)
        return np.asarray(image.convert("RGBA" if alpha else "RGB"))
    except Exception:  # noqa: BLE001 - anything unreadable is reported by the caller
        return None
