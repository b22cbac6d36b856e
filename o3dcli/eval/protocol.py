"""The o3d evaluation protocol: fixed cameras and renders, and the scoring of one prediction.

docs/eval-protocol.md states it in words; the numbers live in ``EvalProtocol``
and are written into every eval.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import Tensor

from o3dcli.eval.align import (ALIGN_METHODS, IDENTITY, Alignment, box_align, icp_align, transform_gaussians,
                              transform_mesh, transform_points)
from o3dcli.eval.geometry import (DEFAULT_THRESHOLDS, PointSet, fscore_key, gaussian_points, sample_surface,
                                  surface_metrics, volume_iou)
from o3dcli.eval.metrics import mask_iou, mean_over_views, psnr, quantize8, ssim_map, ssim_mean, union_mask
from o3dcli.geometry.cameras import Cameras, orbit_cameras
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.geometry.mesh import TriMesh

PROTOCOL_VERSION = "o3d-eval-2"
"""Changed with the protocol's numbers (docs/eval-protocol.md, section 9)."""
# The published Ouroboros3D generation cameras (docs/design.md section 1), which are also the tiny preset's.
VIEW_AZIMUTHS = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 337.5)

ASSET_KINDS = ("auto", "mesh", "gaussians", "views")
IMAGE_KEYS = ("psnr", "psnr_masked", "ssim", "ssim_masked", "lpips", "mask_iou")
HIGHER_IS_BETTER = {"psnr": True, "psnr_masked": True, "ssim": True, "ssim_masked": True, "lpips": False,
                    "mask_iou": True, "chamfer": False, "chamfer_pred_to_gt": False, "chamfer_gt_to_pred": False,
                    "volume_iou": True, "normal_consistency": True}


@dataclass(frozen=True)
class EvalProtocol:
    """Every number the scores depend on (written into eval.json)."""

    version: str = PROTOCOL_VERSION
    size: int = 256
    """Side in pixels of the input view and of every scored view."""
    elevations: tuple[float, ...] = (0.0,) * 8
    azimuths: tuple[float, ...] = VIEW_AZIMUTHS
    """Scored views (degrees, docs/design.md orbit convention); view 0 is the input view."""
    radius: float = 1.7417
    fov_deg: float = 39.6
    shading: str = "lambert"
    """Ground-truth renders: base colour * (ambient + (1 - ambient) max(0, n.l)), headlight."""
    ambient: float = 0.3
    ssaa: int = 2
    """Mesh renders: ssaa^2 rays per pixel (anti-aliased colour, fractional alpha)."""
    mesh_shading: str = "lambert"
    """Predicted meshes: "lambert" (their colours are albedo, like the GT's) or "unlit" (colours that already hold lighting)."""
    surface_points: int = 100_000
    sample_seed: int = 0
    fscore_thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    iou_resolution: int = 64
    gaussian_min_opacity: float = 0.5
    mask_threshold: float = 0.5
    psnr_max_db: float = 60.0
    """PSNR (and masked PSNR) of a view is capped at this: identical views would give infinity, and one
    infinite view would make its object's mean, and every mean over objects, infinite. 60 dB is
    libvmaf's cap for 8-bit images (MSE 1e-6: about a quarter of one 8-bit level, root mean square)."""
    align: str = "none"
    novel_views: bool = False
    """Image metrics (PSNR, SSIM, LPIPS, mask IoU) over the novel views only: the views at the input
    camera (elevation 0, azimuth 0) are left out. o3d projects the input photo onto its textures,
    so view 0 shows the input itself; geometry metrics are unaffected."""
    asset: str = "auto"
    """Which file of an o3d asset folder is scored: auto (model.glb, else model.obj, else
    gaussians.ply), mesh (model.glb / model.obj), gaussians (gaussians.ply) or views (views.png,
    the multi-view diffusion's own images: image metrics only, at the images' resolution)."""

    def __post_init__(self) -> None:
        if self.asset not in ASSET_KINDS:
            raise ValueError(f"protocol: asset must be one of {', '.join(ASSET_KINDS)}, got {self.asset!r}")
        if len(self.elevations) != len(self.azimuths) or not self.azimuths:
            raise ValueError("protocol: elevations and azimuths must be non-empty and of one length")
        if self.size < 16:
            raise ValueError(f"protocol: size must be at least 16 px (SSIM's window is 11), got {self.size}")
        if self.shading not in ("lambert", "unlit") or self.mesh_shading not in ("lambert", "unlit"):
            raise ValueError("protocol: shading and mesh_shading must be 'lambert' or 'unlit'")
        if self.align not in ALIGN_METHODS:
            raise ValueError(f"protocol: align must be one of {', '.join(ALIGN_METHODS)}, got {self.align!r}")
        if self.surface_points < 100 or self.iou_resolution < 8:
            raise ValueError("protocol: surface_points must be >= 100 and iou_resolution >= 8")
        if not self.psnr_max_db > 0:
            raise ValueError(f"protocol: psnr_max_db must be positive, got {self.psnr_max_db}")
        if not bool(self.image_views().any()):
            raise ValueError("protocol: novel_views leaves no view to score (every view is at the input camera)")

    def with_views(self, n: int) -> "EvalProtocol":
        """n views at elevation 0, azimuths 360 i / n (view 0 = the input view)."""
        if n < 1:
            raise ValueError(f"views must be at least 1, got {n}")
        return replace(self, elevations=(0.0,) * n, azimuths=tuple(360.0 * i / n for i in range(n)))

    def cameras(self) -> Cameras:
        return orbit_cameras(list(self.elevations), list(self.azimuths), self.radius, self.fov_deg, self.size)

    def image_views(self) -> Tensor:
        """[V] bool: the views the image metrics average over (all, or with novel_views those not at
        the input camera)."""
        at_input = [abs(e) < 1e-6 and abs(((a + 180.0) % 360.0) - 180.0) < 1e-6
                    for e, a in zip(self.elevations, self.azimuths)]
        keep = [not (self.novel_views and i) for i in at_input]
        return torch.tensor(keep, dtype=torch.bool)

    def input_camera(self) -> Cameras:
        return orbit_cameras([0.0], [0.0], self.radius, self.fov_deg, self.size)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def geometry_keys(self) -> tuple[str, ...]:
        return ("chamfer", "chamfer_pred_to_gt", "chamfer_gt_to_pred",
                *(fscore_key(t) for t in self.fscore_thresholds), "volume_iou", "normal_consistency")

    def metric_keys(self) -> tuple[str, ...]:
        return IMAGE_KEYS + self.geometry_keys()

    def view_psnr(self, pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> Tensor:
        """PSNR per view [V] (o3dcli.eval.metrics.psnr) capped at psnr_max_db (nan views stay nan)."""
        return psnr(pred, gt, mask).clamp(max=self.psnr_max_db)


def higher_is_better(key: str) -> bool:
    return key.startswith("fscore@") or HIGHER_IS_BETTER.get(key, True)


@dataclass(frozen=True)
class Views:
    """Scored renders: rgb [V,3,H,W] over white, rounded to 8 bits; alpha [V,1,H,W] in [0, 1]."""

    rgb: Tensor
    alpha: Tensor


@dataclass(frozen=True)
class Reference:
    """Everything about one ground-truth object that every prediction is compared with."""

    mesh: TriMesh
    views: Views
    surface: PointSet
    appearance: bool
    """False when the object has no real colour (e.g. a GSO object without its texture): image
    metrics other than mask IoU are then n/a."""


@dataclass(frozen=True)
class Score:
    metrics: dict[str, float | None]
    alignment: Alignment
    views: Views
    kind: str
    """"mesh", "gaussians" or "views": what was scored."""


@dataclass(frozen=True)
class GeneratedViews:
    """The multi-view diffusion's images of one asset (views.png): rgb [V,3,h,w] over white,
    at the protocol's cameras (the generation cameras), at the model's own resolution."""

    rgb: Tensor
    source: str = ""
    cameras: dict | None = None
    """The generating config's `cameras` section, when known (checked against the protocol's views)."""


def score_views(ref: Reference, pred: GeneratedViews, protocol: EvalProtocol, lpips_model=None) -> Score:
    """PSNR / SSIM (and LPIPS) of generated views against the GT views, compared at the generated
    views' resolution (the GT area-downsampled to it); no masks, no geometry."""
    import torch.nn.functional as F

    V, h = len(protocol.azimuths), pred.rgb.shape[-2]
    if pred.rgb.shape[0] != V:
        raise ValueError(f"{pred.source or 'views'}: {pred.rgb.shape[0]} views, the protocol scores {V}")
    if pred.cameras is not None:
        want = {"elevations": protocol.elevations, "azimuths": protocol.azimuths, "fov_deg": protocol.fov_deg,
                "radius": protocol.radius}
        if any(not np.allclose(np.asarray(pred.cameras.get(k, np.nan), float), np.asarray(v, float), atol=1e-3)
               for k, v in want.items()):
            raise ValueError(f"{pred.source}: generated at other cameras than the protocol's views ({pred.cameras})")
    if protocol.align != "none":
        raise ValueError("views are images at the protocol's cameras: they cannot be aligned (use --align none)")
    gt = quantize8(F.interpolate(ref.views.rgb, size=tuple(pred.rgb.shape[-2:]), mode="area"))
    rgb = quantize8(pred.rgb.float())
    m: dict[str, float | None] = {k: None for k in protocol.metric_keys()}
    keep = protocol.image_views()
    if ref.appearance:
        m["psnr"] = mean_over_views(protocol.view_psnr(rgb, gt)[keep])
        m["ssim"] = mean_over_views(ssim_mean(ssim_map(rgb, gt))[keep]) if h >= 11 else None
        if lpips_model is not None:
            from o3dcli.eval.lpips import lpips_per_view

            m["lpips"] = mean_over_views(lpips_per_view(lpips_model, rgb, gt)[keep])
    # shown beside the GT in renders/: upsampled without smoothing, so the pixels are visible
    big = F.interpolate(rgb, size=tuple(ref.views.rgb.shape[-2:]), mode="nearest")
    return Score(m, IDENTITY, Views(big, torch.ones_like(big[:, :1])), "views")


def _render_mesh(mesh: TriMesh, cams: Cameras, protocol: EvalProtocol, shading: str, background=(1.0, 1.0, 1.0)):
    from o3dcli.render.mesh import render_mesh

    return render_mesh(mesh, cams, background=background, shading=shading, ambient=protocol.ambient, ssaa=protocol.ssaa)


def render_input_view(gt: TriMesh, protocol: EvalProtocol) -> np.ndarray:
    """The input view [H, W, 4] uint8 straight RGBA (transparent background), rendered like the GT views."""
    from o3dcli.synth.generate import straight_rgba

    r = _render_mesh(gt, protocol.input_camera(), protocol, protocol.shading, background=(0.0, 0.0, 0.0))
    return straight_rgba(r.rgb, r.alpha)[0]


def prepare_reference(gt: TriMesh, protocol: EvalProtocol, appearance: bool = True) -> Reference:
    """Render the GT (already in the unit box) at the protocol's views and sample its surface."""
    r = _render_mesh(gt, protocol.cameras(), protocol, protocol.shading)
    views = Views(quantize8(r.rgb), r.alpha)
    return Reference(gt, views, sample_surface(gt, protocol.surface_points, protocol.sample_seed), appearance)


def render_prediction(asset: TriMesh | Gaussians, protocol: EvalProtocol) -> Views:
    cams = protocol.cameras()
    if isinstance(asset, TriMesh):
        r = _render_mesh(asset, cams, protocol, protocol.mesh_shading)
        return Views(quantize8(r.rgb), r.alpha)
    from o3dcli.render.gaussians import render_gaussians

    # gsplat on CUDA when there is one (the published model's 65k Gaussians), the torch splatter
    # elsewhere: both compute the same EWA splatting (o3dcli.render.gaussians)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.no_grad():
        r = render_gaussians(asset.to(dev, torch.float32), cams.to(dev), background=(1.0, 1.0, 1.0))
    return Views(quantize8(r.rgb.float().cpu()), r.alpha.float().cpu().clamp(0, 1))


def prediction_surface(asset: TriMesh | Gaussians, protocol: EvalProtocol) -> PointSet:
    """Surface samples of a prediction: a mesh is sampled like the GT (same count and seed);
    Gaussians give the means of those with opacity > gaussian_min_opacity."""
    if isinstance(asset, TriMesh):
        return sample_surface(asset, protocol.surface_points, protocol.sample_seed)
    return gaussian_points(asset.to("cpu", torch.float32), protocol.gaussian_min_opacity)


def score_prediction(ref: Reference, asset: TriMesh | Gaussians | GeneratedViews, protocol: EvalProtocol,
                     lpips_model=None) -> Score:
    """All metrics of one prediction against one reference (after the protocol's alignment)."""
    if isinstance(asset, GeneratedViews):
        return score_views(ref, asset, protocol, lpips_model)
    surface = prediction_surface(asset, protocol)
    alignment = IDENTITY
    if protocol.align != "none":
        bounds = asset.vertices if isinstance(asset, TriMesh) else None
        alignment = box_align(surface, bounds) if protocol.align == "box" else \
            icp_align(surface, ref.surface, bounds, protocol.sample_seed)
        surface = transform_points(surface, alignment.matrix)
        if isinstance(asset, TriMesh):
            asset = transform_mesh(asset, alignment.matrix)
        else:
            asset = transform_gaussians(asset.to("cpu", torch.float32), alignment.matrix)
    views = render_prediction(asset, protocol)
    m: dict[str, float | None] = {k: None for k in protocol.metric_keys()}
    gt = ref.views
    keep = protocol.image_views()
    m["mask_iou"] = mean_over_views(mask_iou(views.alpha, gt.alpha, protocol.mask_threshold)[keep])
    if ref.appearance:
        region = union_mask(views.alpha, gt.alpha, protocol.mask_threshold)
        m["psnr"] = mean_over_views(protocol.view_psnr(views.rgb, gt.rgb)[keep])
        m["psnr_masked"] = mean_over_views(protocol.view_psnr(views.rgb, gt.rgb, region)[keep])
        smap = ssim_map(views.rgb, gt.rgb)
        m["ssim"] = mean_over_views(ssim_mean(smap)[keep])
        m["ssim_masked"] = mean_over_views(ssim_mean(smap, region)[keep])
        if lpips_model is not None:
            from o3dcli.eval.lpips import lpips_per_view

            m["lpips"] = mean_over_views(lpips_per_view(lpips_model, views.rgb, gt.rgb)[keep])
    m.update(surface_metrics(surface, ref.surface, protocol.fscore_thresholds))
    if isinstance(asset, TriMesh):
        m["volume_iou"] = volume_iou(asset, ref.mesh, protocol.iou_resolution)
    return Score(m, alignment, views, "mesh" if isinstance(asset, TriMesh) else "gaussians")
