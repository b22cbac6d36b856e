"""Settings of joint training (section `train` of the config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from o3dcli.errors import require as _require


@dataclass
class TrainConfig:
    steps: int = 20000
    """Optimiser steps of a training run (a stopped run resumes from its last checkpoint)."""
    init: str = "none"
    """Weights a new run starts from: "none" (seeded random init: training from scratch, whatever the preset's model.weights) or a weights name, path or o3d train run folder to fine-tune."""
    batch_size: int = 2
    """Objects per step."""
    lr: float = 2e-4
    """AdamW learning rate (published: 1e-5 for fine-tuning SVD; a model trained from scratch needs more)."""
    warmup_steps: int = 200
    """Linear learning-rate warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights (the EMA weights are what generate uses)."""
    p_mean: float = 1.0
    """EDM training noise: ln sigma ~ N(p_mean, p_std^2) (published: 1.0)."""
    p_std: float = 1.6
    """EDM training noise spread (published: 1.6)."""
    sigma_sampling: Literal["lognormal", "schedule"] = "lognormal"
    """How training noise levels are drawn: "lognormal" (EDM: ln sigma ~ N(p_mean, p_std^2)) or "schedule" (as densely as
    the sampler's Karras schedule visits them, between diffusion.sigma_min and sigma_max: a quarter of its steps are
    above sigma 17, where N(0, 1.6^2) draws 4 % of its noise levels)."""
    modules: Literal["all", "recon", "denoiser"] = "all"
    """What trains: "all" (the joint objective), "recon" (the reconstructor alone, on the ground-truth
    views at noise level 0: LGM-style pre-training, about 6x cheaper per step; the denoiser is kept as
    it is; the paper starts from a pre-trained reconstructor (LGM), and this is how o3d makes one) or
    "denoiser" (the denoiser alone with the diffusion loss, self-conditioned with probability feedback_p
    on maps rendered by the frozen reconstructor; about 2x cheaper per step than "all")."""
    joint: bool = True
    """Joint training: also reconstruct from the denoiser's x0 prediction and back-propagate that loss into the denoiser (false: the two models learn apart; the ablation's decoupled variant also sets train.feedback_p=0, denoiser.feedback_rgb=false, denoiser.feedback_ccm=false and diffusion.feedback=false, see scripts/ablation.sh)."""
    feedback_p: float = 0.5
    """Probability of the self-conditioning pass: re-run the denoiser on maps rendered from its own reconstruction, replacing the diffusion loss (0 = never)."""
    detach_maps: bool = True
    """Detach the feedback maps (the paper's algorithm) or let gradients flow through them (the released code)."""
    cond_drop_p: float = 0.1
    """Probability of dropping the image condition (classifier-free guidance training)."""
    cond_image: Literal["view", "recentred"] = "recentred"
    """The condition image: "recentred" = the input view recentred as o3d generate prepares a photo, at preprocess.foreground_ratio and 0.05 either side (the shipped weights'); "view" = the input view as rendered, pixel-aligned with view 0's target, so the denoiser can copy it into view 0. Measured (tiny, 936 fine-tuning steps from the shipped weights): "view" reproduced the input in view 0 at 18.2 dB (was 14.1) but scored F-score@0.05 0.506 against 0.532 on the synthetic benchmark (0.535 against 0.537 after ICP alignment: placement and size, not shape)."""
    recon_weight: float = 1.0
    """Weight of the reconstruction render loss (L1 RGB + mask) on each reconstruction."""
    mask_weight: float = 1.0
    """Weight of the alpha-vs-mask term inside the reconstruction loss."""
    direct_weight: float = 1.0
    """Weight of the per-pixel loss on the input views (opacity vs mask, position vs surface point)."""
    extra_views: int = 4
    """Random extra views per object rendered for the reconstruction loss (novel-view supervision)."""
    checkpoint_every: int = 250
    """Save a resumable checkpoint every N steps (and on Ctrl-C)."""
    log_every: int = 10
    """Append a row to losses.csv every N steps."""

    def check(self) -> None:
        _require(self.steps >= 1, "train.steps", self.steps, "at least 1")
        _require(self.batch_size >= 1, "train.batch_size", self.batch_size, "at least 1")
        _require(self.lr > 0, "train.lr", self.lr, "positive")
        _require(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "at least 0")
        _require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "at least 0")
        _require(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, "at least 0 (0 = off)")
        _require(self.p_std > 0, "train.p_std", self.p_std, "positive")
        _require(self.extra_views >= 0, "train.extra_views", self.extra_views, "at least 0")
        _require(self.modules in ("all", "recon", "denoiser"), "train.modules", self.modules,
                 'one of "all", "recon", "denoiser"')
        _require(self.sigma_sampling in ("lognormal", "schedule"), "train.sigma_sampling", self.sigma_sampling,
                 'one of "lognormal", "schedule"')
        _require(0 <= self.feedback_p <= 1, "train.feedback_p", self.feedback_p, "in [0, 1]")
        _require(0 <= self.cond_drop_p < 1, "train.cond_drop_p", self.cond_drop_p, "in [0, 1)")
        _require(self.cond_image in ("view", "recentred"), "train.cond_image", self.cond_image, 'one of "view", "recentred"')
        _require(0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay, "in [0, 1)")
        _require(self.checkpoint_every >= 1, "train.checkpoint_every", self.checkpoint_every, "at least 1")
        _require(self.log_every >= 1, "train.log_every", self.log_every, "at least 1")
