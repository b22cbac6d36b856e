"""The 3D Gaussians data type (docs/design.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Gaussians:
    """A set of N 3D Gaussians, all activated (no logits, no log-scales).

    means: [N, 3] world positions.
    scales: [N, 3] positive standard deviations along the local axes.
    quats: [N, 4] unit rotations, (w, x, y, z).
    opacities: [N] in [0, 1].
    colors: [N, 3] RGB in [0, 1].
    """

    means: Tensor
    scales: Tensor
    quats: Tensor
    opacities: Tensor
    colors: Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expect = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,), "colors": (n, 3)}
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Gaussians.{name} must be {list(shape)}, got {list(got)}")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    def _map(self, fn) -> "Gaussians":
        return Gaussians(*(fn(getattr(self, k)) for k in ("means", "scales", "quats", "opacities", "colors")))

    def to(self, device=None, dtype=None) -> "Gaussians":
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def detach(self) -> "Gaussians":
        return self._map(lambda t: t.detach())

    def __getitem__(self, idx) -> "Gaussians":
        return self._map(lambda t: t[idx])

    @staticmethod
    def cat(items: list["Gaussians"]) -> "Gaussians":
        return Gaussians(*(torch.cat([getattr(g, k) for g in items]) for k in ("means", "scales", "quats", "opacities", "colors")))

    def rotation_matrices(self) -> Tensor:
        """[N, 3, 3] rotation matrices from the (w, x, y, z) quaternions."""
        return quat_to_matrix(self.quats)

    def turned(self, turn: Tensor) -> "Gaussians":
        """The Gaussians turned by the unit quaternion `turn` (w, x, y, z): positions and orientations."""
        turn = torch.as_tensor(turn, dtype=self.quats.dtype)
        w, x, y, z = turn.unbind(-1)
        a, b, c, d = self.quats.unbind(1)  # turn * q (Hamilton product)
        quats = torch.stack([w * a - x * b - y * c - z * d, w * b + x * a + y * d - z * c,
                             w * c - x * d + y * a + z * b, w * d + x * c - y * b + z * a], 1)
        return Gaussians(self.means @ quat_to_matrix(turn).T, self.scales, quats, self.opacities, self.colors)

    def covariances(self) -> Tensor:
        """[N, 3, 3] world-space covariances R S S^T R^T."""
        r = self.rotation_matrices()
        rs = r * self.scales[:, None, :]
        return rs @ rs.transpose(-1, -2)


def quat_to_matrix(quats: Tensor) -> Tensor:
    """[..., 3, 3] rotation matrices from [..., 4] (w, x, y, z) quaternions (normalised first)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*quats.shape[:-1], 3, 3)
