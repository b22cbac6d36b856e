"""Readers and writers: images, Gaussian PLY, meshes (OBJ/MTL, GLB/glTF, PLY)."""


def __getattr__(name):  # lazy re-exports keep `import o3dcli.io` cheap
    if name in ("save_gaussians", "load_gaussians"):
        from o3dcli.io import ply

        return getattr(ply, name)
    if name in ("load_mesh",):
        from o3dcli.io import mesh

        return getattr(mesh, name)
    if name in ("save_mesh_glb", "save_mesh_obj"):
        from o3dcli.io import export

        return getattr(export, name)
    if name in ("load_image", "ImageError"):
        from o3dcli.io import images

        return getattr(images, name)
    raise AttributeError(name)
