"""Foreground alpha for an input image: its own alpha, rembg, or a built-in estimator.

The built-in estimator is for objects photographed or rendered on a plain or
studio background (uniform, gradient, vignetted, a floor sweep). It is written
here because no maintained library that ships with o3d does this without a
learned model:
  1. fit a smooth background colour surface robustly (Tukey IRLS): a quadratic
     in (x, y) to a band along the image border, then a cubic to every pixel
     the first pass calls background;
  2. a pixel is foreground when its colour is far from that surface (threshold
     from the border's noise; hysteresis lets weak pixels join strong ones),
     except where a flood from the border through smooth, background-like
     colour reaches: floors, creases and soft gradients a polynomial misses;
  3. keep the components that matter, fill small holes (large holes that show
     background, like the inside of a ring, stay holes), drop thin faint
     strands, soften the edge by a small blur.
It reports, as warnings, the signs that its answer may be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from o3dcli.errors import UserError
from o3dcli.io.images import ImageError, as_float

# Built-in estimator settings: properties of the method, tuned on studio renders
# composited on white, grey, tinted, vignetted and swept backgrounds, so they live
# here rather than in PreprocessConfig. Distances are RGB distances in [0, 1]^3.
WORK_SIDE = 768  # the estimate runs on a copy whose longer side is at most this (area downscale)
MAX_FIT_SAMPLES = 20_000  # background pixels used to fit the surface (an even subset)
BORDER_BAND = 0.03  # width of the border band that samples the background, fraction of the shorter side
THRESHOLD_SIGMAS = 4.0  # foreground = colour distance above this many border-noise sigmas ...
MIN_THRESHOLD = 0.06  # ... but at least this (JPEG noise, faint shading) ...
MAX_THRESHOLD = 0.25  # ... and at most this; a border that needs more is not a plain background
FLOOD_SMOOTHING = 2.0  # Gaussian sigma (work pixels) before measuring colour gradients: hides JPEG blocks
FLOOD_GRADIENT = 0.02  # the border flood crosses pixels whose colour changes less than this per pixel ...
FLOOD_DISTANCE = MAX_THRESHOLD  # ... and whose colour is within this distance of the fitted background
FLOOD_BRIDGE = 5  # radius (pixels at WORK_SIDE, scaled) of the gaps the flood bridges and of "thin" strands
BRIDGE_DISTANCE = 2.0  # bridged gaps and dropped strands are within this many thresholds of the background
WEAK_FRACTION = 0.5  # hysteresis: pixels above this fraction of the threshold join a strong neighbour
NO_BACKGROUND_FRACTION = 0.5  # fewer border pixels than this looking like background -> no background found
KEEP_COMPONENT = 0.05  # keep foreground components at least this fraction of the largest one
SMALL_HOLE = 0.01  # fill holes smaller than this fraction of the foreground area
EDGE_SIGMA = 0.7  # Gaussian blur (work pixels) that softens the mask edge
TOUCH_WARN = 0.10  # warn when the foreground covers more than this fraction of the image's outer frame
TINY_WARN, HUGE_WARN = 0.01, 0.90  # warn when the foreground fraction is outside this range
CARD_FILL, CARD_SPAN = 0.95, 0.90  # an alpha whose opaque part fills this much of its bounding box, which spans
# this much of the image's width or height, is taken for a photo's card (padding, rounded corners), not an object

REMBG_MODEL = "u2net"  # rembg's default session; downloaded on first use into ~/.u2net (or $U2NET_HOME)
_REMBG_SESSIONS: dict = {}


@dataclass(frozen=True)
class Matte:
    """alpha: [H, W] float32 in [0, 1] at source size; method: "alpha" | "rembg" | "builtin"."""

    alpha: np.ndarray
    method: str
    warnings: tuple[str, ...] = ()


class RembgUnavailable(ImportError):
    """rembg is not installed."""


def estimate_foreground(rgba: np.ndarray, matting: str, alpha_threshold: float, name: str,
                        full_frame: float) -> Matte:
    """Choose and run the foreground source for `rgba` [H, W, 4], float32 in [0, 1] or uint8
    (see PreprocessConfig.matting)."""
    alpha = as_float(rgba[..., 3])
    opaque = float((alpha > alpha_threshold).mean())
    if matting in ("auto", "alpha") and opaque == 0.0:
        raise ImageError(f"{name}: the foreground is empty (the alpha channel is transparent everywhere); "
                         "give an image whose alpha marks the object.")
    # An alpha channel is "real" when it leaves a visible part of the frame transparent.
    if matting == "alpha":
        return Matte(np.ascontiguousarray(alpha, dtype=np.float32), "alpha")
    if matting == "auto" and opaque <= full_frame:
        return Matte(np.ascontiguousarray(alpha, dtype=np.float32), "alpha", _card_warning(alpha > alpha_threshold))
    del alpha  # not held beside the estimate (a large photo's frame in floats)
    if matting in ("auto", "rembg"):
        try:
            return Matte(rembg_alpha(rgba[..., :3], name), "rembg")
        except RembgUnavailable as err:
            if matting == "rembg":
                raise ImageError(f"{name}: preprocess.matting=rembg but {err}; install it "
                                 "(pip install \"o3dcli[rembg]\") or use --set preprocess.matting=builtin.") from None
            return builtin_matte(rgba[..., :3], name)
        except ImageError as err:
            if matting == "rembg":
                raise
            matte = builtin_matte(rgba[..., :3], name)
            return Matte(matte.alpha, matte.method, (f"rembg failed, used the built-in estimator instead: {err}",)
                         + matte.warnings)
    if matting == "builtin":
        return builtin_matte(rgba[..., :3], name)
    raise ValueError(f"unknown preprocess.matting {matting!r}; use auto, alpha, rembg or builtin")


def _card_warning(opaque: np.ndarray) -> tuple[str, ...]:
    """A warning when the alpha channel's opaque part [H, W] (bool) looks like the photo itself, a
    plain (rounded) rectangle across the image (a photo padded to a square, or exported with rounded
    corners), rather than an object cut out: o3d would otherwise make a card, background and all."""
    rows, cols = np.flatnonzero(opaque.any(1)), np.flatnonzero(opaque.any(0))
    if len(rows) == 0:
        return ()
    box_h, box_w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    fill = float(np.count_nonzero(opaque)) / float(box_h * box_w)
    spans = box_h >= CARD_SPAN * opaque.shape[0] or box_w >= CARD_SPAN * opaque.shape[1]
    if fill < CARD_FILL or not spans:
        return ()
    return (f"the alpha channel keeps a plain rectangle across the image ({fill:.0%} of its bounding box is opaque): "
            "it may mark the whole photo rather than the object; if so, use --set preprocess.matting=builtin "
            "(or rembg) to cut the object out",)


def _import_rembg():
    """The rembg module; raises RembgUnavailable."""
    try:
        import rembg
    except ImportError as err:
        raise RembgUnavailable(f"rembg is not installed ({err})") from err
    except (Exception, SystemExit) as err:  # rembg exits when onnxruntime is missing
        raise RembgUnavailable(f"rembg cannot be imported ({type(err).__name__}: {err})") from err
    return rembg


def check_matting(matting: str) -> None:
    """UserError, before a batch starts, when `preprocess.matting` asks for a tool that is not there
    (rembg: every item would fail on it)."""
    if matting == "rembg":
        try:
            _import_rembg()
        except RembgUnavailable as err:
            raise UserError(f"preprocess.matting=rembg but {err}; install it (pip install \"o3dcli[rembg]\") "
                            "or use --set preprocess.matting=builtin") from None


def matting_warning(matting: str, cached: bool) -> str | None:
    """`check_matting` for a batch: None when the tool is there. When it is not, with nothing
    `cached` every item would fail on it: UserError; with a cache, items whose preprocessing is
    cached still run (a re-export on a machine without rembg): the warning to print."""
    try:
        check_matting(matting)
    except UserError as e:
        if not cached:
            raise
        return f"{e}; the items whose preprocessing is not cached will fail"
    return None


def rembg_alpha(rgb: np.ndarray, name: str) -> np.ndarray:
    """Foreground alpha [H, W] from rembg's segmentation model; raises RembgUnavailable or ImageError."""
    rembg = _import_rembg()
    from PIL import Image

    try:
        session = _REMBG_SESSIONS.get(REMBG_MODEL)
        if isinstance(session, Exception):  # failed before: do not retry (a network timeout) per image
            raise session
        if session is None:
            try:
                session = _REMBG_SESSIONS[REMBG_MODEL] = rembg.new_session(REMBG_MODEL)
            except Exception as err:
                _REMBG_SESSIONS[REMBG_MODEL] = err
                raise
        if rgb.dtype != np.uint8:
            rgb = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
        mask = rembg.remove(image, session=session, only_mask=True)
    except Exception as err:  # network, missing or damaged model file, onnxruntime errors
        raise ImageError(
            f"{name}: rembg could not run its '{REMBG_MODEL}' model ({type(err).__name__}: {err}). rembg downloads "
            f"the model on first use into ~/.u2net (or $U2NET_HOME); fetch it once with network access "
            f"(python -c \"from rembg import new_session; new_session('{REMBG_MODEL}')\") "
            "or use --set preprocess.matting=builtin.") from err
    mask = np.asarray(mask.convert("L"))
    if mask.shape != rgb.shape[:2]:
        raise ImageError(f"{name}: rembg returned a {mask.shape} mask for a {rgb.shape[:2]} image; "
                         "use --set preprocess.matting=builtin.")
    alpha = mask.astype(np.float32)
    del mask
    alpha /= 255.0  # in place: a large photo's mask is not held in floats twice
    return alpha


def builtin_matte(rgb: np.ndarray, name: str) -> Matte:
    """Alpha [H, W] for an object on a plain background, estimated from the image border."""
    from scipy import ndimage

    height, width = rgb.shape[:2]
    work = _area_downscale(rgb, WORK_SIDE)
    h, w = work.shape[:2]
    band = max(2, round(BORDER_BAND * min(h, w)))
    in_band = np.zeros((h, w), bool)
    in_band[:band], in_band[-band:], in_band[:, :band], in_band[:, -band:] = True, True, True, True

    smooth = _smooth_pixels(work, ndimage)
    # Pass 1 fits a quadratic to the border band; pass 2 a cubic to every pixel that
    # pass 1 calls background, so floors and vignetting next to the object are fitted too.
    background = _fit_background(work, in_band, degree=2)
    distance, threshold, sigma, flood = _classify(work, background, in_band, smooth, ndimage)
    background = _fit_background(work, flood | (distance <= threshold), degree=3)
    distance, threshold, sigma, flood = _classify(work, background, in_band, smooth, ndimage)
    warnings = []
    band_background = float((flood | (distance <= threshold))[in_band].mean())
    if band_background < NO_BACKGROUND_FRACTION:
        raise ImageError(
            f"{name}: no plain background found: only {band_background:.0%} of the image border looks like "
            "background, so the foreground would be the whole frame. Crop the image so the object sits "
            "on a plain margin, give a PNG with an alpha channel, or install rembg (pip install \"o3dcli[rembg]\").")
    if THRESHOLD_SIGMAS * sigma > MAX_THRESHOLD:
        warnings.append(f"the image border is not a uniform background (noise {sigma:.3f}); the built-in "
                        "foreground estimate may be wrong: give an alpha channel or install rembg")

    strong = (distance > threshold) & ~flood
    weak_labels, _ = ndimage.label((distance > WEAK_FRACTION * threshold) & ~flood, structure=np.ones((3, 3)))
    mask = np.isin(weak_labels, np.unique(weak_labels[strong]))
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3)))  # drops speckle and one-pixel bridges
    mask = _fill_small_holes(_keep_main_components(mask, ndimage), ndimage)
    # Thin and faint strands (a crease line, the rim of a soft shadow) go; thin strands with
    # contrast (legs, rails, wires) stay. "Thin" is relative to the image size.
    radius = max(1, round(FLOOD_BRIDGE * max(h, w) / WORK_SIDE))
    thin = mask & ~ndimage.binary_opening(mask, structure=_disk(radius))
    mask = _keep_main_components(mask & ~(thin & (distance < BRIDGE_DISTANCE * threshold)), ndimage)

    fraction = float(mask.mean())
    frame = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    if frame.mean() > TOUCH_WARN:
        warnings.append(f"the foreground touches {frame.mean():.0%} of the image border: the object may be cut "
                        "off or the background estimate wrong")
    if 0 < fraction < TINY_WARN:
        warnings.append(f"the foreground is only {fraction:.1%} of the image; check the cut-out")
    elif fraction > HUGE_WARN:
        warnings.append(f"the foreground covers {fraction:.0%} of the image; check the cut-out")

    soft = ndimage.gaussian_filter(mask.astype(np.float32), EDGE_SIGMA, mode="nearest")
    alpha = _resize_plane(soft, width, height) if (h, w) != (height, width) else soft
    # One frame-sized copy that the clip then works in (the resize's result is read-only).
    alpha = np.array(alpha, dtype=np.float32)
    return Matte(np.clip(alpha, 0.0, 1.0, out=alpha), "builtin", tuple(warnings))


def _fit_background(rgb: np.ndarray, samples: np.ndarray, degree: int) -> np.ndarray:
    """Robust polynomial surface [H, W, 3] of `degree` in (x, y), fitted to the pixels in `samples`.

    Iteratively reweighted least squares (Tukey's biweight) from a plain least-squares
    start: pixels of the object among the samples end with weight 0.
    """
    h, w = samples.shape
    ys, xs = np.nonzero(samples)
    if len(ys) > MAX_FIT_SAMPLES:  # an even, deterministic subset is plenty for a smooth surface
        keep = np.linspace(0, len(ys) - 1, MAX_FIT_SAMPLES).astype(np.int64)
        ys, xs = ys[keep], xs[keep]
    colours = rgb[ys, xs].astype(np.float64)
    u, v = _unit_coords(xs, w), _unit_coords(ys, h)
    terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    design = np.stack([u**i * v**j for i, j in terms], axis=1)
    weight = np.ones(len(colours))
    coef = np.zeros((len(terms), 3))
    coef[0] = np.median(colours, axis=0)  # kept if there are too few samples to fit anything
    for _ in range(6):
        if np.count_nonzero(weight) < 4 * len(terms):
            break
        root = np.sqrt(weight)[:, None]
        # least squares that also takes a rank-deficient design (the samples of a 20000 x 20 image
        # span too few rows for every monomial in y): the smallest solution, not an error
        coef = np.linalg.lstsq(design * root, colours * root, rcond=None)[0]
        residual = np.linalg.norm(colours - design @ coef, axis=1)
        cutoff = 4.685 * max(_noise_sigma(residual), MIN_THRESHOLD / THRESHOLD_SIGMAS)
        weight = np.clip(1 - (residual / cutoff) ** 2, 0, None) ** 2
    powers_u = _unit_coords(np.arange(w), w)[:, None] ** np.arange(degree + 1)
    powers_v = _unit_coords(np.arange(h), h)[:, None] ** np.arange(degree + 1)
    grid = np.zeros((degree + 1, degree + 1, 3))
    for (i, j), c in zip(terms, coef):
        grid[i, j] = c
    rows = np.einsum("yj,ijc->yci", powers_v, grid)  # [H, 3, degree+1]
    return (rows @ powers_u.T).transpose(0, 2, 1).astype(np.float32)  # [H, W, 3]


def _noise_sigma(residual: np.ndarray) -> float:
    # The median of the norm of a 3-D Gaussian residual is 1.538 sigma (chi distribution, 3 dof).
    return float(np.median(residual)) / 1.538 if residual.size else 0.0


def _unit_coords(index: np.ndarray, count: int) -> np.ndarray:
    return index / max(count - 1, 1) * 2.0 - 1.0


def _classify(rgb, background, in_band, smooth, ndimage):
    """-> colour distance [H, W], its threshold, the band's noise sigma, the border flood [H, W]."""
    distance = np.linalg.norm(rgb - background, axis=-1)
    sigma = _noise_sigma(distance[in_band])
    threshold = float(np.clip(THRESHOLD_SIGMAS * sigma, MIN_THRESHOLD, MAX_THRESHOLD))
    # The flood: pixels joined to background seeds on the border through smooth, background-like colour.
    labels, _ = ndimage.label(smooth & (distance < FLOOD_DISTANCE))
    reached = np.unique(labels[in_band])  # every smooth, background-like stretch of the border seeds it
    flood = np.isin(labels, reached[reached > 0])
    # Bridge thin lines that stop the flood (a floor/wall crease, a seam in a backdrop) when
    # their colour is close to the background; object edges are far from it and stay.
    radius = max(1, round(FLOOD_BRIDGE * max(distance.shape) / WORK_SIDE))
    bridged = ndimage.binary_closing(flood, structure=_disk(radius))
    flood |= bridged & (distance < BRIDGE_DISTANCE * threshold)
    return distance, threshold, sigma, flood


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def _smooth_pixels(rgb: np.ndarray, ndimage) -> np.ndarray:
    """Pixels whose (lightly blurred) colour changes slowly: where the border flood may pass."""
    blurred = ndimage.gaussian_filter(rgb, (FLOOD_SMOOTHING, FLOOD_SMOOTHING, 0))
    # Sobel responds with 8x the slope of a linear ramp (2 from the difference, 4 from the smoothing).
    gradient = np.sqrt(sum(ndimage.sobel(blurred, axis=a) ** 2 for a in (0, 1)).sum(axis=-1)) / 8
    return gradient < FLOOD_GRADIENT


def _keep_main_components(mask: np.ndarray, ndimage) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= KEEP_COMPONENT * sizes.max()) + 1
    return np.isin(labels, keep)


def _fill_small_holes(mask: np.ndarray, ndimage) -> np.ndarray:
    holes = ndimage.binary_fill_holes(mask) & ~mask
    labels, count = ndimage.label(holes)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    small = np.flatnonzero(sizes < SMALL_HOLE * mask.sum()) + 1
    return mask | np.isin(labels, small)


def _area_downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Box-filter downscale of [H, W, C] (float in [0, 1] or uint8) so the longer side is at most
    max_side, as float32 in [0, 1]; a uint8 image is converted one channel at a time."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return as_float(image, copy=True)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([_resize_plane(as_float(image[..., c]), *size, box_filter=True) for c in range(image.shape[2])],
                    axis=-1)


def _resize_plane(plane: np.ndarray, width: int, height: int, box_filter: bool = False) -> np.ndarray:
    from PIL import Image

    resample = Image.Resampling.BOX if box_filter else Image.Resampling.BILINEAR
    out = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), "F").resize((width, height), resample)
    return np.asarray(out, dtype=np.float32)
