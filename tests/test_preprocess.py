"""Preprocess stage: foreground from alpha / rembg / the built-in estimator, recentring, refusals."""

from __future__ import annotations

import hashlib
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from o3dcli import matting
from o3dcli.config import PreprocessConfig
from o3dcli.io.images import ImageError
from o3dcli.preprocess import _resample_square, preprocess_image

ORANGE, DARK = np.array([0.9, 0.45, 0.1]), np.array([0.55, 0.2, 0.05])


def coverage(draw_fn, height: int, width: int, ss: int = 4) -> np.ndarray:
    """Anti-aliased coverage [H, W] of a shape drawn (at `ss`x) by draw_fn(ImageDraw, scale)."""
    im = Image.new("L", (width * ss, height * ss), 0)
    draw_fn(ImageDraw.Draw(im), ss)
    return np.asarray(im.resize((width, height), Image.Resampling.BOX), np.float32) / 255


def disk(cx, cy, r):
    return lambda d, s: d.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)


def ring(cx, cy, r_out, r_in):
    def draw(d, s):
        d.ellipse([(cx - r_out) * s, (cy - r_out) * s, (cx + r_out) * s, (cy + r_out) * s], fill=255)
        d.ellipse([(cx - r_in) * s, (cy - r_in) * s, (cx + r_in) * s, (cy + r_in) * s], fill=0)
    return draw


def star(cx, cy, r_out, r_in, points=5):
    angles = np.arange(2 * points) * np.pi / points - np.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, r_out, r_in)
    xy = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    return lambda d, s: d.polygon([tuple(p * s) for p in xy], fill=255)


def background(kind: str, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    if kind == "white":
        return np.ones((height, width, 3))
    if kind == "coloured":
        return np.ones((height, width, 3)) * np.array([0.3, 0.55, 0.85])
    # Mild studio gradient: brighter to the right, darker corners.
    grey = 0.78 + 0.12 * xx - 0.25 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2)
    return np.repeat(grey[..., None], 3, axis=2)


def scene(cov: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """An object with stripes on a background, with camera-like noise, RGB float [H, W, 3]."""
    h, w = cov.shape
    stripes = ((np.arange(w) // 12) % 2)[None, :, None]
    fg = np.where(stripes, DARK, ORANGE) * np.ones((h, w, 3))
    img = fg * cov[..., None] + background(kind, h, w) * (1 - cov[..., None])
    img += np.random.default_rng(seed).normal(0, 0.01, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def assert_recentred(mask: np.ndarray, size: int, ratio: float) -> None:
    x0, y0, x1, y1 = bbox(mask > 0.5)
    assert abs((x0 + x1) / 2 - size / 2) <= 1 and abs((y0 + y1) / 2 - size / 2) <= 1
    assert abs(max(x1 - x0, y1 - y0) - ratio * size) <= 1


def rgba_array(cov: np.ndarray, colour=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Straight RGBA with the colour inside and black (not background) under alpha 0."""
    rgb = np.ones(cov.shape + (3,), np.float32) * np.asarray(colour, np.float32) * (cov[..., None] > 0)
    return np.concatenate([rgb, cov[..., None]], axis=-1).astype(np.float32)


def test_chi3_median_constant():
    from scipy.special import gammaincinv

    # Median of |N(0, I_3)|: sqrt of the chi-square(3) median = sqrt(2 * P^-1(3/2, 1/2)).
    assert abs(np.sqrt(2 * gammaincinv(1.5, 0.5)) - 1.538) < 1e-3
    sample = np.linalg.norm(np.random.default_rng(0).normal(size=(200_000, 3)), axis=1)
    assert abs(np.median(sample) - 1.538) < 5e-3


def test_background_fit_recovers_a_surface_despite_outliers():
    h, w = 120, 160
    v, u = np.mgrid[0:h, 0:w]
    u, v = u / (w - 1) * 2 - 1, v / (h - 1) * 2 - 1
    truth = np.stack([0.7 + 0.1 * u - 0.05 * v * v, 0.6 + 0.05 * u * v, 0.8 - 0.1 * u * u], -1).astype(np.float32)
    img = truth.copy()
    img[40:80, 50:110] = (0.1, 0.9, 0.2)  # an "object" covering part of the samples
    fitted = matting._fit_background(img, np.ones((h, w), bool), degree=2)
    np.testing.assert_allclose(fitted, truth, atol=2e-3)


@pytest.mark.parametrize("kind", ["white", "coloured", "gradient"])
@pytest.mark.parametrize("shape", ["disk", "star"])
def test_builtin_matting_finds_known_shapes(kind, shape):
    h, w = 200, 240
    draw = disk(110, 105, 60) if shape == "disk" else star(125, 100, 80, 38)
    cov = coverage(draw, h, w)
    matte = matting.builtin_matte(scene(cov, kind), "synthetic.png")
    assert matte.method == "builtin" and matte.warnings == ()
    assert iou(matte.alpha > 0.5, cov > 0.5) >= 0.95


def test_builtin_keeps_a_large_hole_and_fills_a_small_one():
    h, w = 200, 200
    cov_ring = coverage(ring(100, 100, 80, 40), h, w)  # the hole is 1/3 of the ring's area: background
    matte = matting.builtin_matte(scene(cov_ring, "white"), "ring.png")
    assert iou(matte.alpha > 0.5, cov_ring > 0.5) >= 0.95
    assert matte.alpha[100, 100] < 0.05

    cov_disk = coverage(disk(100, 100, 80), h, w)
    img = scene(cov_disk, "white")
    spot = coverage(disk(100, 100, 5), h, w) > 0.5  # 0.4% of the object, background-coloured
    img[spot] = 1.0
    matte = matting.builtin_matte(img, "spot.png")
    assert matte.alpha[100, 100] > 0.95
    assert iou(matte.alpha > 0.5, cov_disk > 0.5) >= 0.95


def test_builtin_warns_when_the_object_touches_the_border():
    cov = coverage(lambda d, s: d.rectangle([0, 60 * s, 200 * s, 140 * s], fill=255), 200, 200)
    matte = matting.builtin_matte(scene(cov, "white"), "cut.png")
    assert any("touches" in w for w in matte.warnings)


def test_preprocess_recentres_and_scales_builtin(tmp_path):
    cov = coverage(star(70, 60, 40, 20), 180, 240)  # off-centre, on a gradient
    path = tmp_path / "star.png"
    Image.fromarray((scene(cov, "gradient") * 255 + 0.5).astype(np.uint8)).save(path)
    cfg = PreprocessConfig(size=96, foreground_ratio=0.8)
    prep = preprocess_image(path, cfg)
    assert prep.matting == "builtin"
    assert prep.rgba.shape == (4, 96, 96) and prep.rgb.shape == (3, 96, 96) and prep.mask.shape == (1, 96, 96)
    assert_recentred(prep.mask[0].numpy(), 96, 0.8)
    assert prep.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_existing_alpha_is_used_as_is():
    h, w = 150, 200
    cov = coverage(disk(60, 50, 30), h, w)
    cfg = PreprocessConfig(size=64, foreground_ratio=0.75)
    prep = preprocess_image(rgba_array(cov, (0.2, 0.4, 0.6)), cfg)
    assert prep.matting == "alpha" and prep.warnings == ()
    # The disk's diameter (60 px) becomes 0.75 * 64 = 48 px: an analytic disk of radius 24 at the centre.
    expected = coverage(disk(32, 32, 24), 64, 64)
    assert iou(prep.mask[0].numpy() > 0.5, expected > 0.5) >= 0.97
    assert np.abs(prep.mask[0].numpy() - expected).max() < 0.2
    # crop_box: bbox x [30, 90), y [20, 80): side 60 / 0.75 = 80 around (60, 50).
    assert prep.crop_box == (20, 10, 100, 90)
    assert_recentred(prep.mask[0].numpy(), 64, 0.75)


def test_an_alpha_that_keeps_the_whole_photo_is_warned_about():
    """A photo padded to a square with transparent bars, or exported with rounded corners, has an
    alpha channel that marks the photo, not an object: it was used as is, background and all,
    without a word."""
    h, w = 200, 200
    photo = scene(coverage(disk(100, 100, 40), h, w), "coloured")
    padded = np.concatenate([photo, np.ones((h, w, 1), np.float32)], axis=-1)
    padded[:30, :, 3] = padded[-30:, :, 3] = 0.0  # a 200 x 140 photo padded to a square
    rounded = np.concatenate([photo, coverage(
        lambda d, s: d.rounded_rectangle([0, 0, w * s - 1, h * s - 1], radius=40 * s, fill=255), h, w)[..., None]], -1)  # 97 % opaque
    cfg = PreprocessConfig(size=32)
    for rgba in (padded, rounded):
        prep = preprocess_image(rgba, cfg)
        assert prep.matting == "alpha"
        assert len(prep.warnings) == 1 and "may mark the whole photo rather than the object" in prep.warnings[0]
        assert "preprocess.matting=builtin" in prep.warnings[0]
    # cut-outs are not: a disc, a square object cut out (it fills its box, but not across the image)
    for cov in (coverage(disk(100, 100, 90), h, w), coverage(lambda d, s: d.rectangle([40 * s, 50 * s, 150 * s, 160 * s],
                                                                                        fill=255), h, w)):
        assert preprocess_image(rgba_array(cov, ORANGE), cfg).warnings == ()
    # asked for (preprocess.matting=alpha): the user knows what the alpha holds
    assert preprocess_image(padded, PreprocessConfig(size=32, matting="alpha")).warnings == ()


def test_premultiplied_resize_has_no_dark_fringe_and_composites_on_background():
    cov = coverage(disk(100, 100, 70), 200, 200)
    cfg = PreprocessConfig(size=48, background=(1.0, 0.0, 0.0))
    prep = preprocess_image(rgba_array(cov, (1.0, 1.0, 1.0)), cfg)
    alpha, rgba, rgb = prep.mask[0], prep.rgba, prep.rgb
    visible = alpha > 0.02
    assert rgba[:3, visible].min() > 0.97  # white stays white at the edge: black under alpha 0 did not bleed
    torch.testing.assert_close(rgb, rgba[:3] * alpha + torch.tensor([1.0, 0.0, 0.0])[:, None, None] * (1 - alpha))
    assert torch.allclose(rgb[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # corner: background colour


def test_estimated_edge_leaves_no_rim_of_the_old_background():
    # Reference: the same object given with its true alpha. A photo of it on grey, cut out
    # by the built-in estimator and composited on blue, must match it, edge pixels included.
    cov = coverage(star(100, 100, 80, 40), 200, 200)
    truth = rgba_array(cov, ORANGE)
    photo = truth[..., :3] * cov[..., None] + 0.5 * (1 - cov[..., None])
    cfg = PreprocessConfig(size=64, background=(0.0, 0.0, 1.0))
    want, got = preprocess_image(truth, cfg), preprocess_image(photo.astype(np.float32), cfg)
    assert got.matting == "builtin"
    edge = (want.mask[0] > 0.05) & (want.mask[0] < 0.95)
    assert edge.sum() > 50
    assert (got.rgb - want.rgb).abs()[:, edge].mean() < 0.03
    assert (got.rgb - want.rgb).abs().mean() < 0.005


def test_preprocess_is_deterministic_and_accepts_arrays_and_tensors():
    cov = coverage(disk(80, 70, 40), 160, 160)
    img = scene(cov, "coloured")
    cfg = PreprocessConfig(size=32)
    a = preprocess_image(img, cfg)
    b = preprocess_image((img * 255 + 0.5).astype(np.uint8), cfg)
    c = preprocess_image(torch.from_numpy(img).permute(2, 0, 1), cfg)
    d = preprocess_image(img, cfg)
    assert torch.equal(a.rgba, d.rgba) and a.source_sha256 == d.source_sha256 and a.crop_box == d.crop_box
    assert torch.allclose(a.rgba, c.rgba) and (a.rgba - b.rgba).abs().max() < 0.02


def test_prereduced_resample_matches_direct_resample(monkeypatch):
    import o3dcli.preprocess as pp

    rng = np.random.default_rng(3)
    img = np.zeros((900, 1000, 2), np.float32)
    img[200:700, 150:850] = rng.uniform(0, 1, (1, 1, 2))  # flat patches survive both filters alike
    img[300:600, 300:700, 0] = 0.2
    box = (100.0, -40.0, 900.0, 760.0)  # reaches outside the image: transparent there
    reduced = _resample_square(img, box, 40)  # factor 800 // 120 = 6
    monkeypatch.setattr(pp, "PRE_REDUCE", 10**6)
    direct = _resample_square(img, box, 40)
    assert np.abs(reduced - direct).max() < 0.05
    assert np.abs(direct[0:2]).max() < 1e-3  # rows above the image: empty
    np.testing.assert_allclose(direct[20, 20], [0.2, img[400, 500, 1]], atol=1e-3)


def test_refusals_name_the_file(tmp_path):
    cov = coverage(disk(50, 50, 30), 100, 100)
    cases = {
        "transparent.png": (np.zeros((100, 100, 4), np.uint8), "auto", "foreground is empty"),
        "opaque.png": (np.full((100, 100, 4), 255, np.uint8), "alpha", "foreground is the whole frame"),
        "noise.png": (np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8), "auto",
                      "no plain background"),
        "flat.png": (np.full((100, 100, 3), 128, np.uint8), "auto", "foreground is empty"),
        "faint.png": ((rgba_array(cov * 0.3) * 255).astype(np.uint8), "alpha", "foreground is empty"),
    }
    for name, (pixels, mode, message) in cases.items():
        Image.fromarray(pixels).save(tmp_path / name)
        with pytest.raises(ImageError, match=f"{name}: .*{message}"):
            preprocess_image(tmp_path / name, PreprocessConfig(size=32, matting=mode))
    # The built-in estimator refuses a busy scene that fills the frame (blocks of random colour).
    blocks = np.random.default_rng(1).uniform(0, 1, (10, 10, 3)).astype(np.float32)
    full = np.kron(blocks, np.ones((10, 10, 1), np.float32))
    with pytest.raises(ImageError, match="<array>: no plain background found.*whole frame"):
        preprocess_image(full, PreprocessConfig(size=32))


def test_refusals_from_the_loader_name_the_file(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="text.jpg"):
        preprocess_image(tmp_path / "text.jpg", PreprocessConfig())
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="big.png: .*over the limit"):
        preprocess_image(tmp_path / "big.png", PreprocessConfig(max_pixels=1000))


@pytest.fixture
def object_scene():
    cov = coverage(disk(60, 60, 35), 120, 120)
    return scene(cov, "white"), cov


def test_rembg_not_installed(monkeypatch, object_scene):
    img, _ = object_scene
    monkeypatch.setitem(sys.modules, "rembg", None)  # import rembg -> ImportError
    prep = preprocess_image(img, PreprocessConfig(size=32))
    assert prep.matting == "builtin" and prep.warnings == ()
    with pytest.raises(ImageError, match=r"<array>: .*rembg is not installed.*preprocess.matting=builtin"):
        preprocess_image(img, PreprocessConfig(size=32, matting="rembg"))


def test_rembg_model_fetch_failure(monkeypatch, object_scene):
    img, _ = object_scene
    fake = types.ModuleType("rembg")
    attempts = []

    def new_session(name):
        attempts.append(name)
        raise ConnectionError("could not reach github.com")

    fake.new_session, fake.remove = new_session, None
    monkeypatch.setitem(sys.modules, "rembg", fake)
    monkeypatch.setattr(matting, "_REMBG_SESSIONS", {})
    prep = preprocess_image(img, PreprocessConfig(size=32))
    assert prep.matting == "builtin"
    assert len(prep.warnings) == 1 and "rembg failed" in prep.warnings[0] and "could not reach" in prep.warnings[0]
    with pytest.raises(ImageError, match=r"<array>: rembg could not run its 'u2net' model.*new_session.*matting=builtin"):
        preprocess_image(img, PreprocessConfig(size=32, matting="rembg"))
    assert attempts == ["u2net"]  # a batch does not wait for the network once per image


def test_rembg_that_exits_on_import_counts_as_unavailable(monkeypatch, object_scene):
    img, _ = object_scene

    class ExitingFinder:  # rembg calls sys.exit when onnxruntime is missing
        def find_spec(self, name, path=None, target=None):
            if name == "rembg":
                raise SystemExit(1)

    monkeypatch.delitem(sys.modules, "rembg", raising=False)
    monkeypatch.setattr(sys, "meta_path", [ExitingFinder()] + sys.meta_path)
    assert preprocess_image(img, PreprocessConfig(size=32)).matting == "builtin"
    with pytest.raises(ImageError, match="rembg cannot be imported"):
        preprocess_image(img, PreprocessConfig(size=32, matting="rembg"))


def test_rembg_mask_is_used(monkeypatch, object_scene):
    img, cov = object_scene
    fake = types.ModuleType("rembg")
    calls = []
    fake.new_session = lambda name: calls.append(name) or "session"

    def remove(image, session, only_mask):
        assert session == "session" and only_mask and image.size == (120, 120)
        return Image.fromarray((cov * 255 + 0.5).astype(np.uint8), "L")

    fake.remove = remove
    monkeypatch.setitem(sys.modules, "rembg", fake)
    monkeypatch.setattr(matting, "_REMBG_SESSIONS", {})
    for _ in range(2):
        prep = preprocess_image(img, PreprocessConfig(size=32, matting="rembg"))
        assert prep.matting == "rembg"
    assert calls == ["u2net"]  # the session (and its model) is loaded once per process
    assert_recentred(prep.mask[0].numpy(), 32, 0.85)


def test_a_tiny_object_is_warned_about():
    cfg = PreprocessConfig(size=64, foreground_ratio=0.75)
    small = preprocess_image(rgba_array(coverage(disk(60, 50, 6), 150, 200), (0.2, 0.4, 0.6)), cfg)
    assert any("the object is only 12 px across" in w for w in small.warnings), small.warnings
    large = preprocess_image(rgba_array(coverage(disk(60, 50, 20), 150, 200), (0.2, 0.4, 0.6)), cfg)
    assert large.warnings == ()


@pytest.mark.parametrize("shape", [(20, 20000), (20000, 20), (2, 300)])
def test_builtin_matting_of_a_very_thin_image_says_what_it_found(shape):
    # downscaled, such an image has too few rows (or columns) for the background polynomial: the
    # fit ended in numpy's "Singular matrix" as the item's error
    rgb = np.full((*shape, 3), 240, np.uint8)
    h, w = shape
    rgb[h // 4: 3 * h // 4 + 1, w // 4: 3 * w // 4 + 1] = (200, 30, 30)
    matte = matting.builtin_matte(rgb, "thin.png")
    assert matte.alpha.shape == shape and np.isfinite(matte.alpha).all()


def test_a_tiny_image_is_refused_as_too_small_not_as_empty(tmp_path):
    from PIL import Image

    for size in [(1, 1), (8, 8), (20, 12)]:
        path = tmp_path / f"x{size[0]}.png"
        Image.new("RGB", size, (90, 120, 200)).save(path)
        with pytest.raises(ImageError, match=rf"only {size[0]} x {size[1]} px, too small"):
            preprocess_image(path, PreprocessConfig())
    # a small image whose alpha marks nothing: that is what is said
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    with pytest.raises(ImageError, match="foreground is empty"):
        preprocess_image(tmp_path / "clear.png", PreprocessConfig())


def save_photo(path, img: np.ndarray) -> None:
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)


@pytest.mark.parametrize("kind", ["builtin", "alpha"])
def test_a_file_gives_the_same_result_as_its_pixels_given_as_floats(tmp_path, kind):
    # Files with 8-bit data are held as uint8 (a quarter of the memory): the result must be
    # exactly that of the same pixels given as floats in [0, 1].
    from o3dcli.io.images import load_image

    cov = coverage(star(150, 110, 70, 35), 240, 320)
    img = scene(cov, "gradient") if kind == "builtin" else rgba_array(cov, ORANGE)
    path = tmp_path / "photo.png"
    save_photo(path, img)
    cfg = PreprocessConfig(size=48)
    from_file = preprocess_image(path, cfg, projection_size=96)
    from_floats = preprocess_image(load_image(path), cfg, projection_size=96)
    assert from_file.matting == from_floats.matting == kind
    for field in ("rgba", "rgb", "mask", "rgba_projection"):
        assert torch.equal(getattr(from_file, field), getattr(from_floats, field)), field
    assert from_file.crop_box == from_floats.crop_box and from_file.warnings == from_floats.warnings


def test_a_crop_far_larger_than_the_outputs_is_reduced_first_with_the_same_result(monkeypatch):
    import o3dcli.preprocess as pp

    calls = []
    reduce = pp._reduce_straight
    monkeypatch.setattr(pp, "_reduce_straight", lambda *a: calls.append(a[3]) or reduce(*a))
    cov = coverage(star(520, 480, 400, 200), 1000, 1100)
    photo = scene(cov, "gradient")
    cut_out = rgba_array(cov, (1.0, 1.0, 1.0))  # black under alpha 0: must not bleed into the edge
    cfg = PreprocessConfig(size=32, foreground_ratio=0.8)
    early = [preprocess_image(photo, cfg, 96), preprocess_image(cut_out, cfg, 96)]
    assert calls == [4, 4]  # star 800 px / 0.8 = 1000 px crop, 4 x (EARLY_REDUCE * 96) = 768 <= 1000
    monkeypatch.setattr(pp, "EARLY_REDUCE", 10**6)
    late = [preprocess_image(photo, cfg, 96), preprocess_image(cut_out, cfg, 96)]
    assert len(calls) == 2
    for a, b in zip(early, late):
        assert a.matting == b.matting
        assert max(abs(u - v) for u, v in zip(a.crop_box, b.crop_box)) <= 4  # within one reduced pixel
        for got, want in ((a.rgba_projection, b.rgba_projection), (a.rgba, b.rgba)):
            premultiplied = (got[:3] * got[3:] - want[:3] * want[3:]).abs()
            assert premultiplied.mean() < 0.01 and (got[3] - want[3]).abs().mean() < 0.01
            assert iou(got[3].numpy() > 0.5, want[3].numpy() > 0.5) > 0.97
    edge = early[1].rgba_projection
    visible = edge[3] > 0.02
    assert edge[:3, visible].min() > 0.97  # white stays white at the edge


@pytest.mark.parametrize("kind, radius, bound", [("builtin", 150, 24), ("alpha", 150, 12),
                                                 ("builtin", 900, 24), ("alpha", 900, 14), ("gray16", 900, 24)])
def test_a_large_photo_is_not_held_in_floats(tmp_path, kind, radius, bound):
    # Peak numpy memory (tracemalloc; Pillow's own buffers aside) per pixel of the photo: floats
    # (4 bytes per channel) only where the object is, and for a large object (its crop 4 times
    # what the 256 px output needs) only after averaging it down; a whole-frame float RGBA copy
    # alone would be 16 bytes per pixel (the code before: 49; a 16-bit photo's, 44).
    import tracemalloc

    cov = coverage(disk(1500, 1000, radius), 2000, 3000, ss=1)
    path = tmp_path / "photo.png"
    if kind == "gray16":  # a 16-bit grey photo: held as 8-bit too
        Image.fromarray((65535 * (0.2 + 0.6 * cov)).astype(np.uint16)).save(path)
        kind = "builtin"
    else:
        save_photo(path, scene(cov, "white") if kind == "builtin" else rgba_array(cov, ORANGE))
    tracemalloc.start()
    try:
        prep = preprocess_image(path, PreprocessConfig(size=32), projection_size=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert prep.matting == kind
    assert peak / (2000 * 3000) < bound


@pytest.mark.parametrize("kind", ["rembg", "alpha"])
def test_faint_alpha_over_the_whole_photo_does_not_make_it_held_in_floats(tmp_path, monkeypatch, kind):
    # rembg's masks hold 1-3/255 over much of a photo: the part read must still be the crop's
    # reach, with the same result as reading the whole frame.
    import tracemalloc

    import o3dcli.preprocess as pp

    cov = coverage(disk(1500, 1000, 150), 2000, 3000, ss=1)
    rng = np.random.default_rng(0)
    faint = np.maximum(cov, rng.integers(1, 4, cov.shape) / 255)  # 1-3/255 everywhere off the object
    path = tmp_path / "photo.png"
    if kind == "rembg":
        fake = types.ModuleType("rembg")
        fake.new_session = lambda name: "session"
        mask = Image.fromarray((faint * 255 + 0.5).astype(np.uint8), "L")  # made before memory is traced
        fake.remove = lambda image, session, only_mask: mask
        monkeypatch.setitem(sys.modules, "rembg", fake)
        monkeypatch.setattr(matting, "_REMBG_SESSIONS", {})
        save_photo(path, scene(cov, "gradient"))
    else:
        save_photo(path, rgba_array(faint, ORANGE))
    cfg = PreprocessConfig(size=32, matting=kind)
    tracemalloc.start()
    try:
        prep = preprocess_image(path, cfg, projection_size=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert prep.matting == kind
    assert peak / (2000 * 3000) < 12  # with the whole frame in floats: 33 (alpha), 55 (rembg) bytes per pixel
    monkeypatch.setattr(pp, "_needed_region", lambda alpha, *a: (0, alpha.shape[0], 0, alpha.shape[1]))
    whole = preprocess_image(path, cfg, projection_size=256)
    assert prep.crop_box == whole.crop_box and prep.warnings == whole.warnings
    for field in ("rgba", "rgb", "mask", "rgba_projection"):
        assert torch.allclose(getattr(prep, field), getattr(whole, field), atol=1e-6), field


@pytest.mark.parametrize("shape", ["disc with an antenna", "wire"])
def test_parts_thinner_than_a_reduced_pixel_keep_their_place_in_the_crop(tmp_path, monkeypatch, shape):
    # A 1 px antenna or wire averages to alpha 0.25-0.5 over the reduction's blocks: the crop
    # must still reach it (and a wire alone is no "empty foreground"), as without the reduction.
    import o3dcli.preprocess as pp

    a = np.zeros((2400, 2400, 4), np.uint8)
    a[..., :3] = (200, 60, 30)
    if shape == "wire":
        a[300:2100, 1201, 3] = 255
    else:
        a[..., 3] = (coverage(disk(1200, 1500, 500), 2400, 2400, ss=1) * 255).astype(np.uint8)
        a[100:1000, 1201, 3] = 255
    path = tmp_path / "thin.png"
    Image.fromarray(a, "RGBA").save(path)
    cfg = PreprocessConfig(size=32)
    calls = []
    reduce = pp._reduce_straight
    monkeypatch.setattr(pp, "_reduce_straight", lambda *args: calls.append(args[3]) or reduce(*args))
    early = preprocess_image(path, cfg, 512)
    assert calls and calls[0] >= 2  # the file's uint8 pixels, reduced
    monkeypatch.setattr(pp, "EARLY_REDUCE", 10**6)
    late = preprocess_image(path, cfg, 512)
    assert max(abs(u - v) for u, v in zip(early.crop_box, late.crop_box)) <= 2 * calls[0]
    assert iou(early.rgba_projection[3].numpy() > 0.1, late.rgba_projection[3].numpy() > 0.1) > 0.9


def test_the_part_read_reaches_as_far_as_the_crop_at_small_ratios_with_early_reduction(monkeypatch):
    # a thin object, a crop 20 times its size (foreground_ratio 0.05) and an 8 px output: the early
    # reduction's blocks move the outline, and the square 1 / ratio times as much; found by a search
    import o3dcli.preprocess as pp

    rng = np.random.default_rng(0)
    alpha = (rng.integers(1, 4, (2400, 2400)) / 255).astype(np.float32)
    alpha[1200:1234, 1200:1202] = 1.0
    photo = np.concatenate([rng.random((2400, 2400, 3), dtype=np.float32), alpha[..., None]], -1)
    cfg = PreprocessConfig(size=8, matting="alpha", foreground_ratio=0.05)
    part = preprocess_image(photo, cfg)
    monkeypatch.setattr(pp, "_needed_region", lambda a, *rest: (0, a.shape[0], 0, a.shape[1]))
    whole = preprocess_image(photo, cfg)
    assert part.crop_box == whole.crop_box
    for field in ("rgba", "rgb", "mask"):
        assert torch.equal(getattr(part, field), getattr(whole, field)), field
