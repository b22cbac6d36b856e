"""The reconstructor's U-Net: LGM's asymmetric multi-view U-Net with a timestep embedding.

Written by hand because no maintained library ships this network, and the released
Ouroboros3D `recon_model.pth` must import into it with a plain key mapping. The
layout follows LGM (Tang et al. 2024, section 3.2) with Ouroboros3D's addition of
a noise-level embedding added inside every residual block (paper section 3.3):

- `conv_in` (3x3), then down blocks of residual blocks (+ cross-view attention at
  the low resolutions) each ending in a stride-2 3x3 conv, a mid block, and up
  blocks (one more residual block than the down blocks, each fed a skip
  connection) ending in nearest 2x upsampling + 3x3 conv. There are fewer up
  blocks than down blocks, so the output map is coarser than the input.
- Residual and attention outputs are scaled by `skip_scale` (sqrt(1/2) in LGM) to
  keep activations from growing with depth.
- Cross-view attention: the tokens of all V views of one object attend to each
  other, [B*V, C, h, w] -> [B, V*h*w, C]; this is the only place where views meet.

Parameter names match the released checkpoint (`nets`, `attns`, `downsample`,
`upsample`, `emb_layers.1`, `time_embed.0/2`, `attn.qkv` without bias, ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [B, dim] of scalar timesteps t [B], laid out (cos, sin).

    Frequencies are max_period^(-i / (dim/2)), i = 0..dim/2-1: the same values as
    diffusers' `Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)`, which
    the published model was trained with.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice, with the time embedding added after the first conv."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, groups: int, skip_scale: float):
        super().__init__()
        self.skip_scale = skip_scale
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-5)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        # Zero-initialised, so a network built from an LGM checkpoint (or a fresh one)
        # starts out ignoring the noise level and learns to use it.
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        nn.init.zeros_(self.emb_layers[1].weight)
        nn.init.zeros_(self.emb_layers[1].bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (h + self.shortcut(x)) * self.skip_scale


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens [B, L, C]; `qkv` has no bias, `proj` has one."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, C/heads]
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossViewAttention(nn.Module):
    """Self-attention over the pixels of all views of one object (residual, GroupNorm first)."""

    def __init__(self, dim: int, heads: int, groups: int, skip_scale: float):
        super().__init__()
        self.skip_scale = skip_scale
        self.norm = nn.GroupNorm(groups, dim, eps=1e-5)
        self.attn = SelfAttention(dim, heads)

    def forward(self, x: Tensor, views: int) -> Tensor:
        bv, c, h, w = x.shape
        b = bv // views
        tokens = self.norm(x).reshape(b, views, c, h, w).permute(0, 1, 3, 4, 2).reshape(b, views * h * w, c)
        out = self.attn(tokens).reshape(b, views, h, w, c).permute(0, 1, 4, 2, 3).reshape(bv, c, h, w)
        return (out + x) * self.skip_scale


class DownBlock(nn.Module):
    def __init__(self, cin, cout, layers, downsample, attention, emb, groups, heads, skip_scale):
        super().__init__()
        self.nets = nn.ModuleList(
            ResnetBlock(cin if i == 0 else cout, cout, emb, groups, skip_scale) for i in range(layers)
        )
        # An empty list when off, so no keys appear (the checkpoint has none there either).
        self.attns = nn.ModuleList(
            CrossViewAttention(cout, heads, groups, skip_scale) for _ in range(layers if attention else 0)
        )
        self.downsample = nn.Conv2d(cout, cout, 3, stride=2, padding=1) if downsample else None

    def forward(self, x: Tensor, emb: Tensor, views: int) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for i, net in enumerate(self.nets):
            x = net(x, emb)
            if len(self.attns):
                x = self.attns[i](x, views)
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    def __init__(self, channels, attention, emb, groups, heads, skip_scale):
        super().__init__()
        self.nets = nn.ModuleList(ResnetBlock(channels, channels, emb, groups, skip_scale) for _ in range(2))
        self.attns = nn.ModuleList(
            CrossViewAttention(channels, heads, groups, skip_scale) for _ in range(1 if attention else 0)
        )

    def forward(self, x: Tensor, emb: Tensor, views: int) -> Tensor:
        x = self.nets[0](x, emb)
        if len(self.attns):
            x = self.attns[0](x, views)
        return self.nets[1](x, emb)


class UpBlock(nn.Module):
    def __init__(self, cin, cskips, cout, upsample, attention, emb, groups, heads, skip_scale):
        super().__init__()
        layers = len(cskips)
        widths = [(cin if i == 0 else cout) + cskip for i, cskip in enumerate(cskips)]
        self.nets = nn.ModuleList(ResnetBlock(w, cout, emb, groups, skip_scale) for w in widths)
        self.attns = nn.ModuleList(
            CrossViewAttention(cout, heads, groups, skip_scale) for _ in range(layers if attention else 0)
        )
        self.upsample = nn.Conv2d(cout, cout, 3, padding=1) if upsample else None

    def forward(self, x: Tensor, skips: list[Tensor], emb: Tensor, views: int) -> Tensor:
        for i, net in enumerate(self.nets):
            x = net(torch.cat([x, skips.pop()], dim=1), emb)
            if len(self.attns):
                x = self.attns[i](x, views)
        if self.upsample is not None:
            x = self.upsample(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class ReconUNet(nn.Module):
    """Asymmetric multi-view U-Net: [B*V, Cin, H, W] + time [B*V] -> [B*V, Cout, h, w].

    h = H * 2^(len(up_channels) - 1) / 2^(len(down_channels) - 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        down_channels: tuple[int, ...],
        down_attention: tuple[bool, ...],
        mid_attention: bool,
        up_channels: tuple[int, ...],
        up_attention: tuple[bool, ...],
        layers_per_block: int,
        time_proj_channels: int,
        time_embed_channels: int,
        norm_groups: int,
        attention_heads: int,
        skip_scale: float,
    ):
        super().__init__()
        if len(up_channels) > len(down_channels):
            raise ValueError(
                f"the U-Net needs no more up blocks ({len(up_channels)}) than down blocks ({len(down_channels)})"
            )
        self.time_proj_channels = time_proj_channels
        kw = dict(emb=time_embed_channels, groups=norm_groups, heads=attention_heads, skip_scale=skip_scale)
        self.conv_in = nn.Conv2d(in_channels, down_channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        for i, cout in enumerate(down_channels):
            cin = down_channels[max(i - 1, 0)]
            last = i == len(down_channels) - 1
            self.down_blocks.append(DownBlock(cin, cout, layers_per_block, not last, down_attention[i], **kw))
        self.mid_block = MidBlock(down_channels[-1], mid_attention, **kw)
        self.up_blocks = nn.ModuleList()
        for i, cout in enumerate(up_channels):
            cin = up_channels[max(i - 1, 0)]
            # Skips are consumed deepest first: up block i takes the residual outputs of
            # down block -(i + 1), then the downsampled output of down block -(i + 2)
            # (conv_in's output for the shallowest). LGM writes the first widths as
            # up_channels[i], equal to these whenever up mirrors down, as published.
            cskips = [down_channels[-1 - i]] * layers_per_block + [down_channels[max(-2 - i, -len(down_channels))]]
            last = i == len(up_channels) - 1
            self.up_blocks.append(UpBlock(cin, cskips, cout, not last, up_attention[i], **kw))
        self.norm_out = nn.GroupNorm(norm_groups, up_channels[-1], eps=1e-5)
        self.conv_out = nn.Conv2d(up_channels[-1], out_channels, 3, padding=1)
        self.time_embed = nn.Sequential(
            nn.Linear(time_proj_channels, time_embed_channels),
            nn.SiLU(),
            nn.Linear(time_embed_channels, time_embed_channels),
        )

    def forward(self, x: Tensor, timesteps: Tensor, views: int) -> Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.time_proj_channels).to(x.dtype))
        x = self.conv_in(x)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb, views)
            skips.extend(block_skips)
        x = self.mid_block(x, emb, views)
        for block in self.up_blocks:
            n = len(block.nets)
            x = block(x, skips[-n:], emb, views)
            del skips[-n:]
        return self.conv_out(F.silu(self.norm_out(x)))
