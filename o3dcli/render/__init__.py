"""Renderers: 3D Gaussians (gsplat on CUDA, pure torch anywhere) and triangle meshes (open3d ray casting).

Submodules import their heavy dependencies lazily; import from here for the public API.
"""

from o3dcli._lazy import lazy_exports

_EXPORTS = {
    "render_gaussians": "gaussians",
    "GaussianRender": "gaussians",
    "select_backend": "gaussians",
    "render_mesh": "mesh",
    "MeshRender": "mesh",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
