"""Losses of the joint objective (Ouroboros3D section 3.2; docs/design.md section 1).

- diffusion: EDM-weighted MSE on x0, lambda(sigma) = (sigma^2 + 1) / sigma^2;
- reconstruction: the Gaussians rendered at the rig and extra cameras against the
  ground-truth views, L1 on RGB (composited on the background) plus
  `mask_weight` x MSE of alpha against the mask (LPIPS is left out: no weights);
- direct: per pixel of the reconstructor's input views, opacity against the
  ground-truth mask (BCE) and Gaussian position against the surface point behind
  the pixel (L1, where the ray hits the object). Without it the reconstructor
  collapses to transparent Gaussians (docs/design.md section 6).
"""

from __future__ import annotations

import torch
from torch import Tensor

from o3dcli.diffusion.edm import loss_weight
from o3dcli.geometry.cameras import Cameras
from o3dcli.geometry.gaussians import Gaussians


def diffusion_loss(x0_hat: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
    """mean_b lambda(sigma_b) * mean((x0_hat_b - x0_b)^2); x0: [B, ...], sigma: [B]."""
    per = ((x0_hat - x0) ** 2).flatten(1).mean(1)
    return (loss_weight(sigma) * per).mean()


def params_to_gaussians(p: dict[str, Tensor], b: int) -> Gaussians:
    return Gaussians(p["means"][b], p["scales"][b], p["quats"][b], p["opacities"][b], p["colors"][b])


def render_loss(params: dict[str, Tensor], rig: Cameras, views: Tensor, extra_cams: list[Cameras | None],
                extra_views: Tensor, background, mask_weight: float) -> Tensor:
    """Mean over the batch of L1(rgb) + mask_weight * MSE(alpha, mask) at rig + extra cameras.

    views: [B, V, 4, S, S] straight RGBA; extra_views: [B, E, 4, S, S].
    """
    from o3dcli.render.gaussians import render_gaussians
    from o3dcli.train.data import composite

    total = 0.0
    B = views.shape[0]
    for b in range(B):
        g = params_to_gaussians(params, b)
        cams, gt = rig, views[b]
        if extra_cams[b] is not None and len(extra_cams[b]):
            cams, gt = Cameras.cat([rig, extra_cams[b]]), torch.cat([views[b], extra_views[b]])
        out = render_gaussians(g, cams, background)
        target_rgb = composite(gt, background)
        total = total + (out.rgb - target_rgb).abs().mean() + mask_weight * ((out.alpha - gt[:, 3:]) ** 2).mean()
    return total / B


def direct_loss(params: dict[str, Tensor], points: Tensor, mask: Tensor, has_points: Tensor, splat: int) -> Tensor:
    """Per-pixel supervision of the input views' Gaussians (pixel order: view, row, column), for the
    batch elements that have surface points, each weighted as in a batch where all have them.

    points: [B, Vin, 3, s, s] surface points; mask: [B, Vin, 1, s, s]; has_points: [B] bool.
    """
    B = points.shape[0]
    share = has_points.float().mean()  # 1 when every element has points: the plain batch mean
    pts = points.permute(0, 1, 3, 4, 2).reshape(B, -1, 3)[has_points]
    m = mask.reshape(B, -1)[has_points]
    opacity = params["opacities"][has_points].clamp(1e-5, 1 - 1e-5)
    # binary cross-entropy, written out: F.binary_cross_entropy raises on a NaN opacity, where the
    # trainer's check of the loss says which step and objects went wrong
    l_opacity = ((m - 1) * torch.log1p(-opacity) - m * torch.log(opacity)).mean()
    hit = m > 0.5
    l_pos = (params["means"][has_points] - pts).abs().sum(-1)[hit].mean() if hit.any() else opacity.sum() * 0
    return (l_opacity + l_pos) * share


def feedback_maps(params: dict[str, Tensor], rig: Cameras, background, size: int) -> tuple[Tensor, Tensor]:
    """RGB and CCM maps [B, V, 3, size, size] of each batch element's Gaussians (as the sampler renders them)."""
    from o3dcli.diffusion.sampler import render_feedback_maps

    rgb, ccm = zip(*(render_feedback_maps(params_to_gaussians(params, b), rig, background, size)
                     for b in range(params["means"].shape[0])))
    return torch.stack(rgb), torch.stack(ccm)
