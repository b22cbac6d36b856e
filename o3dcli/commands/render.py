"""`o3d render`: turntable GIF/MP4 and a multi-view grid of any asset."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from o3dcli.commands import path_param
from o3dcli.naming import RENDER_MANIFEST, RENDER_SUFFIXES, fit_name, read_render_manifest, same_file

MANIFEST = RENDER_MANIFEST
"""Which input each name in a render folder belongs to."""
SUFFIXES = RENDER_SUFFIXES
"""The files written for a name: OUTPUT/<name><suffix>."""


class _manifest_lock:
    """OUTPUT/.o3d-renders.lock held while the manifest is read, merged and rewritten, so that two
    o3d render runs on one folder keep each other's names. Where the lock cannot be taken (no
    fcntl, a lock file that cannot be made), a warning, once, and the work goes on without it (on a
    file system that takes no locks, ItemLock warns and goes on unlocked itself)."""

    warned = False

    def __init__(self, output: Path, console):
        self.path, self.console, self.lock = output / ".o3d-renders.lock", console, None

    def __enter__(self):
        from o3dcli.cache import ItemLock

        try:
            lock = ItemLock(self.path)
            lock.acquire(blocking=True, allow_unlocked=True)
            self.lock = lock
        except (OSError, ImportError) as e:
            if not _manifest_lock.warned:
                _manifest_lock.warned = True
                self.console.print(f"[yellow]warning[/yellow]: cannot lock {self.path} ({e}); renders into this "
                                   "folder by another o3d render at the same time may lose their names", soft_wrap=True)
        return self

    def __exit__(self, *exc):
        if self.lock is not None:
            self.lock.release()
        return False


TURNTABLE_MAX_PIXELS = 1 << 30
"""--frames x --size^2 at most (its frames held at once: about 3 GB, and as much again to write them)."""


def render_names(paths: List[Path], taken) -> List[str]:
    """One name per input (`asset_stem`, made safe and fitted to NAME_MAX_BYTES), collisions in
    this batch and names `taken(name, path)` says are not free suffixed -2, -3, ..."""
    from o3dcli.naming import asset_stem, clean_name, next_free_name

    used: set[str] = set()
    names = []
    for path in paths:
        stem = clean_name(asset_stem(path))
        name = next_free_name(stem, lambda name: name in used or taken(name, path),
                              make=lambda suffix: fit_name(stem, suffix))
        used.add(name)
        names.append(name)
    return names


GRID_AZIMUTHS = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 337.5)
"""The views PNG's azimuths: the generation cameras' (CameraConfig.azimuths; 337.5, not 315, last),
so that its views compare one by one with an asset's views.png."""


def render(
    inputs: List[Path] = typer.Argument(..., parser=path_param, metavar="INPUT", help="Gaussian PLYs, meshes (GLB/glTF/OBJ/PLY/STL; USD with the usd extra), o3d asset folders, or folders of them (an o3d generate output folder: every asset in it)."),
    output: Path = typer.Option(Path("o3d-renders"), "--output", "-o", parser=path_param, metavar="<path>", help="Folder for the renders."),
    frames: int = typer.Option(36, "--frames", min=2, max=3600, help="Turntable frames."),
    size: int = typer.Option(256, "--size", min=16, max=4096, help="Image side in pixels (the MP4's is rounded down to an even number: H.264 needs even sides)."),
    elevation: float = typer.Option(15.0, "--elevation", help="Turntable camera elevation in degrees."),
    fps: float = typer.Option(12.0, "--fps", min=1.0, help="Turntable frames per second (at most 120; a GIF plays at most 50: its frame delays are whole 1/100 s)."),
    mp4: bool = typer.Option(True, "--mp4/--no-mp4", help="Also write an MP4 when imageio-ffmpeg is installed (the `video` extra)."),
    up: str = typer.Option("auto", "--up", help="Up axis of the inputs: auto (Z for GSO/Gazebo model folders and STL files, a USD stage's own upAxis, -Y for 3DGS PLYs that o3d did not write, as splat viewers take them, else Y), y, or z (a Z-up file). o3d's own Gaussians keep the frame they record."),
):
    """Render a turntable (GIF, and MP4 with the `video` extra) and an 8-view grid PNG of each input.

    An o3d asset folder is rendered from its mesh (model.glb, else model.obj), or from its gaussians.ply where it has no mesh (o3d generate --stop-after diffusion); give the file to render the other.

    Writes OUTPUT/<name>_turntable.gif, OUTPUT/<name>_turntable.mp4 and OUTPUT/<name>_views.png (the 8 views at the generation cameras' azimuths, 0, 45, ..., 270 and 337.5 degrees, as in an asset's views.png, at --elevation; row by row); <name> is the input's name (for an asset's gaussians.ply or model.glb, its folder's; a very long one is cut short and ends in a short hash), with -2, -3, ... when an earlier run wrote that name for another input (OUTPUT/o3d-renders.json records which) or files of that name that o3d did not write for this input are there. An MP4 an earlier run wrote for that name is removed when this run writes none (--no-mp4).

    Exit code: 0 = all rendered, 1 = some failed, 2 = usage error, 130 = interrupted (Ctrl-C; 143 = SIGTERM).
    """
    import json
    import math
    import os

    from rich.markup import escape

    from o3dcli.atomic import atomic_write_text
    from o3dcli.commands import once_each
    from o3dcli.console import console, interrupted_exit_code
    from o3dcli.errors import UserError, disk_full
    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.inputs import check_output_dir, item_message
    from o3dcli.io.assets import AssetError, expand_asset_folders, load_asset, resolve_asset_path
    from o3dcli.io.media import GIF_MAX_FPS, MP4_MAX_FPS, image_grid, mp4_problem, save_gif, save_mp4, save_png, to_uint8
    from o3dcli.render.turntable import render_asset, turntable_frames

    def usage_error(message: str) -> typer.Exit:
        console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
        return typer.Exit(2)

    for option, value in (("--elevation", elevation), ("--fps", fps)):  # every float option
        if not math.isfinite(value):  # nan or inf: blank images or a failed write, reported late
            raise usage_error(f"{option} must be a finite number, got {value}")
    if fps > MP4_MAX_FPS:
        raise usage_error(f"--fps must be at most {MP4_MAX_FPS:g}, got {fps:g}")
    if frames * size * size > TURNTABLE_MAX_PIXELS:  # the frames are held together (3 bytes a pixel, twice)
        raise usage_error(f"--frames {frames} at --size {size} is {frames * size * size:,} pixels, over the "
                          f"{TURNTABLE_MAX_PIXELS:,} a turntable may hold; give fewer frames or a smaller size")
    up = up.strip().lower()  # --up Z, as choices are read elsewhere
    if up not in ("auto", "y", "z"):
        raise usage_error(f"--up must be auto, y or z, got '{up}'")
    try:
        check_output_dir(output)
    except UserError as e:
        raise usage_error(str(e)) from None
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise usage_error(f"input not found: {', '.join(missing)}")
    from o3dcli.native import library_problem

    if problem := library_problem("numpy"):
        raise usage_error(problem)
    created = not output.exists()  # removed again if nothing is rendered into it
    output.mkdir(parents=True, exist_ok=True)
    manifest_path = output / MANIFEST
    manifest, problem = read_render_manifest(manifest_path)
    if problem:  # which input each earlier render was of is lost: never replace them, say so
        # every render file there is recorded with no input (null), so no later run overwrites it
        # and an `o3d generate` scan of the folder still passes them over
        manifest = {f.name[: -len(sfx)]: None for f in sorted(output.iterdir()) for sfx in SUFFIXES
                    if f.name.endswith(sfx) and len(f.name) > len(sfx)}
        console.print(f"[yellow]warning[/yellow]: {escape(str(manifest_path))} cannot be read ({escape(problem)}): the "
                      f"{len(manifest)} render name(s) already there are kept, recorded with no input, and these "
                      "renders take names not in use; the file is rewritten", soft_wrap=True)
    ours: set[str] = set()  # the names this run recorded
    if mp4 and (problem := mp4_problem()):
        console.print(f"note: {escape(problem)}; writing GIFs only", soft_wrap=True)
        mp4 = False
    if fps > GIF_MAX_FPS:
        console.print(f"[yellow]warning[/yellow]: --fps {fps:g} is above the {GIF_MAX_FPS:g} a GIF can play (browsers "
                      f"slow faster ones to 10 fps); the GIF is written at {GIF_MAX_FPS:g} fps"
                      + (f", the MP4 at {fps:g}" if mp4 else ""), soft_wrap=True)
    failed = 0
    def source(path: Path) -> str:  # what is rendered: an asset folder and its gaussians.ply are one input
        try:
            return str(resolve_asset_path(path).resolve())
        except AssetError:  # reported when it is loaded
            return str(path.resolve())

    def taken(name: str, path: Path) -> bool:
        """Whether `name` is not free for `path`: the manifest gives it to another input, or files of
        that name are there that it does not record (the user's own, which are never replaced)."""
        if name in manifest:
            return not same_file(manifest[name], Path(source(path)))
        return any(os.path.lexists(output / f"{name}{suffix}") for suffix in SUFFIXES)

    notes: list[str] = []
    inputs = expand_asset_folders(inputs, notes)  # an output folder, a folder of meshes: each asset in it
    for note in notes:
        console.print(f"note: {escape(note)}", soft_wrap=True)
    inputs = once_each(inputs, source, "rendered")
    names = render_names(inputs, taken)
    for path, name in zip(inputs, names):
        try:
            asset = load_asset(path, up=up)
            clip = turntable_frames(asset, frames, size, elevation)
            cams = orbit_cameras([elevation] * len(GRID_AZIMUTHS), list(GRID_AZIMUTHS), size=size)
            grid = image_grid(to_uint8(render_asset(asset, cams)), cols=4)
            # the name is recorded before its first file is written, so files left by a run stopped
            # half-way are known as this input's, not taken for a user's own files; under a lock, merged
            # with what another o3d render on this folder recorded meanwhile (and a name it took since
            # this run chose it given up for the next free one)
            with _manifest_lock(output, console):
                disk, _ = read_render_manifest(manifest_path)
                manifest.update({k: v for k, v in (disk or {}).items() if k not in ours})
                if taken(name, path):
                    name = render_names([path], lambda n, p: n in ours or taken(n, p))[0]
                earlier = name in manifest  # then its files are o3d's for this input (else the name is not free)
                manifest[name] = source(path)
                ours.add(name)
                atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
            written = [save_gif(output / f"{name}_turntable.gif", clip, fps), save_png(output / f"{name}_views.png", grid)]
            if mp4:
                try:
                    written.append(save_mp4(output / f"{name}_turntable.mp4", clip, fps))
                except Exception as e:  # ffmpeg failed: the GIF and the grid are written
                    raise RuntimeError(f"the MP4 could not be written ({e}); its GIF and views PNG are written, "
                                       "and --no-mp4 leaves the MP4 out") from e
            for stale in (output / f"{name}{suffix}" for suffix in SUFFIXES):
                if earlier and stale not in written and not stale.is_dir():  # an MP4 from before --no-mp4
                    stale.unlink(missing_ok=True)
            console.print(f"[green]✓[/green] {escape(str(path))} -> " + ", ".join(escape(p.name) for p in written))
            if (grid == 255).all() and (clip == 255).all():  # the white background everywhere
                console.print(f"[yellow]warning[/yellow]: {escape(str(path))}: nothing shows in any view (a mesh "
                              "without area, or Gaussians too faint to see?)", soft_wrap=True)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/yellow] at {escape(str(path))}: the inputs before it are done; "
                          "run the command again for the rest", soft_wrap=True)
            raise typer.Exit(interrupted_exit_code()) from None
        except Exception as e:  # one bad asset never stops the others
            failed += 1
            message = item_message(path, e)
            if disk_full(e):
                message = f"out of disk space writing its renders in {output} ({message}); free some space and run again"
            console.print(f"[red]✗ {escape(str(path))}[/red]: {escape(message)}", soft_wrap=True)
    if created:
        try:
            output.rmdir()  # only when empty: every input failed
        except OSError:
            pass
    raise typer.Exit(1 if failed else 0)
