"""Mesh loaders: OBJ (+MTL +texture, Google Scanned Objects folders), GLB/glTF, PLY, STL and USD -> TriMesh.

`load_mesh` is the entry point: it finds the file, picks the reader by suffix (OBJ:
`o3dcli.io.obj`, its materials `o3dcli.io.mtl`; GLB/glTF and PLY through trimesh:
`o3dcli.io.gltf_read`; USD: `o3dcli.io.usd_read`; binary STL here) and checks what it got.
A file's parts with their own colour sources become one mesh in `o3dcli.io.mesh_merge`; what the
readers share (MeshLoadError, 8-bit textures, see-through colours) is in `o3dcli.io.mesh_common`.
Loaders never normalise: callers call ``TriMesh.normalized()``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from o3dcli.geometry.mesh import TriMesh
from o3dcli.io.gltf_read import check_glb_header, load_with_trimesh
from o3dcli.io.mesh_common import MeshLoadError
from o3dcli.io.mesh_merge import merge_parts
from o3dcli.io.obj import load_obj

_log = logging.getLogger("o3d")
USD_SUFFIXES = (".usd", ".usda", ".usdc", ".usdz")
MESH_EXTENSIONS = (".obj", ".glb", ".gltf", ".ply", ".stl") + USD_SUFFIXES


def load_mesh(path, up: str = "auto") -> TriMesh:
    """Load a mesh file, or an object folder (Google Scanned Objects: ``meshes/model.obj``).

    Returns the mesh as stored (no normalisation; an STL's numbers, millimetres, become metres,
    o3d's unit); colour from the texture,
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
    if not p.is_file():
        raise MeshLoadError(f"{p}: not a regular file (a pipe or device); give the path of a mesh file")
    if p.stat().st_size == 0:
        raise MeshLoadError(f"{p}: empty file (0 bytes)")

    try:
        with _texture_size_limit(p):
            mesh, declared_up = _load_file(p, ext)
    except MeshLoadError:
        raise
    except Exception as e:  # a parser failing deep inside a library: report it against the file
        raise MeshLoadError(f"{p}: cannot read {ext[1:].upper()} file ({type(e).__name__}: {e})") from e
    if len(mesh.faces) == 0:
        raise MeshLoadError(f"{p}: the file holds no triangles")
    mesh = _without_non_finite(mesh, p)
    _check_precision(mesh, p)
    if ext == ".stl":  # STL stores every facet's corners apart: join the corners that coincide
        from o3dcli.mesh.cleanup import weld_vertices

        # and its numbers are millimetres (3D printing's unit, and o3d's STL export): o3d's are metres
        mesh = weld_vertices(mesh.replace(vertices=(mesh.vertices * 1e-3).astype(np.float32)))[0]
    if up == "z" or (up == "auto" and (is_gazebo_model(p) or ext == ".stl" or declared_up == "z")):
        x, y, z = mesh.vertices.T
        mesh = mesh.replace(vertices=np.stack([x, z, -y], axis=1))
    return mesh


TEXTURE_MAX_PIXELS = 16384 * 16384
"""The largest texture a mesh file may hold (Pillow refuses over 89.5 MP by default, as a
decompression bomb): 16K, what photogrammetry tools export."""


@contextlib.contextmanager
def _texture_size_limit(path: Path):
    """Pillow's bomb guard at TEXTURE_MAX_PIXELS while a mesh file and its textures are read (trimesh
    and USD read them through Pillow too); over it, Pillow's warning is an error naming the limit."""
    import warnings

    from PIL import Image

    from o3dcli.io.images import _pillow_bomb_limit

    with _pillow_bomb_limit(TEXTURE_MAX_PIXELS), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise MeshLoadError(f"{path}: a texture is over the {TEXTURE_MAX_PIXELS:,} pixels (16K) o3d reads "
                                f"({e}); downscale it first") from None


def _load_file(p: Path, ext: str) -> tuple[TriMesh, str | None]:
    """The mesh of file `p` as stored, and the up axis it declares (USD), None where it declares none."""
    if ext == ".glb":
        check_glb_header(p)
    if ext in USD_SUFFIXES:
        return _load_usd(p)
    return load_obj(p) if ext == ".obj" else _load_stl(p) if ext == ".stl" else load_with_trimesh(p), None


PRECISION_STEPS = 256
"""The fewest steps of 32-bit float positions across a mesh that keep its shape (0.4 % of its
size; a 1 cm part 60 m out has about 2,600, a 2 m scan 5,000 km out 4)."""


def _check_precision(mesh: TriMesh, path: Path) -> None:
    """MeshLoadError when the mesh lies so far from the origin, for its size, that its positions as
    32-bit floats (as o3d holds them and glTF stores them) keep fewer than PRECISION_STEPS steps
    across it: a scan in survey coordinates came out blocky or flat, or with no faces, unsaid."""
    used = np.zeros(len(mesh.vertices), bool)  # the vertices faces use: a mask, not a sort of every face
    used[mesh.faces.reshape(-1)] = True
    v = mesh.vertices[used]
    extent = float((v.max(0).astype(np.float64) - v.min(0)).max())
    far = float(np.abs(v).max())
    step = float(np.spacing(np.float32(far)))
    if extent > 0 and step * PRECISION_STEPS > extent:
        raise MeshLoadError(
            f"{path}: its positions lie up to {far:.4g} from the origin, {far / extent:.3g} times the mesh's own size "
            f"({extent:.3g}); read as 32-bit floats (as o3d holds them and glTF stores them) they keep only steps of "
            f"{step:.2g} there, and its shape would be lost. Move it near the origin in the tool that made it (in "
            "Blender: Object > Set Origin > Origin to Geometry, then Alt+G) and give it again")


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
    """A USD file's visible meshes as one TriMesh (see `o3dcli.io.usd_read.load_usd`), and its up axis."""
    from o3dcli.io.usd_read import load_usd

    try:
        parts, up = load_usd(path)
    except ValueError as e:
        raise MeshLoadError(f"{path}: {e}") from None
    if not parts:
        raise MeshLoadError(f"{path}: the file holds no triangles (no visible UsdGeom.Mesh)")
    return merge_parts(parts), up


def _load_stl(path: Path) -> TriMesh:
    """An STL file: the text form ("solid ... facet ... endsolid") through trimesh, the binary form
    read here (trimesh reads a short or over-long binary file as empty). Shape only."""
    data = path.read_bytes()
    count = int.from_bytes(data[80:84], "little") if len(data) >= 84 else None
    head = data[:1024].lower()  # keywords in capitals (SOLID, FACET NORMAL) too
    if (head.lstrip().startswith(b"solid") and (count is None or len(data) != 84 + 50 * count)
            and head.isascii() and (b"facet" in head or b"endsolid" in head)):
        return load_with_trimesh(path)  # text (a binary header may start with "solid" too: size and bytes tell)
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


# ------------------------------------------------------------------- shared by the readers
