"""Gaussians -> textured mesh: fusion, cleanup and decimation, UV unwrapping, baking.

Light on purpose: the stage functions are re-exported lazily, so importing
``o3dcli.mesh`` (or its config) loads no torch, open3d, pymeshlab or xatlas.
"""

from o3dcli._lazy import lazy_exports

_EXPORTS = {
    "MeshConfig": "o3dcli.mesh.config",
    "gaussians_to_mesh": "o3dcli.mesh.fusion",
    "simplify_mesh": "o3dcli.mesh.cleanup",
    "unwrap_uv": "o3dcli.mesh.uv",
    "bake_texture": "o3dcli.mesh.bake",
    "bake_texture_from_mesh": "o3dcli.mesh.bake",
    "export_mesh": "o3dcli.io.export",
    "mesh_from_gaussians": "o3dcli.mesh.run",
    "remesh_mesh": "o3dcli.mesh.run",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
