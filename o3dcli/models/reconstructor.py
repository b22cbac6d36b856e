"""The Gaussian reconstructor: a few generated views -> pixel-aligned 3D Gaussians.

One Gaussian per output pixel of every input view (LGM, Tang et al. 2024); the
network is the asymmetric multi-view U-Net of `recon_unet.py`, conditioned on the
diffusion noise level as in Ouroboros3D (section 3.3), so it can reconstruct
from the denoiser's noisy x0 estimates as well as from clean views.

Per pixel it predicts 14 channels, in LGM's order: position (3), opacity (1),
scale (3), rotation (4, w x y z), colour (3). Gaussian n of a batch element is
pixel (row, col) of input view v with n = (v * h + row) * w + col.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from o3dcli.models.configs import GAUSSIAN_CHANNELS, ReconConfig  # noqa: F401  (re-exported)
from o3dcli.geometry.cameras import Cameras
from o3dcli.geometry.gaussians import Gaussians
from o3dcli.geometry.rays import plucker_rays
from o3dcli.models.recon_unet import ReconUNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)




def noise_timestep(sigma: Tensor, clean_timestep: float) -> Tensor:
    """The timestep the U-Net sees: EDM's c_noise = ln(sigma) / 4, and `clean_timestep` where sigma = 0."""
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    return torch.where(sigma > 0, 0.25 * torch.log(safe), torch.full_like(sigma, clean_timestep))


def _ray_frame(d: Tensor) -> tuple[Tensor, Tensor]:
    """Two unit vectors perpendicular to the unit directions d [..., 3] and to each other."""
    up = torch.zeros_like(d)
    near_pole = d[..., 1].abs() > 0.9  # world +Y is nearly parallel: use +X instead
    up[..., 1] = (~near_pole).to(d.dtype)
    up[..., 0] = near_pole.to(d.dtype)
    u = F.normalize(torch.linalg.cross(d, up, dim=-1), dim=-1)
    return u, torch.linalg.cross(d, u, dim=-1)


def activate_channels(x: Tensor, cfg: ReconConfig, rays: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
    """Raw channels x [B, N, 14] -> activated, batched Gaussian parameters.

    rays: for position_mode "ray", (p0, d) [B, N, 3] each: the point of each pixel's
    ray closest to the world origin, and its unit direction.
    Returns means [B,N,3], scales [B,N,3], quats [B,N,4], opacities [B,N], colors [B,N,3].
    """
    if x.shape[-1] != GAUSSIAN_CHANNELS:
        raise ValueError(f"Gaussian channels must be [B, N, {GAUSSIAN_CHANNELS}], got {list(x.shape)}")
    raw_pos, raw_opacity, raw_scale = x[..., 0:3], x[..., 3], x[..., 4:7]
    raw_rot, raw_rgb = x[..., 7:11], x[..., 11:14]
    if cfg.position_mode == "ray":
        if rays is None:
            raise ValueError("position_mode 'ray' needs the pixel rays (p0, d) of every Gaussian")
        p0, d = rays
        u, v = _ray_frame(d)
        side = cfg.ray_offset * torch.tanh(raw_pos[..., 1:3])
        means = p0 + cfg.ray_depth_range * torch.tanh(raw_pos[..., :1]) * d + side[..., :1] * u + side[..., 1:] * v
    elif cfg.position_activation == "clamp":
        means = raw_pos.clamp(-cfg.position_bound, cfg.position_bound)
    else:
        means = cfg.position_bound * torch.tanh(raw_pos)
    if cfg.scale_activation == "softplus":
        scales = (cfg.scale_factor * F.softplus(raw_scale)).clamp(cfg.scale_min, cfg.scale_max)
    else:
        scales = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * torch.sigmoid(raw_scale)
    colors = 0.5 * torch.tanh(raw_rgb) + 0.5 if cfg.color_activation == "tanh" else torch.sigmoid(raw_rgb)
    return {
        "means": means, "scales": scales, "quats": F.normalize(raw_rot, dim=-1, eps=1e-8),
        "opacities": torch.sigmoid(raw_opacity), "colors": colors,
    }


def gaussians_from_channels(
    x: Tensor, cfg: ReconConfig, rays: tuple[Tensor, Tensor] | None = None
) -> list[Gaussians]:
    """Raw channels x [B, N, 14] -> one activated `Gaussians` per batch element."""
    p = activate_channels(x, cfg, rays)
    keys = ("means", "scales", "quats", "opacities", "colors")
    return [Gaussians(*(p[k][b] for k in keys)) for b in range(x.shape[0])]


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on the meta device too)."""
    return sum(p.numel() for p in module.parameters())


CameraInput = Cameras | Sequence[Cameras] | Tensor


class GaussianReconstructor(nn.Module):
    """Multi-view images + cameras + noise level -> Gaussians (LGM-style, time-conditioned).

    Parameter names (`unet.*`, `conv.*`) are those of the released `recon_model.pth`.
    """

    def __init__(self, cfg: ReconConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.unet = ReconUNet(
            3 + 6, GAUSSIAN_CHANNELS, cfg.down_channels, cfg.down_attention, cfg.mid_attention,
            cfg.up_channels, cfg.up_attention, cfg.layers_per_block, cfg.time_proj_channels,
            cfg.time_embed_channels, cfg.norm_groups, cfg.attention_heads, cfg.skip_scale,
        )
        self.conv = nn.Conv2d(GAUSSIAN_CHANNELS, GAUSSIAN_CHANNELS, 1)  # LGM's extra 1x1 head

    def _select_rays(self, cameras: CameraInput, batch: int, views: int) -> Tensor:
        """Plucker maps [B, V_in, 6, S, S] in the (d, o x d) layout, S = input_size."""
        s, idx = self.cfg.input_size, list(self.cfg.input_views)
        if isinstance(cameras, Tensor):
            rays = cameras if cameras.ndim == 5 else cameras[None].expand(batch, *cameras.shape)
            if rays.shape[:3] != (batch, views, 6):
                raise ValueError(f"Plucker rays must be [B={batch}, V={views}, 6, H, W], got {list(cameras.shape)}")
            rays = rays[:, idx].flatten(0, 1)
            if rays.shape[-2:] != (s, s):
                rays = F.interpolate(rays, size=(s, s), mode="bilinear", align_corners=False)
            return rays.reshape(batch, len(idx), 6, s, s)
        per_item = [cameras] if isinstance(cameras, Cameras) else list(cameras)
        if any(len(c) != views for c in per_item) or len(per_item) not in (1, batch):
            raise ValueError(f"cameras must be one Cameras of {views} views or {batch} of them (one per batch element)")
        maps = torch.stack([plucker_rays(c[idx].resized(s, s)) for c in per_item])
        return maps.expand(batch, *maps.shape[1:])

    def forward_channels(
        self, images: Tensor, cameras: CameraInput, sigma: Tensor | float
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Raw Gaussian channels [B, N, 14] and, for ray mode, the pixel rays (p0, d) [B, N, 3].

        images: [B, V, 3, H, W] in [0, 1], all V generated views (input_views are picked here).
        cameras: a `Cameras` of the V views (shared by the batch), a list of B of them,
        or Plucker maps [B, V, 6, H, W] / [V, 6, H, W] in the (d, o x d) layout; in
        world coordinates (not `relative_to` the input view): the Gaussians land there.
        sigma: [B] or a scalar, the noise level of the views (0 for clean views).
        """
        cfg = self.cfg
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [B, V, 3, H, W], got {list(images.shape)}")
        b, v = images.shape[:2]
        if max(cfg.input_views) >= v:
            enough = max(cfg.input_views) + 1
            raise ValueError(f"recon.input_views {list(cfg.input_views)} needs at least {enough} views, got {v}")
        vin, s = len(cfg.input_views), cfg.input_size
        rgb = images[:, list(cfg.input_views)].flatten(0, 1)
        if rgb.shape[-2:] != (s, s):
            rgb = F.interpolate(rgb, size=(s, s), mode="bilinear", align_corners=False)
        if cfg.normalize_imagenet:
            mean = torch.tensor(IMAGENET_MEAN, dtype=rgb.dtype, device=rgb.device).reshape(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=rgb.dtype, device=rgb.device).reshape(1, 3, 1, 1)
            rgb = (rgb - mean) / std
        rays = self._select_rays(cameras, b, v).to(device=rgb.device, dtype=rgb.dtype).flatten(0, 1)
        ray_in = rays if cfg.plucker_layout == "d_m" else torch.cat([rays[:, 3:], rays[:, :3]], dim=1)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=rgb.device).reshape(-1).expand(b)
        t = noise_timestep(sigma, cfg.clean_timestep).repeat_interleave(vin)
        # the network runs in its weights' dtype (fp16/bf16 on a GPU); activations in float32
        net_in = torch.cat([rgb, ray_in], dim=1).to(self.conv.weight.dtype)
        x = self.conv(self.unet(net_in, t, vin)).float()  # [B*V_in, 14, h, w]
        h = x.shape[-1]
        x = x.reshape(b, vin, GAUSSIAN_CHANNELS, h, h).permute(0, 1, 3, 4, 2).reshape(b, -1, GAUSSIAN_CHANNELS)
        if cfg.position_mode != "ray":
            return x, None
        # Rays at the output resolution: area-averaging the Plucker map gives the ray
        # through each output pixel's centre (up to renormalising d).
        small = F.interpolate(rays, size=(h, h), mode="area").reshape(b, vin, 6, h, h).permute(0, 1, 3, 4, 2)
        small = small.reshape(b, -1, 6)
        d_len = small[..., :3].norm(dim=-1, keepdim=True).clamp_min(1e-8)
        d = small[..., :3] / d_len
        # For unit d and moment m = o x d, d x m = o - (o.d) d: the ray's point nearest the origin.
        p0 = torch.linalg.cross(d, small[..., 3:], dim=-1) / d_len
        return x, (p0, d)

    def forward_params(self, images: Tensor, cameras: CameraInput, sigma: Tensor | float) -> dict[str, Tensor]:
        """Batched activated parameters (see `activate_channels`); arguments as `forward_channels`."""
        x, rays = self.forward_channels(images, cameras, sigma)
        return activate_channels(x, self.cfg, rays)

    def forward(self, images: Tensor, cameras: CameraInput, sigma: Tensor | float) -> list[Gaussians]:
        """One `Gaussians` of cfg.num_gaussians per batch element; arguments as `forward_channels`."""
        x, rays = self.forward_channels(images, cameras, sigma)
        return gaussians_from_channels(x, self.cfg, rays)
