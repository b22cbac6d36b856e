"""Base-colour texture baking: from the Gaussians' renders, or from another (textured) mesh.

Every texel centre inside a UV triangle is mapped to its surface point (the UV
triangles are ray cast in texture space with open3d, which gives the triangle and
barycentrics at once). Its colour is then either the view-angle-weighted mean of
the renders that see it (visibility from the rendered depth), or the colour of
the closest point of a source mesh. Texels outside every chart take the colour of
the nearest chart texel, so no background bleeds in at seams or mip levels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from o3dcli.geometry.cameras import Cameras
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.geometry.mesh import TriMesh
from o3dcli.mesh.config import MeshConfig
from o3dcli.mesh.views import FusionRenders, ObjectBounds

PHOTO_FULL_COS = 0.5
"""The input photo counts in full on surfaces seen up to 60 degrees from head-on (cos >= 0.5; even
foreshortened by half it is sharper than generated views), then fades out towards grazing angles."""
FALLBACK_MIN_OPACITY = 0.1
"""Texels no view sees take the colour of the nearest Gaussian at least this opaque."""
_EPS = 1e-8


@dataclass(frozen=True)
class Texels:
    """Texels whose centre lies in a UV triangle of a size x size texture.

    index: [M] flat texel index (row 0 is the top of the image, v = 1);
    face_ids: [M]; bary: [M, 3]; points: [M, 3] surface points; normals: [M, 3] unit,
    interpolated from vertex normals of the welded surface (no seams in the shading weights).
    """

    size: int
    index: np.ndarray
    face_ids: np.ndarray
    bary: np.ndarray
    points: np.ndarray
    normals: np.ndarray


def surface_texels(mesh: TriMesh, size: int) -> Texels:
    """The texels of ``mesh``'s UV layout (needs ``mesh.uv``) and their surface points."""
    from o3dcli.mesh.cleanup import weld_vertices
    from o3dcli.mesh.fusion import vertex_normals
    from o3dcli.render.mesh import MeshRaycaster

    if mesh.uv is None:
        raise ValueError("baking needs a mesh with UVs: run unwrap_uv first")
    flat = TriMesh(np.concatenate([mesh.uv, np.zeros((len(mesh.uv), 1), np.float32)], 1), mesh.faces)
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(centres, 1.0 - centres)  # [row, col]: row 0 is v = 1
    origins = np.stack([u.ravel(), v.ravel(), np.ones(size * size, np.float32)], 1)
    dirs = np.broadcast_to(np.array([0.0, 0.0, -1.0], np.float32), origins.shape)
    hits = MeshRaycaster(flat).cast_rays(torch.from_numpy(origins), torch.from_numpy(np.ascontiguousarray(dirs)))
    index = np.flatnonzero(hits.face_ids.numpy() >= 0)
    face_ids = hits.face_ids.numpy()[index]
    bary = hits.barycentrics.numpy()[index].astype(np.float32)
    corners = mesh.faces[face_ids]
    points = np.einsum("mk,mkc->mc", bary, mesh.vertices[corners])
    welded, old_to_new = weld_vertices(mesh)
    vn = vertex_normals(welded)[old_to_new].astype(np.float32)
    normals = np.einsum("mk,mkc->mc", bary, vn[corners])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), _EPS)
    return Texels(size, index, face_ids, bary, points.astype(np.float32), normals)


def fill_texture(texels: Texels, colors: np.ndarray) -> np.ndarray:
    """A size x size x C uint8 texture with ``colors`` [M, C] (C = 3, or 4 with alpha) at the
    texels and every other texel set to its nearest texel's value (seam dilation)."""
    from scipy import ndimage

    size = texels.size
    tex = np.zeros((size * size, colors.shape[1]), np.float32)
    covered = np.zeros(size * size, bool)
    tex[texels.index] = colors
    covered[texels.index] = True
    if not covered.any():
        raise ValueError("the UV layout covers no texel centre (texture too small for the charts?)")
    nearest = ndimage.distance_transform_edt(~covered.reshape(size, size), return_distances=False, return_indices=True)
    flat_nearest = (nearest[0] * size + nearest[1]).ravel()
    tex = tex[flat_nearest]
    return (np.clip(tex, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).reshape(size, size, -1)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """image [H, W, C] at pixel coordinates x, y [M] (pixel centres at i + 0.5), clamped at borders."""
    h, w = image.shape[:2]
    x, y = x - 0.5, y - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    wx, wy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xs = np.clip(np.stack([x0, x0 + 1]), 0, w - 1)
    ys = np.clip(np.stack([y0, y0 + 1]), 0, h - 1)
    top = image[ys[0], xs[0]] * (1 - wx) + image[ys[0], xs[1]] * wx
    bottom = image[ys[1], xs[0]] * (1 - wx) + image[ys[1], xs[1]] * wx
    return top * (1 - wy) + bottom * wy


def bake_from_renders(texels: Texels, renders, cfg: MeshConfig,
                      angle_power: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Colours [M, 3] and total view weight [M] of the texels from the fusion renders.

    A view counts for a texel when the texel faces it, projects inside the image
    on a pixel with alpha > cfg.alpha_threshold, and its depth is at most
    cfg.bake_depth_tolerance voxels behind the rendered depth; its weight is
    cos(angle between normal and view direction) ** cfg.bake_angle_power (or ``angle_power``).
    Colour is read bilinearly from the premultiplied render and divided by the
    bilinear alpha, so silhouette pixels do not darken it.
    """
    cams = renders.cameras
    w2c = cams.viewmats().float().numpy()
    ks = cams.K().float().numpy()
    centers = cams.centers.float().numpy()
    tol = cfg.bake_depth_tolerance * renders.bounds.extent / cfg.resolution
    p, n = texels.points.astype(np.float32), texels.normals.astype(np.float32)
    acc = np.zeros((len(p), 3), np.float32)
    wsum = np.zeros(len(p), np.float32)
    h, w = renders.alpha.shape[1:]
    for i in range(len(cams)):
        facing = np.flatnonzero(n @ centers[i] > np.einsum("mc,mc->m", n, p))  # n . (c - p) > 0
        q = p[facing]
        to_cam = centers[i] - q
        dist = np.sqrt(np.einsum("mc,mc->m", to_cam, to_cam))
        cos = np.einsum("mc,mc->m", n[facing], to_cam) / np.maximum(dist, _EPS)
        cam = q @ w2c[i, :3, :3].T + w2c[i, :3, 3]
        z = np.maximum(cam[:, 2], _EPS)
        x = ks[i, 0, 0] * cam[:, 0] / z + ks[i, 0, 2]
        y = ks[i, 1, 1] * cam[:, 1] / z + ks[i, 1, 2]
        ok = np.flatnonzero((cam[:, 2] > 0) & (x >= 0) & (x < w) & (y >= 0) & (y < h))
        px, py = x[ok].astype(np.int64), y[ok].astype(np.int64)
        # not behind the rendered surface (a mesh may lie in front of its Gaussians: carving puts it
        # about a splat footprint outside them; what is behind by more than tol is occluded)
        seen = (renders.alpha[i][py, px] > cfg.alpha_threshold) & (z[ok] < renders.depth[i][py, px] + tol)
        ok = ok[seen]
        if len(ok) == 0:
            continue
        premult = np.concatenate([renders.rgb[i] * renders.alpha[i][..., None], renders.alpha[i][..., None]], -1)
        sample = _bilinear(premult, x[ok], y[ok])
        color = sample[:, :3] / np.maximum(sample[:, 3:], _EPS)
        weight = cos[ok] ** np.float32(cfg.bake_angle_power if angle_power is None else angle_power)
        acc[facing[ok]] += weight[:, None] * color
        wsum[facing[ok]] += weight
    return acc / np.maximum(wsum, _EPS)[:, None], wsum


@dataclass(frozen=True)
class InputView:
    """The input photo and the camera it was seen from, for projecting it onto a texture.

    cameras: one view (generation camera 0, at the image's size); rgba: [4, S, S] straight RGBA
    float in [0, 1] (the prepared input).
    """

    cameras: Cameras
    rgba: np.ndarray

    def mirrored(self) -> "InputView":
        """The photo flipped left-right, seen from the camera turned 180 degrees about the up axis:
        what the far side of an object that is mirror-symmetric front-to-back would look like."""
        turn = torch.diag(torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=self.cameras.c2w.dtype, device=self.cameras.device))
        return InputView(replace(self.cameras, c2w=turn @ self.cameras.c2w),
                         np.ascontiguousarray(self.rgba[:, :, ::-1]))


def project_input(texels: Texels, caster, view: InputView, cfg: MeshConfig) -> tuple[np.ndarray, np.ndarray]:
    """Colours [M, 3] of the texels from the input photo, and the cosine [M] of the angle at which
    its camera sees each (0 where it does not): a texel counts where it faces the camera, is not
    hidden by the mesh itself (its depth rendered from that camera, as :func:`bake_from_renders`
    tests a render) and lands on the photo's foreground (alpha > cfg.alpha_threshold). ``caster``:
    the textured mesh's `MeshRaycaster`."""
    cams = view.cameras.to("cpu")
    depth = caster.render(cams).depth[:, 0].numpy()
    rgba = view.rgba.transpose(1, 2, 0)[None].astype(np.float32)  # [1, S, S, 4]
    lo, hi = caster.mesh.bounds()
    photo = FusionRenders(cameras=cams, bounds=ObjectBounds(lo.astype(np.float64), hi.astype(np.float64)),
                          rgb=rgba[..., :3], alpha=rgba[..., 3], depth=depth)
    return bake_from_renders(texels, photo, cfg, angle_power=1.0)


def _nearest_gaussian_colors(gaussians: Gaussians, points: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    g = gaussians.detach().to("cpu", torch.float32)
    keep = g.opacities >= FALLBACK_MIN_OPACITY
    if keep.sum() == 0:
        keep = torch.ones_like(keep)
    _, nn = cKDTree(g.means[keep].numpy()).query(points)
    return g.colors[keep].numpy()[nn]


def bake_texture(mesh_with_uv: TriMesh, gaussians: Gaussians, cfg: MeshConfig | None = None,
                 input_view: InputView | None = None) -> TriMesh:
    """The mesh with a cfg.texture_size^2 base-colour texture baked from ``gaussians``, and
    from the input photo where its camera sees the mesh.

    Renders come from the same fusion views as TSDF meshing (rendered once per set of
    Gaussians and reused); texels no render sees take the nearest Gaussian's colour. With
    ``input_view``, each texel the photo's camera sees is then blended towards the photo by
    cfg.input_weight, in full up to 60 degrees from head-on and fading to 0 at grazing angles
    (min(1, cos / PHOTO_FULL_COS)); before that, towards its mirror image from the far side by
    cfg.mirror_weight the same way, so the photo itself wins where both reach.
    """
    from o3dcli.mesh.views import fusion_renders

    cfg = cfg or MeshConfig()
    renders = fusion_renders(gaussians, cfg.fusion_views, cfg.fusion_size, cfg.fusion_fov_deg, cfg.bounds_quantile)
    texels = surface_texels(mesh_with_uv, cfg.texture_size)
    colors, weight = bake_from_renders(texels, renders, cfg)
    unseen = weight <= 0
    if unseen.any():
        colors[unseen] = _nearest_gaussian_colors(gaussians, texels.points[unseen])
    if input_view is not None and (cfg.mirror_weight > 0 or cfg.input_weight > 0):
        from o3dcli.render.mesh import MeshRaycaster

        caster = MeshRaycaster(mesh_with_uv)  # built once for the photo and its mirror
        for view, share in ((input_view.mirrored(), cfg.mirror_weight), (input_view, cfg.input_weight)):
            if share > 0:
                photo, cos = project_input(texels, caster, view, cfg)
                s = (np.float32(share) * np.minimum(1.0, cos / np.float32(PHOTO_FULL_COS)))[:, None]
                colors = (1.0 - s) * colors + s * photo
    return mesh_with_uv.replace(texture=fill_texture(texels, colors), vertex_colors=None)


def bake_texture_from_mesh(target_uv_mesh: TriMesh, source_mesh: TriMesh, cfg: MeshConfig | None = None) -> TriMesh:
    """Re-bake: ``target_uv_mesh`` (with UVs, e.g. a decimated copy) gets a cfg.texture_size^2
    texture holding the colour (texture, vertex colours or material) of the closest point of
    ``source_mesh``, and its alpha when it has one (with its alpha mode and sidedness)."""
    import open3d as o3d

    from o3dcli.render.mesh import MeshRaycaster

    cfg = cfg or MeshConfig()
    from o3dcli.jobs import library_threads

    texels = surface_texels(target_uv_mesh, cfg.texture_size)
    threads = library_threads()
    scene = o3d.t.geometry.RaycastingScene(nthreads=threads)
    scene.add_triangles(o3d.core.Tensor(source_mesh.vertices), o3d.core.Tensor(source_mesh.faces.astype(np.uint32)))
    closest = scene.compute_closest_points(o3d.core.Tensor(texels.points), nthreads=threads)
    fid = closest["primitive_ids"].numpy().astype(np.int64)
    uv = closest["primitive_uvs"].numpy()
    bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1).astype(np.float32)  # open3d's (u, v)
    source = MeshRaycaster(source_mesh)
    colors = source.surface_color(fid, bary)
    if source_mesh.has_alpha:  # cut-outs and blended parts keep their alpha
        colors = np.concatenate([colors, source.surface_alpha(fid, bary)[:, None]], 1)
    return target_uv_mesh.replace(texture=fill_texture(texels, colors), vertex_colors=None,
                                  **source_mesh.material_style)
