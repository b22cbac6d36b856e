"""Image metrics of the o3d evaluation protocol: PSNR, SSIM (whole image and masked), mask IoU.

Every function takes renders as float tensors in [0, 1], channels first,
``[V, C, H, W]`` (V views), composited over the same background, and returns one
value per view ``[V]`` (float64). The per-object score is the mean over views
(``mean_over_views``). Written in torch (no scikit-image), so the definitions
below are the whole story. LPIPS lives in :mod:`o3dcli.eval.lpips` (it needs
weights the user supplies).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 1.0


def _check_pair(pred: Tensor, gt: Tensor) -> None:
    if pred.shape != gt.shape or pred.ndim != 4:
        raise ValueError(f"expected two [V,C,H,W] tensors of one shape, got {list(pred.shape)} and {list(gt.shape)}")


def psnr(pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio per view, in dB: ``10 log10(1 / MSE)``.

    MSE is the mean of ``(pred - gt)^2`` over every pixel and channel (data range 1),
    or, with ``mask`` [V,1,H,W] (bool or {0,1}), over the masked pixels' channels
    only. Identical images give ``inf``; a view whose mask is empty gives ``nan``.
    """
    _check_pair(pred, gt)
    sq = (pred.double() - gt.double()) ** 2
    if mask is None:
        mse = sq.flatten(1).mean(1)
    else:
        m = mask.to(torch.float64).expand_as(sq)
        count = m.flatten(1).sum(1)
        mse = (sq * m).flatten(1).sum(1) / count  # 0 / 0 -> nan for an empty mask
    with torch.no_grad():
        return 10.0 * torch.log10(DATA_RANGE**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """The normalised 1D Gaussian [size] (float64) whose outer product is SSIM's window."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _band(n: int) -> Tensor:
    """[n - 10, n] float64: row i holds the Gaussian window at columns i .. i + 10."""
    g = gaussian_window()
    out = torch.zeros(n - SSIM_WINDOW + 1, n, dtype=torch.float64)
    for k in range(SSIM_WINDOW):
        out.diagonal(k).copy_(g[k].expand(n - SSIM_WINDOW + 1))
    return out


def ssim_map(pred: Tensor, gt: Tensor) -> Tensor:
    """Per-pixel SSIM [V, H - 10, W - 10] (float64), averaged over channels.

    Wang et al. 2004: with local means mu, variances s^2 and covariance s_xy taken
    under an 11x11 Gaussian window (sigma 1.5), per channel,
    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 1. The window is applied "valid"
    (no padding), so the map is 5 pixels smaller on each side; channels are averaged.
    """
    _check_pair(pred, gt)
    v, c, h, w = pred.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} px, got {h}x{w}")
    # the 2D window is the outer product of g with itself, so a "valid" blur is B_h X B_w^T with
    # B the banded [n - 10, n] matrix of shifted copies of g: float64 matrix products are ~6x
    # faster than float64 convolutions on the CPU, and float32 would cost ~1e-4 in SSIM
    x, y = pred.double(), gt.double()
    moments = torch.cat([x, y, x * x, y * y, x * y], 1)
    blurred = _band(h) @ moments @ _band(w).T
    mu_x, mu_y, xx, yy, xy = blurred.split(c, 1)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(1)


def ssim(pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> Tensor:
    """SSIM per view: the mean of :func:`ssim_map` over the whole (valid) image, or,
    with ``mask`` [V,1,H,W], over the masked pixels of the valid region only (the
    mask is cropped by the same 5 pixels). Identical images give exactly 1; a view
    whose cropped mask is empty gives ``nan``."""
    return ssim_mean(ssim_map(pred, gt), mask)


def ssim_mean(smap: Tensor, mask: Tensor | None = None) -> Tensor:
    """Reduce an :func:`ssim_map` [V, H-10, W-10] to [V], over all pixels or the masked ones."""
    if mask is None:
        return smap.flatten(1).mean(1)
    r = SSIM_WINDOW // 2
    m = mask[:, 0, r:-r, r:-r].to(torch.float64)
    return (smap * m).flatten(1).sum(1) / m.flatten(1).sum(1)


def mask_iou(pred_alpha: Tensor, gt_alpha: Tensor, threshold: float = 0.5) -> Tensor:
    """Silhouette IoU per view: |P and G| / |P or G| with P = pred_alpha > threshold,
    G = gt_alpha > threshold (alphas [V,1,H,W]). Both empty gives ``nan``."""
    _check_pair(pred_alpha, gt_alpha)
    p, g = pred_alpha > threshold, gt_alpha > threshold
    inter = (p & g).flatten(1).sum(1).double()
    union = (p | g).flatten(1).sum(1).double()
    return inter / union


def union_mask(pred_alpha: Tensor, gt_alpha: Tensor, threshold: float = 0.5) -> Tensor:
    """[V,1,H,W] bool: pixels covered by the prediction or the ground truth (the masked metrics' region)."""
    return (pred_alpha > threshold) | (gt_alpha > threshold)


def quantize8(images: Tensor) -> Tensor:
    """Round [0, 1] images to 8-bit levels, as if saved as PNG and read back (both sides are)."""
    return torch.round(images.clamp(0, 1) * 255.0) / 255.0


def mean_over_views(values: Tensor) -> float | None:
    """The per-object score: the mean over views, ignoring nan views (None if all are nan).
    inf (a perfect PSNR view) propagates: the mean of inf and finite values is inf."""
    vals = [float(v) for v in values.flatten() if not math.isnan(float(v))]
    if not vals:
        return None
    return float(sum(vals) / len(vals))
