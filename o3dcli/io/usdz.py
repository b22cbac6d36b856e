"""USDZ export (Apple Quick Look / AR, Reality Composer, USD tools): one package holding a USD
layer and the texture. Reading USD files is in `o3dcli.io.usd_read`.

o3d writes the layer as ASCII USD (usda) itself, so no USD library is needed. Where Pixar's
USD is installed (the `usd` extra: `pip install "o3dcli[usd]"`), the layer is converted to
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

import hashlib
import io
import struct
import zipfile
from pathlib import Path

import numpy as np

from o3dcli.atomic import atomic_write_bytes
from o3dcli.geometry.mesh import TriMesh
from o3dcli.mesh.config import MeshConfig

ALIGN = 64
_PAD_ID = 0x1986  # an unregistered extra-field id, used for padding only


def _floats(rows: np.ndarray) -> str:
    """USD array text of tuples: [(a, b, c), ...]."""
    return "[" + ", ".join("(" + ", ".join(f"{v:.9g}" for v in row) + ")" for row in rows.tolist()) + "]"  # float32 exact


def _ints(values: np.ndarray) -> str:
    return "[" + ", ".join(str(v) for v in values.tolist()) + "]"


def usda_text(mesh: TriMesh, texture_name: str = "texture.png",
              crease_angle_deg: float = MeshConfig.crease_angle_deg, name: str = "model") -> str:
    """The USD layer (usda) of the mesh; `texture_name` is the texture's path inside the package.
    Normals as the GLB's: smooth across edges flatter than ``crease_angle_deg``, the vertices
    split along the sharper ones (`o3dcli.io.normals.split_at_creases`). The default prim and the
    material are called `o3dcli.io.export.usd_identifier` (``name``): /NAME/mesh and
    /NAME/Materials/NAME."""
    from o3dcli.io.export import ROUGHNESS, check_exportable, usd_identifier
    from o3dcli.io.normals import split_at_creases

    check_exportable(mesh)
    mesh, normals, _ = split_at_creases(mesh, crease_angle_deg)
    v = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces)
    per_vertex = {k: getattr(mesh, k) for k in ("uv", "vertex_colors") if getattr(mesh, k) is not None}
    if mesh.double_sided:
        # Quick Look draws one side whatever doubleSided says: the back faces are written out,
        # on their own vertices with the normals turned round
        faces = np.concatenate([faces, faces[:, ::-1] + len(v)])
        v, normals = np.concatenate([v, v]), np.concatenate([normals, -normals])
        per_vertex = {k: np.concatenate([a, a]) for k, a in per_vertex.items()}
    lo, hi = v.min(0), v.max(0)
    prim = usd_identifier(name)
    mat = f"/{prim}/Materials/{prim}"
    lines = [
        "#usda 1.0",
        "(",
        f'    defaultPrim = "{prim}"',
        "    metersPerUnit = 1",
        '    upAxis = "Y"',
        '    doc = "written by o3d"',
        ")",
        "",
        f'def Xform "{prim}" (',
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
              '    def Scope "Materials"', "    {", f'        def Material "{prim}"', "        {",
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
               jpeg_quality: int = MeshConfig.jpeg_quality,
               crease_angle_deg: float = MeshConfig.crease_angle_deg, name: str = "model") -> bytes:
    """The mesh as a .usdz package: model.usdc (binary, `binary` True or None with usd-core
    installed) or model.usda (text), then texture_<first 12 hex digits of its SHA-256>.png (or .jpg,
    as `o3dcli.io.export.texture_file` says) when textured; prims named as `usda_text` says."""
    from o3dcli.io.export import texture_file

    image = None
    if mesh.has_texture:
        # a cut-out's alpha is made 0 or 255 at its cutoff: the same under opacityThreshold, and
        # under renderers that ignore it (Quick Look has)
        data, suffix, _ = texture_file(mesh.hard_alpha().texture, texture_format, jpeg_quality)
        # named by its bytes: Blender unpacks every package's texture into one folder and reuses an
        # image it has loaded under the same name, so a fixed name gave each asset the first one's
        image = (f"texture_{hashlib.sha256(data).hexdigest()[:12]}{suffix}", data)
    text = usda_text(mesh, image[0] if image else "texture.png", crease_angle_deg, name)
    usdc = _usdc_bytes(text) if binary in (None, True) else None
    if binary and usdc is None:
        raise ValueError("a binary USD layer needs usd-core: pip install \"o3dcli[usd]\"")
    files = [("model.usdc", usdc) if usdc is not None else ("model.usda", text.encode())]
    return _stored_aligned_zip(files + ([image] if image else []))


def save_mesh_usdz(path, mesh: TriMesh, binary: bool | None = None, texture_format: str = "png",
                   jpeg_quality: int = MeshConfig.jpeg_quality,
                   crease_angle_deg: float = MeshConfig.crease_angle_deg, name: str = "model") -> Path:
    """Write ``mesh`` to ``path`` as a .usdz (atomic; the arguments as in `usdz_bytes`). Returns the path."""
    path = Path(path)
    atomic_write_bytes(path, usdz_bytes(mesh, binary, texture_format, jpeg_quality, crease_angle_deg, name))
    return path
