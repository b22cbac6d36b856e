"""Images for people to look at: view grids, turntable GIF and MP4."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from o3dcli.atomic import atomic_write_bytes


def to_uint8(images) -> np.ndarray:
    """[..., C, H, W] float tensor/array in [0, 1] -> [..., H, W, C] uint8."""
    arr = images.detach().cpu().float().numpy() if hasattr(images, "detach") else np.asarray(images, np.float32)
    arr = np.moveaxis(arr, -3, -1)
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def image_grid(frames: np.ndarray, cols: int | None = None, pad: int = 0, fill: int = 255) -> np.ndarray:
    """Tile V images [V, H, W, C] uint8 into one [rows*H, cols*W, C] image, row by row."""
    v, h, w, c = frames.shape
    cols = cols or min(v, 4)
    rows = -(-v // cols)
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), fill, np.uint8)
    for i, f in enumerate(frames):
        r, k = divmod(i, cols)
        grid[r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = f
    return grid


def save_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


GIF_MAX_FPS = 50.0
"""Fastest GIF: frame delays are whole hundredths of a second, and browsers play delays under 2/100 s
(1 at 60 fps and more, 0 past 200) as 10/100 s, a tenth of the speed asked for."""
MP4_MAX_FPS = 120.0
"""Fastest MP4 o3d writes: high-refresh displays show 120 fps; a turntable of a few dozen frames
at more would be over in a blink (and fps that round to 0 wrote an MP4 with 0 fps)."""


def save_gif(path: Path, frames: np.ndarray, fps: float = 12.0) -> Path:
    """Looping GIF from [T, H, W, 3] uint8 frames, played at `fps` up to GIF_MAX_FPS."""
    from PIL import Image

    if not 0 < fps < float("inf"):
        raise ValueError(f"GIF frame rate must be a positive number, got {fps}")
    imgs = [Image.fromarray(f[..., :3]) for f in frames]
    buf = io.BytesIO()
    # delays are whole 1/100 s: each frame ends at its time rounded, so that they add up to the
    # frame rate asked for (12 fps: 8, 9, 8, ... where 8 each played 12.5 fps)
    ends = [round(100 * (i + 1) / min(fps, GIF_MAX_FPS)) for i in range(len(imgs))]
    duration = [10 * (end - start) for start, end in zip([0] + ends[:-1], ends)]
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=duration, loop=0,
                 optimize=False, disposal=1)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def mp4_problem() -> str | None:
    """None when MP4s can be written here, else why not: the `video` extra is not installed, or
    the ffmpeg it runs is not there (IMAGEIO_FFMPEG_EXE naming a missing file, or none found)."""
    import os
    import shutil

    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg
    except ImportError:
        return "MP4 needs the `video` extra (pip install \"o3dcli[video]\")"
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        return f"MP4 needs ffmpeg: {e}"
    if not (os.path.isfile(exe) or shutil.which(exe)):  # the environment variable is taken untested
        named = " (IMAGEIO_FFMPEG_EXE)" if os.environ.get("IMAGEIO_FFMPEG_EXE") == exe else ""
        return f"MP4 needs ffmpeg, and {exe}{named} is not there"
    return None


def save_mp4(path: Path, frames: np.ndarray, fps: float = 24.0) -> Path:
    """H.264 MP4 from [T, H, W, 3] uint8 frames (needs the `video` extra: imageio-ffmpeg); `fps` in (0, MP4_MAX_FPS]."""
    import imageio.v2 as imageio

    if not 0 < fps <= MP4_MAX_FPS:
        raise ValueError(f"MP4 frame rate must be above 0 and at most {MP4_MAX_FPS:g}, got {fps}")

    h, w = frames.shape[1:3]
    frames = frames[:, : h - h % 2, : w - w % 2, :3]  # yuv420p needs even sides
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        imageio.mimwrite(tmp, list(frames), fps=fps, codec="libx264", quality=8, macro_block_size=1)
        tmp.replace(path)
    except BaseException:  # Ctrl-C while encoding, a full disk: no hidden half file left behind
        tmp.unlink(missing_ok=True)
        raise
    return path
