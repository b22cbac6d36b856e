"""Model configurations: pure dataclasses (no torch import), nested into `o3dcli.config.Config`.

`DenoiserConfig` describes the multi-view denoiser (o3dcli.models.denoiser),
`ReconConfig` the Gaussian reconstructor (o3dcli.models.reconstructor),
`ModelConfig` the codec and where weights come from. Every field has a
docstring under it (printed by `o3d presets show`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from o3dcli.errors import ConfigError

_SVD_DOWN = ("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",)
_SVD_UP = ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3
GAUSSIAN_CHANNELS = 14


@dataclass
class DenoiserConfig:
    latent_channels: int = 3
    """Channels of the codec's latents (3 = pixel space, 4 = SVD VAE); the UNet sees twice this (noisy + condition)."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """UNet width per resolution level; multiples of 32 (GroupNorm with 32 groups)."""
    down_block_types: tuple[str, ...] = ("DownBlockSpatioTemporal",) + ("CrossAttnDownBlockSpatioTemporal",) * 2
    """diffusers block per level, finest first; keep attention-free blocks at full resolution (R^2 tokens)."""
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlockSpatioTemporal",) * 2 + ("UpBlockSpatioTemporal",)
    """diffusers block per level, coarsest first."""
    layers_per_block: int = 1
    """Res-blocks per down block (up blocks get one more)."""
    transformer_layers_per_block: int = 1
    """Spatio-temporal transformer layers per cross-attention res-block."""
    num_attention_heads: tuple[int, ...] = (1, 2, 4)
    """Attention heads per level (head width = channels / heads)."""
    cross_attention_dim: int = 64
    """Width of the image tokens the UNet cross-attends to (1024 for SVD's CLIP)."""
    addition_time_embed_dim: int = 32
    """Sinusoid width per added time id (fps, motion bucket, noise augmentation), as in SVD."""
    added_time_ids: tuple[float, ...] = (6.0, 127.0, 0.02)
    """Values of SVD's added time ids used when none are passed (published: fps-1 = 6, motion 127, noise aug 0.02)."""
    num_views: int = 8
    """Views denoised together (the UNet's frames)."""
    image_encoder: Literal["clip", "conv"] = "conv"
    """Image tokens from SVD's CLIP ("clip", needs transformers and clip_path) or a small trained conv net ("conv")."""
    clip_path: str = ""
    """Local folder of a CLIPVisionModelWithProjection (SVD's image_encoder/); never downloaded."""
    conv_encoder_width: int = 32
    """Width of the first layer of the "conv" image encoder."""
    conv_encoder_grid: int = 0
    """0: the "conv" encoder gives one pooled token; g > 0: also one token per cell of its last feature map, with g x g learned positions."""
    plucker: bool = True
    """Condition on cameras through per-block Plucker MLPs."""
    plucker_frequencies: int = 6
    """Harmonic frequencies 2^0..2^(n-1) of the Plucker embedding (6 -> 78 dims)."""
    plucker_moment_first: bool = False
    """Feed (o x d, d) instead of (d, o x d): true for the published weights."""
    plucker_transpose: bool = False
    """Swap the ray maps' image axes: true for the published weights (their ray grid is transposed)."""
    feedback_rgb: bool = True
    """Build the RGB-map adapter (cond_encoder.0); off = no adapter and no influence of rgb_map."""
    feedback_ccm: bool = True
    """Build the CCM-map adapter (cond_encoder.1); off = no adapter and no influence of ccm_map."""
    adapter_unshuffle: int = 1
    """Map-to-latent size ratio (PixelUnshuffle factor): 8 for the SVD VAE, 1 in pixel space."""
    adapter_res_blocks: int = 1
    """Res-blocks per adapter stage (published: 3)."""
    adapter_kernel: int = 1
    """Kernel of the adapters' in_conv and block2 (1 published)."""

    @classmethod
    def tiny(cls) -> "DenoiserConfig":
        """CPU model: pixel space, 8 views, (32, 64, 64), 3.5 M parameters."""
        return cls()

    @classmethod
    def published(cls) -> "DenoiserConfig":
        """Ouroboros3D: SVD img2vid UNet (diffusers defaults), 4+4 latent channels, CLIP, 320/640/1280/1280 adapters."""
        return cls(
            latent_channels=4, block_out_channels=(320, 640, 1280, 1280), down_block_types=_SVD_DOWN,
            up_block_types=_SVD_UP, layers_per_block=2, num_attention_heads=(5, 10, 20, 20),
            cross_attention_dim=1024, addition_time_embed_dim=256, image_encoder="clip",
            plucker_moment_first=True, plucker_transpose=True, adapter_unshuffle=8, adapter_res_blocks=3,
        )

    def check(self) -> None:
        n = len(self.block_out_channels)
        for name in ("down_block_types", "up_block_types", "num_attention_heads"):
            if len(getattr(self, name)) != n:
                raise ConfigError(
                    f"denoiser.{name} needs one entry per level ({n}, as block_out_channels), got {getattr(self, name)}"
                )
        if any(c % 32 for c in self.block_out_channels):
            raise ConfigError(
                f"denoiser.block_out_channels {self.block_out_channels}: every width must be a multiple of 32 "
                "(the UNet's GroupNorm uses 32 groups)"
            )
        if any(c % h for c, h in zip(self.block_out_channels, self.num_attention_heads)):
            raise ConfigError("denoiser.num_attention_heads must divide block_out_channels level by level")
        if self.image_encoder not in ("clip", "conv"):
            raise ConfigError(f"denoiser.image_encoder {self.image_encoder!r}: use 'clip' or 'conv'")
        if self.adapter_unshuffle < 1 or self.latent_channels < 1 or self.num_views < 1:
            raise ConfigError("denoiser.adapter_unshuffle, latent_channels and num_views must be at least 1")

    def unet_kwargs(self) -> dict:
        """Arguments of `UNetSpatioTemporalConditionModel` (published: exactly its default config)."""
        return dict(
            in_channels=2 * self.latent_channels, out_channels=self.latent_channels,
            down_block_types=tuple(self.down_block_types), up_block_types=tuple(self.up_block_types),
            block_out_channels=tuple(self.block_out_channels), layers_per_block=self.layers_per_block,
            addition_time_embed_dim=self.addition_time_embed_dim,
            projection_class_embeddings_input_dim=len(self.added_time_ids) * self.addition_time_embed_dim,
            cross_attention_dim=self.cross_attention_dim, transformer_layers_per_block=self.transformer_layers_per_block,
            num_attention_heads=tuple(self.num_attention_heads), num_frames=self.num_views,
        )


@dataclass
class ReconConfig:
    input_views: tuple[int, ...] = (0, 2, 4, 6)
    """Which of the generated views the reconstructor sees (indices into the V views; published: azimuths 0/90/180/270)."""
    input_size: int = 256
    """Side in pixels the input views are resized to."""
    down_channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 1024)
    """U-Net widths of the down blocks; each block but the last halves the resolution."""
    down_attention: tuple[bool, ...] = (False, False, False, True, True, True)
    """Cross-view attention in each down block (one flag per down block)."""
    mid_attention: bool = True
    """Cross-view attention in the mid block."""
    up_channels: tuple[int, ...] = (1024, 1024, 512, 256, 128)
    """U-Net widths of the up blocks; each block but the last doubles the resolution (fewer than down: coarser output)."""
    up_attention: tuple[bool, ...] = (True, True, True, False, False)
    """Cross-view attention in each up block (one flag per up block)."""
    layers_per_block: int = 2
    """Residual blocks per down block (up blocks get one more)."""
    attention_heads: int = 16
    """Heads of every cross-view attention layer."""
    norm_groups: int = 32
    """GroupNorm groups; every channel count must be a multiple of it."""
    skip_scale: float = 0.7071067811865476
    """Factor on every residual sum (LGM: sqrt(1/2)), keeps activations from growing with depth."""
    time_proj_channels: int = 128
    """Width of the sinusoidal noise-level embedding."""
    time_embed_channels: int = 512
    """Width of the noise-level MLP output added (through a zero-initialised Linear) to every residual block."""
    clean_timestep: float = 0.0
    """Timestep fed for sigma = 0 (clean views); noisy views get 0.25 ln(sigma). Published: 0, which equals sigma = 1."""
    normalize_imagenet: bool = True
    """Normalise RGB with the ImageNet mean/std inside the model (as LGM does)."""
    plucker_layout: Literal["d_m", "m_d"] = "m_d"
    """Order of the 6 ray channels after RGB: d_m = (direction, moment) as in docs/design.md, m_d = (moment, direction) as LGM."""
    position_mode: Literal["absolute", "ray"] = "absolute"
    """absolute: world xyz from 3 channels (LGM); ray: along the pixel's input-camera ray plus a small sideways offset."""
    position_activation: Literal["clamp", "tanh"] = "clamp"
    """Bounding of absolute positions: clamp (LGM, zero gradient outside) or bound * tanh."""
    position_bound: float = 1.0
    """Absolute positions lie in [-bound, bound]^3 (objects fill [-0.5, 0.5]^3; LGM: 1)."""
    ray_depth_range: float = 0.866
    """Ray mode: distance along the ray from its point closest to the world origin, in [-range, range] (sqrt(3)/2 covers the unit box)."""
    ray_offset: float = 0.05
    """Ray mode: largest sideways offset from the ray (about half an output pixel's footprint)."""
    scale_activation: Literal["softplus", "sigmoid"] = "softplus"
    """softplus: scale_factor * softplus(x) clamped to [scale_min, scale_max] (LGM); sigmoid: into [scale_min, scale_max]."""
    scale_factor: float = 0.1
    """Multiplier of the softplus scale activation (LGM: 0.1)."""
    scale_min: float = 1e-6
    """Smallest Gaussian standard deviation (world units)."""
    scale_max: float = 10.0
    """Largest Gaussian standard deviation (world units; 10 = effectively unbounded, as published)."""
    color_activation: Literal["tanh", "sigmoid"] = "tanh"
    """Colour activation: tanh = (tanh(x) + 1) / 2 (LGM) or sigmoid."""

    @classmethod
    def published(cls) -> "ReconConfig":
        """Ouroboros3D's reconstructor (LGM big + noise-level embedding): 424,039,200 parameters."""
        return cls()

    @classmethod
    def tiny(cls) -> "ReconConfig":
        """The CPU model: 32 px inputs, 4 views x 16^2 = 1,024 Gaussians, 663,264 parameters.

        scale_min 0.03: neighbouring pixel rays are ~0.078 apart at the object (1.25 units
        of view over 16 Gaussians), so smaller splats leave the surface a grid of dots that
        renders speckled and meshes into fragments (trained with 0.002, they settled at 0.019).
        """
        return cls(
            input_size=32, down_channels=(16, 32, 64), down_attention=(False, False, True),
            up_channels=(64, 32), up_attention=(True, False), layers_per_block=1,
            attention_heads=2, norm_groups=8, time_proj_channels=32, time_embed_channels=64,
            clean_timestep=-2.0, plucker_layout="d_m", position_mode="ray", position_activation="tanh",
            position_bound=0.6, scale_activation="sigmoid", scale_min=0.03, scale_max=0.15,
            color_activation="sigmoid",
        )

    @property
    def splat_size(self) -> int:
        """Side of each view's Gaussian map (published 128)."""
        return self.input_size * 2 ** (len(self.up_channels) - 1) // 2 ** (len(self.down_channels) - 1)

    @property
    def num_gaussians(self) -> int:
        """Gaussians per object: input views x splat_size^2 (published 65,536)."""
        return len(self.input_views) * self.splat_size**2

    def check(self) -> None:
        """ConfigError naming the first bad field."""

        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"bad value for 'recon.{key}': {getattr(self, key)!r} must be {what}")

        need(len(self.input_views) >= 1 and min(self.input_views) >= 0, "input_views", "one or more view indices >= 0")
        need(len(set(self.input_views)) == len(self.input_views), "input_views", "distinct")
        n_down, n_up = len(self.down_channels), len(self.up_channels)
        need(n_down >= 1, "down_channels", "at least one width")
        need(1 <= n_up <= n_down, "up_channels", f"1 to {n_down} widths (no more than down_channels)")
        need(len(self.down_attention) == n_down, "down_attention", f"{n_down} flags, one per down block")
        need(len(self.up_attention) == n_up, "up_attention", f"{n_up} flags, one per up block")
        halvings = 2 ** (n_down - 1)
        need(self.input_size % halvings == 0, "input_size", f"a multiple of {halvings} (one halving per down block)")
        need(self.layers_per_block >= 1, "layers_per_block", "at least 1")
        widths = (*self.down_channels, *self.up_channels)
        need(self.norm_groups >= 1 and all(c % self.norm_groups == 0 for c in widths), "norm_groups",
             f"a divisor of every channel count {list(widths)}")
        need(self.attention_heads >= 1 and all(c % self.attention_heads == 0 for c in widths), "attention_heads",
             f"a divisor of every channel count {list(widths)}")
        need(self.time_proj_channels >= 2 and self.time_proj_channels % 2 == 0, "time_proj_channels", "even and >= 2")
        need(self.time_embed_channels >= 1, "time_embed_channels", "positive")
        need(self.position_bound > 0, "position_bound", "positive")
        need(self.ray_depth_range > 0, "ray_depth_range", "positive")
        need(self.ray_offset >= 0, "ray_offset", "0 or more")
        need(0 <= self.scale_min < self.scale_max, "scale_min", f"in [0, scale_max = {self.scale_max})")
        need(self.scale_factor > 0, "scale_factor", "positive")


@dataclass
class ModelConfig:
    codec: Literal["pixel", "vae"] = "pixel"
    """Latent space of the denoiser: "pixel" (identity, the tiny model) or "vae" (SVD's VAE, the published model)."""
    vae_path: str = ""
    """Local folder of SVD's VAE (AutoencoderKLTemporalDecoder) when codec = "vae"; never downloaded."""
    weights: str = "none"
    """Model weights: a name looked up in the package's weights folder and $O3D_WEIGHTS_DIR ("tiny": the shipped CPU model), a .safetensors path, an `o3d train` run folder (its model.safetensors), "released" (the released checkpoints named by published_unet and published_recon: the published preset), or "none" (seeded random init)."""
    published_unet: str = ""
    """Path of the released Ouroboros3D mv_model_unet.pth to import (published preset)."""
    published_recon: str = ""
    """Path of the released Ouroboros3D recon_model.pth to import (published preset)."""
