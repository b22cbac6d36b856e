"""`o3d mesh`: Gaussians or meshes -> decimated, UV-textured GLB / OBJ."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from o3dcli.commands import path_param

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def _mesh_config(preset: str, sets: list[str], decimate, texture_size, formats):
    """The resolved full config and its mesh section, with the command-line shortcuts applied."""
    import dataclasses

    from o3dcli.config import load_config
    from o3dcli.mesh.config import MeshConfig, parse_formats

    from o3dcli.config import ConfigError, parse_override

    cfg = load_config(preset, sets, warn_rootless=False)  # only the mesh section is used
    mesh_cfg = getattr(cfg, "mesh", None) or MeshConfig()
    changes = {}
    if decimate is not None:
        changes["target_faces"] = decimate
    if texture_size is not None:
        changes["texture_size"] = texture_size
    if formats is not None:
        changes["formats"] = parse_formats(formats)
    set_keys = {parse_override(s)[0] for s in sets}
    for field, value in changes.items():  # a shortcut contradicting a --set of its key
        current = getattr(mesh_cfg, field)
        if field == "formats":  # glb,obj and obj,glb are one choice
            current, value = sorted(current), sorted(value)
        if f"mesh.{field}" in set_keys and current != value:
            raise ConfigError(f"mesh.{field} is given twice, {getattr(mesh_cfg, field)!r} by --set and {value!r} by its "
                              "shortcut option: give one")
    mesh_cfg = dataclasses.replace(mesh_cfg, **changes)
    mesh_cfg.check()
    if hasattr(cfg, "mesh"):
        cfg.mesh = mesh_cfg
    return cfg, mesh_cfg


def _without_results_of_others(inputs: list[Path], given: set[Path], notes: list[str]) -> list[Path]:
    """`inputs` less the folders found in a given folder that are o3d's results of another of the
    inputs (an o3d-asset.json naming its source): `o3d mesh A -o A` would otherwise mesh A/box1.glb
    and its own earlier result A/box1/ again on every run, each into a new folder. Inputs named
    on the command line are kept."""
    import json

    from o3dcli.naming import ASSET_META

    sources = {_source(p).resolve() for p in inputs}
    kept, dropped = [], []
    for p in inputs:
        made_from = None
        if p not in given and p.is_dir():
            try:
                made_from = json.loads((p / ASSET_META).read_text()).get("source")
            except (OSError, ValueError, AttributeError):
                made_from = None
        if isinstance(made_from, str) and Path(made_from).resolve() in sources - {_source(p).resolve()}:
            dropped.append(p)
        else:
            kept.append(p)
    if dropped:
        shown = ", ".join(p.name for p in dropped[:3]) + (", ..." if len(dropped) > 3 else "")
        notes.append(f"left out {len(dropped)} folder(s) of results made from other inputs here ({shown}): "
                     "each input is meshed from its source")
    return kept


def _source(path: Path) -> Path:
    """What to mesh for an input: an o3d asset folder's gaussians.ply (re-meshed from the
    Gaussians, not from the folder's previous mesh), else the path itself. Looked at steadily
    (o3dcli.atomic.look_steady): `o3d generate` may be republishing the asset meanwhile, and the
    several looks of one run must agree on what the input is."""
    from o3dcli.atomic import look_steady

    if look_steady(path, lambda: (path / "gaussians.ply").is_file()):
        return path / "gaussians.ply"
    return path


def _mesh_rank(path: Path) -> int:
    """How early `path` claims its result's name (`naming.claim_order`): 0 for a kind `o3d mesh` reads
    (a folder, a mesh or 3DGS PLY file by its suffix), 1 for anything else."""
    from o3dcli.io.assets import MESH_SUFFIXES

    return 0 if path.is_dir() or path.suffix.lower() in MESH_SUFFIXES else 1


def _asset_folder_of(path: Path) -> Path:
    """An o3d asset's gaussians.ply given on its own: its asset folder, so that the mesh is made
    as from the folder (the input photo projected and the surface cut to its outline), not from
    the Gaussians alone. Any other path is returned as it is."""
    folder = path.parent
    if path.name == "gaussians.ply" and path.is_file() and (folder / "input.png").is_file() \
            and (folder / "config.yaml").is_file():
        return folder
    return path


def _asset_input(path: Path):
    """An o3d asset folder's input.png (straight RGBA [4, S, S] float) and its config.yaml, or None
    when the folder lacks either file. Looked at steadily, as `_source` does: a look between the two
    renames of a republish (macOS) finds no folder, and the mesh was made without the input photo."""
    from o3dcli.atomic import look_steady
    from o3dcli.console import warn_once

    image, conf = path / "input.png", path / "config.yaml"
    if not look_steady(path, lambda: image.is_file() and conf.is_file()):
        if (path / "o3d-asset.json").is_file() and (path / "gaussians.ply").is_file():  # an o3d asset short of a file
            lacks = " and ".join(f.name for f in (image, conf) if not f.is_file())
            warn_once(f"{path}: no {lacks}; meshed from its Gaussians alone, without the input photo's outline "
                      "and projection, and exported with this command's settings (formats, STL size)", _WARNED)
        return None
    import numpy as np
    import torch
    from PIL import Image

    from o3dcli.config import ConfigError, load_config

    try:
        with Image.open(image) as im:
            rgba = torch.from_numpy(np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    except OSError as e:
        raise ValueError(f"{image}: cannot read the asset's input image ({e})") from None
    try:
        return rgba, load_config(conf, warn_rootless=False)
    except ConfigError as e:  # edited, or from another o3d version: the Gaussians are meshed all the same
        warn_once(f"{conf}: the asset's settings cannot be read ({' '.join(str(e).split())}); meshed from its "
                  "Gaussians alone, without the input photo's outline and projection, and exported with this "
                  "command's settings (formats, STL size)", _WARNED)
        return None


_WARNED: set[str] = set()
"""Warnings said for the input being meshed (`mesh_one` clears it): an asset's input is looked at
for its outline and again for its photo."""


def asset_silhouettes(path: Path, mesh_cfg):
    """An o3d asset folder's input silhouette (its input.png, at the model's input size as
    o3d generate uses it, seen from generation camera 0 of its own config.yaml), or None when
    mesh.input_silhouette is off or the folder lacks either file."""
    if not mesh_cfg.input_silhouette:
        return None
    found = _asset_input(path)
    if found is None:
        return None
    from o3dcli.stages import input_silhouettes

    rgba, cfg = found
    size = cfg.preprocess.size
    cached = _cached_model_input(path, size)
    if cached is not None:
        rgba = cached
    elif rgba.shape[-1] > size:  # input.png is the larger projection copy of the same crop
        rgba = _lanczos_alpha(rgba, size)
    return input_silhouettes(rgba, cfg)


def _cached_model_input(path: Path, size: int):
    """The model-size RGBA [4, size, size] that o3d generate cut an asset's mesh with: its preprocess
    cache entry's prepared.safetensors, where the asset's output folder still holds it and the
    entry's input.png is the asset's own; else None. (Made from the source photo, which input.png,
    its 1024 px copy, only approximates: an outline pixel or two differ, which can cut a thin part.)"""
    import json

    from o3dcli.atomic import sha256_file
    from o3dcli.cache import Cache
    from o3dcli.cache_integrity import check_stage_dir
    from o3dcli.naming import ASSET_META

    try:
        meta = json.loads((path / ASSET_META).read_text())
        entry = next(e for e in meta["cache"] if isinstance(e, str) and e.startswith("preprocess-"))
        cached = Cache(path.parent).item(path.name).dir / entry
        # input.png as o3d published it (an edit saved in place changes the cache's hard-linked copy
        # too), and the entry's the same (not another input's, under a folder renamed over its name)
        if not sha256_file(path / "input.png") == meta["files"]["input.png"] == sha256_file(cached / "input.png"):
            return None
        if check_stage_dir(cached)[0] is None:  # unfinished or damaged: not what its manifest records
            return None
        from safetensors.torch import load_file

        rgba = load_file(str(cached / "prepared.safetensors"))["rgba"]
    except Exception:  # no record, pruned, damaged (safetensors raises its own error types): input.png
        return None
    return rgba.float() if tuple(rgba.shape) == (4, size, size) else None


def _lanczos_alpha(rgba, size: int):
    """`rgba` [4, S, S] at `size`, its alpha resampled as preprocessing resamples the source (Lanczos),
    the colour by area (only the outline is used)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    out = F.interpolate(rgba[None], size=(size, size), mode="area")[0]
    alpha = Image.fromarray(np.ascontiguousarray(rgba[3].numpy(), dtype=np.float32), "F")
    out[3] = torch.from_numpy(np.array(alpha.resize((size, size), Image.Resampling.LANCZOS), np.float32)).clamp(0, 1)
    return out


def asset_input_view(path: Path, mesh_cfg):
    """An o3d asset folder's input photo for projecting onto the texture (mesh.input_weight,
    mesh.mirror_weight), or None when both are off or the folder lacks its input.png or config.yaml."""
    if mesh_cfg.input_weight <= 0 and mesh_cfg.mirror_weight <= 0:
        return None
    found = _asset_input(path)
    if found is None:
        return None
    from o3dcli.console import log
    from o3dcli.stages import PHOTO_SIZE, input_view

    rgba, cfg = found
    if rgba.shape[-1] <= cfg.preprocess.size:  # written before o3d kept the larger crop
        log.warning(
            "%s: only %d px, the model's own input size (an asset from an older o3d); the photo projected "
            "onto the texture will be that blurry. Run o3d generate again for its %d px crop, or pass "
            "--set mesh.input_weight=0", path / "input.png", rgba.shape[-1], PHOTO_SIZE)
    return input_view(rgba, cfg)


EXPORT_SETTINGS = ("formats", "stl_size_mm", "texture_format", "jpeg_quality", "draco")
"""How an asset was exported: an o3d asset re-meshed keeps its own unless the command gives them."""


def _with_assets_export_settings(path: Path, mesh_cfg):
    """`mesh_cfg` with an o3d asset folder's own export settings (its config.yaml's EXPORT_SETTINGS:
    the formats it was written in, its STL size, ...); as it is for any other input."""
    import dataclasses

    conf = path / "config.yaml"
    if not (path.is_dir() and conf.is_file() and (path / "input.png").is_file()):
        return mesh_cfg
    from o3dcli.config import ConfigError, load_config

    try:
        own = load_config(conf, warn_rootless=False).mesh
    except ConfigError:
        return mesh_cfg  # an edited or older config.yaml: the command's settings
    return dataclasses.replace(mesh_cfg, **{k: getattr(own, k) for k in EXPORT_SETTINGS})


@dataclass(frozen=True)
class InputRules:
    """What a mesh input keeps of its own unless the command asks for something else."""

    up: str = "auto"
    """The up axis of a mesh input (see `o3dcli.io.mesh.load_mesh`)."""
    fit_kept_texture: bool = True
    """A textured mesh input's texture is scaled down to mesh.texture_size (else kept at its size)."""
    stl_own_size: bool = False
    """An STL input's STL keeps its size and place (mesh.stl_size_mm 0)."""
    own_texture_format: bool = False
    """A mesh input whose textures were all JPEG is written with a JPEG texture (mesh.texture_format)."""

    @classmethod
    def from_command(cls, up: str, preset: str | None, sets: list[str], texture_size: int | None) -> "InputRules":
        """The rules for what the command line gives: a setting named by --set (or a preset file for
        the sizes and format) is the command's, not the input's."""
        from o3dcli.config import parse_override

        given = {parse_override(s)[0] for s in sets}
        keys = given | preset_keys(preset)
        # the preset's texture size is for bakes, its STL size and texture format for assets
        return cls(up=up, fit_kept_texture=texture_size is not None or "mesh.texture_size" in given,
                   stl_own_size="mesh.stl_size_mm" not in keys,
                   own_texture_format="mesh.texture_format" not in keys)


def preset_keys(preset: str | None) -> set[str]:
    """The settings ("section.key") a preset's file (and its base chain) writes out: `-p tiny`, which
    sets no STL size, leaves an STL its own as no preset does; an asset's config.yaml sets them all."""
    if preset is None:
        return set()
    from o3dcli.config import ConfigError, read_preset

    try:
        chain = read_preset(preset, warn_rootless=False)
    except ConfigError:  # said where the preset is loaded
        return set()
    return {f"{section}.{key}" for _, data in chain for section, values in data.items()
            if isinstance(values, dict) for key in values}


def mesh_one(path: Path, out_dir: Path, mesh_cfg, cfg, rules: InputRules = InputRules(),
             timings: dict | None = None, stats: dict | None = None, name: str | None = None) -> list[Path]:
    """Mesh one input into out_dir, with `rules` for what a mesh input keeps of its own. Returns the
    files written; raises with a message naming the file. `timings`, if given, receives seconds per
    stage; `stats`, the result's `mesh_stats`; `name`, what the files call the object and material
    (None: out_dir's name)."""
    import dataclasses
    import time

    import yaml

    from o3dcli.atomic import atomic_write_text
    from o3dcli.config import dump_config, to_plain
    from o3dcli.geometry.gaussians import Gaussians
    from o3dcli.io.assets import load_asset, resolve_asset_path
    from o3dcli.io.export import export_mesh
    from o3dcli.io.mesh_common import texture_formats_seen
    from o3dcli.mesh.config import EXPORT_FILES
    from o3dcli.mesh.run import mesh_from_gaussians, remesh_mesh

    timings = {} if timings is None else timings
    start = time.perf_counter()
    src = _source(path)
    with texture_formats_seen() as formats:
        asset = load_asset(src, up=rules.up)
    if isinstance(asset, Gaussians):
        if len(asset) == 0:
            raise ValueError(f"{src}: the PLY holds no Gaussians")
        _WARNED.clear()  # each input's own: said once for it, though its input is looked at twice
        silhouettes, view = asset_silhouettes(path, mesh_cfg), asset_input_view(path, mesh_cfg)
        timings["load"] = time.perf_counter() - start
        mesh = mesh_from_gaussians(asset, mesh_cfg, timings=timings, silhouettes=silhouettes, input_view=view)
    else:
        if rules.stl_own_size and resolve_asset_path(src).suffix.lower() == ".stl":
            # an STL's millimetres are a size of its own: kept, not made 100 mm (other formats' units
            # are anyone's guess: an OBJ in millimetres would print 1,000 times too large)
            mesh_cfg = dataclasses.replace(mesh_cfg, stl_size_mm=0.0)
        if rules.own_texture_format and formats == {"JPEG"}:  # as Blender's glTF export does ("Automatic")
            mesh_cfg = dataclasses.replace(mesh_cfg, texture_format="jpeg")
        timings["load"] = time.perf_counter() - start
        start = time.perf_counter()
        mesh = remesh_mesh(asset, mesh_cfg, fit_kept_texture=rules.fit_kept_texture)
        timings["remesh"] = time.perf_counter() - start
    start = time.perf_counter()
    written = export_mesh(mesh, out_dir, "model", mesh_cfg.formats, stl_size_mm=mesh_cfg.stl_size_mm,
                          texture_format=mesh_cfg.texture_format, jpeg_quality=mesh_cfg.jpeg_quality,
                          draco=mesh_cfg.draco, crease_angle_deg=mesh_cfg.crease_angle_deg,
                          name=name)
    timings["export"] = time.perf_counter() - start
    if stats is not None:
        stats.update(mesh_stats(mesh))
    for stale in EXPORT_FILES:  # a format asked for last time, not now
        if out_dir / stale not in written:
            (out_dir / stale).unlink(missing_ok=True)
    # only the mesh section makes this result (the rest of a preset is generation's)
    header = "# o3d mesh settings (the mesh section is what o3d mesh uses); reuse with o3d mesh --preset <this file>\n"
    text = dump_config(dataclasses.replace(cfg, mesh=mesh_cfg), header=header, keys=["mesh"]) if hasattr(cfg, "mesh") \
        else header + yaml.safe_dump({"mesh": to_plain(dataclasses.asdict(mesh_cfg))}, sort_keys=False)
    atomic_write_text(out_dir / "config.yaml", text)
    return written + [out_dir / "config.yaml"]


def mesh_stats(mesh) -> dict:
    """What the report says of a result mesh: its faces, vertices (before the export splits them
    along sharp creases: `o3dcli.io.normals.split_at_creases`), texture size ([height, width], or
    None), and its boundary edges (of one face) and non-manifold edges (of three or more faces),
    vertices joined by position: a watertight mesh has neither."""
    from o3dcli.io.export import open_edges

    boundary, non_manifold = open_edges(mesh)
    return {"faces": int(len(mesh.faces)), "vertices": int(len(mesh.vertices)),
            "texture": list(mesh.texture.shape[:2]) if mesh.texture is not None else None,
            "boundary_edges": boundary, "non_manifold_edges": non_manifold,
            "watertight": boundary == 0 and non_manifold == 0}


def mesh(
    inputs: List[Path] = typer.Argument(..., parser=path_param, metavar="INPUT", help="o3d asset folders, Gaussian PLYs (any 3DGS tool), meshes (GLB/glTF/OBJ/PLY/STL; USD with the usd extra), or folders of them (an o3d generate output folder: every asset in it).", show_default=False),
    decimate: Optional[int] = typer.Option(None, "--decimate", "-d", min=4, help="Target face count (shortcut for --set mesh.target_faces=N; default: the preset's, 20000 for tiny). Meshes already below it keep their faces."),
    texture_size: Optional[int] = typer.Option(None, "--texture-size", min=16, help="Baked texture side in pixels (shortcut for --set mesh.texture_size=S); given, it also bounds the textures textured mesh inputs keep (else kept at their size)."),
    formats: Optional[str] = typer.Option(None, "--formats", help="Comma-separated output formats: glb, obj, usdz, stl (default: those an o3d asset was written in, else glb,obj; stl: for 3D printing, in millimetres, see mesh.stl_size_mm)."),
    output: Path = typer.Option(Path("o3d-meshes"), "--output", "-o", parser=path_param, metavar="<path>", help="Output folder: one sub-folder per input."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Preset name or YAML path (its mesh section is used; default: tiny)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help="Override one config field, e.g. --set mesh.method=tsdf (repeatable).", metavar="SECTION.KEY=VALUE"),
    up: str = typer.Option("auto", "--up", help="Up axis of the inputs: auto (Z for GSO/Gazebo model folders and STL files, a USD stage's own upAxis, -Y for 3DGS PLYs that o3d did not write, as splat viewers take them, else Y), y, or z (a Z-up file, turned to o3d's Y-up; the output is Y-up like every glTF; an STL output is Z-up). o3d's own Gaussians keep the frame they record."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks of failed inputs."),
):
    """Turn Gaussians or meshes into decimated, UV-textured meshes.

    Gaussians (an asset folder's gaussians.ply or any 3DGS PLY) are meshed, cleaned, decimated, unwrapped and baked; given an asset folder (or its gaussians.ply), its input.png is also projected onto the texture and cuts the surface to its outline, as in o3d generate. Meshes are decimated keeping their texture and its alpha (cut-outs stay see-through).

    Writes OUTPUT/<name>/model.glb, model.obj (+ .mtl, .png) or what --formats names, config.yaml and o3d-asset.json (the input it came from), and OUTPUT/o3d-mesh-report.json (per input: status, error, seconds per stage, files, warnings, and the mesh's faces, vertices (one per position and texture coordinate: a GLB or USDZ splits more along sharp creases for their normals), texture size and open edges); <name> is the input's name (for an asset's gaussians.ply or model.glb, its folder's), with -2, -3, ... when an earlier run, or another o3d process at the same time, wrote that name for another input. A result folder is replaced whole (files you added to it are kept).

    Exit code: 0 = all succeeded, 1 = some failed, 2 = usage error, 130 = interrupted (Ctrl-C; 143 = SIGTERM).
    """
    from o3dcli.cli import require_file_locks

    require_file_locks("mesh")

    import contextlib
    import time

    from rich.markup import escape

    from o3dcli.batch_report import RunMark, new_run_id
    from o3dcli.cache import Cache
    from o3dcli.commands import once_each
    from o3dcli.config import ConfigError
    from o3dcli.console import console, interrupted_exit_code, setup_logging
    from o3dcli.errors import UserError
    from o3dcli.inputs import check_output_dir
    from o3dcli.naming import MESH_REPORT_NAME, folder_taken, unique_names

    def usage_error(message: str) -> typer.Exit:
        console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        return typer.Exit(EXIT_USAGE)

    setup_logging(verbose)
    up = up.strip().lower()  # --up Z, as choices are read elsewhere
    if up not in ("auto", "y", "z"):
        raise usage_error(f"--up must be auto, y or z, got '{up}'")

    try:
        cfg, mesh_cfg = _mesh_config(preset or "tiny", list(sets or []), decimate, texture_size, formats)
        check_output_dir(output)
        from o3dcli.config import parse_override

        rules = InputRules.from_command(up, preset, list(sets or []), texture_size)
        # an o3d asset keeps the formats it was written in unless the command names export settings
        keep_export = formats is None and not (
            {parse_override(s)[0] for s in sets or []} | preset_keys(preset)) & {f"mesh.{k}" for k in EXPORT_SETTINGS}
    except (ConfigError, UserError) as e:
        raise usage_error(str(e)) from None
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise usage_error(f"input not found: {', '.join(missing)}")
    threads = getattr(getattr(cfg, "runtime", None), "threads", 0)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from o3dcli.native import cannot_run

    refused = cannot_run("o3d mesh")
    if refused:
        raise usage_error(refused)
    from o3dcli.io.assets import expand_asset_folders

    notes: list[str] = []
    inputs = [_asset_folder_of(p) for p in inputs]  # assets/chair/gaussians.ply meshes as assets/chair does
    given = set(inputs)
    inputs = expand_asset_folders(inputs, notes)  # an output folder, a folder of meshes: each asset in it
    inputs = _without_results_of_others(inputs, given, notes)
    for note in notes:
        console.print(f"[yellow]note[/yellow]: {escape(note)}", soft_wrap=True)
    inputs = once_each(inputs, lambda p: _source(p).resolve(), "meshed")
    # a name an earlier run wrote for another input gets -2, -3, ...: nothing is overwritten
    # chair.obj is `chair`, not a chair.mtl given beside it; a result keeps the folder it has
    names = unique_names(inputs, lambda name, path: folder_taken(output, name, _source(path).resolve()),
                         rank=_mesh_rank, out_dir=output, source_of=lambda path: _source(path).resolve())
    items = [_new_item(path, name) for path, name in zip(inputs, names)]
    started = time.time()
    run_id = new_run_id(started)
    stopped = None
    with contextlib.ExitStack() as marked:
        writing: list[bool] = []

        def start_writing() -> None:
            """Make the output folder and mark this run as at work in it (for the report's merge),
            once: not before an input gets that far, so a batch that fails whole leaves no folder."""
            if not writing:
                output.mkdir(parents=True, exist_ok=True)
                marked.enter_context(RunMark(Cache(output).root, run_id, started, kind="mesh"))
                writing.append(True)

        try:
            _mesh_all(inputs, items, output, start_writing, mesh_cfg, cfg, rules, keep_export, verbose)
        except KeyboardInterrupt:
            stopped = interrupted_exit_code()
        # where no input got as far as writing, the folder is not made for the report alone
        reported = bool(items) and output.is_dir()
        report_error = _write_mesh_report(output, items, started, stopped is not None, run_id) if reported else None
    n_ok = sum(i["status"] == "ok" for i in items)
    if items:
        report = f"; report: {escape(str(output / MESH_REPORT_NAME))}" if reported and not report_error else ""
        console.print(f"{n_ok}/{len(items)} succeeded{report}", soft_wrap=True)
    if report_error:
        console.print(f"[red]error[/red]: {escape(report_error)}; the results above are in their folders",
                      soft_wrap=True)
    if stopped is not None:
        raise typer.Exit(stopped)
    raise typer.Exit(EXIT_OK if n_ok == len(items) and not report_error else EXIT_SOME_FAILED)


def _new_item(path: Path, name: str) -> dict:
    """An input's entry in OUT/o3d-mesh-report.json, before it is meshed (o3d generate's report
    items less what only generation has: cached stages, their sources, stage details; with `mesh`,
    the result's `mesh_stats`)."""
    return {"input": str(_source(path).resolve()), "name": name, "status": "not-run", "error": None,
            "traceback": None, "timings": {}, "outputs": [], "warnings": [], "mesh": None}


def _mesh_all(inputs: list[Path], items: list[dict], output: Path, start_writing, mesh_cfg, cfg, rules: InputRules,
              keep_export: bool, verbose: bool) -> None:
    """Mesh each input into its item (status, error, timings, outputs, warnings, mesh stats),
    printing a line for each; one that fails never stops the others. `start_writing()` is called
    before an input's results are first written. Ctrl-C (or SIGTERM) marks the input at work
    `interrupted` and is raised on."""
    import traceback

    from rich.markup import escape

    from o3dcli.batch_types import StageWarnings
    from o3dcli.console import console
    from o3dcli.inputs import item_message
    from o3dcli.io.assets import resolve_asset_path
    from o3dcli.naming import ASSET_META

    log = logging.getLogger("o3d")
    batch = {item["name"]: Path(item["input"]) for item in items}
    for path, item in zip(inputs, items):
        caught = StageWarnings({})  # told with the input they are about, after its result line

        def tell_warnings() -> None:
            log.removeFilter(caught)
            item["warnings"] = [item_message(path, message) for message in caught.messages]
            for message in item["warnings"]:
                console.print(f"[yellow]! {escape(str(path))}[/yellow]: {escape(message)}",
                              highlight=False, soft_wrap=True)

        log.addFilter(caught)
        try:
            resolve_asset_path(_source(path))  # an input that is no asset fails before its folder is touched
            start_writing()
            item_cfg = _with_assets_export_settings(path, mesh_cfg) if keep_export else mesh_cfg
            stats: dict = {}
            item["name"], written = _mesh_into(path, output, item["name"], batch, item_cfg, cfg, rules, caught,
                                               item["timings"], stats)
            item.update(status="ok", mesh=stats,
                        outputs=[p.relative_to(output).as_posix() for p in written] + [f"{item['name']}/{ASSET_META}"])
            console.print(f"[green]✓[/green] {escape(str(path))} -> " + ", ".join(escape(str(p)) for p in written[:1])
                          + f" (+{len(written) - 1} files)", soft_wrap=True)
        except KeyboardInterrupt:
            item["status"] = "interrupted"
            console.print(f"[yellow]interrupted[/yellow] at {escape(str(path))}: the inputs before it are done; "
                          "run the command again for the rest", soft_wrap=True)
            tell_warnings()
            raise
        except Exception as e:  # one bad input never stops the others
            item.update(status="failed", error=item_message(path, e), traceback=traceback.format_exc())
            console.print(f"[red]✗ {escape(str(path))}[/red]: {escape(item['error'])}", highlight=False,
                          soft_wrap=True)
            if verbose:
                console.print(escape(item["traceback"]))
        tell_warnings()


def _write_mesh_report(output: Path, items: list[dict], started: float, interrupted: bool, run_id: str) -> str | None:
    """Write OUT/o3d-mesh-report.json (merged with overlapping o3d mesh runs' items, as o3d
    generate's report is: o3dcli.batch_report). Returns why it could not be written, else None."""
    from o3dcli.batch_report import write_report
    from o3dcli.cache import Cache
    from o3dcli.naming import MESH_REPORT_NAME

    for item in items:
        item["timings"] = {k: round(v, 3) for k, v in item["timings"].items()}
    try:
        write_report(output, Cache(output).root, "cpu", items, started, interrupted, run_id=run_id, kind="mesh")
    except OSError as e:  # the finished results are published: only the report is lost
        return f"cannot write {output / MESH_REPORT_NAME} ({e.strerror or e})"
    return None


OWN_FILES = ("config.yaml",)
"""What o3d mesh writes in a result folder besides the mesh files (EXPORT_FILES) and o3d-asset.json."""


def _mesh_into(path: Path, output: Path, name: str, batch: dict[str, Path], mesh_cfg, cfg, rules: InputRules,
               caught, timings: dict | None = None, stats: dict | None = None) -> tuple[str, list[Path]]:
    """Mesh one input into OUTPUT/<name>/ (or the next free name, when another process has made that
    folder another input's since the names were chosen). The name is claimed under its item lock,
    as o3d generate does, so two processes never write one folder; the files are made in a staging
    folder and replace the folder's earlier result in one step (o3dcli.publish), keeping files of
    the folder that are not o3d mesh's. Returns the name and the files written."""
    import errno

    from o3dcli.cache import ItemLocked
    from o3dcli.console import console
    from o3dcli.errors import UserError
    from o3dcli.mesh.config import EXPORT_FILES
    from o3dcli.naming import (ASSET_META, asset_meta_text, asset_stem, claim_name, clean_name, drop_if_empty,
                               mark_asset_dir, published_files)
    from o3dcli import publish

    src = _source(path).resolve()
    args = dict(base=clean_name(asset_stem(path)), taken=lambda n: batch.get(n, src) != src)
    try:
        name, lock = claim_name(output, src, name, **args)
    except ItemLocked:
        console.print(f"{path}: waiting for another o3d process working on {output / name}", soft_wrap=True)
        name, lock = claim_name(output, src, name, blocking=True, **args)
    batch.setdefault(name, src)
    asset_dir = output / name
    ours = set(EXPORT_FILES) | set(OWN_FILES) | {ASSET_META}
    try:
        # marked as this input's before the work starts, so that other processes see it taken
        mark_asset_dir(asset_dir, src)
        staging = publish.staging_prefix(asset_dir)
        try:
            with publish.staging(asset_dir) as staged:
                caught.paths[str(staged)] = str(asset_dir)
                written = mesh_one(path, staged, mesh_cfg, cfg, rules=rules, timings=timings, stats=stats,
                                   name=asset_dir.name)
                is_ours = ours.__contains__
                made = publish.digests(staged, is_ours)
                # an o3d file changed since this command wrote it is kept under another name
                for kept in publish.keep_edits(asset_dir, staged, published_files(asset_dir), is_ours):
                    logging.getLogger("o3d").warning("%s", kept.message(asset_dir))  # told with the input (`caught`)
                publish.add_bytes(staged / ASSET_META, asset_meta_text(src, files=made).encode("utf-8"),
                                  current=asset_dir / ASSET_META)
                publish.commit(asset_dir, staged, is_ours)
        except OSError as e:
            places = (str(asset_dir), str(staging))
            if not (any(str(e.filename or "").startswith(d) for d in places)
                    or (not e.filename and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS))):
                raise  # about the input (cannot read it): its own message
            raise UserError(f"{asset_dir}: cannot write the results ({e.strerror or e}); the folder is left as it "
                            "was") from None
        return name, [asset_dir / Path(p).relative_to(staged) for p in written]
    except BaseException:
        drop_if_empty(asset_dir)
        raise
    finally:
        lock.release()
