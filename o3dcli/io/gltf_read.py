"""The GLB/glTF, PLY and text-STL reader behind `o3dcli.io.mesh.load_mesh`: trimesh reads the scene, each
node's mesh becomes a part with its colour source (texture, vertex or face colours, material
colour, alpha), and the parts are merged into one mesh. Before that, a GLB's header and a glTF
file's extensions are checked, so a cut-off file or data o3d cannot decode is named as such.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np

from o3dcli.geometry.mesh import TriMesh
from o3dcli.io.mesh_common import MeshLoadError, eight_bit, note_texture_format, solid_alpha_part
from o3dcli.io.mesh_merge import merge_parts

_log = logging.getLogger("o3d")


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


def _check_gltf_extensions(path: Path, doc: dict, missing: dict[int, Path]) -> tuple[set[str], dict[str, np.ndarray]]:
    """Refuse glTF files (`doc`: their JSON) whose geometry o3d cannot decode; warn about what it
    reads only in part, and about the `missing` image files. Returns the extensions the file uses
    and its texture transforms by material name."""
    used, required = _extension_sets(doc)
    used |= required
    transforms = gltf_texture_transforms(doc) if "KHR_texture_transform" in used else {}
    if transforms is None:  # cannot be applied: warned about below
        transforms = {}
    else:
        used = used - {"KHR_texture_transform"}
    if "KHR_draco_mesh_compression" in used and not _has_dracopy():
        raise MeshLoadError(f"{path}: the mesh is Draco-compressed (KHR_draco_mesh_compression); install DracoPy to "
                            "read it (pip install \"o3dcli[draco]\") or export it without compression")
    bad = sorted(e for e in used if e in GLTF_UNREADABLE)
    if bad:
        what = ", ".join(f"{e} ({GLTF_UNREADABLE[e]})" for e in bad)
        raise MeshLoadError(f"{path}: uses {what}, which o3d cannot decode; export it without compression or "
                            "quantization")
    for e in sorted(used & GLTF_APPROXIMATED.keys()):
        _log.warning("%s: uses %s: %s", path, e, GLTF_APPROXIMATED[e])
    dropped = _dropped_material_parts(doc)
    if dropped:
        _log.warning("%s: o3d carries over the base colour (and its alpha) only: %s %s not kept", path,
                     ", ".join(dropped), "is" if len(dropped) == 1 else "are")
    for gone in missing.values():
        _log.warning("%s: texture %s not found; its material is loaded without it", path, gone)
    return used, transforms


def _dropped_material_parts(doc: dict) -> list[str]:
    """What the glTF's materials have beyond a base colour, which o3d's meshes (base colour,
    metallic 0, roughness 1) do not keep: maps, emission, a metallic or smooth surface."""
    found: set[str] = set()
    materials = doc.get("materials") if isinstance(doc.get("materials"), list) else []
    for m in (m for m in materials if isinstance(m, dict)):
        pbr = m.get("pbrMetallicRoughness") if isinstance(m.get("pbrMetallicRoughness"), dict) else {}
        for key, what in (("normalTexture", "normal maps"), ("occlusionTexture", "occlusion maps"),
                          ("emissiveTexture", "emissive maps")):
            if key in m:
                found.add(what)
        if "metallicRoughnessTexture" in pbr:
            found.add("metallic-roughness maps")
        emissive = m.get("emissiveFactor")
        if isinstance(emissive, list) and any(isinstance(c, (int, float)) and c > 0 for c in emissive):
            found.add("emission")
        metallic, rough = pbr.get("metallicFactor"), pbr.get("roughnessFactor")
        if isinstance(metallic, (int, float)) and metallic > 0:
            found.add(f"metallic {metallic:g}")
        if isinstance(rough, (int, float)) and rough < 1:
            found.add(f"roughness {rough:g}")
        extensions = m.get("extensions") if isinstance(m.get("extensions"), dict) else {}
        for name in extensions:  # unlit scans come out shaded, glass opaque: say so
            found.add(MATERIAL_EXTENSIONS.get(name, name))
    textures = doc.get("textures") if isinstance(doc.get("textures"), list) else []
    samplers = doc.get("samplers") if isinstance(doc.get("samplers"), list) else []
    colour = set()  # the base colour textures: o3d keeps those (and drops the others, said above)
    for m in (m for m in materials if isinstance(m, dict)):
        pbr = m.get("pbrMetallicRoughness") if isinstance(m.get("pbrMetallicRoughness"), dict) else {}
        info = pbr.get("baseColorTexture")
        if isinstance(info, dict) and isinstance(info.get("index"), int):
            colour.add(info["index"])
    for t in (textures[i] for i in sorted(colour) if 0 <= i < len(textures) and isinstance(textures[i], dict)):
        sampler = t.get("sampler")
        sampler = samplers[sampler] if isinstance(sampler, int) and 0 <= sampler < len(samplers) else {}
        if not isinstance(sampler, dict):
            continue
        if any(sampler.get(k, REPEAT) != REPEAT for k in ("wrapS", "wrapT")):
            found.add("texture wrap modes (mirrored or clamped; o3d's textures repeat)")
        if sampler.get("magFilter") == NEAREST:
            found.add("nearest-pixel texture filtering")
    return sorted(found)


REPEAT, NEAREST = 10497, 9728
"""glTF sampler values: the default wrap mode (REPEAT) and the magnification filter NEAREST."""
MATERIAL_EXTENSIONS = {
    "KHR_materials_unlit": "unlit shading (KHR_materials_unlit)",
    "KHR_materials_transmission": "transmission (KHR_materials_transmission)",
}
"""What a material extension is called in the warning (others by their own name)."""


def _without_missing_textures(doc: dict, gone: set[int]) -> dict:
    """The glTF document (changed in place) with the base colour textures whose images (indices
    `gone`: their files are missing) taken off their materials."""
    images = doc.get("images") if isinstance(doc.get("images"), list) else []
    for i in gone:  # older trimesh reads every image, used or not: a 1-pixel stand-in, used by nothing now
        images[i] = {"uri": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4"
                            "//8/AAX+Av4N70a4AAAAAElFTkSuQmCC"}
    textures = doc.get("textures") if isinstance(doc.get("textures"), list) else []
    dead = {i for i, t in enumerate(textures) if isinstance(t, dict) and t.get("source") in gone}
    for m in doc.get("materials", []) if isinstance(doc.get("materials"), list) else []:
        pbr = m.get("pbrMetallicRoughness") if isinstance(m, dict) else None
        if isinstance(pbr, dict) and isinstance(pbr.get("baseColorTexture"), dict) \
                and pbr["baseColorTexture"].get("index") in dead:
            del pbr["baseColorTexture"]
    return doc


def _missing_images(path: Path, doc: dict) -> dict[int, Path]:
    """{image index: file} of the image files a glTF names that are not there."""
    images = doc.get("images") if isinstance(doc.get("images"), list) else []
    uris = {i: image.get("uri") for i, image in enumerate(images) if isinstance(image, dict)}
    return {i: _beside(path, uri) for i, uri in uris.items() if isinstance(uri, str) and not uri.startswith("data:")
            and not _beside(path, uri).is_file()}


def _has_textures(doc: dict) -> bool:
    """Whether a glTF document's materials name a base colour texture."""
    materials = doc.get("materials")
    return isinstance(materials, list) and any(
        isinstance(m, dict) and isinstance(m.get("pbrMetallicRoughness"), dict)
        and "baseColorTexture" in m["pbrMetallicRoughness"] for m in materials)


def _beside(path: Path, uri: str) -> Path:
    """The file a glTF's relative `uri` names (URIs are percent-encoded: `my%20texture.png`)."""
    from urllib.parse import unquote

    return path.parent / unquote(uri)


def _uri_resolver(path: Path):
    """trimesh's resolver for a .gltf's external files, which also finds percent-encoded names (as
    the glTF specification writes URIs: trimesh looks them up as they are)."""
    import trimesh
    from urllib.parse import unquote

    class Resolver(trimesh.resolvers.FilePathResolver):
        def get(self, name):
            try:
                return super().get(name)
            except (OSError, KeyError):
                if unquote(name) == name:
                    raise
                return super().get(unquote(name))

    return Resolver(str(path))


def check_glb_header(path: Path) -> None:
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


def load_with_trimesh(path: Path) -> TriMesh:
    import trimesh

    gltf = path.suffix.lower() in (".glb", ".gltf")
    doc = gltf_json(path) if gltf else {}
    missing = _missing_images(path, doc)
    used, transforms = _check_gltf_extensions(path, doc, missing) if gltf else (set(), {})
    # textures trimesh fails to open are dropped with a log line only: said below (missing files above)
    unsaid_textures = _has_textures(doc) and not missing
    if path.suffix.lower() == ".gltf":
        import io
        import json

        # the document without its textures whose files are missing: older trimesh fails the whole
        # file on one, newer drops it; either way the mesh loads untextured
        doc = _without_missing_textures(doc, set(missing))
        scene = trimesh.load(io.BytesIO(json.dumps(doc).encode()), file_type="gltf", force="scene", process=False,
                             resolver=_uri_resolver(path))
    else:
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
    if unsaid_textures and not any(p.texture is not None for p in parts):
        _log.warning("%s: its textures cannot be read (damaged, or larger than 16K); loaded without them", path)
    if "KHR_draco_mesh_compression" in used and all(not p.vertices.any() for p in parts):
        # trimesh leaves zeros where a decoder failed or is missing (older trimesh), and only logs it
        raise MeshLoadError(f"{path}: the Draco-compressed mesh could not be decoded (trimesh {trimesh.__version__}"
                            "; decoding needs trimesh 5.1 or later with DracoPy: pip install \"o3dcli[draco]\")")
    return merge_parts(parts)


def _times(texture: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """A uint8 texture times a colour factor per channel, as it is where the factor is 1 (a 16K
    texture in float64 takes 6.4 GB)."""
    if (factor == 1).all():
        return texture
    return (texture * factor.astype(np.float32)).round().astype(np.uint8)


def _trimesh_part(geom, verts: np.ndarray, faces: np.ndarray, transforms: dict | None = None) -> TriMesh:
    vis = geom.visual
    if vis.kind == "texture":
        mat = vis.material
        image = getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None)
        factor = getattr(mat, "baseColorFactor", None)
        if factor is None and image is None:
            # a plain colour of a format without glTF's factor; beside a texture (a PLY's TextureFile)
            # the `diffuse` is trimesh's own default grey (0.4), not the file's: it darkened the texture
            factor = getattr(mat, "diffuse", None)
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
            note_texture_format(getattr(image, "format", None))
            # glTF: the base colour factor multiplies the texture (done on the stored values)
            mode = str(getattr(mat, "alphaMode", None) or "OPAQUE").upper()
            if mode in ("MASK", "BLEND"):  # alpha is used: the texture's (1 if none) x the factor's
                rgba_factor = getattr(mat, "baseColorFactor", None)
                rgba_factor = np.asarray((255,) * 4 if rgba_factor is None else rgba_factor, np.float64).reshape(-1)
                a_factor = rgba_factor[3] / 255.0 if len(rgba_factor) > 3 else 1.0
                tex = _times(np.asarray(eight_bit(image).convert("RGBA")), np.append(factor, a_factor))
                cutoff = getattr(mat, "alphaCutoff", None)
                return TriMesh(verts, faces, uv=np.asarray(uv), texture=tex, alpha_mode=mode,
                               alpha_cutoff=0.5 if cutoff is None else float(cutoff), double_sided=double)
            tex = _times(np.asarray(eight_bit(image).convert("RGB")), factor)
            return TriMesh(verts, faces, uv=np.asarray(uv), texture=tex, double_sided=double)
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
