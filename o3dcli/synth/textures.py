"""Procedural textures (solid, stripes, checks, gradient) and the texture atlas.

A texture spec is a small JSON-friendly dict drawn from a numpy Generator; a
tile is rendered from it as uint8 RGB. Several tiles are packed into one atlas
(a grid of equal square tiles), and each primitive's local UVs [0, 1]^2 are
mapped into its tile with a margin of ``ATLAS_MARGIN_PX`` texels so bilinear
lookups never read a neighbouring tile. UV origin is bottom-left (row 0 of the
image is v = 1).
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

PATTERNS = ("solid", "stripes", "checks", "gradient")
ATLAS_MARGIN_PX = 2.0


def random_color(rng: np.random.Generator, hue: float) -> list[float]:
    """An RGB colour in [0, 1] near ``hue`` with moderate saturation and value."""
    h = (hue + rng.normal(0.0, 0.05)) % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(0.3, 0.9), rng.uniform(0.45, 0.95))
    return [round(float(c), 4) for c in rgb]


def random_texture_spec(rng: np.random.Generator, hue: float) -> dict:
    """A texture spec: pattern, two colours and the pattern's frequency / direction."""
    pattern = str(rng.choice(PATTERNS, p=[0.25, 0.3, 0.25, 0.2]))
    second_hue = hue + (0.5 if rng.random() < 0.3 else rng.uniform(-0.15, 0.15))  # sometimes complementary
    spec = {"pattern": pattern, "colors": [random_color(rng, hue), random_color(rng, second_hue)]}
    if pattern == "stripes":
        # even counts along u keep the stripes continuous across a revolved seam (u = 0 == u = 1)
        spec["frequency"] = int(rng.integers(1, 5)) * 2
        spec["direction"] = str(rng.choice(["u", "v", "diagonal"]))
    elif pattern == "checks":
        spec["frequency"] = [int(rng.integers(1, 5)) * 2, int(rng.integers(2, 7))]
    elif pattern == "gradient":
        spec["direction"] = str(rng.choice(["u", "v"]))
    return spec


def pattern_weight(spec: dict, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend weight of the second colour at local texture coordinates (s, t) in [0, 1]."""
    pattern = spec["pattern"]
    if pattern == "solid":
        return np.zeros_like(s)
    if pattern == "stripes":
        # s + t shifts by exactly 1 across a u seam, so even frequencies stay continuous there too
        coord = {"u": s, "v": t, "diagonal": s + t}[spec["direction"]]
        return (np.floor(coord * spec["frequency"]) % 2).astype(np.float64)
    if pattern == "checks":
        fu, fv = spec["frequency"]
        return ((np.floor(s * fu) + np.floor(t * fv)) % 2).astype(np.float64)
    if pattern == "gradient":
        # along u the ramp goes out and back, so revolved shapes show no seam at u = 0 / 1
        return 1.0 - np.abs(2.0 * s - 1.0) if spec["direction"] == "u" else t
    raise ValueError(f"unknown texture pattern {pattern!r}; expected one of {PATTERNS}")


def render_tile(spec: dict, size: int, margin_px: float = ATLAS_MARGIN_PX) -> np.ndarray:
    """The tile [size, size, 3] uint8 for ``spec``, laid out for :func:`tile_uv`.

    Texel centres are mapped to the local (s, t) that :func:`tile_uv` assigns to
    them, clamped to [0, 1] inside the margin, so the pattern is not cropped.
    """
    centres = (np.arange(size) + 0.5 - margin_px) / (size - 2.0 * margin_px)
    s = np.clip(centres, 0.0, 1.0)[None, :].repeat(size, 0)
    t = np.clip(centres, 0.0, 1.0)[::-1, None].repeat(size, 1)  # row 0 is the top (t = 1)
    w = pattern_weight(spec, s, t)[..., None]
    c0, c1 = (np.asarray(c, np.float64) for c in spec["colors"])
    rgb = c0 * (1.0 - w) + c1 * w
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def atlas_grid(count: int) -> int:
    """Tiles per side of the square atlas holding ``count`` tiles."""
    return max(1, math.ceil(math.sqrt(count)))


def tile_uv(uv: np.ndarray, index: int, grid: int, tile_px: int, margin_px: float = ATLAS_MARGIN_PX) -> np.ndarray:
    """Map local uv [N, 2] in [0, 1] into tile ``index`` of a ``grid`` x ``grid`` atlas.

    Tile 0 is at the bottom-left of UV space, indices run along u then up in v.
    """
    col, row = index % grid, index // grid
    inner = (tile_px - 2.0 * margin_px) / tile_px
    local = margin_px / tile_px + uv * inner
    return (np.array([col, row], np.float64) + local) / grid


def build_atlas(specs: list[dict], tile_px: int) -> np.ndarray:
    """The atlas [grid*tile_px, grid*tile_px, 3] uint8 with tile k rendered from specs[k]."""
    grid = atlas_grid(len(specs))
    atlas = np.zeros((grid * tile_px, grid * tile_px, 3), np.uint8)
    for k, spec in enumerate(specs):
        col, row = k % grid, k // grid
        top = (grid - 1 - row) * tile_px  # UV row 0 is the image's bottom row of tiles
        atlas[top: top + tile_px, col * tile_px: (col + 1) * tile_px] = render_tile(spec, tile_px)
    return atlas
