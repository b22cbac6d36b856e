"""LPIPS-VGG (Zhang et al. 2018) in plain torch, with weights from local files the user supplies.

torchvision is not a dependency of o3d, so the VGG16 feature extractor is
written here (13 3x3 convolutions): its module names are torchvision's
(``features.N.weight``), so a torchvision ``vgg16`` state dict loads as is, and
the five LPIPS linear heads are ``lin0`` .. ``lin4`` (the LPIPS package's
``linK.model.1.weight`` names are mapped on load). o3d ships no weights and
never downloads any: without a file the LPIPS column reads "n/a".

Definition: inputs x, y in [0, 1] become ``2x - 1`` and are shifted and scaled per
channel by shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450). VGG16
features are taken after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
(torchvision indices 3, 8, 15, 22, 29); each is divided by its channel-wise L2
norm (+1e-10); the squared difference is weighted per channel by lin_k (a 1x1
convolution without bias), averaged over pixels and summed over the five layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

# torchvision's vgg16 "D" configuration up to relu5_3: channel counts, "M" = max-pool
_VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (3, 8, 15, 22, 29)
"""Indices in ``features`` after which LPIPS reads a feature map (relu1_2 .. relu5_3)."""
CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10


class LpipsWeightsError(ValueError):
    """The LPIPS weight files are missing or lack tensors; the message names the file and the keys."""


def vgg16_features() -> nn.Sequential:
    """VGG16 ``features`` up to relu5_3 (indices 0..29), named as in torchvision."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG16_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=False)]
            c_in = v
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """LPIPS-VGG distance; ``forward(x, y)`` takes [B,3,H,W] in [0, 1] and returns [B]."""

    def __init__(self):
        super().__init__()
        self.features = vgg16_features()
        for k, c in enumerate(CHANNELS):
            self.add_module(f"lin{k}", nn.Conv2d(c, 1, 1, bias=False))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def taps(self, x: Tensor) -> list[Tensor]:
        """The five feature maps of images x [B,3,H,W] in [0, 1]."""
        h = ((2 * x - 1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                out.append(h)
            if i == TAPS[-1]:
                break
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for k, (fx, fy) in enumerate(zip(self.taps(x), self.taps(y))):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS)
            total = total + getattr(self, f"lin{k}")((nx - ny) ** 2).mean((1, 2, 3))
        return total


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise LpipsWeightsError(f"LPIPS weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
    except Exception as e:
        raise LpipsWeightsError(f"{path}: cannot read LPIPS weights ({type(e).__name__}: {e})") from None
    from o3dcli.models.checkpoints import CheckpointError, load_torch_file

    try:
        sd = load_torch_file(path)  # weights_only: never unpickle code; its problem in one line
    except CheckpointError as e:
        raise LpipsWeightsError(f"cannot read LPIPS weights: {e}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise LpipsWeightsError(f"{path}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    return {k: v for k, v in sd.items() if isinstance(v, Tensor)}


def canonical_key(key: str) -> str:
    """Map the names of the usual checkpoints to ours.

    torchvision vgg16: ``features.N.*`` (kept). LPIPS package: ``linK.model.1.weight``
    (with dropout) or ``linK.model.0.weight`` -> ``linK.weight``; a whole saved
    ``lpips.LPIPS`` model: ``net.sliceS.N.*`` -> ``features.N.*``. ``module.`` and
    ``net.`` prefixes are dropped.
    """
    for prefix in ("module.", "net."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    parts = key.split(".")
    if parts[0].startswith("slice") and len(parts) == 3:
        return f"features.{parts[1]}.{parts[2]}"
    if parts[0].startswith("lin") and len(parts) == 4 and parts[1] == "model":
        return f"{parts[0]}.{parts[3]}"
    return key


def load_lpips(paths: list[str | Path] | str | Path, device: str = "cpu") -> LPIPS:
    """An LPIPS-VGG model from one or more local files (.pth / .pt via ``torch.load(weights_only=True)``,
    or .safetensors) that together hold the VGG16 features and the lin0..lin4 heads.

    Typical: torchvision's ``vgg16-397923af.pth`` plus the LPIPS package's ``weights/v0.1/vgg.pth``,
    given as two paths. Raises LpipsWeightsError naming the files and the missing tensors.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise LpipsWeightsError("no LPIPS weight files given")
    merged: dict[str, Tensor] = {}
    for p in paths:
        merged.update({canonical_key(k): v for k, v in _read_state_dict(p).items()})
    model = LPIPS()
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in merged]
    names = ", ".join(map(str, paths))
    if missing:
        raise LpipsWeightsError(f"{names}: LPIPS-VGG needs {len(missing)} more tensors, e.g. {', '.join(missing[:4])} "
                                "(give torchvision's vgg16 weights and the LPIPS vgg linear layers)")
    bad = [k for k in wanted if tuple(merged[k].shape) != tuple(wanted[k].shape)]
    if bad:
        k = bad[0]
        raise LpipsWeightsError(f"{names}: tensor {k} has shape {list(merged[k].shape)}, expected {list(wanted[k].shape)}")
    model.load_state_dict({k: merged[k].float() for k in wanted})
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def lpips_per_view(model: LPIPS, pred: Tensor, gt: Tensor, chunk: int = 4) -> Tensor:
    """LPIPS [V] (float64) of renders [V,3,H,W] in [0, 1], a few views at a time (bounds memory)."""
    dev = next(model.parameters()).device
    out = [model(pred[i:i + chunk].float().to(dev), gt[i:i + chunk].float().to(dev)).double().cpu()
           for i in range(0, len(pred), chunk)]
    return torch.cat(out)

