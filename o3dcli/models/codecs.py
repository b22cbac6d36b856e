"""Codecs: images <-> the space the denoiser works in.

One interface for both presets: `PixelCodec` (the CPU model denoises pixels,
scaled to [-1, 1]) and `VAECodec` (SVD's `AutoencoderKLTemporalDecoder`, 8x
smaller latents, as in the published model). Images are [..., 3, H, W] in
[0, 1]; 5-D input [B, V, 3, H, W] keeps its view axis, which the temporal VAE
decoder uses to decode the views of one object together.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


class Codec(nn.Module):
    """encode(images [..., 3, H, W] in [0, 1]) -> latents [..., latent_channels, H/downscale, W/downscale]; decode back."""

    latent_channels: int
    downscale: int

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Latents of target images (what the diffusion adds noise to)."""
        raise NotImplementedError

    def encode_condition(self, images: Tensor) -> Tensor:
        """Latent of the condition image, in the form the denoiser concatenates to its input."""
        return self.encode(images)

    def decode(self, latents: Tensor) -> Tensor:
        """Images in [0, 1] from latents (5-D input decodes each object's views together)."""
        raise NotImplementedError


class PixelCodec(Codec):
    """Identity up to the affine map [0, 1] <-> [-1, 1] (the data range EDM's sigma_data = 0.5 assumes)."""

    latent_channels = 3
    downscale = 1

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return images * 2.0 - 1.0

    def decode(self, latents: Tensor) -> Tensor:
        return ((latents + 1.0) * 0.5).clamp(0.0, 1.0)


class VAECodec(Codec):
    """SVD's VAE (`AutoencoderKLTemporalDecoder`): 4 latent channels, 8x downscale."""

    latent_channels = 4

    def __init__(self, vae: nn.Module, decode_chunk: int = 0):
        super().__init__()
        self.vae = vae
        self.decode_chunk = decode_chunk  # views per decoder call (0 = all); smaller saves memory
        self.scaling_factor = float(vae.config.scaling_factor)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)

    @classmethod
    def from_config(cls, config: dict, **kwargs) -> "VAECodec":
        """A randomly initialised VAE from a diffusers config dict (tests, training from scratch)."""
        from diffusers import AutoencoderKLTemporalDecoder

        return cls(AutoencoderKLTemporalDecoder(**config), **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None, **kwargs) -> "VAECodec":
        """Weights from a local folder only (e.g. SVD img2vid's vae/): never downloads. Loaded in `dtype`
        (default float32); a folder with only the fp16 variant (diffusion_pytorch_model.fp16.safetensors) loads that."""
        from diffusers import AutoencoderKLTemporalDecoder

        from o3dcli.models.local_files import VAE_WEIGHTS, weights_variant

        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no VAE here (expected config.json and weights of an AutoencoderKLTemporalDecoder)")
        vae = AutoencoderKLTemporalDecoder.from_pretrained(path, local_files_only=True, torch_dtype=dtype or torch.float32,
                                                           variant=weights_variant(path, VAE_WEIGHTS))
        return cls(vae, **kwargs)

    def _posterior(self, images: Tensor):
        flat = images.reshape(-1, *images.shape[-3:]) * 2.0 - 1.0
        dtype = next(self.vae.parameters()).dtype
        return self.vae.encode(flat.to(dtype)).latent_dist

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Scaled latents: a posterior sample with `generator`, else its mode."""
        dist = self._posterior(images)
        z = dist.sample(generator) if generator is not None else dist.mode()
        z = z * self.scaling_factor
        return z.reshape(*images.shape[:-3], *z.shape[-3:])

    def encode_condition(self, images: Tensor) -> Tensor:
        """Unscaled posterior mode: SVD (and Ouroboros3D) concatenate the condition latent without the scaling factor."""
        z = self._posterior(images).mode()
        return z.reshape(*images.shape[:-3], *z.shape[-3:])

    def decode(self, latents: Tensor) -> Tensor:
        views = latents.shape[1] if latents.dim() == 5 else 1
        flat = latents.reshape(-1, *latents.shape[-3:]) / self.scaling_factor
        dtype = next(self.vae.parameters()).dtype
        chunk = self.decode_chunk or views
        if views % chunk:
            raise ValueError(f"decode_chunk {chunk} must divide the number of views {views}")
        out = []
        for part in flat.to(dtype).split(chunk):
            out.append(self.vae.decode(part, num_frames=chunk).sample)
        images = ((torch.cat(out).float() + 1.0) * 0.5).clamp(0.0, 1.0)
        return images.reshape(*latents.shape[:-3], *images.shape[-3:])


def build_codec(kind: str, path: str | Path | None = None, dtype: torch.dtype | None = None) -> Codec:
    """"pixel" or "vae" (weights from the local `path`, loaded in `dtype`)."""
    if kind == "pixel":
        return PixelCodec()
    if kind == "vae":
        if not path:
            raise ValueError("the 'vae' codec needs a local path to SVD's vae/ folder")
        return VAECodec.from_pretrained(path, dtype)
    raise ValueError(f"unknown codec {kind!r}: use 'pixel' or 'vae'")
