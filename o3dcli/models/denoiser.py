"""The multi-view denoiser of Ouroboros3D: an SVD UNet with camera MLPs and feedback adapters.

`unet` is diffusers' `UNetSpatioTemporalConditionModel` (views play the role of
video frames; they exchange information only through its temporal attention).
Around it, as in the published model:
- `down_plucker` / `mid_plucker` / `up_plucker`: one MLP per UNet block on the
  harmonic Plucker embedding of each pixel's ray; its output is added to the
  hidden states before that block;
- `cond_encoder`: [RGB adapter, CCM adapter] encoding the maps rendered from the
  current 3D reconstruction; stage i's feature is added inside down block i
  (after its layers, before its downsampler) and the last stage's after the mid
  block (published: "inside the three cross-attention down blocks and after the
  mid block"; the same rule for any number of blocks);
- an image encoder giving the cross-attention tokens.
The UNet forward is re-implemented here (diffusers 0.42 `forward` + its down
blocks) to inject these terms while calling the UNet's own submodules, so the
parameter names stay diffusers' and SVD/Ouroboros3D weights load unchanged.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from o3dcli.errors import ConfigError
from o3dcli.models.configs import DenoiserConfig  # noqa: F401  (re-exported)
from o3dcli.models.adapters import FeedbackAdapter
from o3dcli.models.camera_embed import PluckerEmbedding, harmonic_dim, plucker_features
from o3dcli.models.image_encoder import build_image_encoder





class MultiViewDenoiser(nn.Module):
    """F_theta of EDM: (c_in x_t, c_noise, conditions) -> raw network output [B, V, C, H, W]."""

    def __init__(self, config: DenoiserConfig, unet: nn.Module | None = None, image_encoder: nn.Module | None = None,
                 load_image_encoder: bool = True):
        """load_image_encoder=False: a CLIP encoder is built from its folder's config, its weights not read
        (build on the meta device to count or check; `build_models` then loads them)."""
        super().__init__()
        from diffusers import UNetSpatioTemporalConditionModel  # heavy; only when a model is built

        config.check()
        self.config = dataclasses.replace(config)
        self.unet = unet if unet is not None else UNetSpatioTemporalConditionModel(**config.unet_kwargs())
        chans = tuple(config.block_out_channels)
        if tuple(self.unet.config.block_out_channels) != chans or self.unet.config.in_channels != 2 * config.latent_channels:
            raise ConfigError("the given unet's block_out_channels/in_channels do not match the DenoiserConfig")
        # Index 0 = RGB, 1 = CCM (the published inference passes [rendered RGB, position map]);
        # a map switched off keeps its slot as a parameter-free Identity so names stay put.
        self.cond_encoder = nn.ModuleList(
            FeedbackAdapter(chans, 3, config.adapter_unshuffle, config.adapter_res_blocks, config.adapter_kernel)
            if on else nn.Identity()
            for on in (config.feedback_rgb, config.feedback_ccm)
        )
        if config.plucker:
            dim = harmonic_dim(config.plucker_frequencies)
            # Widths are each block's input: down i gets level i-1's output, up i gets the previous up block's.
            self.down_plucker = nn.ModuleList(PluckerEmbedding(dim, c) for c in (chans[0],) + chans[:-1])
            self.up_plucker = nn.ModuleList(PluckerEmbedding(dim, c) for c in (chans[-1],) + chans[::-1][:-1])
            self.mid_plucker = PluckerEmbedding(dim, chans[-1])
        if image_encoder is None:
            image_encoder = build_image_encoder(
                config.image_encoder, config.cross_attention_dim, config.clip_path, config.conv_encoder_width,
                config.conv_encoder_grid, load_weights=load_image_encoder,
            )
        self.image_encoder = image_encoder

    def enable_gradient_checkpointing(self) -> None:
        """Recompute UNet block activations in backward (the down loop here honours it too)."""
        self.unet.enable_gradient_checkpointing()

    def encode_image(self, image: Tensor) -> Tensor:
        """Condition image [B, 3, H, W] in [0, 1] -> cross-attention tokens [B, T, cross_attention_dim]."""
        if self.image_encoder is None:
            raise RuntimeError(
                "no CLIP image encoder loaded: set denoiser.clip_path to a local CLIPVisionModelWithProjection "
                "folder (SVD's image_encoder/), or pass image_embeds to the denoiser"
            )
        return self.image_encoder(image)

    def adapter_features(
        self, rgb_map: Tensor | None, ccm_map: Tensor | None, batch_views: tuple[int, int], latent_size: tuple[int, int]
    ) -> list[Tensor] | None:
        """Summed adapter features per stage, [B*V, C_i, H/2^i, W/2^i]; None when no adapter is built.

        A missing map (None) counts as all zeros, like the published first step.
        """
        f = self.config.adapter_unshuffle
        want = (latent_size[0] * f, latent_size[1] * f)
        total = None
        for name, adapter, maps in (("rgb_map", self.cond_encoder[0], rgb_map), ("ccm_map", self.cond_encoder[1], ccm_map)):
            if not isinstance(adapter, FeedbackAdapter):
                continue
            if maps is None:
                maps = torch.zeros(tuple(batch_views) + (3,) + want, device=self.unet.conv_in.weight.device)
            if tuple(maps.shape[-2:]) != want:
                raise ValueError(
                    f"{name} is {tuple(maps.shape[-2:])} pixels; the adapter needs {want} "
                    f"(latent size x adapter_unshuffle {f})"
                )
            feats = adapter(maps.flatten(0, 1).to(self.unet.conv_in.weight.dtype))
            total = feats if total is None else [a + b for a, b in zip(total, feats)]
        return total

    def forward(
        self,
        noisy: Tensor,
        c_noise: Tensor | float,
        cond_latent: Tensor,
        plucker: Tensor | None = None,
        image_embeds: Tensor | None = None,
        cond_image: Tensor | None = None,
        rgb_map: Tensor | None = None,
        ccm_map: Tensor | None = None,
        added_time_ids: Tensor | None = None,
    ) -> Tensor:
        """One network evaluation.

        noisy: [B, V, C, H, W], already scaled by EDM's c_in. c_noise: [B] or scalar.
        cond_latent: [B, C, H, W] (or [B, V, C, H, W]) input-view latent, concatenated to every view.
        plucker: [B, V, 6, H', W'] rays (d, o x d) relative to the input view, any H' (resized per block).
        image_embeds: [B, T, D] tokens, or cond_image [B, 3, h, w] in [0, 1] to encode.
        rgb_map, ccm_map: [B, V, 3, H*f, W*f] in [0, 1] or None (= zeros). added_time_ids: [B, 3].
        Returns [B, V, C, H, W].
        """
        unet, cfg = self.unet, self.config
        B, V, _, H, W = noisy.shape
        dtype, dev = unet.conv_in.weight.dtype, noisy.device
        n_up = len(unet.up_blocks) - 1  # number of 2x resolution changes
        if H % 2**n_up or W % 2**n_up:
            raise ValueError(f"latent size {H}x{W} must be divisible by {2 ** n_up} (one halving per level)")
        if cond_latent.dim() == 4:
            cond_latent = cond_latent[:, None].expand(-1, V, -1, -1, -1)
        if image_embeds is None:
            if cond_image is None:
                raise ValueError("pass image_embeds or cond_image to the denoiser")
            image_embeds = self.encode_image(cond_image)
        if added_time_ids is None:
            added_time_ids = torch.tensor(cfg.added_time_ids, device=dev, dtype=dtype).expand(B, -1)
        if cfg.plucker and plucker is None:
            raise ValueError("this denoiser is camera-conditioned: pass plucker [B, V, 6, H, W]")

        t = torch.as_tensor(c_noise, device=dev).reshape(-1).expand(B)
        emb = unet.time_embedding(unet.time_proj(t).to(dtype))
        time_embeds = unet.add_time_proj(added_time_ids.flatten()).reshape(B, -1).to(emb.dtype)
        emb = (emb + unet.add_embedding(time_embeds)).repeat_interleave(V, dim=0)
        tokens = image_embeds.to(dtype).repeat_interleave(V, dim=0)
        only_image = torch.zeros(B, V, dtype=dtype, device=dev)
        features = self.adapter_features(rgb_map, ccm_map, (B, V), (H, W))
        rays = plucker.flatten(0, 1) if cfg.plucker else None

        def camera(h: Tensor, mlp_name: str, i: int | None = None) -> Tensor:
            if rays is None:
                return h
            mlp = getattr(self, mlp_name) if i is None else getattr(self, mlp_name)[i]
            feats = plucker_features(
                rays, tuple(h.shape[-2:]), cfg.plucker_frequencies, cfg.plucker_moment_first, cfg.plucker_transpose
            )
            return h + mlp(feats.to(dtype)).permute(0, 3, 1, 2)

        h = unet.conv_in(torch.cat([noisy, cond_latent], dim=2).flatten(0, 1).to(dtype))
        skips = [h]
        last = len(unet.down_blocks) - 1
        for i, block in enumerate(unet.down_blocks):
            # The published code adds the camera term in place, so the skip that holds
            # this tensor (previous level's output) carries it too: replace it likewise.
            h = skips[-1] = camera(h, "down_plucker", i)
            feature = features[i] if features is not None and i < last else None
            h, states = _down_block(block, h, emb, tokens, only_image, feature)
            skips.extend(states)
        h = skips[-1] = camera(h, "mid_plucker")
        h = unet.mid_block(hidden_states=h, temb=emb, encoder_hidden_states=tokens, image_only_indicator=only_image)
        if features is not None:
            h = h + features[-1]
        for i, block in enumerate(unet.up_blocks):
            h = camera(h, "up_plucker", i)
            k = len(block.resnets)
            res, skips = tuple(skips[-k:]), skips[:-k]
            kwargs = dict(hidden_states=h, temb=emb, res_hidden_states_tuple=res, image_only_indicator=only_image)
            if getattr(block, "has_cross_attention", False):
                kwargs["encoder_hidden_states"] = tokens
            h = block(**kwargs)
        h = unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))
        return h.reshape(B, V, *h.shape[1:])


def _down_block(block: nn.Module, h: Tensor, emb: Tensor, tokens: Tensor, only_image: Tensor, feature: Tensor | None):
    """diffusers' (CrossAttn)DownBlockSpatioTemporal.forward with the adapter feature added before the downsampler.

    Like the published block, the feature reaches the next level (through the
    downsampler) but not the skip states of this level's layers.
    """
    states = []
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    checkpoint = torch.is_grad_enabled() and getattr(block, "gradient_checkpointing", False)
    for resnet, attn in zip(block.resnets, attentions):
        if checkpoint:
            # what diffusers' own blocks do (their helper for it is not in diffusers before 0.32)
            h = torch.utils.checkpoint.checkpoint(resnet, h, emb, only_image, use_reentrant=False)
        else:
            h = resnet(h, emb, image_only_indicator=only_image)
        if attn is not None:
            h = attn(h, encoder_hidden_states=tokens, image_only_indicator=only_image, return_dict=False)[0]
        states.append(h)
    if feature is not None:
        h = h + feature
    if block.downsamplers is not None:
        for down in block.downsamplers:
            h = down(h)
        states.append(h)
    return h, states
