"""RecursiveSampler: multi-view EDM/Euler sampling where every step is lifted to 3D.

Ouroboros3D's inference (paper section 3.3, docs/design.md section 4), per step i:
    x0_i   = D(x_i; sigma_i, image, cameras, maps_i)          (CFG ramped per view)
    G_i    = reconstruct(decode(x0_i), cameras, sigma_i)
    maps_{i+1} = render(G_i, all views) -> RGB (over the background) + CCM (xyz + 0.5 over grey)
    x_{i+1} = Euler step (diffusers' EulerDiscreteScheduler)
with zero maps at the first step. The unconditional branch of classifier-free
guidance drops the image condition but keeps the maps (as published).

Resume: every `save_every` steps the state (latents, next step, maps, last x0,
generator state) goes to a StateStore; `sample()` given the same store continues
from it and produces the same result as an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from o3dcli.diffusion.config import DiffusionConfig
from o3dcli.diffusion.edm import edm_coefficients, edm_x0, guidance_ramp, make_scheduler
from o3dcli.geometry.cameras import Cameras
from o3dcli.geometry.gaussians import Gaussians

CCM_BACKGROUND = 0.5  # docs/design.md: empty space reads as the origin's colour


@dataclass(frozen=True)
class StepRecord:
    """What one denoising step saw and produced (all [V, 3, H, W] in [0, 1])."""

    step: int
    sigma: float
    views: Tensor
    rgb_map: Tensor
    ccm_map: Tensor


@dataclass(frozen=True)
class SampleResult:
    views: Tensor
    """[V, 3, H, W] the generated views in [0, 1]."""
    gaussians: Gaussians
    """Reconstructed from the final views at noise level 0."""
    steps_run: int
    """Denoising steps computed in this call (fewer than `steps` after a resume)."""
    resumed_from: int
    """Step the run continued from (0 for a fresh run)."""


def _fits(generator: torch.Generator, state: Tensor) -> bool:
    """Whether a saved random state can be set on `generator`: a state saved on another kind of
    device (a CPU generator's is 5,056 bytes, a CUDA one's 16) cannot, as where an output folder
    is shared by a CPU machine and a GPU one. The denoising then starts over, with a warning."""
    if state.dtype == torch.uint8 and state.numel() == generator.get_state().numel():
        return True
    import logging

    logging.getLogger("o3d").warning(f"the saved mid-denoising state was made on another kind of device than "
                                     f"{generator.device.type}: denoising starts over")
    return False


def feedback_at(step: int, cfg: DiffusionConfig) -> bool:
    """Whether the maps are refreshed from step `step`'s prediction (used from step + 1 on)."""
    if not cfg.feedback:
        return False
    return step + 1 >= cfg.feedback_start and (step + 1 - cfg.feedback_start) % cfg.feedback_every == 0


def render_feedback_maps(gaussians: Gaussians, cameras: Cameras, background, size: int,
                         backend: str = "auto") -> tuple[Tensor, Tensor]:
    """RGB map (over `background`) and CCM (means + 0.5, over 0.5 grey), [V, 3, size, size] each."""
    from o3dcli.render.gaussians import render_gaussians

    cams = cameras if cameras.width == size else cameras.resized(size, size)
    out = render_gaussians(gaussians, cams, background, backend=backend, features=(gaussians.means + 0.5).clamp(0, 1))
    ccm = out.features + (1.0 - out.alpha) * CCM_BACKGROUND
    return out.rgb.clamp(0, 1), ccm.clamp(0, 1)


class RecursiveSampler:
    """Holds the models and settings; `sample()` runs one item. Shapes in the method docstrings."""

    def __init__(self, denoiser, reconstructor, codec, cfg: DiffusionConfig, background=(1.0, 1.0, 1.0),
                 render_backend: str = "auto"):
        self.denoiser = denoiser
        self.reconstructor = reconstructor
        self.codec = codec
        self.cfg = cfg
        self.background = tuple(background)
        self.render_backend = render_backend

    @property
    def uses_maps(self) -> bool:
        d = self.denoiser.config
        return bool(d.feedback_rgb or d.feedback_ccm)

    def _maps_size(self, latent_hw: int) -> int:
        return latent_hw * self.denoiser.config.adapter_unshuffle

    @torch.no_grad()
    def sample(
        self,
        cond_image: Tensor,
        cameras: Cameras,
        generator: torch.Generator,
        state=None,
        on_step: Callable[[StepRecord], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
        interrupt_after: int | None = None,
    ) -> SampleResult:
        """Generate V views and Gaussians from one condition image.

        cond_image: [3, H, W] in [0, 1], composited on the background (view 0's content).
        cameras: V cameras, view 0 the input view, world frame (docs/design.md).
        generator: seeded; its state is saved with the sampler state.
        state: a cache StateStore (or None): loaded to resume, written every cfg.save_every steps.
        on_step: called with each step's StepRecord (for --save-intermediate).
        interrupt_after: for tests, raise KeyboardInterrupt after this many steps (simulated kill).
        """
        from o3dcli.geometry.rays import plucker_rays, relative_to

        cfg = self.cfg
        dev = cond_image.device
        V = len(cameras)
        sched = make_scheduler(cfg.steps, cfg.sigma_min, cfg.sigma_max)
        sigmas = sched.sigmas.to(torch.float32)

        cond = cond_image[None]  # [1, 3, H, W]
        cond_latent = self.codec.encode_condition(cond)  # [1, C, h, w]
        C, h, w = cond_latent.shape[1:]
        plucker = plucker_rays(relative_to(cameras, 0).resized(w, h))[None].to(dev)  # [1, V, 6, h, w]
        embeds = self.denoiser.encode_image(cond)
        guided = cfg.guidance_max != 1.0 or cfg.guidance_min != 1.0
        scale = guidance_ramp(V, cfg.guidance_min, cfg.guidance_max).to(dev).reshape(1, V, 1, 1, 1)
        msize = self._maps_size(h)
        zero_maps = torch.zeros(V, 3, msize, msize, device=dev)

        start = 0
        x = torch.randn((1, V, C, h, w), generator=generator, device=dev) * sigmas[0]
        rgb_map, ccm_map = zero_maps, zero_maps
        x0 = None
        saved = state.load() if state is not None else None
        if saved is not None:
            tensors, meta = saved
            fits = meta.get("steps") == cfg.steps and tensors["latents"].shape == x.shape
            if fits and _fits(generator, tensors["generator"]):
                start = int(meta["next_step"])
                x = tensors["latents"].to(dev)
                rgb_map, ccm_map = tensors["rgb_map"].to(dev), tensors["ccm_map"].to(dev)
                x0 = tensors["x0"].to(dev) if "x0" in tensors else None
                generator.set_state(tensors["generator"])

        sched.set_begin_index(start)
        steps_run = 0
        for i in range(start, cfg.steps):
            sigma = sigmas[i]
            _, _, c_in, c_noise = edm_coefficients(sigma)
            maps_rgb = rgb_map[None] if self.uses_maps else None
            maps_ccm = ccm_map[None] if self.uses_maps else None
            if guided:  # one batched pass: [conditional, unconditional (image dropped, maps kept)]
                out = self.denoiser(
                    (c_in * x).repeat(2, 1, 1, 1, 1), c_noise.repeat(2).to(dev),
                    torch.cat([cond_latent, torch.zeros_like(cond_latent)]), plucker.repeat(2, 1, 1, 1, 1),
                    image_embeds=torch.cat([embeds, torch.zeros_like(embeds)]),
                    rgb_map=None if maps_rgb is None else maps_rgb.repeat(2, 1, 1, 1, 1),
                    ccm_map=None if maps_ccm is None else maps_ccm.repeat(2, 1, 1, 1, 1),
                )
                x0_c, x0_u = (edm_x0(o[None], x, sigma) for o in out)
                x0 = x0_u + scale * (x0_c - x0_u)
            else:
                out = self.denoiser(c_in * x, c_noise.reshape(1).to(dev), cond_latent, plucker, image_embeds=embeds,
                                    rgb_map=maps_rgb, ccm_map=maps_ccm)
                x0 = edm_x0(out, x, sigma)
            views = self.codec.decode(x0[0]).clamp(0, 1)  # [V, 3, H, W]
            if on_step is not None:
                on_step(StepRecord(i, float(sigma), views, rgb_map, ccm_map))
            if self.uses_maps and feedback_at(i, cfg) and i + 1 < cfg.steps:
                g = self.reconstructor(views[None], cameras, sigma.reshape(1).to(dev))[0]
                rgb_map, ccm_map = render_feedback_maps(g, cameras, self.background, msize, self.render_backend)
            x = sched.step(x0, sched.timesteps[i], x).prev_sample
            steps_run += 1
            if state is not None and cfg.save_every and (i + 1) % cfg.save_every == 0 and i + 1 < cfg.steps:
                state.save({"latents": x, "rgb_map": rgb_map, "ccm_map": ccm_map, "x0": x0,
                            "generator": generator.get_state()}, {"next_step": i + 1, "steps": cfg.steps})
            if progress is not None:
                progress(i + 1, cfg.steps)
            if interrupt_after is not None and steps_run >= interrupt_after:
                raise KeyboardInterrupt
        if x0 is None:  # nothing left to run: the saved state was at the end
            raise RuntimeError("sampler state has no prediction to finish from")
        views = self.codec.decode(x0[0]).clamp(0, 1)
        gaussians = self.reconstructor(views[None], cameras, torch.zeros(1, device=dev))[0]
        return SampleResult(views, gaussians, steps_run, start)
