"""Camera conditioning of the denoiser: Plucker ray maps -> per-block feature offsets.

Ouroboros3D (like CAT3D-style multi-view models) describes every pixel's camera
ray by its Plucker coordinates, encodes them with a 6-frequency harmonic
embedding (6 values x (1 raw + 6 sin + 6 cos) = 78 dims) and adds the output of a
small Linear-SiLU-Linear MLP to the UNet's hidden states before each block.
Hand-written because no library ships this embedding; the layout of the 78 dims
(all sines, all cosines, then the raw values) is the published one, so released
MLP weights read the same features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PLUCKER_DIMS = 6
"""Values per ray: direction d (3) and moment o x d (3)."""


def harmonic_dim(n_frequencies: int, dims: int = PLUCKER_DIMS) -> int:
    """Width of `harmonic_embedding` for `dims` input values: dims x (2 n + 1)."""
    return dims * (2 * n_frequencies + 1)


def harmonic_embedding(x: Tensor, n_frequencies: int) -> Tensor:
    """[..., D] -> [..., D (2n + 1)]: sin(2^k x_d) for all (d, k), then cos(2^k x_d), then x.

    Inside the sine (and cosine) block the index is d * n + k (value-major), the
    order the published MLP weights expect.
    """
    freqs = 2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)
    arg = (x[..., None] * freqs).flatten(-2)
    return torch.cat([arg.sin(), arg.cos(), x], dim=-1)


def resize_plucker(plucker: Tensor, size: tuple[int, int]) -> Tensor:
    """Plucker maps [N, 6, H, W] (d, o x d) at another resolution [N, 6, h, w].

    Area-averaging the unit directions of the pixels that a coarse pixel covers
    gives (nearly) the direction through its centre, but shortened; for a
    pinhole camera all rays of a view share the origin o, so the moment is linear
    in d and dividing both parts by |mean d| gives exactly the Plucker
    coordinates of the averaged ray. The error against rays cast through the
    coarse pixel centres is second order in the pixel angle (tested).
    """
    if tuple(plucker.shape[-2:]) == tuple(size):
        return plucker
    pooled = F.interpolate(plucker, size=size, mode="area")
    norm = pooled[:, :3].norm(dim=1, keepdim=True).clamp_min(1e-8)
    return pooled / norm


class PluckerEmbedding(nn.Module):
    """Linear-SiLU-Linear on the harmonic Plucker features: [N, h, w, 78] -> [N, h, w, C].

    The last Linear starts at zero, so a pretrained UNet's output is unchanged
    until training moves it (the published init is PyTorch's default; the
    released weights overwrite either).
    """

    def __init__(self, in_features: int, channels: int):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_features, channels), nn.SiLU(), nn.Linear(channels, channels))
        nn.init.zeros_(self.embed[2].weight)
        nn.init.zeros_(self.embed[2].bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.embed(features)


def plucker_features(
    plucker: Tensor,
    size: tuple[int, int],
    n_frequencies: int,
    moment_first: bool = False,
    transpose: bool = False,
) -> Tensor:
    """Harmonic features [N, h, w, 78] of Plucker maps [N, 6, H, W] (d, o x d) at `size`.

    moment_first: reorder to (o x d, d), the order the published model was trained with.
    transpose: swap the image axes; the published model built its ray grid with
    x taken from the row index, i.e. its maps are the transpose of ours.
    Computed in float32 (sin of 32 x a coordinate loses precision in fp16).
    """
    p = resize_plucker(plucker.float(), size)
    if transpose:
        p = p.transpose(-1, -2)
    if moment_first:
        p = torch.cat([p[:, 3:], p[:, :3]], dim=1)
    return harmonic_embedding(p.permute(0, 2, 3, 1), n_frequencies)
