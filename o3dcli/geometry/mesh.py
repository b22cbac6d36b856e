"""The triangle mesh data type shared by loaders, renderers, meshing and export."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


ALPHA_MODES = ("OPAQUE", "MASK", "BLEND")


@dataclass(frozen=True)
class TriMesh:
    """A triangle mesh in numpy arrays (docs/design.md section 2).

    vertices: [V, 3] float32, world units (+Y up).
    faces: [F, 3] int32, counter-clockwise front faces.
    uv: [V, 2] float32 or None, origin at the texture's bottom-left.
    texture: [H, W, 3] uint8 or None (sRGB base colour), or [H, W, 4] with linear alpha when
        alpha_mode is not "OPAQUE".
    vertex_colors: [V, 3] float32 in [0, 1] or None.
    material_color: (3,) float32 in [0, 1]: used when neither texture nor vertex colours exist.
    alpha_mode: how the texture's alpha is read, as in glTF: "OPAQUE" (no alpha; a 4th channel is
        dropped), "MASK" (a cut-out: visible where alpha >= alpha_cutoff) or "BLEND"
        (semi-transparent). A mesh without an alpha channel is always "OPAQUE".
    alpha_cutoff: the MASK threshold in [0, 1].
    double_sided: back faces are drawn too (glTF doubleSided; cut-out leaves and cards need it).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None
    material_color: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    alpha_mode: str = "OPAQUE"
    alpha_cutoff: float = 0.5
    double_sided: bool = False

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype=np.float32)
        f = np.ascontiguousarray(self.faces, dtype=np.int32)
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"TriMesh.vertices must be [V,3], got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"TriMesh.faces must be [F,3], got {f.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError("TriMesh.faces index outside the vertex array")
        if self.uv is not None:
            uv = np.ascontiguousarray(self.uv, dtype=np.float32)
            if uv.shape != (len(v), 2):
                raise ValueError(f"TriMesh.uv must be [{len(v)},2], got {uv.shape}")
            object.__setattr__(self, "uv", uv)
        if self.vertex_colors is not None:
            vc = np.ascontiguousarray(self.vertex_colors, dtype=np.float32)
            if vc.shape != (len(v), 3):
                raise ValueError(f"TriMesh.vertex_colors must be [{len(v)},3], got {vc.shape}")
            object.__setattr__(self, "vertex_colors", vc)
        if self.texture is not None:
            tex = np.ascontiguousarray(self.texture)
            if tex.ndim != 3 or tex.shape[2] not in (3, 4):
                raise ValueError(f"TriMesh.texture must be [H,W,3] or [H,W,4], got {tex.shape}")
            if tex.dtype != np.uint8:
                tex = (np.clip(tex, 0, 1) * 255 + 0.5).astype(np.uint8)
            if self.alpha_mode == "OPAQUE" or tex.shape[2] == 3:
                tex = np.ascontiguousarray(tex[..., :3])
            object.__setattr__(self, "texture", tex)
        if self.alpha_mode not in ALPHA_MODES:
            raise ValueError(f"TriMesh.alpha_mode must be one of {', '.join(ALPHA_MODES)}, got {self.alpha_mode!r}")
        if self.texture is None or self.texture.shape[2] == 3:
            object.__setattr__(self, "alpha_mode", "OPAQUE")
        object.__setattr__(self, "alpha_cutoff", float(np.clip(self.alpha_cutoff, 0.0, 1.0)))
        object.__setattr__(self, "double_sided", bool(self.double_sided))
        object.__setattr__(self, "material_color", np.asarray(self.material_color, np.float32).reshape(3))

    @property
    def has_texture(self) -> bool:
        return self.texture is not None and self.uv is not None

    @property
    def has_alpha(self) -> bool:
        """The texture carries alpha that is used (alpha_mode "MASK" or "BLEND")."""
        return self.has_texture and self.alpha_mode != "OPAQUE"

    @property
    def material_style(self) -> dict:
        """alpha_mode, alpha_cutoff and double_sided, to carry over with ``replace(**mesh.material_style)``."""
        return {"alpha_mode": self.alpha_mode, "alpha_cutoff": self.alpha_cutoff, "double_sided": self.double_sided}

    def hard_alpha(self) -> "TriMesh":
        """A cut-out (MASK) with its alpha set to exactly 0 or 255 at its cutoff, which then reads the
        same under any threshold or blending; any other mesh unchanged."""
        if not self.has_alpha or self.alpha_mode != "MASK":
            return self
        tex = self.texture.copy()
        tex[..., 3] = np.where(tex[..., 3] >= self.alpha_cutoff * 255, 255, 0)
        return self.replace(texture=tex)

    def replace(self, **kw) -> "TriMesh":
        return replace(self, **kw)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vertices.min(0), self.vertices.max(0)

    def normalized(self) -> "TriMesh":
        """This mesh moved and scaled into the unit box: bounding-box centre at the
        origin, longest side 1 (docs/design.md section 2)."""
        lo, hi = self.bounds()
        extent = float((hi - lo).max())
        if extent <= 0:
            raise ValueError("cannot normalise a mesh with zero extent")
        return self.replace(vertices=(self.vertices - (lo + hi) / 2) / extent)

    def face_normals(self) -> np.ndarray:
        """[F, 3] unit normals (counter-clockwise winding)."""
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)

    def area(self) -> float:
        tri = self.vertices[self.faces].astype(np.float64)
        return float(0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum())


def scale_texture(texture: np.ndarray, scale: float) -> np.ndarray:
    """A [H, W, C] uint8 texture scaled by ``scale`` (each side rounded, at least 1 px) with an
    area filter. Colour and alpha are filtered apart: filtering premultiplied colour (what
    Pillow does for RGBA) would turn the colour under transparent texels black, and viewers'
    texture filtering would then show dark fringes around cut-outs."""
    from PIL import Image

    h, w = texture.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    channels = [texture[..., :3]] + ([texture[..., 3]] if texture.shape[2] == 4 else [])
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize(size, Image.BOX)) for c in channels]
    return out[0] if len(out) == 1 else np.concatenate([out[0], out[1][..., None]], -1)
