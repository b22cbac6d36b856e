"""Feedback adapters: encoders of the rendered 3D-aware maps (RGB, CCM) into UNet features.

T2I-Adapter style (Mou et al. 2023; the "full" adapter of SDXL): PixelUnshuffle
to the latent grid, a 3x3 `conv_in`, then one stage per UNet resolution of
res-blocks (3x3 `block1`, ReLU, 1x1 `block2`, residual), a 1x1 `in_conv` where the
width changes and a parameter-free 2x2 average pool where the resolution halves.

Hand-written rather than diffusers' `FullAdapter`: that class computes the same
function but nests its parameters by stage (`body.{stage}.resnets.{j}.block1`),
while the released Ouroboros3D weights use one flat list of res-blocks
(`body.{stage * 3 + j}.block1`, `body.{3 * stage}.in_conv`). Building the flat
layout keeps the checkpoint import a plain prefix rename.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class AdapterResBlock(nn.Module):
    """x -> in_conv(pool(x)) (each optional) -> x + block2(relu(block1(x)))."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, kernel: int = 1):
        super().__init__()
        self.downsample = downsample
        # The published adapter (sk=True) has no skip conv; a projection only where the width changes.
        self.in_conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2) if in_channels != out_channels else None
        self.block1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(out_channels, out_channels, kernel, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample:
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return x + self.block2(self.act(self.block1(x)))


class FeedbackAdapter(nn.Module):
    """Maps [N, 3, H*f, W*f] in [0, 1] -> one feature map per stage, [N, C_i, H/2^i, W/2^i].

    channels: width per stage (the UNet's block_out_channels, so features add
    onto its hidden states). unshuffle: f, the map-to-latent size ratio.
    res_blocks: blocks per stage. kernel: size of in_conv and block2 (1 published).
    """

    def __init__(
        self,
        channels: Sequence[int],
        in_channels: int = 3,
        unshuffle: int = 8,
        res_blocks: int = 3,
        kernel: int = 1,
    ):
        super().__init__()
        self.channels = tuple(channels)
        self.res_blocks = res_blocks
        self.unshuffle = nn.PixelUnshuffle(unshuffle)
        body = []
        for stage, width in enumerate(self.channels):
            for j in range(res_blocks):
                first = stage > 0 and j == 0
                c_in = self.channels[stage - 1] if first else width
                body.append(AdapterResBlock(c_in, width, downsample=first, kernel=kernel))
        self.body = nn.ModuleList(body)
        self.conv_in = nn.Conv2d(in_channels * unshuffle**2, self.channels[0], 3, padding=1)
        self.zero_init()

    def zero_init(self) -> None:
        """Zero the convs that feed the residual stream (conv_in, in_conv, every block2).

        With these at zero every feature is exactly zero, so attaching the adapter
        leaves a pretrained UNet unchanged. The published code zeroes only block2,
        which makes each block an identity but passes conv_in's output through;
        the released weights overwrite either init. Training still starts: the
        loss gradient reaches conv_in through the residual identities.
        """
        convs = [self.conv_in] + [m for b in self.body for m in (b.in_conv, b.block2) if m is not None]
        for conv in convs:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, maps: Tensor) -> list[Tensor]:
        x = self.conv_in(self.unshuffle(maps))
        features = []
        for stage in range(len(self.channels)):
            for j in range(self.res_blocks):
                x = self.body[stage * self.res_blocks + j](x)
            features.append(x)
        return features
