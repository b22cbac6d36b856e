"""Image encoders: the condition image -> cross-attention tokens [B, 1, D] for the denoiser.

"clip": the published choice (SVD's CLIP ViT-H/14 image embedding), through
transformers' `CLIPVisionModelWithProjection`, loaded from a local folder only.
transformers is optional (the `clip` extra), not a core dependency of o3d: a missing package or
missing weights fail this encoder alone, with a message saying what to provide.
"conv": a small trainable conv encoder for the CPU model.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# OpenAI CLIP's preprocessing statistics (the defaults of transformers'
# CLIPImageProcessor, checked against it in the tests when it is installed).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224


class ConvImageEncoder(nn.Module):
    """[B, 3, H, W] in [0, 1] -> [B, T, out_dim]: strided convs, then Linear.

    grid = 0: one token, the global mean of the last feature map (T = 1, like CLIP's
    single image embedding). grid = g > 0: that token followed by every cell of the
    last feature map (H/8 x W/8 at 3 stages), each plus a learned position embedding
    of g x g cells (resized when the map has another size), so the UNet's
    cross-attention can look up *where* in the input image something is.
    """

    def __init__(self, out_dim: int, width: int = 32, stages: int = 3, grid: int = 0):
        super().__init__()
        layers, c_in = [], 3
        for i in range(stages):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.SiLU()]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, out_dim)
        self.grid = grid
        if grid:
            self.pos = nn.Parameter(torch.randn(1, c_in, grid, grid) * 0.02)

    def forward(self, image: Tensor) -> Tensor:
        h = self.convs(image * 2.0 - 1.0)
        pooled = self.proj(h.mean(dim=(-2, -1)))[:, None]
        if not self.grid:
            return pooled
        pos = self.pos if self.pos.shape[-2:] == h.shape[-2:] else F.interpolate(
            self.pos, size=h.shape[-2:], mode="bilinear", align_corners=False)
        cells = self.proj((h + pos.to(h.dtype)).flatten(2).transpose(1, 2))
        return torch.cat([pooled, cells], dim=1)


class ClipImageEncoder(nn.Module):
    """SVD's CLIP image embedding: [B, 3, H, W] in [0, 1] -> image_embeds [B, 1, D]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None) -> "ClipImageEncoder":
        """Load `CLIPVisionModelWithProjection` weights from a local folder (never downloads), in `dtype`
        (default float32). A folder with only the fp16 variant (model.fp16.safetensors) loads that."""
        from o3dcli.models.local_files import CLIP_WEIGHTS, weights_variant

        transformers = _transformers()
        path = _clip_folder(path)
        kwargs = {"local_files_only": True, "variant": weights_variant(path, CLIP_WEIGHTS)}
        # transformers >= 4.56 names the dtype argument `dtype` (`torch_dtype` before)
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        kwargs["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = dtype or torch.float32
        return cls(transformers.CLIPVisionModelWithProjection.from_pretrained(path, **kwargs))

    @classmethod
    def from_config(cls, path: str | Path) -> "ClipImageEncoder":
        """The encoder of the folder's config.json, randomly initialised, without reading its weights (build it
        on the meta device to count parameters or check a checkpoint's layout)."""
        transformers = _transformers()
        config = transformers.CLIPVisionConfig.from_pretrained(_clip_folder(path), local_files_only=True)
        return cls(transformers.CLIPVisionModelWithProjection(config))

    def forward(self, image: Tensor) -> Tensor:
        # SVD resizes with its own anti-aliased bicubic; antialiased bilinear is close, not identical.
        x = F.interpolate(image.float(), size=(CLIP_SIZE, CLIP_SIZE), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        dtype = next(self.model.parameters()).dtype
        return self.model(pixel_values=x.to(dtype)).image_embeds[:, None]


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(
            "the 'clip' image encoder needs the transformers package (the clip extra: pip install \"o3dcli[clip]\", "
            "or pip install -e \".[clip]\" in a source checkout), "
            "or use denoiser.image_encoder=conv"
        ) from exc
    return transformers


def _clip_folder(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: no CLIP image encoder here (expected config.json and weights of a "
            "CLIPVisionModelWithProjection, e.g. the image_encoder/ folder of SVD img2vid)"
        )
    return path


def build_image_encoder(kind: str, out_dim: int, clip_path: str = "", width: int = 32, grid: int = 0,
                        load_weights: bool = True) -> nn.Module | None:
    """The encoder named by `kind`; None for "clip" without a path (embeddings must then be given).
    load_weights=False builds CLIP from its folder's config only (its weights are loaded later)."""
    if kind == "conv":
        return ConvImageEncoder(out_dim, width, grid=grid)
    if kind == "clip":
        if not clip_path:
            return None
        return ClipImageEncoder.from_pretrained(clip_path) if load_weights else ClipImageEncoder.from_config(clip_path)
    raise ValueError(f"unknown image encoder {kind!r}: use 'clip' or 'conv'")
