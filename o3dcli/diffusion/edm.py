"""EDM preconditioning, noise distribution and loss weight (Karras et al. 2022, Table 1).

With sigma_data = 1, as Stable Video Diffusion (and so Ouroboros3D) uses:
    c_skip = 1 / (sigma^2 + 1)
    c_out  = -sigma / sqrt(sigma^2 + 1)   (SVD's v-prediction sign; any sign works for a model trained with it)
    c_in   = 1 / sqrt(sigma^2 + 1)
    c_noise = ln(sigma) / 4
    x0_hat = c_skip x + c_out F(c_in x, c_noise)
Training draws ln sigma ~ N(P_mean, P_std^2) (Ouroboros3D: N(1.0, 1.6^2)) and weights
the x0 loss by (sigma^2 + 1) / sigma^2.
"""

from __future__ import annotations

import torch
from torch import Tensor


def edm_coefficients(sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) for noise levels `sigma` (any shape)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    s2 = sigma * sigma
    return 1.0 / (s2 + 1.0), -sigma / torch.sqrt(s2 + 1.0), 1.0 / torch.sqrt(s2 + 1.0), torch.log(sigma) / 4.0


def edm_x0(network_out: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    """x0_hat from the raw network output F and the noisy sample x (sigma broadcast from the front)."""
    c_skip, c_out, _, _ = edm_coefficients(sigma)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return c_skip.reshape(shape).to(x) * x + c_out.reshape(shape).to(x) * network_out


def sample_training_sigma(n: int, generator: torch.Generator | None = None, p_mean: float = 1.0,
                          p_std: float = 1.6, device=None) -> Tensor:
    """[n] noise levels with ln sigma ~ N(p_mean, p_std^2)."""
    return torch.exp(p_mean + p_std * torch.randn(n, generator=generator, device=device))


def sample_schedule_sigma(n: int, generator: torch.Generator | None = None, sigma_min: float = 0.002,
                          sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """[n] noise levels spread as the sampler's Karras schedule spreads its steps:
    sigma = (sigma_max^(1/rho) + u (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, u ~ U(0, 1)."""
    u = torch.rand(n, generator=generator)
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (hi + u * (lo - hi)) ** rho


def loss_weight(sigma: Tensor) -> Tensor:
    """EDM's lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 with sigma_data = 1."""
    return (sigma * sigma + 1.0) / (sigma * sigma)


def make_scheduler(steps: int, sigma_min: float, sigma_max: float):
    """diffusers' Euler scheduler on Karras sigmas (as SVD); we hand it x0, so prediction_type="sample"."""
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="sample", use_karras_sigmas=True, sigma_min=sigma_min, sigma_max=sigma_max,
        timestep_spacing="leading", steps_offset=1,
    )
    sched.set_timesteps(steps)
    sched.is_scale_input_called = True  # we apply EDM's c_in ourselves (edm_coefficients)
    return sched


def guidance_ramp(num_views: int, lo: float, hi: float) -> Tensor:
    """[V] classifier-free guidance scale rising linearly from `lo` (input view) to `hi` (last view)."""
    if num_views == 1:
        return torch.tensor([hi])
    return torch.linspace(lo, hi, num_views)
