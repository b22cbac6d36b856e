"""Models: multi-view denoiser (diffusers SVD UNet + camera MLPs + feedback adapters),
reconstructor, codecs, checkpoints.

Names are re-exported lazily so `import o3dcli.models` stays light (torch and
diffusers load only when a model is used).
"""

from __future__ import annotations

from o3dcli._lazy import lazy_exports

_EXPORTS = {
    "DenoiserConfig": "o3dcli.models.denoiser",
    "MultiViewDenoiser": "o3dcli.models.denoiser",
    "FeedbackAdapter": "o3dcli.models.adapters",
    "PluckerEmbedding": "o3dcli.models.camera_embed",
    "harmonic_embedding": "o3dcli.models.camera_embed",
    "ConvImageEncoder": "o3dcli.models.image_encoder",
    "ClipImageEncoder": "o3dcli.models.image_encoder",
    "Codec": "o3dcli.models.codecs",
    "PixelCodec": "o3dcli.models.codecs",
    "VAECodec": "o3dcli.models.codecs",
    "build_codec": "o3dcli.models.codecs",
    "CheckpointError": "o3dcli.models.checkpoints",
    "load_published_denoiser": "o3dcli.models.checkpoints",
    "save_weights": "o3dcli.models.checkpoints",
    "load_weights": "o3dcli.models.checkpoints",
    "count_parameters": "o3dcli.models.checkpoints",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
