"""`o3d render`: turntable GIF/MP4 and a multi-view grid of any asset."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer


def render(
    inputs: List[Path] = typer.Argument(..., help="Gaussian PLYs, meshes (GLB/glTF/OBJ/PLY) or o3d asset folders."),
    output: Path = typer.Option(Path("o3d-renders"), "--output", "-o", help="Folder for the renders."),
    frames: int = typer.Option(36, "--frames", min=2, help="Turntable frames."),
    size: int = typer.Option(256, "--size", min=16, help="Image side in pixels."),
    elevation: float = typer.Option(15.0, "--elevation", help="Turntable camera elevation in degrees."),
    fps: float = typer.Option(12.0, "--fps", min=1.0, help="Turntable frames per second."),
    mp4: bool = typer.Option(True, "--mp4/--no-mp4", help="Also write an MP4 when imageio-ffmpeg is installed (the `video` extra)."),
):
    """Render a turntable (GIF, and MP4 with the `video` extra) and an 8-view grid PNG of each input.

    Writes OUTPUT/<name>_turntable.gif, OUTPUT/<name>_turntable.mp4 and
    OUTPUT/<name>_views.png. Exit code: 0 = all rendered, 1 = some failed.
    """
    from rich.markup import escape

    from o3dcli.console import console
    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.io.assets import load_asset
    from o3dcli.io.media import image_grid, mp4_available, save_gif, save_mp4, save_png, to_uint8
    from o3dcli.pipeline import unique_names
    from o3dcli.render.turntable import render_asset, turntable_frames

    output.mkdir(parents=True, exist_ok=True)
    if mp4 and not mp4_available():
        console.print("note: MP4 needs the `video` extra (pip install 'o3dcli[video]'); writing GIFs only")
        mp4 = False
    failed = 0
    for path, name in zip(inputs, unique_names(inputs)):
        try:
            asset = load_asset(path)
            clip = turntable_frames(asset, frames, size, elevation)
            written = [save_gif(output / f"{name}_turntable.gif", clip, fps)]
            if mp4:
                written.append(save_mp4(output / f"{name}_turntable.mp4", clip, fps))
            cams = orbit_cameras([elevation] * 8, [0, 45, 90, 135, 180, 225, 270, 315], size=size)
            written.append(save_png(output / f"{name}_views.png", image_grid(to_uint8(render_asset(asset, cams)), cols=4)))
            console.print(f"[green]✓[/green] {escape(str(path))} -> " + ", ".join(escape(p.name) for p in written))
        except Exception as e:  # one bad asset never stops the others
            failed += 1
            console.print(f"[red]✗ {escape(str(path))}[/red]: {escape(str(e) or type(e).__name__)}")
    raise typer.Exit(1 if failed else 0)
