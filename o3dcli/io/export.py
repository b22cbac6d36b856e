"""Mesh export: GLB (glTF 2.0 binary, PBR metallic-roughness), OBJ + MTL + PNG, and STL (shape only,
for 3D printing); USDZ is in `o3dcli.io.usdz`.

Our world frame is glTF's (+Y up, objects facing +Z; docs/design.md section 2), so
vertices are written as they are. UVs have their origin at the texture's
bottom-left like OBJ's; glTF's is top-left, and trimesh's glTF writer flips v
(tests check the file itself). open3d's GLB writer is not used: its files fail
the Khronos validator. The OBJ writer is hand-written because it is a few lines
and keeps the three file names and their atomic writes under our control.
Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from o3dcli.atomic import atomic_write_bytes
from o3dcli.geometry.mesh import TriMesh
from o3dcli.mesh.config import DEFAULT_FORMATS, MESH_FORMATS, MeshConfig

ROUGHNESS = 1.0
"""Baked colour already holds the lighting the Gaussians saw: export it as fully rough, non-metal."""


def object_name(name: str | None) -> str:
    """The name an exported file gives its object and material (an asset's folder name): one
    word, as OBJ/MTL statements need it; runs of anything but letters, digits, "-", "." and "_"
    become one "_"; "model" when nothing is left. USD's prim names are stricter
    (`usd_identifier`)."""
    import re

    word = re.sub(r"[^\w.-]+", "_", str(name or "")).strip("_")
    return word or "model"


def usd_identifier(name: str | None) -> str:
    """`object_name` as a USD prim name: ASCII letters, digits and "_" only, not starting with a
    digit; "model" when nothing is left."""
    import re

    word = re.sub(r"[^A-Za-z0-9_]+", "_", object_name(name)).strip("_")
    return ("_" + word if word[:1].isdigit() else word) or "model"


def _png_bytes(texture: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(texture)).save(buf, format="PNG")  # RGB, or RGBA with alpha
    return buf.getvalue()


def texture_file(texture: np.ndarray, texture_format: str = "png",
                 jpeg_quality: int = MeshConfig.jpeg_quality) -> tuple[bytes, str, str]:
    """(bytes, file suffix, MIME type) of a texture image: JPEG when asked for and the texture has no
    alpha channel (JPEG cannot hold one), else PNG."""
    if texture_format not in ("png", "jpeg"):
        raise ValueError(f"unknown texture format {texture_format!r}: png or jpeg")
    if texture_format == "png" or texture.shape[2] == 4:
        return _png_bytes(texture), ".png", "image/png"
    from PIL import Image

    buf = io.BytesIO()
    # 4:4:4 (no chroma subsampling): UV charts are small and their colours change at every seam
    Image.fromarray(np.ascontiguousarray(texture)).save(buf, format="JPEG", quality=int(jpeg_quality), subsampling=0)
    return buf.getvalue(), ".jpg", "image/jpeg"


def check_exportable(mesh: TriMesh) -> None:
    """Raise ValueError for a mesh no file should hold: no faces, or non-finite numbers."""
    if len(mesh.faces) == 0:
        raise ValueError("cannot export a mesh with no faces")
    for name in ("vertices", "uv", "vertex_colors"):
        values = getattr(mesh, name)
        if values is not None and not np.isfinite(values).all():
            raise ValueError(f"cannot export a mesh whose {name.replace('_', ' ')} are not all finite")


def glb_bytes(mesh: TriMesh, texture_format: str = "png", jpeg_quality: int = MeshConfig.jpeg_quality,
              draco: bool = False, crease_angle_deg: float = MeshConfig.crease_angle_deg,
              name: str = "model") -> bytes:
    """The mesh as a GLB: base colour from the texture (with UVs; its alpha with the mesh's
    alphaMode; PNG, or JPEG as `texture_file` says), else vertex colours (COLOR_0, with a plain
    material), else the material colour; metallic 0, roughness 1; normals smooth across edges
    flatter than ``crease_angle_deg``, vertices split along the sharper ones
    (`o3dcli.io.normals.split_at_creases`); doubleSided as the mesh. ``draco``: the geometry
    Draco-compressed (`_glb_with_draco`). Its node, mesh, material and image are called
    `object_name` (``name``): what an importer names the object and material by."""
    import trimesh
    from PIL import Image

    from o3dcli.io.normals import split_at_creases

    check_exportable(mesh)
    mesh, normals, _ = split_at_creases(mesh, crease_angle_deg)
    style, plain = {"doubleSided": mesh.double_sided}, None
    if mesh.has_alpha:
        style["alphaMode"] = mesh.alpha_mode
        if mesh.alpha_mode == "MASK":
            style["alphaCutoff"] = mesh.alpha_cutoff
    image = None  # the texture's own encoding, when not trimesh's PNG
    if mesh.has_texture and texture_format != "png":
        data, _, mime = texture_file(mesh.texture, texture_format, jpeg_quality)
        image = (data, mime) if mime != "image/png" else None
    if mesh.has_texture:
        # trimesh writes a PNG (it re-encodes even a JPEG, at its own quality): when the texture goes
        # in as a JPEG, trimesh gets a 1-pixel stand-in and the JPEG replaces it after
        picture = Image.new("RGB", (1, 1)) if image else Image.fromarray(mesh.texture)
        material = trimesh.visual.material.PBRMaterial(
            baseColorTexture=picture, metallicFactor=0.0,
            roughnessFactor=ROUGHNESS, **style,
        )
        visual = trimesh.visual.TextureVisuals(uv=mesh.uv, material=material)
    elif mesh.vertex_colors is not None:
        rgba = np.concatenate([mesh.vertex_colors, np.ones((len(mesh.vertices), 1), np.float32)], 1)
        visual = trimesh.visual.ColorVisuals(vertex_colors=(np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8))
        # trimesh writes COLOR_0 with no material, and glTF's default material is metallic and
        # single-sided: the primitive gets the same non-metal, fully rough material as the others
        plain = {"doubleSided": bool(mesh.double_sided),
                 "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": ROUGHNESS}}
    else:
        color = np.append(np.clip(mesh.material_color, 0, 1), 1.0)
        material = trimesh.visual.material.PBRMaterial(
            baseColorFactor=(color * 255 + 0.5).astype(np.uint8), metallicFactor=0.0,
            roughnessFactor=ROUGHNESS, doubleSided=mesh.double_sided,
        )
        visual = trimesh.visual.TextureVisuals(material=material)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=normals, visual=visual, process=False)
    glb = trimesh.Scene(tm).export(file_type="glb", include_normals=True)
    if plain is not None:
        glb = _glb_with_material(glb, plain)
    if image is not None:
        glb = _glb_with_image(glb, 0, *image)
    return _glb_finished(_glb_with_draco(glb) if draco else glb, object_name(name))


ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


def _glb_finished(glb: bytes, name: str) -> bytes:
    """``glb`` with o3d named as its generator (trimesh, which wrote it, named itself), its
    nodes, meshes, materials and images called ``name`` (trimesh calls them "geometry_0", which
    every asset shared once imported side by side), and each buffer view of vertex data or
    indices saying so (`target`: what the glTF validator hints at when it is missing, and what
    lets a loader upload the view as it is)."""
    from o3dcli import __version__

    doc, binary = _glb_chunks(glb)
    doc.setdefault("asset", {"version": "2.0"})["generator"] = f"o3d {__version__}"
    for kind in ("nodes", "meshes", "materials", "images"):
        for entry in doc.get(kind, []):
            entry["name"] = name
    kinds: dict[int, set[int]] = {}
    for m in doc.get("meshes", []):
        for prim in m.get("primitives", []):
            used = [(i, ARRAY_BUFFER) for i in prim.get("attributes", {}).values()]
            if "indices" in prim:
                used.append((prim["indices"], ELEMENT_ARRAY_BUFFER))
            for accessor, target in used:
                view = doc["accessors"][accessor].get("bufferView")  # none: Draco holds the data
                if view is not None:
                    kinds.setdefault(view, set()).add(target)
    for view, targets in kinds.items():
        if len(targets) == 1:  # a view holding both kinds (not written so) is left without one
            doc["bufferViews"][view]["target"] = targets.pop()
    return _glb_pack(doc, binary)


DRACO_BITS = {"POSITION": 14, "NORMAL": 10, "TEXCOORD_0": 12}
"""Quantisation bits of the Draco-compressed attributes (positions to 1/16,384 of the object's
size; texture coordinates to 1/4,096 of their range, a quarter texel of a 1,024 px texture for
o3d's [0, 1] UVs)."""
_DRACO_TYPES = {"POSITION": 0, "NORMAL": 1, "COLOR_0": 2, "TEXCOORD_0": 3}  # Draco's GeometryAttribute::Type
_GLTF_COMPONENTS = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_GLTF_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _accessor_data(doc: dict, binary: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype, width = np.dtype(_GLTF_COMPONENTS[acc["componentType"]]), _GLTF_WIDTH[acc["type"]]
    if view.get("byteStride", dtype.itemsize * width) != dtype.itemsize * width:
        raise ValueError("interleaved buffer views are not supported")
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.frombuffer(binary, dtype, acc["count"] * width, start).reshape(acc["count"], width)


def _glb_with_draco(glb: bytes) -> bytes:
    """``glb`` (one mesh, one triangle primitive) with its geometry compressed by Draco
    (KHR_draco_mesh_compression, required by the file): the same accessors, now without buffer
    views, decoded from one Draco buffer view. Needs DracoPy."""
    try:
        import DracoPy
    except ImportError:
        raise ValueError("Draco compression needs DracoPy: pip install \"o3dcli[draco]\"") from None
    doc, binary = _glb_chunks(glb)
    (prim,) = [p for m in doc["meshes"] for p in m["primitives"]]
    names = [n for n in prim["attributes"] if n in _DRACO_TYPES]
    if sorted(names) != sorted(prim["attributes"]) or prim.get("mode", 4) != 4:
        raise ValueError(f"cannot Draco-compress attributes {sorted(prim['attributes'])}")
    data = {n: _accessor_data(doc, binary, prim["attributes"][n]) for n in names}
    faces = _accessor_data(doc, binary, prim["indices"]).reshape(-1, 3).astype(np.uint32)
    blob = DracoPy.encode(
        data["POSITION"].astype(np.float32), faces, quantization_bits=DRACO_BITS["POSITION"], compression_level=7,
        preserve_order=True,
        tex_coord=data["TEXCOORD_0"].astype(np.float64) if "TEXCOORD_0" in data else None,
        tex_coord_quantization_bits=DRACO_BITS["TEXCOORD_0"] if "TEXCOORD_0" in data else None,
        normals=data["NORMAL"].astype(np.float64) if "NORMAL" in data else None,
        normal_quantization_bits=DRACO_BITS["NORMAL"] if "NORMAL" in data else None,
        colors=data.get("COLOR_0"),
    )
    decoded = {a["attribute_type"]: a for a in DracoPy.decode(blob).attributes}
    ids = {kind: a["unique_id"] for kind, a in decoded.items()}  # as this encoder numbered them
    for name in names:  # bounds, where given, are those of the quantised values readers decode
        accessor, values = doc["accessors"][prim["attributes"][name]], np.asarray(decoded[_DRACO_TYPES[name]]["data"])
        if "min" in accessor or name == "POSITION":
            accessor["min"], accessor["max"] = values.min(0).tolist(), values.max(0).tolist()
    dropped = {doc["accessors"][i]["bufferView"] for i in [prim["indices"], *prim["attributes"].values()]}
    for i in [prim["indices"], *prim["attributes"].values()]:
        doc["accessors"][i].pop("bufferView")
        doc["accessors"][i].pop("byteOffset", None)
    # the buffer views left (images) laid out again, then the Draco data
    kept = [i for i in range(len(doc["bufferViews"])) if i not in dropped]
    renumber = {old: new for new, old in enumerate(kept)}
    chunks = [binary[v.get("byteOffset", 0):v.get("byteOffset", 0) + v["byteLength"]]
              for v in (doc["bufferViews"][i] for i in kept)] + [blob]
    views = [{} for _ in chunks]
    binary = _lay_out(doc, views, chunks)
    for image in doc.get("images", []):
        image["bufferView"] = renumber[image["bufferView"]]
    prim.setdefault("extensions", {})["KHR_draco_mesh_compression"] = ({
        "bufferView": len(views) - 1, "attributes": {n: ids[_DRACO_TYPES[n]] for n in names}})
    for key in ("extensionsUsed", "extensionsRequired"):
        doc[key] = sorted(set(doc.get(key, [])) | {"KHR_draco_mesh_compression"})
    return _glb_pack(doc, binary)


def _glb_chunks(glb: bytes) -> tuple[dict, bytes]:
    """The JSON document and the binary chunk (b"" if none) of a GLB."""
    import json
    import struct

    if glb[:4] != b"glTF" or glb[16:20] != b"JSON":
        raise ValueError("not a GLB with a JSON chunk first")
    n = struct.unpack("<I", glb[12:16])[0]
    rest = glb[20 + n:]
    binary = rest[8:8 + struct.unpack("<I", rest[:4])[0]] if rest[4:8] == b"BIN\x00" else b""
    return json.loads(glb[20:20 + n]), binary


def _glb_pack(doc: dict, binary: bytes) -> bytes:
    """A GLB of the JSON document and the binary chunk (chunks 4-byte aligned: JSON pads with
    spaces, BIN with zeros)."""
    import json
    import struct

    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<I", len(text)) + b"JSON" + text
    if binary:
        binary += b"\x00" * (-len(binary) % 4)
        body += struct.pack("<I", len(binary)) + b"BIN\x00" + binary
    return b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body


def _glb_with_material(glb: bytes, material: dict) -> bytes:
    """``glb`` with ``material`` added and given to every primitive that has none."""
    doc, binary = _glb_chunks(glb)
    materials = doc.setdefault("materials", [])
    materials.append(material)
    for m in doc.get("meshes", []):
        for prim in m.get("primitives", []):
            prim.setdefault("material", len(materials) - 1)
    return _glb_pack(doc, binary)


def _glb_with_image(glb: bytes, index: int, data: bytes, mime: str) -> bytes:
    """``glb`` with image ``index`` (stored in the binary chunk) replaced by ``data`` of type
    ``mime``; the buffer views are laid out again, each 4-byte aligned."""
    doc, binary = _glb_chunks(glb)
    views, image = doc["bufferViews"], doc["images"][index]
    if len(doc.get("buffers", [])) != 1 or any(v.get("buffer", 0) != 0 for v in views):
        raise ValueError("expected a GLB with one buffer")
    chunks = [data if i == image["bufferView"] else binary[v.get("byteOffset", 0):v.get("byteOffset", 0) + v["byteLength"]]
              for i, v in enumerate(views)]
    image["mimeType"] = mime
    return _glb_pack(doc, _lay_out(doc, views, chunks))


def _lay_out(doc: dict, views: list[dict], chunks: list[bytes]) -> bytes:
    """The GLB's one binary buffer holding ``chunks`` in order, each at a 4-byte boundary (accessors
    need their view's start aligned to their component size) and recorded in its view; ``views``
    become the document's buffer views."""
    parts, offset = [], 0
    for view, chunk in zip(views, chunks):
        pad = -offset % 4
        parts += [b"\x00" * pad, chunk]
        offset += pad
        view.update(buffer=0, byteOffset=offset, byteLength=len(chunk))
        offset += len(chunk)
    doc["bufferViews"] = views
    doc["buffers"] = [{"byteLength": offset}]
    return b"".join(parts)


def save_mesh_glb(path, mesh: TriMesh, texture_format: str = "png",
                  jpeg_quality: int = MeshConfig.jpeg_quality, draco: bool = False,
                  crease_angle_deg: float = MeshConfig.crease_angle_deg, name: str = "model") -> Path:
    """Write ``mesh`` to ``path`` as a GLB (atomic; the texture, compression, normals and names as
    `glb_bytes` says). Returns the path."""
    path = Path(path)
    atomic_write_bytes(path, glb_bytes(mesh, texture_format, jpeg_quality, draco, crease_angle_deg, name))
    return path


def save_mesh_obj(path, mesh: TriMesh, texture_format: str = "png",
                  jpeg_quality: int = MeshConfig.jpeg_quality,
                  crease_angle_deg: float = MeshConfig.crease_angle_deg, name: str = "model") -> Path:
    """Write ``mesh`` as ``path`` (.obj) with ``<stem>.mtl`` and, when textured, its texture (see
    `write_obj_files`). Returns the .obj's path."""
    return write_obj_files(path, mesh, texture_format, jpeg_quality, crease_angle_deg, name)[0]


def write_obj_files(path, mesh: TriMesh, texture_format: str = "png",
                    jpeg_quality: int = MeshConfig.jpeg_quality,
                    crease_angle_deg: float = MeshConfig.crease_angle_deg, name: str = "model") -> list[Path]:
    """Write ``mesh`` as ``path`` (.obj) with ``<stem>.mtl`` and, when textured, ``<stem>.png`` (or
    ``.jpg``, as `texture_file` says) beside it (each atomic; the texture and material first, so a
    finished .obj never points at nothing). Returns [obj, mtl(, texture)].
    Normals (vn) are the GLB's (`glb_bytes`, ``crease_angle_deg``): one per vertex and smoothing
    group, so the vertices themselves are not split.
    Untextured meshes keep vertex colours as 'v x y z r g b' and the material colour as Kd.
    Texture alpha goes in the PNG and is named by ``map_d``; a cut-out's (MASK) alpha is written
    as 0 or 255 at its cutoff, which MTL has no field for. The object (``o``) and its material
    are called `object_name` (``name``)."""
    from o3dcli.io.normals import split_at_creases

    path = Path(path)
    check_exportable(mesh)
    split, normals, _ = split_at_creases(mesh, crease_angle_deg)
    stem = path.stem
    kd = " ".join(f"{c:.6f}" for c in (np.ones(3) if mesh.has_texture else mesh.material_color))
    name = object_name(name)
    mtl = [f"newmtl {name}", f"Kd {kd}", "Ka 0 0 0", "Ks 0 0 0", "d 1", "illum 1"]
    if mesh.has_texture:
        # MTL cannot hold a cut-out's cutoff: it is applied to the PNG's alpha
        data, suffix, _ = texture_file(mesh.hard_alpha().texture, texture_format, jpeg_quality)
        image = path.with_suffix(suffix)
        atomic_write_bytes(image, data)
        mtl.append(f"map_Kd {image.name}")
        if mesh.has_alpha:  # the alpha channel of the same image (-imfchan m: its matte channel)
            mtl.append(f"map_d -imfchan m {image.name}")
    atomic_write_bytes(path.with_suffix(".mtl"), ("\n".join(mtl) + "\n").encode())
    lines = ["# written by o3d", f"mtllib {stem}.mtl", f"o {name}"]
    # positions to 9 significant digits, which give a float32 back exactly (6 decimals cut a small
    # part, stored in metres, to micrometre steps)
    if mesh.vertex_colors is not None and not mesh.has_texture:
        rows = np.concatenate([mesh.vertices, np.clip(mesh.vertex_colors, 0, 1)], 1)
        lines += [f"v {a:.9g} {b:.9g} {c:.9g} {r:.4f} {g:.4f} {bl:.4f}" for a, b, c, r, g, bl in rows.tolist()]
    else:
        lines += [f"v {a:.9g} {b:.9g} {c:.9g}" for a, b, c in mesh.vertices.tolist()]
    lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in normals.tolist()]
    f1 = np.concatenate([mesh.faces + 1, split.faces + 1], 1)  # [F, 6]: v of each corner, then vn
    if mesh.has_texture:
        lines += [f"vt {u:.6f} {v:.6f}" for u, v in mesh.uv.tolist()]
        lines.append(f"usemtl {name}")
        lines += [f"f {a}/{a}/{na} {b}/{b}/{nb} {c}/{c}/{nc}" for a, b, c, na, nb, nc in f1.tolist()]
    else:
        lines.append(f"usemtl {name}")
        lines += [f"f {a}//{na} {b}//{nb} {c}//{nc}" for a, b, c, na, nb, nc in f1.tolist()]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return [path, path.with_suffix(".mtl")] + ([image] if mesh.has_texture else [])


STL_HEADER = b"binary STL written by o3d: millimetres, +Z up".ljust(80, b" ")
"""80 bytes; a binary STL must not start with "solid", which marks the text form."""
STL_FACET = np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])  # 50 bytes, packed


def stl_vertices(mesh: TriMesh, size_mm: float = MeshConfig.stl_size_mm) -> np.ndarray:
    """[V, 3] float32: the mesh as printed, turned from our +Y up to +Z up (x, y, z) -> (x, -z, y)
    (what faced the camera, +Z, faces -Y: the front view of Z-up tools), scaled so its longest
    side is ``size_mm``, centred on the origin in x and y and standing on z = 0; ``size_mm`` 0:
    as it is, metres written as millimetres."""
    check_exportable(mesh)
    v = mesh.vertices.astype(np.float64)
    v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)
    if size_mm == 0:
        return (v * 1000.0).astype(np.float32)
    used = v[np.unique(mesh.faces)]  # vertices no face uses do not count towards the size
    lo, hi = used.min(0), used.max(0)
    extent = float((hi - lo).max())
    if not extent > 0:
        raise ValueError("cannot scale a mesh with no extent to a print size")
    v = (v - [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]]) * (size_mm / extent)
    return v.astype(np.float32)


def stl_bytes(mesh: TriMesh, size_mm: float = MeshConfig.stl_size_mm) -> bytes:
    """The mesh's shape as a binary STL in millimetres (see `stl_vertices`): facet normals from
    the counter-clockwise winding; no colour (STL has no standard field for it)."""
    tri = stl_vertices(mesh, size_mm)[mesh.faces].astype(np.float64)  # [F, 3, 3]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, length, out=np.zeros_like(n), where=length > 0)  # degenerate facets: a zero normal
    facets = np.zeros(len(tri), STL_FACET)
    facets["normal"], facets["v"] = n, tri
    return STL_HEADER + np.uint32(len(tri)).astype("<u4").tobytes() + facets.tobytes()


def open_edges(mesh: TriMesh) -> tuple[int, int]:
    """(edges of one face, edges of more than two faces) of the surface, vertices joined by
    position (UV seams do not count): (0, 0) for a watertight, manifold mesh."""
    from o3dcli.mesh.cleanup import weld_vertices

    faces = weld_vertices(mesh)[0].faces
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    uses = np.unique(edges, axis=0, return_counts=True)[1]
    return int((uses == 1).sum()), int((uses > 2).sum())


def save_mesh_stl(path, mesh: TriMesh, size_mm: float = MeshConfig.stl_size_mm) -> Path:
    """Write ``mesh`` to ``path`` as a binary STL (atomic; see `stl_bytes`), with a warning when the
    surface is not watertight (slicers then have to guess what is inside). Returns the path."""
    path = Path(path)
    atomic_write_bytes(path, stl_bytes(mesh, size_mm))
    holes, pinched = open_edges(mesh)
    if holes or pinched:
        import logging

        logging.getLogger("o3d").warning(
            "%s: not watertight (%d open edges, %d edges shared by more than two faces): a slicer may have "
            "to repair it before printing", path, holes, pinched)
    return path


def export_mesh(mesh: TriMesh, out_dir, stem: str = "model", formats=DEFAULT_FORMATS,
                stl_size_mm: float = MeshConfig.stl_size_mm, texture_format: str = "png",
                jpeg_quality: int = MeshConfig.jpeg_quality, draco: bool = False,
                crease_angle_deg: float = MeshConfig.crease_angle_deg, name: str | None = None) -> list[Path]:
    """Write ``mesh`` into ``out_dir`` in each of ``formats`` ("glb", "obj", "usdz", "stl"). Returns
    the files written (model.glb; model.obj, model.mtl and, when textured, model.png or model.jpg;
    model.usdz; model.stl, ``stl_size_mm`` long). Textures are PNG, or JPEG (``texture_format``
    "jpeg") where they have no alpha; ``draco`` compresses the GLB's geometry; glb, obj and usdz
    get the same normals, smooth across edges flatter than ``crease_angle_deg`` (stl: facet normals).
    glb, obj and usdz call their object and material ``name`` (`object_name`; None: the folder's
    name), so that assets imported side by side keep theirs apart."""
    out_dir = Path(out_dir)
    name = object_name(out_dir.name if name is None else name)
    unknown = [f for f in formats if f not in MESH_FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown mesh format(s) {unknown or list(formats)}: choose from {', '.join(MESH_FORMATS)}")
    written = []
    image = dict(texture_format=texture_format, jpeg_quality=jpeg_quality, crease_angle_deg=crease_angle_deg, name=name)
    if "glb" in formats:
        written.append(save_mesh_glb(out_dir / f"{stem}.glb", mesh, **image, draco=draco))
    if "obj" in formats:
        written += write_obj_files(out_dir / f"{stem}.obj", mesh, **image)
    if "usdz" in formats:
        from o3dcli.io.usdz import save_mesh_usdz

        written.append(save_mesh_usdz(out_dir / f"{stem}.usdz", mesh, **image))
    if "stl" in formats:
        written.append(save_mesh_stl(out_dir / f"{stem}.stl", mesh, stl_size_mm))
    return written
