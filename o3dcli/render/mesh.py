"""Triangle-mesh renderer by ray casting (open3d ``RaycastingScene``, CPU, no compiled extras).

Used for training data, evaluation renders and texture baking. One ray per pixel
centre (or ``ssaa``^2 per pixel for anti-aliased colour and alpha); the first hit
gives the triangle, its barycentrics and the hit distance, from which colour
(texture, vertex colours or material colour), z-depth, normals, canonical
coordinates (CCM) and world points are read.

The per-pixel work after the cast is done in numpy and handed out as torch
tensors: numpy's single-threaded gathers and scatters cost ~1 ms per map,
whereas torch's threaded index_put stalls for ~15 ms each when the CPU is
shared (measured on the 2-core build machine).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from o3dcli.geometry.cameras import Cameras
from o3dcli.geometry.mesh import TriMesh


_MAX_RAYS = 1 << 22  # rays cast at once (~100 MB of ray and hit buffers)


@dataclass(frozen=True)
class MeshRender:
    """Renders of V views, float32 unless noted.

    Tensors live on the cameras' device (the casting itself runs on the CPU).
    rgb: [V, 3, H, W] colour composited over the background.
    alpha: [V, 1, H, W] coverage (binary at ssaa=1, fractional with supersampling).
    depth: [V, 1, H, W] z-depth along the camera axis, 0 where empty.
    normals: [V, 3, H, W] world-space unit face normals facing the camera, 0 where empty.
    ccm: [V, 3, H, W] canonical coordinates xyz + 0.5 in [0, 1], composited over 0.5 grey.
    face_ids: [V, H, W] int64 hit triangle, -1 where empty.
    points: [V, 3, H, W] world-space hit points, 0 where empty.
    Geometric maps (depth, normals, face_ids, points) come from the pixel-centre ray.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normals: Tensor
    ccm: Tensor
    face_ids: Tensor
    points: Tensor

    @property
    def mask(self) -> Tensor:
        return self.alpha


@dataclass(frozen=True)
class RayHits:
    """First hits of N rays: t [N] (inf if none), face_ids [N] int64 (-1), barycentrics [N, 3]
    (weights of the triangle's vertices 0, 1, 2), points [N, 3] (0 if none)."""

    t: Tensor
    face_ids: Tensor
    barycentrics: Tensor
    points: Tensor

    @property
    def hit(self) -> Tensor:
        return self.face_ids >= 0


class MeshRaycaster:
    """A mesh with its ray-casting acceleration structure built once; reuse it for many renders."""

    def __init__(self, mesh: TriMesh):
        import open3d as o3d

        from o3dcli.jobs import library_threads

        self.mesh = mesh
        self._threads = library_threads()  # torch's count: one share each under --jobs
        self._scene = o3d.t.geometry.RaycastingScene(nthreads=self._threads)
        self.num_faces = len(mesh.faces)
        if self.num_faces:
            self._scene.add_triangles(
                o3d.core.Tensor(mesh.vertices), o3d.core.Tensor(mesh.faces.astype(np.uint32))
            )
        self.face_normals = mesh.face_normals().astype(np.float32)  # [F, 3]
        # per-face corner attributes [F, 3, C]: one gather per hit, then a barycentric blend
        self._face_uv = mesh.uv[mesh.faces] if mesh.has_texture else None
        self._face_colors = mesh.vertex_colors[mesh.faces] if mesh.vertex_colors is not None else None
        # a textured alpha is a cut-out for the renderer: rays pass where it is below the cutoff
        # (a blended surface is drawn where its alpha is at least one half)
        self._cutoff = (mesh.alpha_cutoff if mesh.alpha_mode == "MASK" else 0.5) if mesh.has_alpha else None

    def cast_rays(self, origins: Tensor, dirs: Tensor) -> RayHits:
        """First hits of rays origins [N, 3] + t * dirs [N, 3] (t in units of |dirs|)."""
        o = np.ascontiguousarray(torch.as_tensor(origins, dtype=torch.float32).cpu().numpy())
        d = np.ascontiguousarray(torch.as_tensor(dirs, dtype=torch.float32).cpu().numpy())
        n = len(o)
        rays = np.concatenate([o, d], axis=1)
        idx, t, fid, bary = self._cast_compact(rays)
        t_all = np.full(n, np.inf, np.float32)
        t_all[idx] = t
        f_all = np.full(n, -1, np.int64)
        f_all[idx] = fid
        b_all = np.zeros((n, 3), np.float32)
        b_all[idx] = bary
        p_all = np.zeros((n, 3), np.float32)
        p_all[idx] = o[idx] + t[:, None] * d[idx]
        return RayHits(*(torch.from_numpy(a) for a in (t_all, f_all, b_all, p_all)))

    def _cast_compact(self, rays: np.ndarray):
        """Hits only, for rays [N, 6] float32: ray indices [M] (ascending), t [M], face ids [M],
        barycentrics [M, 3]. With a cut-out texture a ray goes on through see-through surfaces
        and stops at the first one it cannot see through."""
        hits = self._cast_once(rays)
        if self._cutoff is None or len(hits[0]) == 0:
            return hits
        idx, t, fid, bary = hits
        see = self.surface_alpha(fid, bary) < self._cutoff
        if not see.any():
            return hits
        behind = self._first_solid_hits(rays[idx[see]])  # every hit along those rays, in order
        keep = ~see
        idx, t, fid, bary = (np.concatenate([a[keep], b]) for a, b in
                             zip((idx, t, fid, bary), (idx[see][behind[0]],) + behind[1:]))
        order = np.argsort(idx, kind="stable")
        return idx[order], t[order], fid[order], bary[order]

    def _first_solid_hits(self, rays: np.ndarray):
        """For rays [K, 6]: which of them hit a surface they cannot see through [M] (indices into
        rays), and the nearest such hit's t [M], face id [M] and barycentrics [M, 3].

        Every intersection along the ray is listed at once (no re-casting from a hit point, which
        would skip a surface lying closer behind it than the step, such as a decal's base)."""
        import open3d as o3d

        out = self._scene.list_intersections(o3d.core.Tensor.from_numpy(np.ascontiguousarray(rays)),
                                             nthreads=self._threads)
        ray_ids = out["ray_ids"].numpy().astype(np.int64)
        t = out["t_hit"].numpy().astype(np.float32)
        fid = out["primitive_ids"].numpy().astype(np.int64)
        uv = out["primitive_uvs"].numpy()
        bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=-1).astype(np.float32)
        solid = np.flatnonzero(self.surface_alpha(fid, bary) >= self._cutoff)
        solid = solid[np.lexsort((t[solid], ray_ids[solid]))]  # by ray, nearest first
        first = solid[np.r_[True, ray_ids[solid][1:] != ray_ids[solid][:-1]]] if len(solid) else solid
        return ray_ids[first], t[first], fid[first], bary[first]

    def _cast_once(self, rays: np.ndarray):
        """First hits of rays [N, 6], whatever their alpha, as in :meth:`_cast_compact`."""
        import open3d as o3d

        if self.num_faces == 0 or len(rays) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
        out = self._scene.cast_rays(o3d.core.Tensor.from_numpy(rays), nthreads=self._threads)
        t = out["t_hit"].numpy()
        idx = np.flatnonzero(np.isfinite(t))
        # open3d reports (u, v) with hit = (1 - u - v) * p0 + u * p1 + v * p2
        uv = out["primitive_uvs"].numpy()[idx]
        bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=-1)
        fid = out["primitive_ids"].numpy()[idx].astype(np.int64)
        return idx, t[idx], fid, bary

    def surface_color(self, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """Base colour [M, 3] float32 at hits on faces face_ids [M] with barycentrics [M, 3]."""
        if self._face_uv is not None:
            uv = np.einsum("mk,mkc->mc", bary, self._face_uv[face_ids])
            return _sample_texture_np(self.mesh.texture, uv)[:, :3]
        if self._face_colors is not None:
            return np.clip(np.einsum("mk,mkc->mc", bary, self._face_colors[face_ids]), 0, 1)
        return np.broadcast_to(self.mesh.material_color, (len(face_ids), 3))

    def surface_alpha(self, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """Texture alpha [M] float32 in [0, 1] at hits (1 where the mesh has no alpha)."""
        if not self.mesh.has_alpha:
            return np.ones(len(face_ids), np.float32)
        uv = np.einsum("mk,mkc->mc", bary, self._face_uv[face_ids])
        return _sample_texture_np(self.mesh.texture, uv)[:, 3]

    def render(
        self,
        cameras: Cameras,
        background: Sequence[float] = (1.0, 1.0, 1.0),
        shading: str = "unlit",
        ambient: float = 0.3,
        light_dir: Sequence[float] | None = None,
        ssaa: int = 1,
    ) -> MeshRender:
        """Render every camera. See :func:`render_mesh` for the arguments."""
        if shading not in ("unlit", "lambert"):
            raise ValueError(f"shading must be 'unlit' or 'lambert', got {shading!r}")
        if ssaa < 1:
            raise ValueError(f"ssaa must be >= 1, got {ssaa}")
        bg = np.asarray(background, np.float32).reshape(3)
        light = None
        if light_dir is not None:
            light = np.asarray(light_dir, np.float32).reshape(3)
            light = light / np.linalg.norm(light)
        v, h, w = len(cameras), cameras.height, cameras.width
        if v > 1 and v * h * w * ssaa * ssaa > _MAX_RAYS:  # bound memory: one view at a time
            views = [self.render(cameras[i:i + 1], background, shading, ambient, light_dir, ssaa) for i in range(v)]
            return MeshRender(*(torch.cat([getattr(r, f.name) for r in views]) for f in fields(MeshRender)))
        geo = self._cast_image(cameras)
        if ssaa == 1:
            rgb, alpha, ccm = (torch.from_numpy(m) for m in self._shade(geo, v, h * w, bg, shading, ambient, light))
        else:  # colour, alpha and CCM from ssaa^2 rays per pixel, averaged after compositing
            hi = self._cast_image(cameras.resized(w * ssaa, h * ssaa))
            maps = self._shade(hi, v, h * w * ssaa * ssaa, bg, shading, ambient, light)
            rgb, alpha, ccm = (F.avg_pool2d(torch.from_numpy(m).view(v, -1, h * ssaa, w * ssaa), ssaa) for m in maps)
        idx = geo["idx"]
        depth = np.zeros(v * h * w, np.float32)
        depth[idx] = geo["t"]
        face_ids = np.full(v * h * w, -1, np.int64)
        face_ids[idx] = geo["face_ids"]
        normals = _scatter(geo["normals"], idx, v, h * w, 0.0)
        points = _scatter(geo["points"], idx, v, h * w, 0.0)
        dev = cameras.device
        return MeshRender(
            rgb=rgb.reshape(v, 3, h, w).to(dev), alpha=alpha.reshape(v, 1, h, w).to(dev),
            depth=torch.from_numpy(depth).view(v, 1, h, w).to(dev),
            normals=torch.from_numpy(normals).view(v, 3, h, w).to(dev), ccm=ccm.reshape(v, 3, h, w).to(dev),
            face_ids=torch.from_numpy(face_ids).view(v, h, w).to(dev),
            points=torch.from_numpy(points).view(v, 3, h, w).to(dev),
        )

    def _cast_image(self, cameras: Cameras) -> dict[str, np.ndarray]:
        """Hits of all pixels of all views, compact: flat pixel index idx [M] into [V*H*W], and
        per hit t (z-depth), face_ids, bary [M, 3], points, camera-facing normals, dirs [M, 3]."""
        c2w = cameras.c2w.detach().cpu().double().numpy()
        fx, fy, cx, cy = (getattr(cameras, k).detach().cpu().double().numpy() for k in ("fx", "fy", "cx", "cy"))
        v, h, w = len(cameras), cameras.height, cameras.width
        # ray through pixel centre (u + 0.5, v + 0.5), scaled to camera-z = 1 so t is the z-depth
        x = (((np.arange(w) + 0.5)[None, :] - cx[:, None]) / fx[:, None]).astype(np.float32)  # [V, W]
        y = (((np.arange(h) + 0.5)[None, :] - cy[:, None]) / fy[:, None]).astype(np.float32)  # [V, H]
        rot = c2w[:, :3, :3].astype(np.float32)
        rays = np.empty((v, h, w, 6), np.float32)
        rays[..., :3] = c2w[:, None, None, :3, 3]
        for i in range(v):  # d = x * right + y * down + forward, one component at a time:
            for c in range(3):  # numpy broadcasts long rows far faster than a trailing axis of 3
                np.add((x[i] * rot[i, c, 0])[None, :], (y[i] * rot[i, c, 1] + rot[i, c, 2])[:, None],
                       out=rays[i, :, :, 3 + c])
        rays = rays.reshape(-1, 6)
        idx, t, fid, bary = self._cast_compact(rays)
        ray = rays[idx]
        points = ray[:, :3] + t[:, None] * ray[:, 3:]
        n = self.face_normals[fid]
        flip = np.einsum("mc,mc->m", n, ray[:, 3:]) > 0  # back face seen: turn it towards the camera
        n[flip] *= -1
        return {"idx": idx, "t": t, "face_ids": fid, "bary": bary, "points": points, "normals": n, "dirs": ray[:, 3:]}

    def _shade(self, geo, v, hw, bg, shading, ambient, light) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Composited colour [V,3,HW], alpha [V,1,HW] and CCM [V,3,HW] from compact hits."""
        c = self.surface_color(geo["face_ids"], geo["bary"])
        if shading == "lambert":
            n = geo["normals"]
            if light is None:  # headlight: towards the camera along each ray
                d = geo["dirs"]
                cos = -np.einsum("mc,mc->m", n, d) / np.linalg.norm(d, axis=1)
            else:
                cos = n @ light
            c = c * (ambient + (1 - ambient) * np.clip(cos, 0, None))[:, None]
        rgb = _scatter(c, geo["idx"], v, hw, bg[:, None])
        ccm = _scatter(np.clip(geo["points"] + 0.5, 0, 1), geo["idx"], v, hw, 0.5)
        alpha = np.zeros(v * hw, np.float32)
        alpha[geo["idx"]] = 1.0
        return rgb, alpha.reshape(v, 1, hw), ccm


def _scatter(values: np.ndarray, idx: np.ndarray, v: int, hw: int, fill) -> np.ndarray:
    """Channels-first maps [V, C, HW] float32 holding values [M, C] at sorted flat pixel indices
    idx [M] into [V*HW], ``fill`` (a scalar or [C, 1]) elsewhere."""
    out = np.empty((v, values.shape[1], hw), np.float32)
    out[:] = fill
    bounds = np.searchsorted(idx, np.arange(v + 1) * hw)
    for i in range(v):
        lo, hi = bounds[i], bounds[i + 1]
        out[i][:, idx[lo:hi] - i * hw] = values[lo:hi].T
    return out


def _sample_texture_np(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of texture [H, W, C] (uint8 or float) at uv [N, 2] -> [N, C] float32 in [0, 1]."""
    th, tw = texture.shape[:2]
    uv = np.where((uv < 0) | (uv > 1), uv - np.floor(uv), uv)
    x = uv[:, 0] * tw - 0.5
    y = (1.0 - uv[:, 1]) * th - 0.5  # row 0 is the top of the image, v = 1
    x0, y0 = np.floor(x), np.floor(y)
    wx, wy = (x - x0)[:, None].astype(np.float32), (y - y0)[:, None].astype(np.float32)
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    x1, y1 = np.clip(x0 + 1, 0, tw - 1), np.clip(y0 + 1, 0, th - 1)
    x0, y0 = np.clip(x0, 0, tw - 1), np.clip(y0, 0, th - 1)
    flat = texture.reshape(th * tw, -1)
    scale = np.float32(1 / 255) if texture.dtype == np.uint8 else np.float32(1)
    texel = lambda yy, xx: flat[yy * tw + xx].astype(np.float32) * scale  # noqa: E731
    top = texel(y0, x0) * (1 - wx) + texel(y0, x1) * wx
    bottom = texel(y1, x0) * (1 - wx) + texel(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of texture [H, W, C] at uv [N, 2] (origin bottom-left) -> [N, C].

    uint8 textures are read as value / 255. Texel centres sit at (i + 0.5) / W.
    UVs outside [0, 1] repeat (glTF's default wrap); inside a tile the lookup
    clamps at the border, so atlas charts touching the edge do not bleed into
    the opposite side.
    """
    out = _sample_texture_np(np.asarray(texture.detach().cpu()), uv.detach().cpu().double().numpy())
    return torch.from_numpy(out)


def render_mesh(
    mesh: TriMesh | MeshRaycaster,
    cameras: Cameras,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    shading: str = "unlit",
    ambient: float = 0.3,
    light_dir: Sequence[float] | None = None,
    ssaa: int = 1,
) -> MeshRender:
    """Render a mesh from every camera (CPU ray casting).

    mesh: a TriMesh, or a MeshRaycaster to reuse its acceleration structure.
    background: RGB the colour is composited over.
    shading: "unlit" (base colour) or "lambert": colour * (ambient + (1 - ambient) * max(0, n.l)).
    light_dir: world-space direction from the surface towards a distant light;
        None is a headlight (light at each camera, l = -ray direction).
    ssaa: supersampling factor per axis for anti-aliased rgb, alpha and ccm.
    """
    caster = mesh if isinstance(mesh, MeshRaycaster) else MeshRaycaster(mesh)
    return caster.render(cameras, background, shading, ambient, light_dir, ssaa)
