"""Image loading: every format and pixel mode becomes straight RGBA in [0, 1]; bad files are refused."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from o3dcli.io.images import ImageError, load_image

# Quadrant colours of the test pattern: top-left, top-right, bottom-left, bottom-right.
RED, GREEN, BLUE, WHITE = (230, 20, 20), (20, 200, 40), (30, 40, 220), (250, 250, 250)


def quadrants(height: int = 40, width: int = 60) -> np.ndarray:
    """An asymmetric uint8 RGB pattern: four flat quadrants (survives JPEG well)."""
    a = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    a[:h, :w], a[:h, w:], a[h:, :w], a[h:, w:] = RED, GREEN, BLUE, WHITE
    return a


def quadrant_centres(rgba: np.ndarray) -> list[np.ndarray]:
    h, w = rgba.shape[:2]
    return [rgba[h // 4, w // 4, :3], rgba[h // 4, 3 * w // 4, :3], rgba[3 * h // 4, w // 4, :3],
            rgba[3 * h // 4, 3 * w // 4, :3]]


def png16(array: np.ndarray, colour_type: int, trns: tuple[int, ...] = ()) -> bytes:
    """A minimal 16-bit PNG (Pillow cannot write 16-bit RGB): IHDR, one IDAT, IEND, filter 0; with
    ``trns``, a tRNS chunk naming that grey value (or RGB triple) transparent."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = array.shape[:2]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    key = chunk(b"tRNS", struct.pack(f">{len(trns)}H", *trns)) if trns else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + key + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("ext,kwargs,tol", [
    ("png", {}, 0.0), ("bmp", {}, 0.0), ("tif", {}, 0.0),
    ("webp", {"lossless": True}, 0.0), ("jpg", {"quality": 95}, 0.05),
])
def test_formats_read_with_size_and_colour(tmp_path, ext, kwargs, tol):
    path = tmp_path / f"pattern.{ext}"
    Image.fromarray(quadrants()).save(path, **kwargs)
    rgba = load_image(path)
    assert rgba.shape == (40, 60, 4) and rgba.dtype == np.float32
    np.testing.assert_array_equal(rgba[..., 3], 1.0)
    for got, want in zip(quadrant_centres(rgba), (RED, GREEN, BLUE, WHITE)):
        np.testing.assert_allclose(got, np.array(want) / 255, atol=tol + 1e-6)


def test_rgba_png_keeps_straight_alpha(tmp_path):
    a = np.zeros((8, 8, 4), np.uint8)
    a[..., :3] = (200, 100, 50)
    a[..., 3] = np.arange(8)[None, :] * 32
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    rgba = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(rgba[0, :, 3], np.arange(8) * 32 / 255, atol=1e-6)
    np.testing.assert_allclose(rgba[3, 5, :3], np.array([200, 100, 50]) / 255, atol=1e-6)


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be turned 90 degrees clockwise for display
    path = tmp_path / "phone.jpg"
    Image.fromarray(quadrants(40, 60)).save(path, quality=95, exif=exif.tobytes())
    rgba = load_image(path)
    assert rgba.shape[:2] == (60, 40)
    # Clockwise: the stored left column (red over blue) becomes the top row (blue, red).
    want = (BLUE, RED, WHITE, GREEN)
    for got, colour in zip(quadrant_centres(rgba), want):
        np.testing.assert_allclose(got, np.array(colour) / 255, atol=0.05)
    np.testing.assert_allclose(rgba[..., :3], np.rot90(load_image_plain(path), k=-1), atol=1e-6)


def load_image_plain(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32) / 255


def test_palette_with_transparency(tmp_path):
    index = np.zeros((10, 10), np.uint8)
    index[2:8, 2:8] = 1
    index[4:6, 4:6] = 2
    im = Image.fromarray(index, "P")
    im.putpalette([0, 0, 0, 255, 128, 0, 10, 20, 30] + [0] * (253 * 3))
    im.save(tmp_path / "p.png", transparency=0)
    rgba = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(rgba[..., 3], (index > 0).astype(np.float32))
    np.testing.assert_allclose(rgba[3, 3, :3], np.array([255, 128, 0]) / 255, atol=1e-6)
    np.testing.assert_allclose(rgba[5, 5, :3], np.array([10, 20, 30]) / 255, atol=1e-6)


def test_grayscale_and_gray_alpha(tmp_path):
    gray = (np.arange(16, dtype=np.uint8).reshape(4, 4) * 16)
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    rgba = load_image(tmp_path / "l.png")
    for c in range(3):
        np.testing.assert_allclose(rgba[..., c], gray / 255, atol=1e-6)
    np.testing.assert_array_equal(rgba[..., 3], 1.0)

    la = np.stack([gray, 255 - gray], axis=-1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    rgba = load_image(tmp_path / "la.png")
    np.testing.assert_allclose(rgba[..., 1], gray / 255, atol=1e-6)
    np.testing.assert_allclose(rgba[..., 3], (255 - gray) / 255, atol=1e-6)


def test_16bit_gray_keeps_precision(tmp_path):
    values = np.array([[0, 256, 257, 40000], [65535, 1000, 1001, 32768]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")  # mode I;16
    Image.fromarray(values).save(tmp_path / "g16.tif")
    for name in ("g16.png", "g16.tif"):
        rgba = load_image(tmp_path / name)
        np.testing.assert_allclose(rgba[..., 0], values / 65535, atol=1e-7)
        assert rgba[0, 1, 0] != rgba[0, 2, 0]  # 256 and 257 share an 8-bit value but not a 16-bit one


@pytest.mark.parametrize("colour_type", [0, 2])
@pytest.mark.parametrize("background, thing", [(0, 257), (0x1234, 200), (0, 200)])
def test_16bit_png_transparency_key_gives_the_alpha(tmp_path, colour_type, background, thing):
    # a dark object on a background of the colour the tRNS chunk makes transparent; the key is on
    # the 16-bit scale (Pillow's 8-bit RGB decode missed 0x1234, and took 200 for the key 0)
    gray = np.full((6, 8), background, np.uint16)
    gray[2:4, 3:6] = thing
    values = gray if colour_type == 0 else np.repeat(gray[..., None], 3, axis=-1)
    (tmp_path / "key.png").write_bytes(png16(values, colour_type, trns=(background,) * (1 if colour_type == 0 else 3)))
    for keep_uint8, top in ((False, 1.0), (True, 255)):
        rgba = load_image(tmp_path / "key.png", keep_uint8=keep_uint8)
        np.testing.assert_array_equal(rgba[..., 3], (gray == thing) * top)
        expect = gray / 65535 if not keep_uint8 else np.round(gray / 257)
        seen = gray == thing  # (the colour under a transparent pixel may be blanked)
        np.testing.assert_allclose(rgba[..., 0][seen], expect[seen], atol=1e-6)


def test_16bit_data_is_held_as_8_bit_when_asked(tmp_path):
    # preprocessing holds every photo as 8-bit (a 48 MP 16-bit PNG took 2.5-2.8 GB as float32)
    values = np.array([[0, 128, 129, 40000], [65535, 383, 384, 32768]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")  # mode I;16
    (tmp_path / "rgb16.png").write_bytes(png16(np.repeat(values[..., None], 3, axis=-1), colour_type=2))
    for name in ("g16.png", "rgb16.png"):
        rgba = load_image(tmp_path / name, keep_uint8=True)
        assert rgba.dtype == np.uint8
        np.testing.assert_array_equal(rgba[..., 3], 255)
        # within one 8-bit step of the 16-bit value (Pillow's RGB decode keeps the high byte)
        assert np.abs(rgba[..., 0].astype(np.int32) - values / 257).max() <= 1.0
    g8 = load_image(tmp_path / "g16.png", keep_uint8=True)[..., 0]
    np.testing.assert_array_equal(g8, np.round(values / 257))  # grey: rounded


def test_32bit_integer_gray_tiffs_are_read_on_their_datas_scale(tmp_path):
    # mode "I" TIFFs (32-bit samples): 8-bit values stored wide were read on the 16-bit scale, black
    gray = np.array([[0, 64], [128, 255]], np.int32)
    for scale, values in ((255, gray), (65535, gray * 257), (1_000_000, gray * 3921)):
        Image.fromarray(values.astype(np.int32), "I").save(tmp_path / "i32.tif")
        assert Image.open(tmp_path / "i32.tif").mode == "I"
        top = 255 * 3921 if scale == 1_000_000 else scale
        np.testing.assert_allclose(load_image(tmp_path / "i32.tif")[..., 0], values / top, atol=1e-6)
    Image.fromarray(np.array([[-5, 100]], np.int32), "I").save(tmp_path / "neg.tif")
    assert load_image(tmp_path / "neg.tif")[0, 0, 0] == 0.0


def test_16bit_rgb_png_keeps_precision(tmp_path):
    values = np.zeros((3, 4, 3), np.uint16)
    values[0, 0] = (65535, 25750, 1000)
    values[1, 2] = (256, 257, 258)
    values[2, 3] = (40000, 50000, 60000)
    (tmp_path / "rgb16.png").write_bytes(png16(values, colour_type=2))
    rgba = load_image(tmp_path / "rgb16.png")
    np.testing.assert_allclose(rgba[..., :3], values / 65535, atol=1e-7)
    np.testing.assert_array_equal(rgba[..., 3], 1.0)


@pytest.mark.parametrize("ext,tol", [("jpg", 0.06), ("tif", 1e-6)])
def test_cmyk_becomes_rgb(tmp_path, ext, tol):
    path = tmp_path / f"cmyk.{ext}"
    Image.fromarray(quadrants()).convert("CMYK").save(path)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    rgba = load_image(path)
    for got, want in zip(quadrant_centres(rgba), (RED, GREEN, BLUE, WHITE)):
        np.testing.assert_allclose(got, np.array(want) / 255, atol=tol)


def test_truncated_files_are_refused(tmp_path):
    for ext in ("png", "jpg"):
        path = tmp_path / f"cut.{ext}"
        rng = np.random.default_rng(0)  # noise does not compress, so the cut lands in pixel data
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageError, match=f"cut.{ext}.*(corrupt or truncated|cannot be decoded)"):
            load_image(path)


def test_non_images_are_refused(tmp_path):
    noise = tmp_path / "noise.png"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    for path in (noise, text):
        with pytest.raises(ImageError, match=f"{path.name}: not a readable image"):
            load_image(path)
    with pytest.raises(ImageError, match="missing.png: file not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"zero.png: empty file \(0 bytes\)"):
        load_image(tmp_path / "zero.png")


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_tiffs_on_a_0_1_or_0_255_scale(tmp_path, scale):
    ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp * scale, mode="F").save(tmp_path / "f.tif")
    rgba = load_image(tmp_path / "f.tif")
    np.testing.assert_allclose(rgba[..., 0], ramp, atol=1e-6)  # not clipped to white above 1
    overshoot = ramp.copy()
    overshoot[0, 0] = 1.02  # a 0-1 render's ringing: clipped, the rest kept on the 0-1 scale
    Image.fromarray(overshoot * scale, mode="F").save(tmp_path / "g.tif")
    if scale == 1.0:
        np.testing.assert_allclose(load_image(tmp_path / "g.tif")[..., 0], np.clip(overshoot, 0, 1), atol=1e-6)


def test_unsupported_format_is_refused(tmp_path):
    Image.fromarray(quadrants()).save(tmp_path / "pattern.ppm")  # Pillow reads PPM, o3d does not accept it
    with pytest.raises(ImageError, match="pattern.ppm: not a readable image"):
        load_image(tmp_path / "pattern.ppm")


def test_pixel_limit_checked_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(quadrants(100, 100)).save(path)

    def no_decode(self):
        raise AssertionError("decoded an image over the pixel limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageError, match=r"big.png: 100x100 = 10,000 pixels is over the limit of 5,000"):
        load_image(path, max_pixels=5000)


def test_pillows_bomb_guard_follows_max_pixels(tmp_path, monkeypatch):
    # Pillow refuses images over its own limit (89.5 MP by default) while opening them, before
    # o3d's check: a photo that preprocess.max_pixels allows was refused as a "decompression bomb"
    path = tmp_path / "bomb.png"
    Image.fromarray(quadrants(40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: over Pillow's limit
    assert load_image(path, max_pixels=5000).shape == (40, 40, 4)
    assert Image.MAX_IMAGE_PIXELS == 1000  # put back
    with pytest.raises(ImageError, match=r"bomb.png: 40x40 = 1,600 pixels is over the limit of 1,000; .*max_pixels"):
        load_image(path, max_pixels=1000)
    # far over o3d's limit, where Pillow's guard refuses it while opening: the same advice
    with pytest.raises(ImageError, match=r"bomb.png: over the limit of 300 pixels .*raise preprocess.max_pixels"):
        load_image(path, max_pixels=300)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_load_truncated_images_flag_is_refused(tmp_path, monkeypatch):
    Image.fromarray(quadrants()).save(tmp_path / "ok.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(tmp_path / "ok.png")


def save_heic(path, array: np.ndarray, orientation: int = 1) -> None:
    """A HEIC photo written by pillow-heif (which stores an EXIF orientation as the image's own rotation)."""
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, format="HEIF", quality=95, exif=exif.tobytes())


def test_heic_photos_are_read_upright_once(tmp_path):
    # An iPhone photo taken upright but stored sideways: turned once (not again by the EXIF tag).
    save_heic(tmp_path / "IMG_0001.HEIC", quadrants(40, 60), orientation=6)
    rgba = load_image(tmp_path / "IMG_0001.HEIC")
    assert rgba.shape == (60, 40, 4)
    for got, colour in zip(quadrant_centres(rgba), (BLUE, RED, WHITE, GREEN)):
        np.testing.assert_allclose(got, np.array(colour) / 255, atol=0.06)


def test_heic_alpha_is_kept(tmp_path):
    a = np.zeros((40, 60, 4), np.uint8)
    a[..., :3] = RED
    a[10:30, 15:45, 3] = 255
    save_heic(tmp_path / "cut.heic", a)
    rgba = load_image(tmp_path / "cut.heic")
    assert rgba[20, 30, 3] > 0.95 and rgba[2, 2, 3] < 0.05


def test_heic_without_pillow_heif_names_the_extra(tmp_path, monkeypatch):
    from o3dcli.io import images

    save_heic(tmp_path / "IMG_0002.heic", quadrants())
    monkeypatch.setattr(images, "_heif_plugin", lambda: False)  # as on an installation without pillow-heif
    with pytest.raises(ImageError, match=r'IMG_0002.heic: a HEIF/HEIC photo, .*pip install "o3dcli\[heif\]"'):
        load_image(tmp_path / "IMG_0002.heic")


def test_avif_is_read_where_pillow_reads_it_and_otherwise_named(tmp_path, monkeypatch):
    from o3dcli.io import images

    import re

    refusal = r"photo.avif: an AVIF image, which this Pillow .*: " + re.escape(images.avif_hint())
    if not images.pillow_reads_avif():
        # Pillow before 11.3 (the floors' 10.0): the bytes of an AVIF file's header are enough to name it.
        head = struct.pack(">I", 28) + b"ftypavif" + b"\x00\x00\x00\x00" + b"avifmif1miaf"
        (tmp_path / "photo.avif").write_bytes(head + b"\x00" * 64)
        with pytest.raises(ImageError, match=refusal):
            load_image(tmp_path / "photo.avif")
        return
    Image.fromarray(quadrants()).save(tmp_path / "photo.avif", quality=95)
    rgba = load_image(tmp_path / "photo.avif")
    for got, colour in zip(quadrant_centres(rgba), (RED, GREEN, BLUE, WHITE)):
        np.testing.assert_allclose(got, np.array(colour) / 255, atol=0.06)
    monkeypatch.setattr(images, "pillow_reads_avif", lambda: False)
    with pytest.raises(ImageError, match=refusal):
        load_image(tmp_path / "photo.avif")


def test_heic_and_avif_files_in_a_folder_are_inputs_where_they_can_be_read(tmp_path, monkeypatch):
    from o3dcli.inputs import collect_inputs
    from o3dcli.io import images

    for name in ("a.png", "b.HEIC", "c.heif", "d.avif", "e.psd"):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(images, "_heif_plugin", lambda: True)
    monkeypatch.setattr(images, "pillow_reads_avif", lambda: True)
    notes: list[str] = []
    assert [p.name for p in collect_inputs([tmp_path], notes=notes)] == ["a.png", "b.HEIC", "c.heif", "d.avif"]
    assert notes == [notes[0]] and "(1 .psd); convert them to PNG or JPEG" in notes[0]
    monkeypatch.setattr(images, "_heif_plugin", lambda: False)
    monkeypatch.setattr(images, "pillow_reads_avif", lambda: False)
    notes = []
    assert [p.name for p in collect_inputs([tmp_path], notes=notes)] == ["a.png"]
    assert ('(1 .avif, 1 .heic, 1 .heif, 1 .psd); for HEIC: pip install "o3dcli[heif]"; for AVIF: '
            f'{images.avif_hint()}; convert the others to PNG or JPEG') in notes[0]


@pytest.mark.parametrize("version, hint", [
    ("10.4.0", 'pip install -U "pillow>=11.3"'),
    ("11.3.0", 'Pillow 11.3.0 was built without libavif; PyPI\'s wheel has it: pip install --force-reinstall "pillow==11.3.0"'),
    ("12.0.0.dev0", "Pillow 12.0.0.dev0 was built without libavif"),
])
def test_the_avif_advice_fits_the_installed_pillow(monkeypatch, version, hint):
    import PIL

    from o3dcli.io.images import avif_hint

    monkeypatch.setattr(PIL, "__version__", version)
    assert avif_hint().startswith(hint)


def test_reads_in_threads_leave_pillows_limit_as_it_was(tmp_path, monkeypatch):
    # each read raises Pillow's limit for its own time; threads with other limits must not leave it raised
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "small.png"
    Image.fromarray(quadrants(40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with ThreadPoolExecutor(8) as pool:
        shapes = list(pool.map(lambda i: load_image(path, max_pixels=2000 + 500 * i).shape, range(64)))
    assert shapes == [(40, 40, 4)] * 64 and Image.MAX_IMAGE_PIXELS == 1000


def matrix_profile(description: str, colorants, gamma: float = 2.2) -> bytes:
    """An ICC v2 RGB display profile (matrix + gamma curves) with the given D50 colorants
    ((X, Y, Z) of red, green and blue), built by hand: o3d's tests carry no profile files."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    text = description.encode("ascii") + b"\0"
    tags = {
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 4 + b"\0" * 4 + b"\0" * 3 + b"\0" * 67,
        b"cprt": b"text\0\0\0\0" + b"none\0",
        b"wtpt": xyz(0.9642, 1.0, 0.8249),
        b"rXYZ": xyz(*colorants[0]), b"gXYZ": xyz(*colorants[1]), b"bXYZ": xyz(*colorants[2]),
    }
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags.update({b"rTRC": curve, b"gTRC": curve, b"bTRC": curve})
    table, data = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, body in tags.items():
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp"
              + b"\0" * 24 + b"\0" * 4 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + data


# Display P3's colorants adapted to D50 (as in the profiles phones embed)
P3 = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))


def test_a_photo_with_a_wide_gamut_profile_is_read_in_srgb(tmp_path, caplog):
    from PIL import ImageCms

    colour = (200, 120, 60)  # a saturated orange, as a phone stores it in Display P3
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = colour, 255
    rgba[0, 0, 3] = 0
    im = Image.fromarray(rgba, "RGBA")
    im.save(tmp_path / "p3.png", icc_profile=matrix_profile("Display P3 (test)", P3))
    im.convert("RGB").save(tmp_path / "p3.jpg", quality=100, icc_profile=matrix_profile("Display P3 (test)", P3))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im.save(tmp_path / "srgb.png", icc_profile=srgb)
    im.save(tmp_path / "broken.png", icc_profile=b"not a profile at all")
    # linear light with sRGB's primaries (what GIMP embeds in its linear exports): named sRGB, not sRGB
    srgb_colorants = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
    grey = np.full((4, 4, 3), 64, np.uint8)
    Image.fromarray(grey).save(tmp_path / "linear.png", icc_profile=matrix_profile("Linear sRGB", srgb_colorants, 1.0))
    assert np.abs(load_image(tmp_path / "linear.png", keep_uint8=True)[0, 0, :3].astype(int) - 137).max() <= 1
    im.save(tmp_path / "none.png")
    # in sRGB's smaller gamut the same colour has more red and less blue: (214.3, 115.8, 37.6) by the
    # profiles' matrices (P3 linear -> XYZ D50 -> sRGB linear) and curves (gamma 2.2 -> sRGB's)
    for name, tol in (("p3.png", 1.5), ("p3.jpg", 3)):
        px = load_image(tmp_path / name, keep_uint8=True)[4, 4].astype(float)
        assert np.abs(px - (214.3, 115.8, 37.6, 255)).max() <= tol, (name, px)
    assert load_image(tmp_path / "p3.png", keep_uint8=True)[0, 0, 3] == 0  # alpha kept as it was
    # no profile, an sRGB one, or one that cannot be used: the values as stored
    for name in ("none.png", "srgb.png", "broken.png"):
        assert tuple(load_image(tmp_path / name, keep_uint8=True)[4, 4]) == (*colour, 255), name
    assert "broken.png: its embedded colour profile cannot be used" in caplog.text
