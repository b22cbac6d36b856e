"""Renderers: 3D Gaussians (gsplat on CUDA, pure torch anywhere) and triangle meshes (open3d ray casting).

Submodules import their heavy dependencies lazily; import from here for the public API.
"""


def __getattr__(name):  # lazy re-exports keep `import o3dcli.render` cheap
    if name in ("render_gaussians", "GaussianRender", "select_backend"):
        from o3dcli.render import gaussians

        return getattr(gaussians, name)
    if name in ("render_mesh", "MeshRender"):
        from o3dcli.render import mesh

        return getattr(mesh, name)
    raise AttributeError(name)
