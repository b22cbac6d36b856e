"""Preprocess stage: input image -> centred RGBA at the model's input size.

Steps: load and validate (o3dcli.io.images), find the foreground alpha
(o3dcli.matting), crop to the foreground, pad to a square in which the
foreground's longer side is `foreground_ratio` of the side and its bounding box
is centred, resample to `size` on premultiplied colour (so transparent pixels
add no dark fringe), composite on the background colour. A photo file with 8-bit
data is held as uint8; only the part the object covers becomes floats, box-averaged
first when it is far larger than the outputs need, so memory stays bounded for
large photos.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from o3dcli.config import PreprocessConfig
from o3dcli.io.images import ImageError, as_float, load_image
from o3dcli.matting import WORK_SIDE, estimate_foreground

# A foreground covering more than this fraction of the frame is no object on a
# background: the reconstruction would treat the whole photo as the object.
FULL_FRAME = 0.98
# Pre-reduce (exact box average) huge crops to about this many times the output
# side before the final Lanczos resample, to bound memory and time.
PRE_REDUCE = 3
# A crop more than EARLY_REDUCE times the largest output side is box-averaged by an integer
# factor right after matting (it stays at least this many times the output side), so a large
# photo is refined and resampled at a bounded size.
EARLY_REDUCE = 2
# Edge refinement of estimated mattes: the band is this many pixels at the estimator's
# working size; alpha at or above EDGE_OPAQUE is inside a rembg matte; the compositing
# equation is solved only where object and background colours differ by this much.
EDGE_BAND = 2
EDGE_OPAQUE = 0.99
MIN_EDGE_CONTRAST = 0.1
SURE_OBJECT_CONTRAST = 0.15  # near the edge, an object pixel must differ this much from the local background


@dataclass(frozen=True)
class PreparedImage:
    """Preprocessed input view.

    rgba: [4, S, S] straight RGBA; rgb: [3, S, S] composited on the background;
    mask: [1, S, S] foreground alpha; crop_box: the square region (x0, y0, x1, y1)
    of the source image (after EXIF orientation), in source pixels, that maps onto
    the output (it may reach outside the image, where the output is transparent).
    """

    rgba: torch.Tensor
    rgb: torch.Tensor
    mask: torch.Tensor
    source_sha256: str
    matting: str
    warnings: tuple[str, ...]
    crop_box: tuple[int, int, int, int]
    rgba_projection: torch.Tensor | None = None
    """[4, P, P] straight RGBA of the same crop at `projection_size` (None unless asked for)."""


SMALL_OBJECT_PX = 32
"""An object fewer pixels across than this in its photo gets a warning (its texture is upscaled)."""


def preprocess_image(path_or_array, cfg: PreprocessConfig, projection_size: int = 0) -> PreparedImage:
    """Load an image file (or take an array) and prepare it as the model's input view.

    `path_or_array`: a path; a numpy array [H, W, C] (C = 1, 3 or 4; uint8 or float in
    [0, 1]); or a tensor [C, H, W] float in [0, 1]. Raises ImageError naming the
    file when the image cannot be used. `projection_size` > 0 also prepares the same crop at
    that side (`rgba_projection`), for projecting the photo onto a mesh texture.
    """
    cfg.check()
    name, rgba, digest = _read_input(path_or_array, cfg.max_pixels)
    matte = estimate_foreground(rgba, cfg.matting, cfg.alpha_threshold, name, FULL_FRAME)
    matte_method, matte_warnings = matte.method, matte.warnings
    height, width = rgba.shape[:2]
    steps = _edge_steps(height, width)
    # Only the part of the frame the object covers (alpha > 0, plus the edge band) and the crop can
    # reach is needed from here on: a large photo is held in full as uint8, and in floats only there.
    y0, y1, x0, x1 = _needed_region(matte.alpha, cfg.alpha_threshold, cfg.foreground_ratio, steps + 2,
                                    min(s for s in (cfg.size, projection_size) if s > 0))
    # A crop far larger than the largest output needs (EARLY_REDUCE times its side) is box-averaged
    # by `scale` now: edge refinement and the rest then run on scale^2 times fewer pixels.
    # Coordinates below are in these reduced pixels; `origin` is the reduced grid's first pixel in
    # them (source pixel = reduced pixel * scale).
    scale = _early_reduction(matte.alpha[y0:y1, x0:x1] > cfg.alpha_threshold, cfg.foreground_ratio,
                             max(cfg.size, projection_size))
    if scale > 1:
        y0, x0 = y0 - y0 % scale, x0 - x0 % scale
        y1, x1 = y0 + -(-(y1 - y0) // scale) * scale, x0 + -(-(x1 - x0) // scale) * scale
        colour, alpha, solid = _reduce_straight(rgba, matte.alpha, (y0, y1, x0, x1), scale, cfg.alpha_threshold)
        steps = max(1, round(steps / scale))
    else:
        solid = None
        alpha = np.array(matte.alpha[y0:y1, x0:x1])
        colour = as_float(rgba[y0:y1, x0:x1, :3], copy=True)
    origin = (x0 // scale, y0 // scale)
    del rgba, matte  # the full frame is no longer needed
    if matte_method != "alpha":
        colour, alpha = _refine_edge(colour, alpha, solve_alpha=matte_method == "builtin", steps=steps)
    foreground = alpha > cfg.alpha_threshold
    if solid is not None:  # a part thinner than a block (a wire, an antenna) averages below the threshold
        foreground |= solid
    fraction = min(1.0, int(np.count_nonzero(foreground)) * scale**2 / (height * width))
    if fraction == 0.0 and max(height, width) < SMALL_OBJECT_PX and matte_method != "alpha":
        raise ImageError(f"{name}: the image is only {width} x {height} px, too small to find an object in; give a "
                         f"photo at least {SMALL_OBJECT_PX} px on each side (256 px or more for a sharp texture).")
    if fraction == 0.0:
        raise ImageError(f"{name}: the foreground is empty ({matte_method} matting found no object); "
                         "give an image with an alpha channel that marks the object, or an object on a plain background.")
    if fraction > FULL_FRAME:
        raise ImageError(f"{name}: the foreground is the whole frame ({fraction:.1%} of the pixels, from "
                         f"{matte_method} matting); crop the image so a margin of background surrounds the object, "
                         "or give a PNG whose alpha channel marks the object.")

    box = _square_box(foreground, cfg.foreground_ratio, origin=origin)
    warnings = tuple(matte_warnings)
    rows, cols = np.nonzero(foreground)
    across = (int(max(rows.max() - rows.min(), cols.max() - cols.min())) + 1) * scale
    if across < SMALL_OBJECT_PX:
        warnings += (f"{name}: the object is only {across} px across in the image; it is enlarged to fill the "
                     "frame and its texture will be blurry: give a larger or closer photo",)
    premultiplied = np.empty(alpha.shape + (4,), np.float32)  # filled in place: no full-size temporaries
    premultiplied[..., :3] = colour
    premultiplied[..., :3] *= alpha[..., None]
    premultiplied[..., 3] = alpha
    del colour, alpha, foreground
    background = np.asarray(cfg.background, dtype=np.float32)

    def straight_rgba(size: int) -> tuple[np.ndarray, np.ndarray]:
        out = _resample_square(premultiplied, box, size, origin=origin)
        out_alpha = np.clip(out[..., 3], 0.0, 1.0)
        out_colour = np.clip(out[..., :3], 0.0, out_alpha[..., None])  # premultiplied colour never exceeds alpha
        visible = out_alpha[..., None] > 1.0 / 255.0
        # (Nearly) transparent pixels carry the background colour, so a careless straight-RGB user sees no black.
        return np.where(visible, out_colour / np.maximum(out_alpha[..., None], 1e-8), background), out_alpha

    straight, out_alpha = straight_rgba(cfg.size)
    composite = straight * out_alpha[..., None] + (1.0 - out_alpha[..., None]) * background

    def chw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.clip(a, 0.0, 1.0).transpose(2, 0, 1), dtype=np.float32))

    projection = None
    if projection_size > 0:
        p_rgb, p_alpha = straight_rgba(projection_size)
        projection = chw(np.concatenate([p_rgb, p_alpha[..., None]], axis=-1))
    return PreparedImage(
        rgba=chw(np.concatenate([straight, out_alpha[..., None]], axis=-1)),
        rgb=chw(composite),
        mask=chw(out_alpha[..., None]),
        source_sha256=digest,
        matting=matte_method,
        warnings=warnings,
        crop_box=tuple(int(np.rint(v * scale)) for v in box),
        rgba_projection=projection,
    )


def _read_input(path_or_array, max_pixels: int) -> tuple[str, np.ndarray, str]:
    """-> (name for messages, RGBA [H, W, 4] (uint8 for a file with 8-bit data, else float32 in
    [0, 1]), sha256 of the source)."""
    if isinstance(path_or_array, (str, os.PathLike)):
        name = str(path_or_array)
        rgba = load_image(path_or_array, max_pixels=max_pixels, keep_uint8=True)
        digest = hashlib.sha256()
        with open(path_or_array, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return name, rgba, digest.hexdigest()
    name = "<array>"
    if isinstance(path_or_array, torch.Tensor):
        if path_or_array.ndim != 3:
            raise ImageError(f"{name}: expected a [C, H, W] tensor, got shape {tuple(path_or_array.shape)}")
        array = path_or_array.detach().cpu().float().permute(1, 2, 0).numpy()
    else:
        array = np.asarray(path_or_array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: expected an image array [H, W, 1|3|4], got shape {array.shape}")
    if array.shape[0] * array.shape[1] > max_pixels:
        raise ImageError(f"{name}: {array.shape[1]}x{array.shape[0]} pixels is over the limit of {max_pixels:,}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ImageError(f"{name}: the array holds NaN or infinite values")
    array = np.clip(array, 0.0, 1.0)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 3:
        array = np.concatenate([array, np.ones_like(array[..., :1])], axis=2)
    array = np.ascontiguousarray(array)
    header = f"{array.shape}".encode()
    return name, array, hashlib.sha256(header + array.tobytes()).hexdigest()


def _edge_steps(height: int, width: int) -> int:
    """Width in source pixels of the band `_refine_edge` works in: EDGE_BAND pixels at the
    estimator's working size, scaled to the source."""
    return max(1, round(EDGE_BAND * max(height, width) / WORK_SIDE))


def _covered_region(alpha: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the bounding box of alpha > 0 grown by `margin` and clipped to the frame
    (the whole frame when alpha is 0 everywhere, so the caller's checks see the empty foreground)."""
    covered = alpha > 0
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    if rows.size == 0:
        return 0, alpha.shape[0], 0, alpha.shape[1]
    return (max(0, int(rows[0]) - margin), min(alpha.shape[0], int(rows[-1]) + 1 + margin),
            max(0, int(cols[0]) - margin), min(alpha.shape[1], int(cols[-1]) + 1 + margin))


def _needed_region(alpha: np.ndarray, threshold: float, ratio: float, margin: int,
                   smallest_output: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the part of the frame preprocessing reads: `_covered_region`, cut to where
    the crop square (its side the object's extent / `ratio`, centred on the object) and the
    resampling filter's support can reach for an output of `smallest_output` px or more.

    Faint alpha far from the object (rembg's masks hold 1-3/255 over much of a photo) would
    otherwise make the whole frame be held in floats. `margin`: the edge band, in pixels, by which
    refinement may move the object's outline. The object is taken at alpha > min(threshold, 0.5)
    (the built-in estimator's edge refinement starts from alpha > 0.5).
    """
    covered = _covered_region(alpha, margin)
    solid = alpha > min(threshold, 0.5)
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    if rows.size == 0:
        return covered
    side = max(int(rows[-1] - rows[0]), int(cols[-1] - cols[0])) + 1 + 2 * margin
    # The crop square is centred on an outline inside the object's box grown by `margin`, and is at
    # most side / ratio across, so it reaches at most half that beyond the grown box; the filter
    # (3 lobes), the box pre-reduction and the early reduction's blocks add under 5 output pixels.
    reach = margin + math.ceil(side / (2 * ratio) * (1 + 10 / smallest_output)) + 8
    # The early reduction's blocks (at most this many pixels, see `_early_reduction`) can grow the
    # outline by a block on each side, and the square with it by 1 / ratio times that.
    block = int(side / ratio // (EARLY_REDUCE * smallest_output))
    reach += math.ceil((block + 1) * (1 + 1 / ratio))
    return (max(covered[0], int(rows[0]) - reach), min(covered[1], int(rows[-1]) + 1 + reach),
            max(covered[2], int(cols[0]) - reach), min(covered[3], int(cols[-1]) + 1 + reach))


def _early_reduction(foreground: np.ndarray, ratio: float, largest_output: int) -> int:
    """The integer factor by which a crop of this foreground is larger than EARLY_REDUCE times the
    largest output side (1: not larger)."""
    rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    if rows.size == 0 or largest_output <= 0:
        return 1
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    return max(1, int(side / ratio // (EARLY_REDUCE * largest_output)))


def _reduce_straight(rgba: np.ndarray, alpha: np.ndarray, region: tuple[int, int, int, int], scale: int,
                     threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Straight colour [h, w, 3] and alpha [h, w] of `region` (y0, y1, x0, x1; its size a multiple
    of `scale`, outside the frame transparent) averaged over scale x scale blocks, and which blocks
    hold a pixel whose alpha is above `threshold` ([h, w] bool: the foreground as the source has it).

    Colour is averaged premultiplied (weighted by alpha), so transparent pixels' colours do not
    bleed in; converted to floats one channel at a time, so a large photo is never held in floats.
    """
    y0, y1, x0, x1 = region
    shape = ((y1 - y0) // scale, (x1 - x0) // scale)

    def blocks(part: np.ndarray) -> np.ndarray:  # part: the region's pixels inside the frame
        if part.shape != (y1 - y0, x1 - x0):  # the region reaches outside the frame: transparent there
            full = np.zeros((y1 - y0, x1 - x0), part.dtype)
            full[:part.shape[0], :part.shape[1]] = part
            part = full
        return part.reshape(shape[0], scale, shape[1], scale)

    def weighted(c: int) -> np.ndarray:
        plane = as_float(rgba[y0:y1, x0:x1, c], copy=True)  # our own: weighted in place
        plane *= weight
        return plane

    weight = alpha[y0:y1, x0:x1]
    a = blocks(weight).mean(axis=(1, 3), dtype=np.float32)
    colour = np.stack([blocks(weighted(c)).mean(axis=(1, 3), dtype=np.float32) for c in range(3)], axis=-1)
    colour = np.where(a[..., None] > 0, colour / np.maximum(a[..., None], 1e-12), 0.0).astype(np.float32)
    return colour, a, blocks(weight > threshold).any(axis=(1, 3))


def _refine_edge(rgb: np.ndarray, alpha: np.ndarray, solve_alpha: bool, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-estimate colour (and alpha) in a thin band along the edge of an estimated matte.

    Edge pixels of a photo mix the object's colour F with the background's B:
    C = a F + (1 - a) B. F is taken from the nearest pixel well inside, B from the
    nearest pixel well outside; then a = (C - B).(F - B) / |F - B|^2 (least squares)
    when F and B differ enough, and the colour becomes F, so the old background leaves
    no rim when the object is composited on another one. A file's own alpha comes with
    colours meant for it and is not touched; rembg's alpha is kept (solve_alpha=False).
    Works in place on `rgb` and `alpha`, which the caller owns; returns them. `steps`: the band's
    width in pixels (`_edge_steps` of the source frame).
    """
    from scipy import ndimage

    if not (alpha > 0).any():
        return rgb, alpha
    y0, y1, x0, x1 = _covered_region(alpha, margin=steps + 2)
    colour, a = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    if not solve_alpha:
        inside = ndimage.binary_erosion(a >= EDGE_OPAQUE, iterations=steps, border_value=1)
        band = (a > 0) & ~inside
    else:
        mask = a > 0.5
        outside = ~ndimage.binary_dilation(mask, iterations=steps)
        if not outside.any():
            return rgb, alpha
        oy, ox = ndimage.distance_transform_edt(~outside, return_distances=False, return_indices=True)
        local_bg = colour[oy, ox]
        # Near the edge, mask pixels that still look like the local background (JPEG chroma
        # bleed, ringing) are not "surely object": the equation decides their alpha.
        near_edge = mask & ~ndimage.binary_erosion(mask, iterations=2 * steps, border_value=1)
        faint = np.linalg.norm(colour - local_bg, axis=-1) < SURE_OBJECT_CONTRAST
        inside = ndimage.binary_erosion(mask, iterations=1, border_value=1) & ~(near_edge & faint)
        band = ~inside & ~outside
    if not inside.any() or not band.any():
        return rgb, alpha
    iy, ix = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
    fg = colour[iy[band], ix[band]]
    if solve_alpha:
        bg = local_bg[band]
        contrast = ((fg - bg) ** 2).sum(axis=-1)
        mixed = ((colour[band] - bg) * (fg - bg)).sum(axis=-1) / np.maximum(contrast, 1e-8)
        a[band] = np.where(contrast > MIN_EDGE_CONTRAST**2, np.clip(mixed, 0.0, 1.0), a[band])
    colour[band] = fg
    return rgb, alpha


def _square_box(foreground: np.ndarray, ratio: float, origin: tuple[int, int] = (0, 0)) -> tuple[float, float, float, float]:
    """Square (x0, y0, x1, y1) in source pixel-edge coordinates, centred on the foreground bbox;
    `origin`: the source (x, y) of the array's first pixel."""
    rows = np.flatnonzero(foreground.any(axis=1)) + origin[1]
    cols = np.flatnonzero(foreground.any(axis=0)) + origin[0]
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    side = max(x1 - x0, y1 - y0) / ratio
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def _resample_square(image: np.ndarray, box: tuple[float, float, float, float], size: int,
                     origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Resample the square `box` (source pixels) of `image` [H, W, C] (zero outside it) to [size, size, C];
    `origin`: the source (x, y) of the image's first pixel.

    Lanczos (Pillow, per channel, float), after an exact box pre-reduction by an
    integer factor when the box is much larger than the output.
    """
    from PIL import Image

    height, width, channels = image.shape
    side = box[2] - box[0]
    factor = max(1, int(side // (PRE_REDUCE * size)))
    # Canvas: the box plus room for the filter's support (3 lobes at this scale), in source pixels.
    margin = math.ceil(3 * side / size) + 2 * factor
    cx0, cy0 = math.floor(box[0]) - margin, math.floor(box[1]) - margin
    cw = math.ceil((math.ceil(box[2]) + margin - cx0) / factor) * factor
    ch = math.ceil((math.ceil(box[3]) + margin - cy0) / factor) * factor
    canvas = np.zeros((ch // factor, cw // factor, channels), np.float32)
    ix0, iy0 = max(origin[0], cx0), max(origin[1], cy0)
    ix1, iy1 = min(origin[0] + width, cx0 + cw), min(origin[1] + height, cy0 + ch)
    if ix1 > ix0 and iy1 > iy0:
        part = image[iy0 - origin[1]:iy1 - origin[1], ix0 - origin[0]:ix1 - origin[0]]
        if factor > 1:
            # Pad so the reduction blocks line up with the canvas grid, then average blocks.
            lx, ly = (ix0 - cx0) % factor, (iy0 - cy0) % factor
            rx, ry = -(lx + part.shape[1]) % factor, -(ly + part.shape[0]) % factor
            part = np.pad(part, ((ly, ry), (lx, rx), (0, 0)))
            part = part.reshape(part.shape[0] // factor, factor, part.shape[1] // factor, factor, channels).mean(axis=(1, 3))
            ix0, iy0 = ix0 - lx, iy0 - ly
        ox, oy = (ix0 - cx0) // factor, (iy0 - cy0) // factor
        canvas[oy:oy + part.shape[0], ox:ox + part.shape[1]] = part
    region = tuple((v - o) / factor for v, o in zip(box, (cx0, cy0, cx0, cy0)))
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(canvas[..., c]), "F")
                   .resize((size, size), Image.Resampling.LANCZOS, box=region), dtype=np.float32)
        for c in range(channels)
    ]
    return np.stack(planes, axis=-1)
