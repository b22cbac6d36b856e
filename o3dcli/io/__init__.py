"""Readers and writers: images, Gaussian PLY, meshes (OBJ/MTL, GLB/glTF, PLY)."""

from o3dcli._lazy import lazy_exports

_EXPORTS = {
    "save_gaussians": "ply",
    "load_gaussians": "ply",
    "load_mesh": "mesh",
    "save_mesh_glb": "export",
    "save_mesh_obj": "export",
    "load_image": "images",
    "ImageError": "images",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
