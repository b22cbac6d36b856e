"""The mesh stages chained for one asset: Gaussians -> textured mesh, and mesh -> decimated mesh.

`o3d generate` runs the stages one by one through its cache; these helpers are for
`o3d mesh` and the benchmark, which run them straight through.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from o3dcli.geometry.gaussians import Gaussians
from o3dcli.geometry.mesh import TriMesh, scale_texture
from o3dcli.mesh.config import MeshConfig


@contextmanager
def _timed(timings: dict | None, name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def mesh_from_gaussians(gaussians: Gaussians, cfg: MeshConfig | None = None, timings: dict | None = None,
                        silhouettes=None, input_view=None) -> TriMesh:
    """gaussians_to_mesh (cut to ``silhouettes`` if given) -> simplify_mesh -> unwrap_uv -> bake_texture
    (with the input photo projected, if ``input_view`` is given).

    timings: if given, receives seconds per stage ("fusion" includes the renders
    for the tsdf method; "bake" includes them for the opacity method).
    """
    from o3dcli.mesh.bake import bake_texture
    from o3dcli.mesh.cleanup import simplify_mesh
    from o3dcli.mesh.fusion import gaussians_to_mesh
    from o3dcli.mesh.uv import unwrap_uv

    cfg = cfg or MeshConfig()
    cfg.check()
    with _timed(timings, "fusion"):
        mesh = gaussians_to_mesh(gaussians, cfg, silhouettes=silhouettes)
    with _timed(timings, "decimation"):
        mesh = simplify_mesh(mesh, cfg)
    with _timed(timings, "unwrap"):
        mesh = unwrap_uv(mesh, cfg)
    with _timed(timings, "bake"):
        return bake_texture(mesh, gaussians, cfg, input_view=input_view)


def _fit_texture(mesh: TriMesh, size: int) -> TriMesh:
    """The mesh with its texture scaled down (area filter, aspect kept) so its longer side is at
    most `size` (mesh.texture_size bounds kept textures as it does baked ones); UVs are unchanged."""
    h, w = mesh.texture.shape[:2]
    if max(h, w) <= size:
        return mesh
    return mesh.replace(texture=scale_texture(mesh.texture, size / max(h, w)))


def remesh_mesh(mesh: TriMesh, cfg: MeshConfig | None = None, fit_kept_texture: bool = True) -> TriMesh:
    """Decimate an existing mesh to cfg.target_faces faces, keeping its look.

    Textured: texture-aware quadric collapse keeps the texture image (alpha included) and UVs
    (if the collapse fails, falls back to a re-bake); with `fit_kept_texture`, a texture larger
    than cfg.texture_size is scaled down (`o3d mesh` asks for it only when the size is given:
    the preset's texture_size is for baked textures). Vertex-coloured: decimated, unwrapped and
    re-baked into a cfg.texture_size texture. Plain material colour: decimated only. Alpha mode
    and sidedness are kept.
    """
    import pymeshlab

    from o3dcli.mesh.bake import bake_texture_from_mesh
    from o3dcli.mesh.cleanup import simplify_mesh, weld_vertices
    from o3dcli.mesh.uv import unwrap_uv

    cfg = cfg or MeshConfig()
    cfg.check()
    if mesh.has_texture:
        fit = (lambda m: _fit_texture(m, cfg.texture_size)) if fit_kept_texture else (lambda m: m)
        if len(mesh.faces) <= cfg.target_faces:
            return fit(mesh)
        try:
            return fit(simplify_mesh(mesh, cfg, keep_faces=True))
        except pymeshlab.PyMeshLabException:
            pass  # e.g. a UV layout the texture-aware collapse refuses: re-bake below
    if not mesh.has_texture and mesh.vertex_colors is None:
        if len(mesh.faces) <= cfg.target_faces:
            return mesh
        return simplify_mesh(weld_vertices(mesh)[0], cfg, keep_faces=True).replace(double_sided=mesh.double_sided)
    geometry = simplify_mesh(weld_vertices(mesh)[0], cfg, keep_faces=True)
    return bake_texture_from_mesh(unwrap_uv(geometry, cfg), mesh, cfg)
