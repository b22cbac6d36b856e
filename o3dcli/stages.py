"""The stages of `o3d generate`, in order. Each is a plain function of a StageContext.

Later stages (diffusion, meshing, export) are appended here as they land.
"""

from __future__ import annotations

from o3dcli.mesh.config import EXPORT_FILES, MeshConfig
from o3dcli.batch_types import Stage, StageContext


PHOTO_SIZE = 1024
"""Side of the input crop kept for projecting the photo onto the texture (mesh.input_weight) and
published as input.png: the crop the model sees, at this size. Fixed rather than a setting, so the
preprocessing (and the diffusion after it) never reruns for the texture's sake. The preprocess
stage's key does not include it: a cached result without the photo, or with one of another size,
is handled by the bake (see `_photo`)."""


def run_preprocess(ctx: StageContext) -> dict:
    """Image file -> RGBA at model size (`prepared.safetensors`: rgba, rgb) and the same crop at
    PHOTO_SIZE (uint8 RGBA, `input.png`: published, and read by the bake; see `_photo`)."""
    from PIL import Image

    from o3dcli.atomic import atomic_save_tensors
    from o3dcli.preprocess import preprocess_image

    prep = preprocess_image(ctx.item.source, ctx.config.preprocess, PHOTO_SIZE)
    atomic_save_tensors({"rgba": prep.rgba.contiguous(), "rgb": prep.rgb.contiguous()},
                        ctx.work_dir / "prepared.safetensors")  # readable by the folder's other users
    rgba8 = _to_uint8(prep.rgba_projection).permute(1, 2, 0).numpy()
    Image.fromarray(rgba8, "RGBA").save(ctx.work_dir / "input.png")
    return {
        "matting": prep.matting,
        "warnings": list(prep.warnings),
        "crop_box": list(prep.crop_box),
        "source_sha256": prep.source_sha256,
    }


PREPROCESS = Stage("preprocess", 1, ("preprocess",), run_preprocess, publish={"input.png": "input.png"})




def item_seed(base_seed: int, input_sha256: str) -> int:
    """The item's seed: the run's seed mixed with the input's content (same image + seed = same result)."""
    import hashlib

    return int(hashlib.sha256(f"{base_seed}:{input_sha256}".encode()).hexdigest()[:15], 16)


def get_models(ctx: StageContext):
    """The batch's models, built (and weights loaded) once and shared by every item."""
    from o3dcli.models.build import build_models

    key = ("models", ctx.device, ctx.config.runtime.dtype)
    if key not in ctx.resources:
        ctx.progress("loading models")
        models = build_models(ctx.config, ctx.device, ctx.config.runtime.dtype)
        check_files_unchanged(ctx.resources.get("pinned_files", {}))
        ctx.resources[key] = models
    return ctx.resources[key]


def check_files_unchanged(pinned: dict) -> None:
    """Refuse models loaded from files that changed since the batch keyed its items by them
    ({path: (file_identity, SHA-256)}, o3dcli.pipeline.BatchRunner): their results would be cached
    under the earlier bytes' key."""
    from o3dcli.atomic import file_identity
    from o3dcli.errors import UserError

    for path, (identity, _) in pinned.items():
        if file_identity(path) != identity:
            raise UserError(f"{path}: changed since this batch first read it (rewritten by another process, e.g. "
                            "`o3d train` saving weights); the models were not loaded from the bytes the results "
                            "would be keyed by: run again to use the new file")


def generation_cameras(cfg, size: int):
    from o3dcli.geometry.cameras import orbit_cameras

    c = cfg.cameras
    return orbit_cameras(list(c.elevations), list(c.azimuths), c.radius, c.fov_deg, size)


def run_diffusion(ctx: StageContext) -> dict:
    """Recursive multi-view diffusion with 3D-aware feedback -> views + Gaussians.

    Writes gaussians.ply, views.png (grid), views.safetensors ([V,3,H,W] float),
    turntable.gif, and with diffusion.save_intermediate the per-step PNGs. The
    sampler state is saved to the stage's state store every diffusion.save_every
    steps, so a killed run resumes mid-denoising.
    """
    import torch
    from safetensors.torch import load_file

    from o3dcli.atomic import atomic_save_tensors
    from o3dcli.diffusion.sampler import RecursiveSampler
    from o3dcli.io.media import image_grid, save_gif, save_png, to_uint8
    from o3dcli.io.ply import save_gaussians
    from o3dcli.render.turntable import turntable_frames

    cfg = ctx.config
    models = get_models(ctx)
    prepared = load_file(str(ctx.upstream["preprocess"] / "prepared.safetensors"))
    dtype = next(models.model.parameters()).dtype
    cond = prepared["rgb"].to(ctx.device, dtype)
    cameras = generation_cameras(cfg, cond.shape[-1]).to(ctx.device)
    gen = torch.Generator(device=ctx.device).manual_seed(item_seed(cfg.runtime.seed, ctx.input_sha256))
    sampler = RecursiveSampler(models.model.denoiser, models.model.recon, models.codec, cfg.diffusion,
                               background=cfg.preprocess.background)
    steps_dir = ctx.state.dir / "intermediate"  # survives a kill, like the sampler state

    def on_step(rec):
        if not cfg.diffusion.save_intermediate:
            return
        cols = len(rec.views)
        grid = image_grid(to_uint8(torch.cat([rec.views, rec.rgb_map, rec.ccm_map]).float()), cols=cols)
        save_png(steps_dir / f"step_{rec.step:03d}.png", grid)

    result = sampler.sample(cond, cameras, gen, state=ctx.state, on_step=on_step,
                            progress=lambda i, n: ctx.progress(f"step {i}/{n}"))
    views = result.views.float().cpu()
    atomic_save_tensors({"views": views.contiguous()}, ctx.work_dir / "views.safetensors")
    save_png(ctx.work_dir / "views.png", image_grid(to_uint8(views), cols=len(views)))
    g = result.gaussians.detach().to("cpu", torch.float32)
    save_gaussians(ctx.work_dir / "gaussians.ply", g)
    ctx.progress("turntable")
    save_gif(ctx.work_dir / "turntable.gif", turntable_frames(g, n_frames=24, size=192, elevation=15.0))
    if cfg.diffusion.save_intermediate and steps_dir.is_dir():
        import shutil

        shutil.copytree(steps_dir, ctx.work_dir / "intermediate")
    return {"weights": models.weights, "trained": models.trained, "steps_run": result.steps_run,
            "resumed_from": result.resumed_from, "num_gaussians": len(g)}


def model_files(cfg) -> dict:
    """The files whose bytes make the models, {role: path}: o3d weights (resolved as `model.weights`
    says) or the released checkpoints, and the files of the local VAE and CLIP folders (`~` expanded).
    Raises ConfigError for missing o3d weights; other missing files are left to the model loader,
    which names them."""
    from pathlib import Path

    from o3dcli.models.build import resolve_weights
    from o3dcli.models.local_files import expand_paths

    cfg = expand_paths(cfg)
    m = cfg.model
    files = {}
    if m.published_unet or m.published_recon:
        files.update({"published_unet": m.published_unet, "published_recon": m.published_recon})
    else:
        own = resolve_weights(m.weights)
        if own is not None:
            files["weights"] = own
    out = {role: Path(p) for role, p in files.items() if p and Path(p).is_file()}
    folders = {"vae": m.vae_path if m.codec == "vae" else "",
               "clip": cfg.denoiser.clip_path if cfg.denoiser.image_encoder == "clip" else ""}
    for role, folder in folders.items():
        if folder and Path(folder).is_dir():  # a diffusers / transformers folder: every file in it
            root = Path(folder)
            out.update({f"{role}/{f.relative_to(root).as_posix()}": f for f in sorted(root.rglob("*")) if f.is_file()})
    return out


DIFFUSION = Stage(
    "diffusion", 1,
    # every setting that changes the result (not runtime.threads, not diffusion.save_every)
    ("runtime.seed", "runtime.device", "runtime.dtype", "cameras", "model", "denoiser", "recon",
     *(f"diffusion.{k}" for k in ("steps", "sigma_min", "sigma_max", "guidance_min", "guidance_max", "feedback",
                                  "feedback_start", "feedback_every", "save_intermediate"))),
    run_diffusion,
    publish={"gaussians.ply": "gaussians.ply", "views.png": "views.png", "turntable.gif": "turntable.gif",
             "intermediate": "intermediate"},
    files=model_files,
    side_fields=("diffusion.save_intermediate",),  # the per-step PNGs: the result is the same
)


# -- meshing: Gaussians -> mesh -> simplified -> UV -> baked -> exported, each cached ---------

MESH_FUSION_FIELDS = ("method", "fusion_views", "fusion_size", "fusion_fov_deg", "fusion_max_angle_deg", "resolution",
                      "depth_trunc_voxels", "alpha_threshold", "carve_alpha", "input_silhouette", "opacity_smoothing",
                      "bounds_quantile", "min_component_ratio", "max_hole_edges")
MESH_SIMPLIFY_FIELDS = ("target_faces", "remesh", "remesh_edge_ratio")
MESH_UV_FIELDS = ("texture_size", "uv_padding", "uv_chart_area")
MESH_BAKE_FIELDS = ("texture_size", "bake_angle_power", "bake_depth_tolerance", "fusion_views", "fusion_size",
                    "fusion_fov_deg", "fusion_max_angle_deg", "alpha_threshold", "input_weight", "mirror_weight")
MESH_EXPORT_FIELDS = ("formats",)


def save_trimesh(path, mesh) -> None:
    """A TriMesh as .npz (the cache's exchange format between mesh stages), deflated at level 1:
    about 2.3 MB instead of 5.4 MB for the four mesh stages of an item (the texture is most of it),
    for about 0.1 s (level 6, numpy's `savez_compressed`: 0.15 MB less for three times the time).
    `np.load` reads it as any .npz."""
    import zipfile

    import numpy as np

    arrays = {"vertices": mesh.vertices, "faces": mesh.faces, "material_color": mesh.material_color}
    for k in ("uv", "texture", "vertex_colors"):
        if getattr(mesh, k) is not None:
            arrays[k] = getattr(mesh, k)
    arrays.update({k: np.asarray(v) for k, v in mesh.material_style.items()})  # 0-d: read back with .item()
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def load_trimesh(path):
    import numpy as np

    from o3dcli.geometry.mesh import TriMesh

    with np.load(path) as z:
        return TriMesh(**{k: z[k].item() if z[k].ndim == 0 else z[k] for k in z.files})


def _gaussians(ctx: StageContext):
    from o3dcli.io.ply import load_gaussians

    return load_gaussians(ctx.upstream["diffusion"] / "gaussians.ply")


def input_silhouettes(rgba, cfg):
    """The input image's alpha (prepared RGBA [4, S, S]) as seen from generation camera 0, where the
    model placed the input view: a `Silhouettes` for meshing."""
    from o3dcli.mesh.fusion import Silhouettes

    return Silhouettes(generation_cameras(cfg, int(rgba.shape[-1]))[:1], rgba[3:4].float().numpy())


def run_mesh_fusion(ctx: StageContext) -> dict:
    """Gaussians -> closed surface (mesh.method: carved silhouettes, opacity field or TSDF), cut to the
    input's silhouette (mesh.input_silhouette), main components, small holes filled."""
    from safetensors.torch import load_file

    from o3dcli.mesh.fusion import gaussians_to_mesh

    sil = None
    if ctx.config.mesh.input_silhouette:
        rgba = load_file(str(ctx.upstream["preprocess"] / "prepared.safetensors"))["rgba"]
        sil = input_silhouettes(rgba, ctx.config)
    mesh = gaussians_to_mesh(_gaussians(ctx), ctx.config.mesh, silhouettes=sil)
    save_trimesh(ctx.work_dir / "mesh.npz", mesh)
    return {"faces": int(len(mesh.faces)), "vertices": int(len(mesh.vertices))}


def run_mesh_simplify(ctx: StageContext) -> dict:
    """Cleanup and quadric decimation to mesh.target_faces."""
    from o3dcli.mesh.cleanup import simplify_mesh

    mesh = simplify_mesh(load_trimesh(ctx.upstream["mesh_fusion"] / "mesh.npz"), ctx.config.mesh)
    save_trimesh(ctx.work_dir / "mesh.npz", mesh)
    return {"faces": int(len(mesh.faces))}


def run_mesh_uv(ctx: StageContext) -> dict:
    """UV atlas with xatlas."""
    from o3dcli.mesh.uv import unwrap_uv

    mesh = unwrap_uv(load_trimesh(ctx.upstream["mesh_simplify"] / "mesh.npz"), ctx.config.mesh)
    save_trimesh(ctx.work_dir / "mesh.npz", mesh)
    return {"vertices": int(len(mesh.vertices))}


def input_view(rgba, cfg):
    """The prepared input (straight RGBA [4, S, S] of any size S, float in [0, 1] or uint8) with the
    camera it was seen from (generation camera 0): an `InputView` for texture baking."""
    from o3dcli.mesh.bake import InputView

    rgba = rgba.float() / 255.0 if not rgba.is_floating_point() else rgba.float()
    return InputView(generation_cameras(cfg, int(rgba.shape[-1]))[:1], rgba.numpy())


def _photo(ctx: StageContext):
    """The input photo for the bake: the preprocess stage's PHOTO_SIZE crop (uint8 [4, S, S]), read
    from its `input.png` (lossless). A result cached by an o3d from before the photo was kept has an
    input.png at the model's size: the same crop is prepared again from the source (the preprocess
    and diffusion results stay valid)."""
    import numpy as np
    import torch
    from PIL import Image

    png = ctx.upstream["preprocess"] / "input.png"
    if png.is_file():
        with Image.open(png) as im:
            if im.size == (PHOTO_SIZE, PHOTO_SIZE) and im.mode == "RGBA":
                return torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous()
    from o3dcli.preprocess import preprocess_image

    return _to_uint8(preprocess_image(ctx.item.source, ctx.config.preprocess, PHOTO_SIZE).rgba_projection)


def _to_uint8(rgba):
    return (rgba.clamp(0, 1) * 255 + 0.5).byte()


def run_mesh_bake(ctx: StageContext) -> dict:
    """Base-colour texture baked from renders of the Gaussians and projected from the input photo."""
    from o3dcli.mesh.bake import bake_texture

    view = None
    if ctx.config.mesh.input_weight > 0 or ctx.config.mesh.mirror_weight > 0:
        view = input_view(_photo(ctx), ctx.config)
    mesh = bake_texture(load_trimesh(ctx.upstream["mesh_uv"] / "mesh.npz"), _gaussians(ctx), ctx.config.mesh,
                        input_view=view)
    save_trimesh(ctx.work_dir / "mesh.npz", mesh)
    return {"texture": list(mesh.texture.shape[:2]) if mesh.texture is not None else None}


def run_export(ctx: StageContext) -> dict:
    """model.glb (PBR base colour), model.obj/.mtl/.png, model.usdz and model.stl, as mesh.formats
    says; their object and material named after the asset (the item's name)."""
    from o3dcli.io.export import export_mesh

    mesh = load_trimesh(ctx.upstream["mesh_bake"] / "mesh.npz")
    cfg = ctx.config.mesh
    files = export_mesh(mesh, ctx.work_dir, "model", tuple(cfg.formats), stl_size_mm=cfg.stl_size_mm,
                        texture_format=cfg.texture_format, jpeg_quality=cfg.jpeg_quality, draco=cfg.draco,
                        crease_angle_deg=cfg.crease_angle_deg, name=ctx.item.name)
    return {"files": [f.name for f in files]}


def export_key_extra(config) -> dict:
    """What decides the export besides mesh.formats, only for the formats asked for (so adding a
    setting for one format does not invalidate the others' cached files): the STL's size, and
    whether usd-core is installed (the USDZ's layer is binary with it, text without); the texture
    format when not the default PNG; Draco compression of the GLB; the crease angle of the normals
    of glb, obj and usdz when not the default."""
    from o3dcli.io.usdz import usd_available

    extra = {}
    if config.mesh.texture_format != "png" and any(f in config.mesh.formats for f in ("glb", "obj", "usdz")):
        extra.update(texture_format=config.mesh.texture_format, jpeg_quality=config.mesh.jpeg_quality)
    if config.mesh.draco and "glb" in config.mesh.formats:
        extra["draco"] = True
    if config.mesh.crease_angle_deg != MeshConfig.crease_angle_deg and any(
            f in config.mesh.formats for f in ("glb", "obj", "usdz")):  # their normals
        extra["crease_angle_deg"] = config.mesh.crease_angle_deg
    if "stl" in config.mesh.formats:
        extra["stl_size_mm"] = config.mesh.stl_size_mm
    if "usdz" in config.mesh.formats:
        extra["usd_binary"] = usd_available()
    return extra


def _mesh_fields(fields):
    return tuple(f"mesh.{f}" for f in fields)


MESH_FUSION = Stage("mesh_fusion", 1, _mesh_fields(MESH_FUSION_FIELDS), run_mesh_fusion)
# version 5: decimated at unit size (`o3dcli.mesh.cleanup.unit_scale`): the same for a mesh whose largest
# part's largest side is in (0.5, 1], o3d's usual, and not otherwise
MESH_SIMPLIFY = Stage("mesh_simplify", 5, _mesh_fields(MESH_SIMPLIFY_FIELDS), run_mesh_simplify)
MESH_UV = Stage("mesh_uv", 1, _mesh_fields(MESH_UV_FIELDS), run_mesh_uv)
MESH_BAKE = Stage("mesh_bake", 1, _mesh_fields(MESH_BAKE_FIELDS), run_mesh_bake)
# version 2: normals kept sharp along creases (mesh.crease_angle_deg), OBJs with vn; 3: the USDZ's
# texture named by its bytes (one fixed name gave a Blender scene of o3d assets the first one's
# texture), o3d named as the GLB's generator; 4: the object and material named after the asset
# (were geometry_0 and material0 in every asset)
EXPORT = Stage("export", 4, _mesh_fields(MESH_EXPORT_FIELDS), run_export,
               publish={f: f for f in EXPORT_FILES}, key_extra=export_key_extra, per_item=True)


def generate_stages(stop_after: str | None = None) -> list[Stage]:
    """The stages `o3d generate` runs, in order (up to and including `stop_after`)."""
    stages = [PREPROCESS, DIFFUSION, MESH_FUSION, MESH_SIMPLIFY, MESH_UV, MESH_BAKE, EXPORT]
    if stop_after is not None:
        names = [s.name for s in stages]
        if stop_after not in names:
            raise ValueError(f"unknown stage '{stop_after}' (stages: {', '.join(names)})")
        stages = stages[: names.index(stop_after) + 1]
    return stages
