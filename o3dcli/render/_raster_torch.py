"""Tiled EWA splatting of 3D Gaussians in plain PyTorch (the "torch" backend).

Written by hand because no maintained library rasterizes Gaussians on the CPU;
gsplat (used on CUDA) is the reference it is tested against, so its numerical
choices are followed where they change the picture:

- EWA projection (Zwicker et al. 2002; 3DGS, Kerbl et al. 2023, eq. 5): the
  camera-space covariance is pushed through the perspective Jacobian J, with
  x/z and y/z clamped to 1.3x the half field of view for J only (as gsplat and
  the 3DGS reference do, so Gaussians far off-screen do not blow up).
- A 0.3 px^2 low-pass dilation is added to the 2D covariance diagonal (3DGS,
  gsplat ``eps2d``) so sub-pixel Gaussians still cover about one pixel.
- alpha_i = min(0.999, o_i exp(-d^T Sigma^-1 d / 2)); alpha < 1/255 is skipped;
  a pixel stops once its transmittance would fall to 1e-4 or below (gsplat
  clamps at 0.999 rather than the 3DGS paper's 0.99; we follow gsplat so the
  two backends agree).
- Each Gaussian's screen box is the opacity-aware bound
  min(3.33, sqrt(2 ln(255 o))) sigma (Radl et al. 2024 "StopThePop", B.2):
  outside it alpha < 1/255, so culling to it is exact, never an approximation.

Compositing runs per image tile: every tile gets the depth-sorted list of the
Gaussians whose boxes overlap it, tiles are sorted by list length and processed
in chunks padded to the chunk's longest list, so padding waste and peak memory
stay bounded (``max_pairs`` (pixel, Gaussian) pairs per chunk). log(alpha) is a
quadratic in the pixel coordinates, so a tile's [pixels, Gaussians] exponents
are one small matrix product. Compositing is one custom autograd Function with
a hand-written backward: it saves only the per-Gaussian table and recomputes
each chunk in the backward pass (what torch.utils.checkpoint would do, without
autograd's per-op intermediates), skipping the tail of each list behind pixels
that are already opaque. The gradient is checked against finite differences
in tests/test_render_gaussians.py.
"""

from __future__ import annotations

import math

import torch

EPS2D = 0.3  # px^2 low-pass dilation of the 2D covariance (3DGS / gsplat default)
ALPHA_MIN = 1.0 / 255.0  # contributions below this are skipped (3DGS, gsplat)
ALPHA_MAX = 0.999  # clamp, as gsplat's kernels (the 3DGS reference uses 0.99)
T_MIN = 1e-4  # a pixel is done once its transmittance would drop to this (gsplat)
EXTEND_MAX = 3.33  # cap of the opacity-aware box, in sigmas (gsplat)


def project_gaussians(means, factors, opacities, viewmats, Ks, width, height, near, far, eps2d=EPS2D):
    """EWA projection of N Gaussians into V views.

    means [N,3], factors [N,3,3] with covariance = factors @ factors^T (R diag(s)),
    opacities [N], viewmats [V,4,4] world-to-camera, Ks [V,3,3]. Returns means2d
    [V,N,2] (pixels), conics [V,N,3] (a, b, c of the inverse 2D covariance
    [[a,b],[b,c]]), depths [V,N] (camera z), radii [V,N,2] (box half sizes in px,
    no grad) and valid [V,N] (bool).
    """
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    p_cam = torch.einsum("vij,nj->vni", rot, means) + trans[:, None, :]
    x, y, z = p_cam.unbind(-1)
    in_depth = (z > near) & (z < far)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps 1/z finite for culled ones
    fx, fy, cx, cy = (Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None])
    # J is evaluated at a clamped direction (1.3x the half fov), as in gsplat.
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    ux = torch.minimum(torch.maximum(x / z, -(cx / fx + 0.3 * tan_x)), (width - cx) / fx + 0.3 * tan_x)
    uy = torch.minimum(torch.maximum(y / z, -(cy / fy + 0.3 * tan_y)), (height - cy) / fy + 0.3 * tan_y)
    # rows of J W (J = [[fx/z, 0, -fx ux/z], [0, fy/z, -fy uy/z]]), then of J W R S:
    # Sigma2d = (J W R S)(J W R S)^T, written out to avoid [V,N,3,3] products
    jw0 = (fx / z)[..., None] * (rot[:, None, 0] - ux[..., None] * rot[:, None, 2])
    jw1 = (fy / z)[..., None] * (rot[:, None, 1] - uy[..., None] * rot[:, None, 2])
    b0 = sum(jw0[..., i, None] * factors[:, i] for i in range(3))
    b1 = sum(jw1[..., i, None] * factors[:, i] for i in range(3))
    cov2d_00, cov2d_01, cov2d_11 = (b0 * b0).sum(-1), (b0 * b1).sum(-1), (b1 * b1).sum(-1)
    c11, c12, c22 = cov2d_00 + eps2d, cov2d_01, cov2d_11 + eps2d
    det = c11 * c22 - c12 * c12
    ok_det = det > 0
    det = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c22 / det, -c12 / det, c11 / det], -1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)

    with torch.no_grad():
        op = opacities.detach().expand_as(z)
        extend = torch.sqrt(2.0 * torch.log(op.clamp(min=ALPHA_MIN) / ALPHA_MIN)).clamp(max=EXTEND_MAX)
        radii = torch.stack([extend * c11.detach().clamp(min=0).sqrt(), extend * c22.detach().clamp(min=0).sqrt()], -1)
        valid = in_depth & ok_det & (op >= ALPHA_MIN)
    return means2d, conics, p_cam[..., 2], radii, valid


def _pixel_ranges(means2d, radii, width, height):
    """Inclusive ranges of pixel indices whose centres (i + 0.5) fall inside each box."""
    lo = torch.ceil(means2d - radii - 0.5).long()
    hi = torch.floor(means2d + radii - 0.5).long()
    lo[..., 0].clamp_(min=0)
    lo[..., 1].clamp_(min=0)
    hi[..., 0].clamp_(max=width - 1)
    hi[..., 1].clamp_(max=height - 1)
    return lo, hi


@torch.no_grad()
def tile_boxes(means2d, radii, valid, width, height, tile):
    """Per (view, Gaussian): whether it reaches a pixel, its first tile (x, y) and its box's size in
    tiles (x, y); the last two are meaningful only where it does."""
    lo, hi = _pixel_ranges(means2d.detach(), radii, width, height)
    lo_t = lo // tile
    return valid & (lo <= hi).all(-1), lo_t, hi // tile - lo_t + 1


@torch.no_grad()
def bin_tiles(means2d, radii, depths, valid, width, height, tile):
    """Depth-sorted Gaussian lists per tile.

    Returns (visible, entries, start, count): ``visible`` [G] are the flat
    (view * N + n) ids of the Gaussians that reach some pixel, front to back;
    ``entries`` [M] index ``visible``, grouped by tile (tile id = view * TH * TW +
    ty * TW + tx) and increasing (so front to back) inside each group;
    ``start``/``count`` [V * TH * TW] locate each group.
    """
    v, n = depths.shape
    th, tw = math.ceil(height / tile), math.ceil(width / tile)
    valid, lo_t, span = tile_boxes(means2d, radii, valid, width, height, tile)
    flat = valid.reshape(-1).nonzero().squeeze(1)
    flat = flat.index_select(0, torch.argsort(depths.detach().reshape(-1).index_select(0, flat), stable=True))
    lo_t = lo_t.reshape(-1, 2).index_select(0, flat)  # front to back from here on
    span = span.reshape(-1, 2).index_select(0, flat)
    per = span[:, 0] * span[:, 1]
    owner = torch.repeat_interleave(torch.arange(flat.numel(), device=flat.device), per)
    # per visible Gaussian: its first tile id, its box width in tiles, its first entry; one gather
    first_tile = (flat // n) * (th * tw) + lo_t[:, 1] * tw + lo_t[:, 0]
    info = torch.stack([first_tile, span[:, 0], torch.cumsum(per, 0) - per], -1).index_select(0, owner)
    local = torch.arange(owner.numel(), device=flat.device) - info[:, 2]
    tile_id = info[:, 0] + (local // info[:, 1]) * tw + local % info[:, 1]
    tile_id, order = torch.sort(tile_id, stable=True)  # stable: keeps depth order inside a tile
    count = torch.bincount(tile_id, minlength=v * th * tw)
    start = torch.cumsum(count, 0) - count
    return flat, owner.index_select(0, order), start, count


def _quadratic_coefs(rows, centre):
    """Coefficients of log(alpha_raw) as a quadratic in tile-centred pixel coordinates.

    rows [C,K,6+D] hold (mean2d, conic a b c, log opacity, features); centre [C,2].
    -0.5 (p - m)^T [[a, b], [b, c]] (p - m) + log o == coef . (x^2, xy, y^2, x, y, 1),
    so a whole tile is one matrix product with the fixed table of pixel monomials;
    centring on the tile keeps the cancellation between the terms small in float32.
    """
    mx, my = rows[..., 0] - centre[:, None, 0], rows[..., 1] - centre[:, None, 1]
    a, b, c = rows[..., 2], rows[..., 3], rows[..., 4]
    lin_x, lin_y = a * mx + b * my, b * mx + c * my
    const = -0.5 * (mx * lin_x + my * lin_y) + rows[..., 5]
    return torch.stack([-0.5 * a, -b, -0.5 * c, lin_x, lin_y, const], -1), (mx, my, a, b, c, lin_x, lin_y)


def _coef_vjp(g, parts):
    """Chain rule from d/dcoef [C,K,6] to d/d(mean2d, conic, log opacity) [C,K,6]."""
    mx, my, a, b, c, lin_x, lin_y = parts
    g0, g1, g2, g3, g4, g5 = g.unbind(-1)
    return torch.stack([
        g3 * a + g4 * b - g5 * lin_x,
        g3 * b + g4 * c - g5 * lin_y,
        -0.5 * g0 + mx * (g3 - 0.5 * g5 * mx),
        -g1 + g3 * my + g4 * mx - g5 * mx * my,
        -0.5 * g2 + my * (g4 - 0.5 * g5 * my),
        g5,
    ], -1)


def _tile_terms(xmat, coef, t_front, may_clamp):
    """Per (tile, pixel, Gaussian) terms, shared by forward and backward.

    xmat [P,6] pixel monomials, coef [C,K,6], t_front [C,P,1] transmittance in
    front of the first Gaussian, may_clamp: whether any alpha can reach the
    clamp. Returns alpha (cut and clamped), 1 - alpha, the transmittance in
    front of each Gaussian (0 once the pixel is done) and the transmittance
    behind each one. In-place ops: this runs on the largest tensors there are.
    """
    log_raw = torch.bmm(xmat.expand(len(coef), -1, -1), coef.transpose(1, 2))
    alpha = torch.nn.functional.threshold_(log_raw.exp_(), ALPHA_MIN, 0.0)
    if may_clamp:
        alpha.clamp_(max=ALPHA_MAX)
    one_minus = torch.rsub(alpha, 1.0)
    t_back = torch.cumprod(one_minus, -1).mul_(t_front)
    t_excl = t_back / one_minus
    if bool(t_back[..., -1].min() <= T_MIN):  # transmittance only falls: the last column is the least
        t_excl.masked_fill_(t_back <= T_MIN, 0.0)
    return alpha, one_minus, t_excl, t_back


def _forward_chunk(xmat, coef, feats1, block, may_clamp):
    """[C,D+1,P] sums of w_k f_k (features channels-first, last channel 1), and
    how many list entries were needed before every pixel was done."""
    c, k_all, _ = coef.shape
    out = feats1.new_zeros(c, feats1.shape[1], xmat.shape[0])
    t_front = feats1.new_ones(c, xmat.shape[0], 1)
    k_end = 0
    while k_end < k_all:  # in blocks, to stop once every pixel is opaque
        k0, k_end = k_end, min(k_all, k_end + block)
        alpha, _, t_excl, t_back = _tile_terms(xmat, coef[:, k0:k_end], t_front, may_clamp)
        out.baddbmm_(feats1[:, :, k0:k_end], alpha.mul_(t_excl).transpose(1, 2))
        t_front = t_back[..., -1:]
        if bool(t_front.max() <= T_MIN):
            break
    return out, k_end


def _backward_chunk(xmat, coef, feats1, g_out, may_clamp):
    """d/dcoef [C,K,6] and d/dfeats [C,K,D] given g_out [C,P,D+1]."""
    alpha, one_minus, t_excl, _ = _tile_terms(xmat, coef, coef.new_ones(()), may_clamp)
    weight = alpha * t_excl
    g_feats = torch.bmm(g_out.transpose(1, 2)[:, :-1], weight).transpose(1, 2)
    s = torch.bmm(g_out, feats1)  # dL/dw_k
    ws = weight.mul_(s)
    # sum over j > k of w_j s_j: w_j depends on alpha_k (k < j) through its
    # transmittance, dw_j/dalpha_k = -w_j / (1 - alpha_k)
    behind = torch.cumsum(ws, -1).neg_().add_(ws.sum(-1, keepdim=True)).div_(one_minus)
    g_alpha = s.mul_(t_excl).sub_(behind)
    # d alpha / d log(raw) = alpha where alpha is neither cut (alpha = 0 there) nor clamped
    if may_clamp:
        alpha.masked_fill_(alpha >= ALPHA_MAX, 0.0)
    g_coef = torch.bmm(xmat.t().expand(len(coef), -1, -1), g_alpha.mul_(alpha)).transpose(1, 2)
    return g_coef, g_feats


class _RasterizeTiles(torch.autograd.Function):
    """Front-to-back compositing of every non-empty tile.

    table [G+1,6+D] rows (mean2d, conic, log opacity, features), the last one
    inert; plan: per chunk (row ids [C*K] into the table, tile centres [C,2]).
    Returns [T,P,D+1]: sum_k w_k f_k and sum_k w_k (alpha) as the last channel,
    w_k = alpha_k prod_{j<k} (1 - alpha_j). Saves only the table: the backward
    pass recomputes each chunk, up to the last Gaussian that reached a pixel,
    and scatter-adds into one gradient table.
    """

    @staticmethod
    def forward(ctx, table, plan, xmat, block_pairs, may_clamp):
        outs, used = [], []
        for idx, centre in plan:
            c = len(centre)
            rows = table.index_select(0, idx).view(c, -1, table.shape[1])
            coef, _ = _quadratic_coefs(rows, centre)
            feats1 = torch.cat([rows[..., 6:], rows.new_ones(rows.shape[:2] + (1,))], -1)
            # channels first ([C,D+1,K]): BLAS is much faster on these shapes than on thin outputs
            out, k_used = _forward_chunk(xmat, coef, feats1.transpose(1, 2).contiguous(),
                                         max(8, block_pairs // (len(xmat) * c)), may_clamp)
            outs.append(out.transpose(1, 2))
            used.append(k_used)
        ctx.plan, ctx.used, ctx.may_clamp = plan, used, may_clamp
        ctx.save_for_backward(table, xmat)
        return torch.cat(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out):
        table, xmat = ctx.saved_tensors
        g_table = torch.zeros_like(table)
        first = 0
        for (idx, centre), k in zip(ctx.plan, ctx.used):
            c = len(centre)
            g, first = g_out[first:first + c], first + c
            if k == 0:
                continue
            idx = idx.view(c, -1)[:, :k].reshape(-1)
            rows = table.index_select(0, idx).view(c, k, table.shape[1])
            coef, parts = _quadratic_coefs(rows, centre)
            feats1 = torch.cat([rows[..., 6:], rows.new_ones(c, k, 1)], -1).transpose(1, 2)
            g_coef, g_feats = _backward_chunk(xmat, coef, feats1, g, ctx.may_clamp)
            g_rows = torch.cat([_coef_vjp(g_coef, parts), g_feats], -1)
            g_table.index_put_((idx,), g_rows.view(c * k, -1), accumulate=True)  # faster than index_add_ on CPU
        return g_table, None, None, None, None


def composite(means2d, conics, opacities, feats, bins, n_views, width, height, tile,
              max_pairs=1 << 21, block_pairs=1 << 18):
    """Rasterize projected Gaussians; returns sum_i w_i f_i [V,D,H,W] and alpha [V,1,H,W].

    means2d [V*N,2], conics [V*N,3], opacities [V*N], feats [V*N,D] are flat per
    (view, Gaussian); ``bins`` is what ``bin_tiles`` returns. Tiles are
    processed in chunks of at most ``max_pairs`` (pixel, Gaussian) pairs (at
    least one tile per chunk), which bounds peak memory; inside a chunk the
    forward pass walks the lists in blocks of about ``block_pairs`` pairs.
    """
    dev, dt = means2d.device, means2d.dtype
    d = feats.shape[1]
    th, tw = math.ceil(height / tile), math.ceil(width / tile)
    p = tile * tile
    visible, entries, start, count = bins
    # one table of the visible Gaussians in depth order (so each tile reads it
    # front to back); the last row is an inert entry (alpha 0) that pads the
    # shorter lists of a chunk
    log_opac = torch.log(opacities.clamp(min=1e-30))
    table = torch.cat([means2d, conics, log_opac[:, None], feats], -1).index_select(0, visible)
    pad_row = torch.cat([table.new_tensor([0.0, 0.0, 1.0, 0.0, 1.0, -1e4]), table.new_zeros(d)])
    table = torch.cat([table, pad_row[None]])
    pad = table.shape[0] - 1
    may_clamp = bool(opacities.detach().max() >= ALPHA_MAX) if opacities.numel() else False

    # chunks of consecutive tiles, longest lists first, each padded to its first list
    tiles = count.nonzero().squeeze(1)
    tiles = tiles[torch.argsort(count[tiles], descending=True, stable=True)]
    counts = count[tiles].tolist()
    plan, i = [], 0
    while i < len(tiles):
        k = counts[i]
        j = min(len(tiles), i + max(1, max_pairs // (p * k)))
        ids = tiles[i:j]
        col = torch.arange(k, device=dev)
        src = start[ids, None] + col
        idx = torch.where(col < count[ids, None], entries[src.clamp(max=entries.numel() - 1)], pad)
        rem = ids % (th * tw)
        centre = torch.stack([rem % tw, rem // tw], -1).to(dt) * tile + tile / 2
        plan.append((idx.reshape(-1), centre))
        i = j

    img = table.new_zeros(n_views * th * tw, p, d + 1)
    if plan:
        iy, ix = torch.meshgrid(torch.arange(tile, device=dev), torch.arange(tile, device=dev), indexing="ij")
        x, y = (ix.reshape(-1).to(dt) + 0.5 - tile / 2), (iy.reshape(-1).to(dt) + 0.5 - tile / 2)
        xmat = torch.stack([x * x, x * y, y * y, x, y, torch.ones_like(x)], -1)
        img = img.index_put((tiles,), _RasterizeTiles.apply(table, plan, xmat, block_pairs, may_clamp))
    img = img.reshape(n_views, th, tw, tile, tile, d + 1).permute(0, 5, 1, 3, 2, 4)
    img = img.reshape(n_views, d + 1, th * tile, tw * tile)[:, :, :height, :width]
    return img[:, :d], img[:, d:]
