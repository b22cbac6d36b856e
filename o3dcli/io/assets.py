"""Open any asset a user may point o3d at: a Gaussian PLY, a mesh file, or an asset folder."""

from __future__ import annotations

from pathlib import Path

from o3dcli.geometry.gaussians import Gaussians
from o3dcli.geometry.mesh import TriMesh

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".usd", ".usda", ".usdc", ".usdz")
# What an o3d asset folder holds, in order of preference for viewing.
ASSET_FOLDER_FILES = ("model.glb", "model.obj", "gaussians.ply")


class AssetError(ValueError):
    """The path is not an asset o3d can open; the message says why."""


def _ply_head(path: Path) -> bytes:
    """A file's first 64 KiB, where o3d looks for a PLY's whole header."""
    with open(path, "rb") as f:
        return f.read(65536)


def _ply_header(head: bytes) -> tuple[set[bytes], dict[bytes, int]] | None:
    """A PLY's property names and element counts ({b"vertex": 1000, b"face": 0}) from its first
    bytes (`_ply_head`), or None when they do not start as a PLY with a whole header."""
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        return None
    lines = [line.split() for line in head[:end].split(b"\n")]
    props = {words[-1] for words in lines if len(words) > 1 and words[0] == b"property"}
    counts = {}
    for words in lines:
        if len(words) == 3 and words[0] == b"element" and words[2].isdigit():
            counts[words[1]] = int(words[2])
    return props, counts


def _has_gaussians(header: tuple[set[bytes], dict[bytes, int]] | None) -> bool:
    return header is not None and {b"opacity", b"scale_0", b"rot_0"} <= header[0]


def _has_points_only(header: tuple[set[bytes], dict[bytes, int]] | None) -> bool:
    if header is None:
        return False
    props, counts = header
    return counts.get(b"vertex", 0) > 0 and not counts.get(b"face", 0) and {b"x", b"y", b"z"} <= props


def is_gaussian_ply(path: Path) -> bool:
    """True when a PLY's header has 3D Gaussian Splatting properties (opacity, scales, colour DC)."""
    return _has_gaussians(_ply_header(_ply_head(path)))


POINT_CLOUD_MAX_POINTS = 500_000
"""A point cloud with more points is meshed and drawn from this many, chosen at random: more than a
mesh of o3d's grid (mesh.resolution, 128 by default) and a 1024 px texture can show. Measured on 2 cores,
o3d mesh of a box and a ball: 1,000,000 points took 71 s and 4.1 GB, 3,000,000 took 202 s and
10.8 GB (most in the bake, which draws every point); 500,000 of the 3,000,000 took 43 s and 3.3 GB,
their mesh as close to the true surface (0.0015 mean, 0.0027 at the 95th percentile, for a 1-unit
object) as the one from all 3,000,000."""


def is_point_cloud_ply(path: Path) -> bool:
    """True when a PLY holds points and no faces (a scan's or photogrammetry's point cloud)."""
    return _has_points_only(_ply_header(_ply_head(path)))


def resolve_asset_path(path: Path) -> Path:
    from o3dcli.inputs import EVAL_MARKER, IMAGE_SUFFIXES, OTHER_IMAGE_SUFFIXES

    path = Path(path)
    if not path.exists():
        raise AssetError(f"{path}: not found")
    if path.is_dir():
        for name in ASSET_FOLDER_FILES:
            if (path / name).is_file():
                return path / name
        if (path / "meshes" / "model.obj").is_file():  # Google Scanned Objects layout
            return path
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
        if len(files) == 1:  # a folder holding one asset file, whatever its name
            return resolve_asset_path(files[0])
        found = f"; it holds {len(files)} asset files, give one of them" if files else ""
        if not files and (path / ".o3d").is_dir():
            raise AssetError(f"{path}: an o3d output folder none of whose assets has Gaussians or a mesh yet (made "
                             "with --stop-after before diffusion?); run o3d generate without --stop-after first")
        if not files and (path / "config.yaml").is_file() and (path / "input.png").is_file():
            raise AssetError(f"{path}: an o3d asset with no Gaussians or mesh yet (made with --stop-after before "
                             "diffusion?); run o3d generate on its photo without --stop-after first")
        if not files and (path / EVAL_MARKER).is_file() and (path / "assets").is_dir():
            raise AssetError(f"{path}: an o3d eval output folder; its assets are in {path / 'assets'}: give that "
                             "folder")
        if not files and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file()):
            raise AssetError(f"{path}: a folder of images, not of 3D assets; o3d generate makes assets from photos "
                             f"(o3d generate {path} -o OUT), then o3d mesh re-meshes them")
        raise AssetError(f"{path}: folder holds none of {', '.join(ASSET_FOLDER_FILES)} (nor meshes/model.obj, "
                         f"nor a single .glb/.gltf/.obj/.ply/.stl/.usd*){found}")
    if path.suffix.lower() in IMAGE_SUFFIXES and _asset_by_its_own_files(path.parent):
        raise AssetError(f"{path}: an image of the o3d asset {path.parent}, not a 3D asset; give the asset folder "
                         f"{path.parent}")
    if path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() in OTHER_IMAGE_SUFFIXES:
        raise AssetError(f"{path}: an image, not a 3D asset; o3d generate makes one from a photo "
                         f"(o3d generate {path} -o OUT), then o3d mesh re-meshes it")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise AssetError(f"{path}: unsupported file type '{path.suffix}' (use .ply, .glb, .gltf, .obj, .stl or .usd/.usda/.usdc/.usdz)")
    if not path.is_file():
        raise AssetError(f"{path}: not a regular file (a pipe or device); give the path of a file")
    if path.stat().st_size == 0:
        raise AssetError(f"{path}: empty file (0 bytes)")
    return path


def _asset_by_its_own_files(path: Path) -> bool:
    """An o3d asset folder or a GSO object folder (not merely a folder holding one asset file)."""
    return any((path / name).is_file() for name in ASSET_FOLDER_FILES) or (path / "meshes" / "model.obj").is_file()


def is_one_asset(path: Path) -> bool:
    """True when `path` opens as one asset (a file, an asset or GSO folder, a folder of one asset file)."""
    try:
        resolve_asset_path(path)
    except (AssetError, OSError):
        return False
    return True


def folder_assets(path: Path) -> list[Path]:
    """The assets a folder holds when it is not one itself: its sub-folders that are asset (or GSO)
    folders and its mesh files, sorted by name; hidden entries (o3d's `.o3d/`) are left out, and so
    are entries that vanish while looked at (another o3d process republishing an asset)."""
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir() and is_one_asset(entry) or entry.is_file() and entry.suffix.lower() in MESH_SUFFIXES:
                found.append(entry)
        except OSError:
            continue
    return found


def expand_asset_folders(paths: list[Path], notes: list[str]) -> list[Path]:
    """`paths` with each folder that is not one asset replaced by the assets inside it (an
    `o3d generate` or `o3d mesh` output folder, a folder of GLBs, ...), one level deep; a note in
    `notes` says so. A folder with nothing o3d can open is kept, so that its error names it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not _asset_by_its_own_files(p):
            # not a result o3d made from this very folder (`o3d mesh DIR -o DIR`, DIR holding one
            # mesh): the folder would become a folder of two inputs, the mesh and its own result
            inner = [i for i in folder_assets(p) if not _made_from(i, p)]
            if len(inner) > 1 or any(i.is_dir() for i in inner):  # one file alone: the folder is that asset
                notes.append(f"{p}: {len(inner)} asset{'s' if len(inner) != 1 else ''} inside")
                out += inner
                continue
        out.append(p)
    return out


def _made_from(folder: Path, source: Path) -> bool:
    """Whether `folder` is an o3d result (its o3d-asset.json) made from `source`."""
    import json

    from o3dcli.naming import ASSET_META, same_file

    try:
        recorded = json.loads((folder / ASSET_META).read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return False
    return folder.is_dir() and isinstance(recorded, str) and same_file(recorded, source)


def load_asset(path: Path, up: str = "auto", foreign_splats: str = "viewers") -> Gaussians | TriMesh:
    """Gaussians for a 3DGS PLY, else a mesh (GLB/glTF/OBJ/PLY/STL/USD, or an asset/GSO folder).
    `up`: the file's up axis, "auto" (Z for GSO/Gazebo folders and STL files; else Y, but for a 3DGS PLY
    that o3d did not write -Y, as splat viewers take it), "y" or "z" (Z-up files, e.g. from CAD tools or
    Blender's OBJ export without axis conversion, are turned Y-up). o3d's own 3DGS PLYs are read in the
    frame they record whatever `up` says. `foreign_splats`: "stored" reads another tool's 3DGS PLY
    as stored where `up` is "auto" (o3d eval's protocol: predictions are in o3d's frame)."""
    from o3dcli.io.mesh import load_mesh

    path = resolve_asset_path(path)
    header = None
    if path.is_file() and path.suffix.lower() == ".ply":
        head = _ply_head(path)
        if head.startswith(b"ply") and b"end_header" not in head:
            raise AssetError(f"{path}: PLY header has no 'end_header' line (truncated or not a PLY file)")
        header = _ply_header(head)
    if _has_gaussians(header):
        from o3dcli.io.ply import WRITTEN_BY_COMMENT, load_gaussians

        splats = load_gaussians(path)  # o3d's files: in the frame their header records (o3dcli.io.ply)
        if WRITTEN_BY_COMMENT.encode() in head[: head.find(b"end_header")]:
            return splats  # o3d's own, whatever `up` says (earlier ones, without the frame comment, are +Y up)
        if up == "auto":  # another tool's: -Y up as splat viewers take every PLY, unless kept as stored
            return _turned(splats, TURN_Z_180 if foreign_splats == "viewers" else None)
        return _turned(splats, TURN_Z_UP if up == "z" else None)
    if _has_points_only(header):
        from o3dcli.io.ply import load_gaussians

        # points become small round Gaussians (o3dcli.io.ply), which o3d mesh meshes and o3d render draws
        points = load_gaussians(path, max_points=POINT_CLOUD_MAX_POINTS)
        return _turned(points, TURN_Z_UP if up == "z" else None)  # as load_mesh turns a Z-up file
    return load_mesh(path, up=up)


TURN_Z_180 = (0.0, 0.0, 0.0, 1.0)
"""(w, x, y, z) of the half turn about Z: (x, y, z) -> (-x, -y, z), a -Y-up file's to o3d's +Y up."""
TURN_Z_UP = (0.5 ** 0.5, -(0.5 ** 0.5), 0.0, 0.0)
"""(w, x, y, z) of the quarter turn about X that takes a Z-up file to o3d's +Y up: (x, y, z) -> (x, z, -y)."""


def _turned(g: Gaussians, turn: tuple[float, float, float, float] | None) -> Gaussians:
    """`g` turned by the unit quaternion `turn` (w, x, y, z), or as it is for None."""
    return g if turn is None else g.turned(turn)
