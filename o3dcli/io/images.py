"""Load and validate input images as straight RGBA float arrays.

Pillow does the decoding; this module adds the checks an unattended batch needs
(pixel-count limit read from the header before decoding, forced full decode so
truncated files fail here and not halfway through a stage, a short list of
allowed formats so Pillow never hands a file to an external program; AVIF and
HEIF/HEIC where the installed Pillow and pillow-heif read them) and turns every
pixel mode into RGBA in [0, 1].
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import warnings
from pathlib import Path

import numpy as np

# Formats an input may have (Pillow's JPEG opener also returns phone MPO files; a
# GIF gives its first frame). Everything else (EPS, PSD, ...) is refused so that
# Pillow never runs Ghostscript or other plug-ins on an untrusted file.
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
# Read where the installed packages can: AVIF by Pillow's own plugin (its wheels carry libavif
# from 11.3 on), HEIF/HEIC (iPhone photos) by pillow-heif's Pillow plugin (the `heif` extra).
HEIF_HINT = 'pip install "o3dcli[heif]"'
DEFAULT_MAX_PIXELS = 50_000_000

_GUARD_LOCK = threading.Lock()
_GUARD_READS: list[int] = []  # Pillow bomb limits of the reads in progress (threads)
_GUARD_SAVED: list = []  # Pillow's own limit while any is


@contextlib.contextmanager
def _pillow_bomb_limit(limit: int):
    """Pillow's MAX_IMAGE_PIXELS at `limit` (or the largest asked by reads in other threads) for the
    block, and back to what it was once no read needs it: a process-wide setting, shared safely."""
    from PIL import Image

    with _GUARD_LOCK:
        if not _GUARD_READS:
            _GUARD_SAVED[:] = [Image.MAX_IMAGE_PIXELS]
        _GUARD_READS.append(limit)
        Image.MAX_IMAGE_PIXELS = max(_GUARD_READS)
    try:
        yield
    finally:
        with _GUARD_LOCK:
            _GUARD_READS.remove(limit)
            Image.MAX_IMAGE_PIXELS = max(_GUARD_READS) if _GUARD_READS else _GUARD_SAVED[0]


_SIXTEEN_BIT_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageError(ValueError):
    """An input image cannot be used; the message names the file, the problem and what to do."""


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, keep_uint8: bool = False) -> np.ndarray:
    """Read an image file as straight RGBA float32 `[H, W, 4]` in [0, 1].

    EXIF orientation is applied; palette (with tRNS transparency), grayscale,
    16-bit, CMYK, LA and RGB images all become RGBA (alpha 1 where the file has
    none). Raises `ImageError` for missing, unreadable, corrupt or truncated
    files, non-images, unsupported formats and images over `max_pixels`.
    `keep_uint8`: an image with 8 or 16 bits per channel comes back as uint8 RGBA in
    [0, 255] instead, 16-bit data rounded to 8 bits (a quarter of the memory; read-only; `as_float`
    gives the float values); float and 32-bit integer data stay float32.
    """
    from PIL import Image, ImageFile, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found; check the path.")
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file; give the path of an image file.")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes); re-export or re-download the image.")
    # Truncated files must fail loudly; another module flipping this global would hide them.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ImageError(f"{path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set, so truncated files "
                         "cannot be detected; unset it before loading inputs.")
    # Pillow's own bomb guard, which checks the header's size while opening, is set above o3d's limit
    # for the moment (its default, 89.5 MP, would refuse what preprocess.max_pixels allows), so that
    # o3d's check, right after opening, says what is wrong; only a header far over it (twice) meets
    # Pillow's guard, which warns between its limit and twice it: made an error.
    with _pillow_bomb_limit(2 * max(1, int(max_pixels))), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path, formats=list(readable_formats())) as im:
                _check_pixel_count(path, im.size, max_pixels)
                try:
                    im.load()  # full decode now: truncated or corrupt data raises here
                except (Image.DecompressionBombError, Image.DecompressionBombWarning, ImageError, MemoryError):
                    raise
                except Exception as err:  # any decoder failure means the file is damaged
                    raise ImageError(f"{path}: the {im.format} data is corrupt or truncated ({err}); "
                                     "re-export or re-download the image.") from err
                rgba = _to_rgba(path, im, keep_uint8)
        except UnidentifiedImageError as err:
            missing = _unread_container(path)
            if missing == "HEIF" and not _heif_plugin():
                raise ImageError(f"{path}: a HEIF/HEIC photo, which needs the pillow-heif package: {HEIF_HINT} "
                                 "(or convert it to JPEG or PNG).") from err
            if missing == "AVIF" and not pillow_reads_avif():
                from PIL import __version__

                raise ImageError(f"{path}: an AVIF image, which this Pillow ({__version__}) cannot read: "
                                 f"{avif_hint()} (or convert it to PNG or JPEG).") from err
            raise ImageError(f"{path}: not a readable image; supported formats are "
                             f"{', '.join(readable_formats())}.") from err
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageError(f"{path}: over the limit of {max_pixels:,} pixels ({err}); downscale the image "
                             "or raise preprocess.max_pixels.") from err
        except MemoryError as err:
            raise ImageError(f"{path}: not enough memory to decode this image; downscale it first.") from err
        except PermissionError as err:
            raise ImageError(f"{path}: cannot be read ({err}); check its permissions.") from err
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as err:  # header-level damage
            raise ImageError(f"{path}: cannot be decoded ({err}); the file is damaged or not an image.") from err
    return rgba


def readable_formats() -> tuple[str, ...]:
    """Pillow format names an input may have here: SUPPORTED_FORMATS, plus AVIF where Pillow reads
    it and HEIF where pillow-heif is installed (its Pillow plugin is registered on the first call)."""
    return SUPPORTED_FORMATS + (("AVIF",) if pillow_reads_avif() else ()) + (("HEIF",) if _heif_plugin() else ())


def pillow_reads_avif() -> bool:
    from PIL import features

    with warnings.catch_warnings():  # a Pillow that does not know the name warns "Unknown feature"
        warnings.simplefilter("ignore")
        try:
            return bool(features.check("avif"))
        except ValueError:
            return False


def avif_hint() -> str:
    """What makes Pillow read AVIF: a newer Pillow, or (11.3 on, built without libavif, as some
    system packages are) PyPI's wheel of it, which carries libavif."""
    import re

    from PIL import __version__

    release = tuple(int(x) for x in re.findall(r"\d+", __version__)[:2])
    if release >= (11, 3):
        return f'Pillow {__version__} was built without libavif; PyPI\'s wheel has it: pip install --force-reinstall "pillow=={__version__}"'
    return 'pip install -U "pillow>=11.3"'


@functools.lru_cache(maxsize=None)
def _heif_plugin() -> bool:
    """Registers pillow-heif's HEIF opener with Pillow; False when pillow-heif is not installed.
    (It turns the photo's EXIF orientation into the image's own rotation and resets the tag, so
    the orientation is applied once.)"""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _unread_container(path: Path) -> str | None:
    """"AVIF" or "HEIF" when the file is an ISO base media file of that kind (read from its `ftyp`
    box: major and compatible brands), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    size = min(len(head), max(16, int.from_bytes(head[:4], "big")))
    brands = {head[8:12]} | {head[i:i + 4] for i in range(16, size - 3, 4)}
    if brands & {b"avif", b"avis"}:  # before HEIF: AVIF files also name the general HEIF brands
        return "AVIF"
    if brands & {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}:
        return "HEIF"
    return None


def _check_pixel_count(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{path}: the header gives an empty size {width}x{height}; the file is damaged.")
    if width * height > max_pixels:
        raise ImageError(f"{path}: {width}x{height} = {width * height:,} pixels is over the limit of "
                         f"{max_pixels:,}; downscale the image or raise preprocess.max_pixels.")


def as_float(image: np.ndarray, copy: bool = False) -> np.ndarray:
    """uint8 [0, 255] -> a new float32 array in [0, 1] (the values `load_image` gives without
    keep_uint8); float32 as it is, or a copy with `copy` (the result is then always the caller's
    own, to work in)."""
    if image.dtype == np.uint8:
        out = image.astype(np.float32)
        out /= 255.0
        return out
    return np.array(image, dtype=np.float32) if copy else image


def _tiff_bits(im) -> int | None:
    """A TIFF's bits per sample (its first sample's), None when it does not say."""
    try:
        bits = im.tag_v2.get(258)
    except AttributeError:
        return None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return bits if isinstance(bits, int) else None


def _to_srgb(path: Path, im, icc: bytes | None):
    """An RGB(A) image `im` whose file embeds the colour profile `icc` (a phone's Display P3, Adobe
    RGB from a camera), converted to sRGB, which the model and the texture take every image to be;
    unchanged without a profile, with an sRGB one, in other modes, or where the profile cannot be
    used (said in a warning). Alpha is kept as it is."""
    if not icc or im.mode not in ("RGB", "RGBA"):
        return im
    import io
    import logging

    from PIL import Image

    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without LittleCMS
        return im
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), "RGB", "RGB",
                                            renderingIntent=1)  # 1: relative colorimetric
        # most photos carry an sRGB profile: told by what it does (a name such as "Linear sRGB"
        # says little), on 125 colours, and then left as they are
        levels = np.array([0, 40, 100, 180, 255], np.uint8)
        probe = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
        moved = np.asarray(ImageCms.applyTransform(Image.fromarray(probe, "RGB"), transform), np.int16) - probe
        if np.abs(moved).max() <= 1:
            return im
        rgb = ImageCms.applyTransform(im.convert("RGB"), transform)
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError) as err:
        logging.getLogger("o3d").warning("%s: its embedded colour profile cannot be used (%s); its colours are "
                                         "read as sRGB", path, err)
        return im
    if im.mode == "RGBA":
        rgb.putalpha(im.getchannel("A"))
    return rgb


def _to_rgba(path: Path, im, keep_uint8: bool = False) -> np.ndarray:
    """Loaded PIL image (any mode) -> oriented RGBA float32 [H, W, 4] (with keep_uint8: uint8 for 8- and
    16-bit data, 16-bit values rounded or, for 16-bit RGB PNGs without a colour key, their high byte)."""
    from PIL import ImageOps

    raw = im
    try:
        im = ImageOps.exif_transpose(im)
    except (ValueError, TypeError, KeyError, IndexError, OSError, SyntaxError):
        # A malformed EXIF block should not cost the image: keep it unrotated.
        im = raw
    if im.mode in _SIXTEEN_BIT_GRAY_MODES:
        samples = np.asarray(im)
        key = raw.info.get("transparency") if raw.format == "PNG" else None
        # a PNG's tRNS chunk names one grey value (on the 16-bit scale) as transparent
        opaque = samples != key if isinstance(key, int) else None
        if im.mode == "I" and raw.format == "TIFF" and _tiff_bits(raw) == 32:
            # 32-bit integer samples: the range is the data's, as for float images below: 8-bit
            # values stored wide, 16-bit ones, or beyond
            gray = samples.astype(np.float32)
            top = float(gray.max(initial=0.0))
            gray = np.clip(gray / (255.0 if top <= 255.0 else 65535.0 if top <= 65535.0 else top), 0.0, 1.0)
        elif keep_uint8:  # rounded to 8 bits, as the caller holds every image (a quarter of float32's memory)
            gray8 = ((np.clip(samples, 0, 65535).astype(np.uint32) + 128) // 257).astype(np.uint8)
            alpha8 = np.full_like(gray8, 255) if opaque is None else opaque.astype(np.uint8) * np.uint8(255)
            return np.ascontiguousarray(np.stack([gray8, gray8, gray8, alpha8], axis=-1))
        else:  # all 16 bits, scaled by their range ("I" holds 16-bit PNG data too)
            gray = samples.astype(np.float32)
            gray /= 65535.0
        return _gray_to_rgba(gray, np.ones_like(gray) if opaque is None else opaque.astype(np.float32))
    if im.mode == "F":
        gray = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(gray.max(initial=0.0))
        if top > 2.0:  # float data stored as 0-255 (or beyond): read on that scale, not clipped to white
            # (values just above 1 are a 0-1 image's overshoot: clipped below)
            gray = gray / (255.0 if top <= 255.0 else top)
        return _gray_to_rgba(gray, np.ones_like(gray))
    keyed = "transparency" in raw.info  # a tRNS colour key, on the 16-bit scale: Pillow's 8-bit decode misses it
    if ((not keep_uint8 or keyed) and raw.format == "PNG" and _png_bit_depth_and_colour_type(path) == (16, 2)):
        wide = _read_rgb16_png(path, raw)  # [H, W, 3], or 4 with the key's alpha
        if wide is not None:
            wide = _orient_like(wide, raw)
            if wide.shape[-1] == 3:
                wide = np.concatenate([wide, np.full_like(wide[..., :1], 65535)], axis=-1)
            if keep_uint8:
                return ((wide.astype(np.uint32) + 128) // 257).astype(np.uint8)
            out = wide.astype(np.float32)
            out /= 65535.0
            return out
    im = _to_srgb(path, im, raw.info.get("icc_profile"))
    try:
        converted = im.convert("RGBA")
    except ValueError:
        try:  # e.g. LAB: Pillow goes through RGB only
            converted = im.convert("RGB").convert("RGBA")
        except ValueError as err:
            raise ImageError(f"{path}: pixel mode {im.mode} is not supported; convert the image to RGB or RGBA.") from err
    if keep_uint8:
        return np.ascontiguousarray(np.asarray(converted, dtype=np.uint8))
    return as_float(np.asarray(converted))


def _gray_to_rgba(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    gray = np.clip(gray, 0.0, 1.0)
    return np.stack([gray, gray, gray, alpha.astype(np.float32, copy=False)], axis=-1)


def _png_bit_depth_and_colour_type(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        header = f.read(26)  # 8-byte signature, IHDR length+type, width, height, depth, colour type
    if len(header) < 26 or header[12:16] != b"IHDR":
        return (0, 0)
    return header[24], header[25]


def _read_rgb16_png(path: Path, im8) -> np.ndarray | None:
    """16-bit RGB PNG at full precision (uint16 [H, W, 3]; [H, W, 4] with the alpha of a tRNS colour
    key), or None to keep Pillow's 8-bit decode.

    Pillow reduces 16-bit RGB to 8 bits (and then compares a tRNS key, given on the 16-bit scale,
    with those); open3d's libpng reader keeps them and turns the key into alpha. libpng
    may apply a gamma change (gAMA/sRGB chunks), so the result is used only when its
    high bytes agree with Pillow's decode of the same file.
    """
    try:
        import open3d as o3d

        wide = np.asarray(o3d.io.read_image(str(path)))
    except (ImportError, RuntimeError, OSError, ValueError):
        return None
    narrow = np.asarray(im8.convert("RGB")).astype(np.int32)
    if wide.dtype != np.uint16 or wide.shape[:2] != narrow.shape[:2] or wide.ndim != 3 or wide.shape[2] not in (3, 4):
        return None
    seen = wide[..., 3] > 0 if wide.shape[2] == 4 else slice(None)  # libpng may blank the keyed pixels' colour
    if np.abs((wide[..., :3][seen].astype(np.int32) >> 8) - narrow[seen]).max(initial=0) > 1:
        return None
    return wide


def _orient_like(array: np.ndarray, im) -> np.ndarray:
    """Apply `im`'s EXIF orientation to a numpy array of the same size.

    Transposes an image of pixel indices with Pillow's own exif_transpose, so the
    orientation table lives in one place (Pillow).
    """
    from PIL import Image, ImageOps

    orientation = im.getexif().get(0x0112, 1)
    if orientation == 1:
        return array
    height, width = array.shape[:2]
    index = Image.fromarray(np.arange(height * width, dtype=np.int32).reshape(height, width))
    index.getexif()[0x0112] = orientation
    moved = np.asarray(ImageOps.exif_transpose(index)).astype(np.int64)
    return array.reshape(height * width, -1)[moved.ravel()].reshape(*moved.shape, -1)
