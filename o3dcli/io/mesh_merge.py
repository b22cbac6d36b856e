"""Merging a mesh file's parts, each with its own colour source (texture, vertex colours or a
material colour), into one TriMesh: `merge_parts`, which lays the distinct textures side by
side in one atlas.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from o3dcli.geometry.mesh import TriMesh, scale_texture
from o3dcli.mesh.cleanup import split_wedges

log = logging.getLogger("o3d")


MAX_REPEAT = 8
"""A texture repeated more often than this per axis is not tiled in a merged atlas: each face's
UVs are moved into one repeat instead (`_wrap_faces`), exact for faces within one repeat (the
usual tiling: corners on whole numbers); a face that crosses a repeat's edge samples the wrong
place, and is said."""
MAX_TILE_SIDE = 4096
UV_TOLERANCE = 1e-3
"""UVs this close past a whole number count as on it (exporters write 1.0000001 for 1)."""
ATLAS_GUTTER = 2
"""Texels of a tile's edge repeated around it in a merged atlas."""
MAX_ATLAS_SIDE = 8192
"""A merged atlas is scaled down to at most this side (what GPUs commonly accept)."""


def _face_colour_tiles(part: TriMesh) -> TriMesh:
    """A vertex-coloured part as a textured one: every face gets its own three vertices and a 2 x 2
    texel block of its mean colour (the colour varies per face, not within one)."""
    f = len(part.faces)
    n = int(np.ceil(np.sqrt(f)))
    colours = np.round(part.vertex_colors[part.faces].mean(1) * 255).astype(np.uint8)  # [F, 3]
    grid = np.zeros((n * n, 3), np.uint8)
    grid[:f] = colours
    tile = grid.reshape(n, n, 3).repeat(2, axis=0).repeat(2, axis=1)
    row, col = np.divmod(np.arange(f), n)
    uv_face = np.stack([(2 * col + 1) / (2 * n), 1.0 - (2 * row + 1) / (2 * n)], -1)
    return TriMesh(part.vertices[part.faces].reshape(-1, 3), np.arange(3 * f).reshape(-1, 3),
                   uv=np.repeat(uv_face, 3, axis=0), texture=tile)


def _unrepeat(part: TriMesh) -> TriMesh:
    """A textured part whose UVs leave [0, 1] (a repeating texture) with the texture tiled over the
    UVs' range and the UVs mapped into [0, 1], so it can share an atlas; unchanged otherwise."""
    eps = UV_TOLERANCE  # exporters' float noise (1.0000001) is not a second repeat
    lo, hi = np.floor(part.uv.min(0) + eps), np.ceil(part.uv.max(0) - eps)
    reps = np.maximum(hi - lo, 1).astype(int)
    if (lo == 0).all() and (reps == 1).all():
        return part.replace(uv=np.clip(part.uv, 0.0, 1.0))
    if reps.max() > MAX_REPEAT:
        return _wrap_faces(part, reps)
    texture = part.texture
    h, w = texture.shape[:2]
    s = min(1.0, MAX_TILE_SIDE / max(h * reps[1], w * reps[0]))
    if s < 1.0:  # scaled before tiling: a 4096 px texture repeated 8 x 8 would be 3 GB tiled first
        texture = scale_texture(texture, s)
    return part.replace(uv=np.clip((part.uv - lo) / reps, 0.0, 1.0), texture=np.tile(texture, (reps[1], reps[0], 1)))


def _wrap_faces(part: TriMesh, reps: np.ndarray) -> TriMesh:
    """A textured part with each face's UVs moved by whole repeats into [0, 1] (its vertices split
    where faces of different repeats share them). Moving vertex by vertex sent a corner on a whole
    number (u = 3.0) to 0 while its face's other corners went to 0.5: the face then sampled half
    the texture backwards (20 % of a tiled floor's samples were off)."""
    eps = UV_TOLERANCE
    corners = part.uv[part.faces].astype(np.float64)  # [F, 3, 2]
    local = corners - np.floor(corners.min(1) + eps)[:, None]
    across = int((local.max(1) > 1.0 + eps).any(1).sum())
    if across:
        log.warning("a texture repeated %d x %d times beside other materials: %d of its %d faces cross the edge of a "
                    "repeat and show the wrong part of it (one texture holds all materials, and a texture is tiled "
                    "in it at most %d times)", reps[0], reps[1], across, len(part.faces), MAX_REPEAT)
    # vertex colours are not kept: a merge with textures draws only the atlas
    return split_wedges(part.vertices, part.faces, np.clip(local, 0.0, 1.0), part.texture, part.material_color,
                        **part.material_style)


def merge_parts(parts: list[TriMesh]) -> TriMesh:
    """One TriMesh from parts with their own colour sources.

    Without textures the parts' colours become vertex colours (or one material
    colour when they all agree). With textures, the distinct textures are laid
    side by side in one atlas and the UVs remapped: a plain colour gets a small
    solid tile, vertex colours a tile with one small block per face (the face's
    mean colour), and a texture its UVs repeat over (up to MAX_REPEAT times per
    axis) is tiled that many times first, so the repeats survive the atlas.
    """
    if len(parts) == 1:
        return parts[0]
    parts, style = _merged_alpha(parts)
    style["double_sided"] = any(p.double_sided for p in parts)
    if any(p.has_texture for p in parts):
        parts = [_face_colour_tiles(p) if p.vertex_colors is not None and not p.has_texture
                 and np.ptp(p.vertex_colors, axis=0).max() > 1 / 255 else p for p in parts]  # uniform: one solid tile

    def joined(parts: list[TriMesh]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
        return np.concatenate([p.vertices for p in parts]), np.concatenate([p.faces + o for p, o in zip(parts, offsets)])

    verts, faces = joined(parts)

    def plain_color(p: TriMesh) -> np.ndarray:
        if p.vertex_colors is not None:
            return p.vertex_colors
        return np.broadcast_to(p.material_color, (len(p.vertices), 3))

    if not any(p.has_texture for p in parts):
        if all(p.vertex_colors is None for p in parts) and \
                all(np.allclose(p.material_color, parts[0].material_color) for p in parts):
            return TriMesh(verts, faces, material_color=parts[0].material_color, **style)
        return TriMesh(verts, faces, vertex_colors=np.concatenate([plain_color(p) for p in parts]), **style)

    def distinct_tiles(parts: list[TriMesh]) -> tuple[list[np.ndarray], list[int]]:
        """The distinct images the parts sample (a plain colour: a small solid tile), and each part's."""
        tiles, tile_of, by_content = [], [], {}
        for p in parts:
            tile = p.texture if p.has_texture else np.full((4, 4, 3), np.round(plain_color(p).mean(0) * 255), np.uint8)
            if style.get("alpha_mode", "OPAQUE") != "OPAQUE" and tile.shape[2] == 3:  # opaque beside cut-outs
                tile = np.concatenate([tile, np.full(tile.shape[:2] + (1,), 255, np.uint8)], -1)
            key = (tile.shape, hashlib.sha1(tile.tobytes()).hexdigest())
            if key not in by_content:
                by_content[key] = len(tiles)
                tiles.append(tile)
            tile_of.append(by_content[key])
        return tiles, tile_of

    tiles, _ = distinct_tiles(parts)
    if len(tiles) == 1:  # every part samples the same texture: keep UVs as they are
        return TriMesh(verts, faces, uv=np.concatenate([p.uv for p in parts]), texture=tiles[0], **style)
    parts = [_unrepeat(p) if p.has_texture else p for p in parts]
    verts, faces = joined(parts)  # a texture repeated often has its vertices split by repeat
    tiles, tile_of = distinct_tiles(parts)

    pad = ATLAS_GUTTER  # each tile's edge texels repeated around it: filtering at a tile's edge
    boxes = [(t.shape[0] + 2 * pad, t.shape[1] + 2 * pad) for t in tiles]  # does not pick up a neighbour
    # shelf packing into rows about as wide as the atlas is tall (side by side, five 1024 px
    # textures made a 5120 x 1024 image)
    row_width = max(max(w for _, w in boxes), int(np.ceil(np.sqrt(sum(h * w for h, w in boxes)))))
    origin, x, y, row_h = [], 0, 0, 0
    for h, w in boxes:
        if x + w > row_width:
            x, y, row_h = 0, y + row_h, 0
        origin.append((y, x))
        x, row_h = x + w, max(row_h, h)
    height, width = y + row_h, max(oy_x[1] + w for oy_x, (_, w) in zip(origin, boxes))
    atlas = np.zeros((height, width, tiles[0].shape[2]), np.uint8)
    for t, (oy, ox), (h, w) in zip(tiles, origin, boxes):
        atlas[oy: oy + h, ox: ox + w] = np.pad(t, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    uvs = []
    for p, i in zip(parts, tile_of):
        th, tw = tiles[i].shape[:2]
        oy, ox = origin[i]
        uv = np.full((len(p.vertices), 2), 0.5)
        if p.has_texture:  # in [0, 1] after _unrepeat
            uv = p.uv
        uvs.append(np.stack([(ox + pad + uv[:, 0] * tw) / width,
                             1.0 - (oy + pad + (1.0 - uv[:, 1]) * th) / height], -1))
    if max(height, width) > MAX_ATLAS_SIDE:  # UVs are relative: scaling the whole image keeps them
        atlas = scale_texture(atlas, MAX_ATLAS_SIDE / max(height, width))
    return TriMesh(verts, faces, uv=np.concatenate(uvs), texture=atlas, **style)


def _merged_alpha(parts: list[TriMesh]) -> tuple[list[TriMesh], dict]:
    """The parts ready to share one material, and its alpha_mode and alpha_cutoff.

    Parts that agree keep theirs. Mixed ones (cut-outs with different thresholds, or cut-outs
    beside blended parts) get one: BLEND if any part blends, else MASK at 0.5, with each cut-out's
    alpha first set to exactly 0 or 255 at its own threshold, so every part looks as it did.
    """
    styles = {(p.alpha_mode, p.alpha_cutoff) for p in parts if p.has_alpha}
    if not styles:
        return parts, {}
    if len(styles) == 1:
        mode, cutoff = styles.pop()
        return parts, {"alpha_mode": mode, "alpha_cutoff": cutoff}
    mode = "BLEND" if any(m == "BLEND" for m, _ in styles) else "MASK"
    return [p.hard_alpha() for p in parts], {"alpha_mode": mode, "alpha_cutoff": 0.5}
