"""Gaussians -> triangle mesh: TSDF fusion of depth renders, marching cubes on the opacity field,
or carving the solid inside the Gaussians' rendered silhouettes.

All three methods end in open3d's ``VoxelBlockGrid`` marching cubes. Its older
``ScalableTSDFVolume`` returns no triangles at all in open3d 0.20 (and
``UniformTSDFVolume`` is ~4x slower and less accurate here), so fusion uses the
tensor ``VoxelBlockGrid``; ``tests/test_mesh_fusion.py`` checks it returns a
surface. The opacity method writes its own field into a ``VoxelBlockGrid`` so the
same (maintained) marching cubes extracts it, as does the carving method: only the
splatting of the Gaussians onto the grid and the carving are written here, in torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from o3dcli.geometry.cameras import Cameras
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.geometry.mesh import TriMesh
from o3dcli.mesh.config import MeshConfig
from o3dcli.mesh.views import FusionRenders, ObjectBounds, fusion_renders, gaussian_bounds

BLOCK = 16
"""Voxels per side of a VoxelBlockGrid block."""
MIN_WEIGHT = 1.0
"""Voxels observed by fewer views than this are left out of the TSDF surface."""
CUTOFF_SIGMAS = 3.0
"""The opacity splat of a Gaussian stops this many standard deviations from its centre."""
MAX_HALF_WIDTH = 32
"""Largest splat half-width in voxels (a huge Gaussian's far tail is dropped beyond it)."""
SPLAT_CHUNK = 1 << 22
"""(Gaussian, voxel) pairs evaluated at once (bounds memory to ~100 MB)."""
RIDGE_SEARCH_VOXELS = 8.0
"""How far inwards (voxels) a vertex of the opacity surface looks for the shell's ridge."""
RIDGE_STEP = 0.25
"""Sampling step of that search, in voxels."""
RIDGE_DROP = 0.1
"""A density maximum counts as a shell's ridge when the density behind it falls by this fraction."""
CARVE_SMOOTH_VOXELS = 1.0
"""Standard deviation (voxels) of the blur applied to the carved solid before meshing (no voxel stairs)."""
ALPHA_MAX = 0.999  # as the rasterizer: one Gaussian never makes a point fully opaque


def _vbg(voxel: float, block_count: int):
    from o3dcli.jobs import open3d

    o3d = open3d()

    return o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight"), attr_dtypes=(o3d.core.float32, o3d.core.float32),
        attr_channels=((1), (1)), voxel_size=voxel, block_resolution=BLOCK, block_count=block_count,
        device=o3d.core.Device("CPU:0"),
    )


def canonical_order(vertices: np.ndarray, faces: np.ndarray) -> TriMesh:
    """The same mesh with vertices sorted by position (x, then y, then z) and faces sorted after
    rotating each to start at its smallest index (winding kept). open3d's marching cubes emits
    its vertices in hash-map order, which changes from run to run: this makes one input give one
    byte-identical mesh (and so identical decimation, UVs and files downstream).

    Coincident vertices are welded into one, and the faces this collapses are dropped. Marching
    cubes gives them where the field is exactly at the level on a grid point (every edge through
    that point puts a vertex there); left apart, their relative order would be the hash map's."""
    v = np.asarray(vertices)
    f = np.asarray(faces).reshape(-1, 3)
    if len(v) == 0:
        return TriMesh(v.reshape(0, 3), f.astype(np.int64))
    v, rank = np.unique(v, axis=0, return_inverse=True)  # sorted by x, then y, then z
    f = rank.reshape(-1)[f]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    if len(f):
        first = np.argmin(f, axis=1)
        rows = np.arange(len(f))
        f = np.stack([f[rows, (first + k) % 3] for k in range(3)], 1)
        f = f[np.lexsort(f.T[::-1])]
    return TriMesh(v, f)


def _to_trimesh(o3d_mesh) -> TriMesh:
    if "positions" not in o3d_mesh.vertex or "indices" not in o3d_mesh.triangle:
        return TriMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))
    return canonical_order(o3d_mesh.vertex.positions.numpy(), o3d_mesh.triangle.indices.numpy())


def view_cosines(renders: FusionRenders, valid: np.ndarray) -> np.ndarray:
    """|cos| of the angle between each pixel's ray and the surface normal of the depth map
    [V, H, W] (central differences of the back-projected points), 0 where a neighbour is invalid."""
    from o3dcli.geometry.rays import camera_ray_directions

    dirs = camera_ray_directions(renders.cameras).numpy()  # [V, H, W, 3], camera-z = 1
    pts = dirs * renders.depth[..., None]  # relative to the camera centre: the normal is the same
    dx, dy = np.zeros_like(pts), np.zeros_like(pts)
    dx[:, :, 1:-1] = pts[:, :, 2:] - pts[:, :, :-2]
    dy[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    n = np.cross(dx, dy)
    ok = np.zeros_like(valid)
    ok[:, 1:-1, 1:-1] = (valid[:, 1:-1, 1:-1] & valid[:, 1:-1, 2:] & valid[:, 1:-1, :-2]
                         & valid[:, 2:, 1:-1] & valid[:, :-2, 1:-1])
    cos = np.abs((n * dirs).sum(-1)) / np.maximum(np.linalg.norm(n, axis=-1) * np.linalg.norm(dirs, axis=-1), 1e-20)
    return np.where(ok, cos, 0.0)


def tsdf_fuse(renders: FusionRenders, cfg: MeshConfig) -> TriMesh:
    """Fuse the depth renders into a TSDF and extract its zero level set.

    Fused pixels: alpha > cfg.alpha_threshold and a surface seen within
    cfg.fusion_max_angle_deg of head-on. Splatted depth is each Gaussian's centre depth,
    so at oblique views the nearer neighbours of the hit point win and the depth comes
    out in front of the surface (about sigma * tan(angle)); head-on pixels are nearly
    unbiased. Returns the raw mesh (outward counter-clockwise faces), possibly empty.
    """
    from o3dcli.jobs import open3d

    o3d = open3d()

    valid = renders.alpha > cfg.alpha_threshold
    fused = valid & (view_cosines(renders, valid) >= math.cos(math.radians(cfg.fusion_max_angle_deg)))

    bounds = renders.bounds
    voxel = bounds.extent / cfg.resolution
    dense_blocks = math.prod(int(math.ceil(s / (voxel * BLOCK))) + 2 for s in bounds.hi - bounds.lo)
    vbg = _vbg(voxel, block_count=2 * dense_blocks + 1024)
    cams = renders.cameras
    w2c = cams.viewmats().double().numpy()
    ks = cams.K().double().numpy()
    dist = np.linalg.norm(cams.centers.double().numpy() - bounds.center, axis=1)
    depth_max = float(dist.max() + 2 * bounds.radius)
    for i in range(len(cams)):
        depth = np.where(fused[i], renders.depth[i], 0.0).astype(np.float32)
        img = o3d.t.geometry.Image(o3d.core.Tensor(np.ascontiguousarray(depth[..., None])))
        k, ext = o3d.core.Tensor(ks[i]), o3d.core.Tensor(w2c[i])
        coords = vbg.compute_unique_block_coordinates(img, k, ext, depth_scale=1.0, depth_max=depth_max,
                                                      trunc_voxel_multiplier=cfg.depth_trunc_voxels)
        vbg.integrate(coords, img, k, ext, depth_scale=1.0, depth_max=depth_max,
                      trunc_voxel_multiplier=cfg.depth_trunc_voxels)
    return _to_trimesh(vbg.extract_triangle_mesh(weight_threshold=MIN_WEIGHT))


def opacity_field(gaussians: Gaussians, bounds: ObjectBounds, voxel: float, smoothing: float):
    """Optical density D(x) = -sum_i log(1 - o_i g_i(x)) of the Gaussians at the grid points
    x = (origin + ijk) * voxel; their opacity is 1 - exp(-D).

    Each Gaussian's covariance is widened by (smoothing * voxel)^2 I first, so thin, flat
    Gaussians are not missed between grid points. Returns (density [X, Y, Z] float32 numpy,
    origin [3] int64) with the origin and every side a multiple of BLOCK voxels and at
    least one voxel of margin around ``bounds``.
    """
    lo_idx = np.floor(bounds.lo / voxel).astype(np.int64) - 1
    hi_idx = np.ceil(bounds.hi / voxel).astype(np.int64) + 2
    origin = (lo_idx // BLOCK) * BLOCK
    dims = ((hi_idx - origin + BLOCK - 1) // BLOCK) * BLOCK
    g = gaussians.detach().to("cpu", torch.float32)
    grid_pos = (g.means / voxel - torch.from_numpy(origin).float())  # in voxels
    inside = ((grid_pos >= 0) & (grid_pos <= torch.from_numpy(dims - 1).float())).all(1) & (g.opacities >= 1 / 255)
    g, grid_pos = g[inside], grid_pos[inside]
    cov = g.covariances().double() + ((smoothing * voxel) ** 2 + (1e-3 * voxel) ** 2) * torch.eye(3, dtype=torch.float64)
    prec = torch.linalg.inv(cov).float() * voxel**2  # Mahalanobis in voxel units
    half = torch.ceil(CUTOFF_SIGMAS * cov.diagonal(dim1=1, dim2=2).max(1).values.sqrt() / voxel)
    half = half.clamp(1, MAX_HALF_WIDTH).long()
    acc = torch.zeros(int(np.prod(dims)), dtype=torch.float32)  # sum of log(1 - alpha_i)
    dims_t = torch.from_numpy(dims)
    strides = torch.tensor([dims[1] * dims[2], dims[2], 1])
    centre = torch.round(grid_pos).long()
    for m in torch.unique(half).tolist():
        sel = torch.nonzero(half == m).squeeze(1)
        r = torch.arange(-m, m + 1)
        offsets = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
        per_chunk = max(1, SPLAT_CHUNK // len(offsets))
        for s in range(0, len(sel), per_chunk):
            idx = sel[s:s + per_chunk]
            vox = centre[idx, None, :] + offsets[None]  # [n, K, 3]
            d = vox.float() - grid_pos[idx, None, :]
            p = prec[idx]
            q = (d[..., 0] ** 2 * p[:, None, 0, 0] + d[..., 1] ** 2 * p[:, None, 1, 1] + d[..., 2] ** 2 * p[:, None, 2, 2]
                 + 2 * (d[..., 0] * d[..., 1] * p[:, None, 0, 1] + d[..., 0] * d[..., 2] * p[:, None, 0, 2]
                        + d[..., 1] * d[..., 2] * p[:, None, 1, 2]))
            a = (g.opacities[idx, None] * torch.exp(-0.5 * q)).clamp(max=ALPHA_MAX)
            ok = ((vox >= 0) & (vox < dims_t)).all(-1) & (a >= 1 / 255)
            acc.index_add_(0, (vox[ok] * strides).sum(-1), torch.log1p(-a[ok]))
    return (-acc).reshape(*dims.tolist()).numpy(), origin


def level_set_mesh(field: np.ndarray, origin: np.ndarray, voxel: float) -> TriMesh:
    """Marching cubes of the zero level of ``field`` [X, Y, Z] (negative inside, positive outside),
    sampled at (origin + ijk) * voxel; origin and every side must be multiples of BLOCK voxels."""
    from o3dcli.jobs import open3d

    o3d = open3d()

    nb = np.array(field.shape) // BLOCK
    if (nb * BLOCK != np.array(field.shape)).any() or (np.asarray(origin) % BLOCK).any():
        raise ValueError(f"level_set_mesh: grid {field.shape} / origin {origin} not in blocks of {BLOCK}")
    if not ((field < 0).any() and (field > 0).any()):  # no zero crossing (open3d fails on an empty result)
        return TriMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))
    blocks = field.reshape(nb[0], BLOCK, nb[1], BLOCK, nb[2], BLOCK).transpose(0, 2, 4, 5, 3, 1)
    blocks = blocks.reshape(-1, BLOCK, BLOCK, BLOCK)  # [block, z, y, x]: open3d's voxel order
    coords = np.stack(np.meshgrid(*(np.arange(n) for n in nb), indexing="ij"), -1).reshape(-1, 3)
    coords = coords + np.asarray(origin) // BLOCK
    vbg = _vbg(voxel, block_count=len(blocks) + 16)  # every block: marching cubes reads across block faces
    buf, _ = vbg.hashmap().activate(o3d.core.Tensor(coords.astype(np.int32)))
    buf = buf.numpy().astype(np.int64)
    vbg.attribute("tsdf").numpy()[buf, ..., 0] = blocks
    vbg.attribute("weight").numpy()[buf] = 1.0
    return _to_trimesh(vbg.extract_triangle_mesh(weight_threshold=0.5))


@dataclass(frozen=True)
class Silhouettes:
    """Known outlines of the object: alpha [V, H, W] (numpy, in [0, 1]) seen by ``cameras`` (V views, in the
    Gaussians' world frame). Meshing keeps only what lies inside every one of them."""

    cameras: Cameras
    alpha: np.ndarray


def grid_points(origin: np.ndarray, dims, voxel: float) -> Tensor:
    """World positions [X*Y*Z, 3] of the grid points (origin + ijk) * voxel, ijk in C order."""
    axes = [torch.arange(int(n), dtype=torch.float32) for n in dims]
    ijk = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return (ijk + torch.from_numpy(np.asarray(origin)).float()) * voxel


def carve_points(points: Tensor, keep: Tensor, silhouettes: Silhouettes, threshold: float) -> None:
    """Clear ``keep`` [N] (bool, in place) for points [N, 3] that project onto a pixel of alpha below
    ``threshold`` (bilinear; outside the image counts as 0) or lie behind a camera, in any view."""
    cams = silhouettes.cameras
    w2c = torch.linalg.inv(cams.c2w.double()).float()
    alpha = torch.as_tensor(np.asarray(silhouettes.alpha, dtype=np.float32))
    for v in range(len(cams)):
        idx = torch.nonzero(keep).squeeze(1)  # only points still inside: each view carves the rest
        pc = points[idx] @ w2c[v, :3, :3].T + w2c[v, :3, 3]
        z = pc[:, 2].clamp_min(1e-6)
        u = (cams.fx[v] * pc[:, 0] / z + cams.cx[v]) / cams.width * 2 - 1
        w = (cams.fy[v] * pc[:, 1] / z + cams.cy[v]) / cams.height * 2 - 1
        a = F.grid_sample(alpha[v][None, None], torch.stack([u, w], -1)[None, None], mode="bilinear",
                          padding_mode="zeros", align_corners=False)[0, 0, 0]
        keep[idx[(a < threshold) | (pc[:, 2] <= 0)]] = False


def opacity_surface(gaussians: Gaussians, cfg: MeshConfig, bounds: ObjectBounds | None = None,
                    silhouettes: Silhouettes | None = None) -> TriMesh:
    """Marching cubes of the opacity field at cfg.alpha_threshold, with enclosed empty space
    filled (a closed shell of flat Gaussians becomes a solid, so one surface comes out, not two).
    Grid points outside ``silhouettes`` (alpha below cfg.carve_alpha) are emptied first."""
    from scipy import ndimage

    bounds = bounds or gaussian_bounds(gaussians, cfg.bounds_quantile)
    voxel = bounds.extent / cfg.resolution
    density, origin = opacity_field(gaussians, bounds, voxel, cfg.opacity_smoothing)
    if silhouettes is not None:
        keep = torch.ones(density.size, dtype=torch.bool)
        carve_points(grid_points(origin, density.shape, voxel), keep, silhouettes, cfg.carve_alpha)
        density = np.where(keep.reshape(density.shape).numpy(), density, 0.0).astype(np.float32)
    alpha = -np.expm1(-density)
    occupied = alpha >= cfg.alpha_threshold
    solid = ndimage.binary_fill_holes(occupied)
    alpha[solid & ~occupied] = 1.0
    mesh = level_set_mesh((cfg.alpha_threshold - alpha).astype(np.float32), origin, voxel)
    return snap_to_ridge(mesh, density, origin, voxel) if len(mesh.faces) else mesh


def carve_surface(gaussians: Gaussians, cfg: MeshConfig, bounds: ObjectBounds | None = None,
                  silhouettes: Silhouettes | None = None) -> TriMesh:
    """The solid inside the Gaussians' silhouette in every fusion view (their visual hull), smoothed
    by CARVE_SMOOTH_VOXELS and meshed at its half level: always closed, one surface per part.

    A grid point is kept when, in each of the cfg.fusion_views renders, it projects onto a pixel
    whose alpha is at least cfg.carve_alpha. Hollows that no view sees into are filled;
    holes seen through (a handle, a torus) stay open. The surface lies about one splat
    footprint outside the Gaussians' centres (where their rendered alpha falls to the threshold).
    ``silhouettes`` (known outlines, e.g. the input image's) carve at the same threshold.
    """
    from scipy import ndimage

    renders = fusion_renders(gaussians, cfg.fusion_views, cfg.fusion_size, cfg.fusion_fov_deg, cfg.bounds_quantile)
    bounds = bounds or renders.bounds
    voxel = bounds.extent / cfg.resolution
    lo_idx = np.floor(bounds.lo / voxel).astype(np.int64) - 2
    hi_idx = np.ceil(bounds.hi / voxel).astype(np.int64) + 3
    origin = (lo_idx // BLOCK) * BLOCK
    dims = ((hi_idx - origin + BLOCK - 1) // BLOCK) * BLOCK
    points = grid_points(origin, dims, voxel)
    keep = torch.ones(len(points), dtype=torch.bool)
    for sil in [Silhouettes(renders.cameras, renders.alpha)] + ([silhouettes] if silhouettes is not None else []):
        carve_points(points, keep, sil, cfg.carve_alpha)
    solid = keep.reshape(*dims.tolist()).numpy()
    if not solid.any():
        return TriMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    smooth = ndimage.gaussian_filter(solid.astype(np.float32), CARVE_SMOOTH_VOXELS)
    return level_set_mesh((0.5 - smooth).astype(np.float32), origin, voxel)


def vertex_normals(mesh: TriMesh) -> np.ndarray:
    """[V, 3] area-weighted unit vertex normals (outward for counter-clockwise faces)."""
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 x area
    vn = np.zeros((len(mesh.vertices), 3))
    for k in range(3):
        np.add.at(vn, mesh.faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-20)


def snap_to_ridge(mesh: TriMesh, density: np.ndarray, origin: np.ndarray, voxel: float) -> TriMesh:
    """Move vertices of a level set of a thin shell's opacity onto the shell's ridge.

    The level set of a blurred shell of flat Gaussians lies on its outer flank,
    about two widened sigmas outside the Gaussians' centres. Each vertex looks
    inwards (up to RIDGE_SEARCH_VOXELS) for the first maximum of the density (not
    of the opacity, which saturates at 1 and hides the ridge); where the density
    drops by RIDGE_DROP behind it (a shell, not a solid), the vertex moves to that
    maximum (parabola-refined). Near a box edge the drop is to the perpendicular
    face's level, so those vertices snap too.
    """
    from scipy.ndimage import map_coordinates

    normals = vertex_normals(mesh)
    steps = np.arange(0.0, RIDGE_SEARCH_VOXELS + 1e-9, RIDGE_STEP)  # inward distances, voxels
    grid = mesh.vertices / voxel - origin  # grid coordinates of the vertices
    pts = grid[:, None, :] - steps[None, :, None] * normals[:, None, :]
    vals = map_coordinates(density, pts.reshape(-1, 3).T, order=1, mode="constant", cval=0.0).reshape(len(grid), -1)
    # the first local maximum inwards (the nearest ridge, not one further inside a thin part)
    falling = vals[:, 1:] < vals[:, :-1]
    k = np.where(falling.any(1), falling.argmax(1), 0)
    later = np.arange(len(steps))[None, :] > k[:, None]
    peak = vals[np.arange(len(k)), k]
    shell = ((vals < (1.0 - RIDGE_DROP) * peak[:, None]) & later).any(1) & (k > 0)
    rows = np.arange(len(k))
    km, kp = np.clip(k - 1, 0, len(steps) - 1), np.clip(k + 1, 0, len(steps) - 1)
    a, b, c = vals[rows, km], vals[rows, k], vals[rows, kp]
    curv = a - 2 * b + c
    offset = np.where(curv < -1e-12, 0.5 * (a - c) / np.where(curv < -1e-12, curv, -1.0), 0.0)
    depth = (steps[k] + np.clip(offset, -0.5, 0.5) * RIDGE_STEP) * shell
    return mesh.replace(vertices=mesh.vertices - (depth * voxel)[:, None] * normals)


def resolve_method(cfg: MeshConfig, gaussians: Gaussians) -> str:
    """cfg.method, with "auto" decided by the number of Gaussians (mesh.config.CARVE_BELOW)."""
    from o3dcli.mesh.config import CARVE_BELOW

    if cfg.method != "auto":
        return cfg.method
    return "carve" if len(gaussians) < CARVE_BELOW else "opacity"


def gaussians_to_mesh(gaussians: Gaussians, cfg: MeshConfig | None = None,
                      silhouettes: Silhouettes | None = None) -> TriMesh:
    """An untextured, cleaned surface mesh of ``gaussians`` (same world frame).

    cfg.method "tsdf": renders cfg.fusion_views views and fuses their depth; "opacity":
    marching cubes on the opacity field; "carve": the solid inside their rendered
    silhouettes; "auto": carve for sparse sets, opacity for dense ones. Then keeps the
    main connected part(s) (cfg.min_component_ratio) and closes holes up to
    cfg.max_hole_edges edges. ``silhouettes``: known outlines (the input image's) that the carve
    and opacity methods cut the solid to; the tsdf method does not use them.
    Raises ValueError naming the cause when no surface comes out.
    """
    from o3dcli.mesh.cleanup import fill_holes, keep_main_components

    cfg = cfg or MeshConfig()
    cfg.check()
    if len(gaussians) == 0:
        raise ValueError("cannot mesh an empty set of Gaussians")
    if cfg.method == "tsdf":
        renders = fusion_renders(gaussians, cfg.fusion_views, cfg.fusion_size, cfg.fusion_fov_deg, cfg.bounds_quantile)
        if not (renders.alpha > cfg.alpha_threshold).any():
            raise ValueError(f"the Gaussians render no pixel with alpha above {cfg.alpha_threshold}: nothing to fuse "
                             "(are they all transparent?)")
        mesh = tsdf_fuse(renders, cfg)
    elif resolve_method(cfg, gaussians) == "carve":
        mesh = carve_surface(gaussians, cfg, silhouettes=silhouettes)
    else:
        mesh = opacity_surface(gaussians, cfg, silhouettes=silhouettes)
    if len(mesh.faces) == 0:
        method = resolve_method(cfg, gaussians)
        tries = {"carve": "a lower mesh.carve_alpha, mesh.method=opacity",
                 "opacity": "a lower mesh.alpha_threshold, a higher mesh.resolution, mesh.method=carve",
                 "tsdf": "a lower mesh.alpha_threshold, a higher mesh.fusion_size, mesh.method=carve"}[method]
        if silhouettes is not None and method != "tsdf":
            tries += ", mesh.input_silhouette=false (the input's outline may be too thin to hold a surface)"
        raise ValueError(f"{method} meshing found no surface (try {tries})")
    mesh = keep_main_components(mesh, cfg.min_component_ratio)
    return fill_holes(mesh, cfg.max_hole_edges)
