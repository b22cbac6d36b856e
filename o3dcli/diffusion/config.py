"""Settings of the recursive sampler (section `diffusion` of the config)."""

from __future__ import annotations

from dataclasses import dataclass

from o3dcli.errors import require as _require


@dataclass
class DiffusionConfig:
    steps: int = 25
    """Denoising steps (EDM / Euler on Karras sigmas)."""
    sigma_min: float = 0.002
    """Smallest noise level of the schedule."""
    sigma_max: float = 700.0
    """Largest noise level of the schedule (SVD: 700; a pixel-space model needs far less)."""
    guidance_min: float = 1.0
    """Classifier-free guidance scale of the input view (the ramp's start)."""
    guidance_max: float = 3.0
    """Classifier-free guidance scale of the last view (linear ramp across views; 1 and 1 = no guidance)."""
    feedback: bool = True
    """3D-aware feedback: condition each step on RGB + CCM maps rendered from the previous step's Gaussians."""
    feedback_start: int = 0
    """First step that receives fed-back maps (rendered from the previous step's prediction); the maps are zero before it."""
    feedback_every: int = 1
    """Refresh the maps every N steps (reused in between)."""
    save_every: int = 5
    """Save the sampler state to the cache every N steps, so a killed run resumes mid-denoising (0 = never)."""
    save_intermediate: bool = False
    """Also write every step's predicted views and RGB/CCM feedback maps as PNGs (asset folder, intermediate/)."""

    def check(self) -> None:
        _require(self.steps >= 1, "diffusion.steps", self.steps, "at least 1")
        _require(0 < self.sigma_min < self.sigma_max, "diffusion.sigma_min", self.sigma_min, "positive and below sigma_max")
        _require(self.guidance_min >= 0 and self.guidance_max >= 0, "diffusion.guidance_max", self.guidance_max, "non-negative")
        _require(self.feedback_start >= 0, "diffusion.feedback_start", self.feedback_start, "0 or more")
        _require(self.feedback_every >= 1, "diffusion.feedback_every", self.feedback_every, "at least 1")
        _require(self.save_every >= 0, "diffusion.save_every", self.save_every, "0 or more")
