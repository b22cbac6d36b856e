"""What the mesh readers (o3dcli.io.mesh, obj, mtl, gltf_read, usd_read) share: the error they raise,
8-bit conversion of texture images, a plain see-through colour as a part, and the note of which
image formats the textures read were in. It imports nothing from the readers, so each of them can
import it at the top.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from o3dcli.geometry.mesh import TriMesh


class MeshLoadError(Exception):
    """A mesh file is missing, corrupt, empty or of an unsupported format (the message names it)."""


def solid_alpha_part(verts: np.ndarray, faces: np.ndarray, rgb: np.ndarray, alpha: float, mode: str = "BLEND",
                     cutoff: float = 0.5, double_sided: bool = False) -> TriMesh:
    """A plain colour with alpha (glass, a tinted window) as a mesh with a small solid RGBA texture
    that every vertex samples: TriMesh's material colour has no alpha, and a texture carries it
    through merging, decimation and every writer."""
    tile = np.empty((4, 4, 4), np.uint8)
    tile[..., :3] = np.round(np.clip(rgb, 0, 1) * 255)
    tile[..., 3] = round(float(np.clip(alpha, 0, 1)) * 255)
    return TriMesh(verts, faces, uv=np.full((len(verts), 2), 0.5), texture=tile, alpha_mode=mode,
                   alpha_cutoff=cutoff, double_sided=double_sided)


def eight_bit(im):
    """A PIL image with 8-bit channels: 16-bit greyscale (modes I;16*, I) scaled by 1/257 rather
    than clipped at 255, as Pillow's convert does."""
    from PIL import Image

    from o3dcli.io.images import _SIXTEEN_BIT_GRAY_MODES

    if im.mode in _SIXTEEN_BIT_GRAY_MODES:
        return Image.fromarray((np.asarray(im).astype(np.float64) / 257.0).round().clip(0, 255).astype(np.uint8))
    if im.mode == "F":
        return Image.fromarray((np.asarray(im, np.float64) * 255.0).round().clip(0, 255).astype(np.uint8))
    return im


_FORMATS_SEEN: ContextVar[set[str] | None] = ContextVar("o3d_texture_formats_seen", default=None)


@contextmanager
def texture_formats_seen():
    """Collects the file format of each texture image the readers decode inside the block, as
    Pillow names it ("JPEG", "PNG"; "" where unknown): `o3d mesh` writes a mesh whose textures were
    all JPEG with a JPEG texture (a scan's 1 MB GLB came out 6 MB as PNG)."""
    seen: set[str] = set()
    token = _FORMATS_SEEN.set(seen)
    try:
        yield seen
    finally:
        _FORMATS_SEEN.reset(token)


def note_texture_format(name: str | None) -> None:
    """Note the file format of a texture the mesh keeps (a PIL image's `format`) for
    `texture_formats_seen`; nothing when no block collects."""
    seen = _FORMATS_SEEN.get()
    if seen is not None:
        seen.add(str(name or ""))
