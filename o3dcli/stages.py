"""The stages of `o3d generate`, in order. Each is a plain function of a StageContext.

Later stages (diffusion, meshing, export) are appended here as they land.
"""

from __future__ import annotations

from o3dcli.pipeline import Stage, StageContext


def run_preprocess(ctx: StageContext) -> dict:
    """Image file -> RGBA at model size (`prepared.safetensors`, `input.png`)."""
    from PIL import Image
    from safetensors.torch import save_file

    from o3dcli.preprocess import preprocess_image

    prep = preprocess_image(ctx.item.source, ctx.config.preprocess)
    save_file({"rgba": prep.rgba.contiguous(), "rgb": prep.rgb.contiguous()}, str(ctx.work_dir / "prepared.safetensors"))
    rgba8 = (prep.rgba.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()
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
        ctx.resources[key] = build_models(ctx.config, ctx.device, ctx.config.runtime.dtype)
    return ctx.resources[key]


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
    from safetensors.torch import load_file, save_file

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
    save_file({"views": views.contiguous()}, str(ctx.work_dir / "views.safetensors"))
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


DIFFUSION = Stage(
    "diffusion", 1, ("runtime", "cameras", "diffusion", "model", "denoiser", "recon"), run_diffusion,
    publish={"gaussians.ply": "gaussians.ply", "views.png": "views.png", "turntable.gif": "turntable.gif",
             "intermediate": "intermediate"},
)


def generate_stages(stop_after: str | None = None) -> list[Stage]:
    """The stages `o3d generate` runs, in order (up to and including `stop_after`)."""
    stages = [PREPROCESS, DIFFUSION]
    if stop_after is not None:
        names = [s.name for s in stages]
        if stop_after not in names:
            raise ValueError(f"unknown stage '{stop_after}' (stages: {', '.join(names)})")
        stages = stages[: names.index(stop_after) + 1]
    return stages
