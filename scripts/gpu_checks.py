"""The GPU checks in one short run: gsplat against the torch splatter, fp16/bf16 sampling, timings.

    python scripts/gpu_checks.py [--device cuda] [--quick] [--json FILE] [--only render,sample,train]

Three sections, each printed as a table and written to --json (all measured, nothing assumed):

- render: random Gaussian scenes rendered by every backend available on the device
  (torch everywhere, gsplat on CUDA): milliseconds per render (forward, and forward +
  backward), and where both run, their agreement: max and mean |difference| of the RGB,
  alpha and feature (CCM) images, depth difference where both are opaque, and the cosine
  between the two backends' gradients of the same loss w.r.t. means, scales, opacities
  and colours.
- sample: the shipped `tiny` model sampling the bundled example images at every dtype the
  device supports (float32 everywhere; float16 and bfloat16 on CUDA): seconds per image
  (the recursive sampler only: no meshing), peak device memory, and the PSNR of each
  dtype's views against float32's (o3d eval's PSNR, mean over views; same seed, same noise).
- train: `o3d train`'s step (joint objective with feedback, the tiny preset) on a few
  freshly synthesised objects at several batch sizes: seconds per step, objects per
  second, peak device memory; and at the first batch size, a save and a resume on the device
  (the step reached, and the next step's loss difference against the run that was not stopped).

Sized to finish in a few minutes on one GPU (the lent H200s give a session 15 minutes);
--quick shrinks every section to seconds, for the CPU test. A section whose needs are
missing (gsplat not installed, say) says so in its rows instead of failing the run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed(fn, device: str, repeat: int, warmup: int = 1) -> tuple[float, object]:
    """Median seconds of `fn()` over `repeat` runs after `warmup`, and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: str) -> float | None:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def environment(device: str) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    try:
        import gsplat

        env["gsplat"] = getattr(gsplat, "__version__", "installed")
    except Exception as e:  # noqa: BLE001 - a broken install is reported, not raised
        env["gsplat"] = f"not usable: {type(e).__name__}: {e}"
    return env


# -- render ------------------------------------------------------------------------------

def random_scene(n: int, seed: int = 0):
    """N Gaussians filling a ball of radius 0.35 (the unit box's object), small and varied."""
    from o3dcli.geometry.gaussians import Gaussians

    gen = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    means = dirs * 0.35 * torch.rand(n, 1, generator=gen).pow(1 / 3)
    scale = 0.02 * (2048 / max(n, 1)) ** (1 / 3)  # denser scenes, smaller splats: similar coverage
    scales = scale * (0.25 + torch.rand(n, 3, generator=gen))
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1)
    opac = 0.1 + 0.85 * torch.rand(n, generator=gen)
    return Gaussians(means, scales, quats, opac, torch.rand(n, 3, generator=gen))


def _render_once(scene, cams, backend: str, grad: bool):
    from o3dcli.geometry.gaussians import Gaussians
    from o3dcli.render import render_gaussians

    if not grad:
        with torch.no_grad():
            return render_gaussians(scene, cams, background=(1.0, 1.0, 1.0), backend=backend,
                                    features=scene.means + 0.5), None
    leaves = [t.detach().clone().requires_grad_(True) for t in
              (scene.means, scene.scales, scene.opacities, scene.colors)]
    g = Gaussians(leaves[0], leaves[1], scene.quats, leaves[2], leaves[3])
    out = render_gaussians(g, cams, background=(1.0, 1.0, 1.0), backend=backend, features=g.means + 0.5)
    # a fixed, non-trivial loss: every output used, weighted by a pattern
    w = torch.linspace(0.5, 1.5, out.rgb.shape[-1], device=out.rgb.device)
    loss = (out.rgb * w).mean() + (out.alpha * w).mean() + (out.features * w).mean()
    grads = torch.autograd.grad(loss, leaves)
    return out, grads


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    den = a.norm() * b.norm()
    return float((a @ b) / den) if den > 0 else float("nan")


def check_render(device: str, quick: bool) -> list[dict]:
    from o3dcli.geometry.cameras import orbit_cameras
    from o3dcli.render.gaussians import gsplat_problem

    scenes = [(1024, 64, 4)] if quick else [(1024, 32, 8), (1024, 256, 8), (20000, 256, 8), (100000, 512, 4)]
    backends = ["torch"]
    gsplat_note = None
    if device.startswith("cuda"):
        gsplat_note = gsplat_problem()  # None: its kernels load
        if gsplat_note is None:
            backends.append("gsplat")
    else:
        gsplat_note = "gsplat needs CUDA"
    repeat = 2 if quick else 5
    rows = []
    for n, size, views in scenes:
        scene = random_scene(n).to(device)
        azim = [360.0 * i / views for i in range(views)]
        cams = orbit_cameras([10.0] * views, azim, size=size).to(device)
        results = {}
        for be in backends:
            try:
                fwd, (out, _) = _timed(lambda: _render_once(scene, cams, be, False), device, repeat)
                both, (_, grads) = _timed(lambda: _render_once(scene, cams, be, True), device, repeat)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory for the torch splatter
                rows.append({"scene": f"{n} G, {views} x {size} px", "backend": be, "error": f"{type(e).__name__}: {e}"})
                continue
            results[be] = (out, grads)
            rows.append({"scene": f"{n} G, {views} x {size} px", "backend": be,
                         "forward_ms": 1000 * fwd, "forward_backward_ms": 1000 * both})
        if gsplat_note:
            rows.append({"scene": f"{n} G, {views} x {size} px", "backend": "gsplat", "skipped": gsplat_note})
        if len(results) == 2:
            rows.append({"scene": f"{n} G, {views} x {size} px", "backend": "torch vs gsplat",
                         **agreement(results["torch"], results["gsplat"])})
    return rows


def agreement(a_run, b_run) -> dict:
    """How far two backends' renders (rgb, alpha, features, depth) and gradients are apart."""
    (a, ga), (b, gb) = a_run, b_run
    row = {}
    for name in ("rgb", "alpha", "features"):
        d = (getattr(a, name) - getattr(b, name)).detach().abs()
        row[f"{name}_max_diff"], row[f"{name}_mean_diff"] = float(d.max()), float(d.mean())
    covered = (a.alpha > 0.5) & (b.alpha > 0.5)
    dd = (a.depth - b.depth).detach()[covered].abs()
    row["depth_max_diff_opaque"] = float(dd.max()) if dd.numel() else None
    for name, x, y in zip(("means", "scales", "opacities", "colors"), ga, gb):
        row[f"grad_cos_{name}"] = _cos(x, y)
    return row


# -- sample ------------------------------------------------------------------------------

def check_sample(device: str, quick: bool) -> list[dict]:
    from o3dcli.config import load_config
    from o3dcli.diffusion.sampler import RecursiveSampler
    from o3dcli.eval.metrics import psnr
    from o3dcli.models.build import build_models
    from o3dcli.preprocess import preprocess_image
    from o3dcli.stages import generation_cameras

    images = sorted((REPO / "o3dcli/assets/examples").glob("*.png"))[: 1 if quick else None]
    dtypes = ["float32"] + (["float16", "bfloat16"] if device.startswith("cuda") else [])
    sets = ["diffusion.steps=2"] if quick else []
    rows, reference = [], {}
    for dtype in dtypes:
        cfg = load_config("tiny", sets)
        try:
            models = build_models(cfg, device, dtype)
        except Exception as e:  # noqa: BLE001
            rows.append({"dtype": dtype, "error": f"{type(e).__name__}: {e}"})
            continue
        sampler = RecursiveSampler(models.model.denoiser, models.model.recon, models.codec, cfg.diffusion,
                                   background=cfg.preprocess.background)
        seconds, psnrs, finite = [], [], True
        _peak_reset(device)
        try:
            for k, path in enumerate(images):
                prep = preprocess_image(path, cfg.preprocess)
                cond = prep.rgb.to(device, next(models.model.parameters()).dtype)
                cams = generation_cameras(cfg, cond.shape[-1]).to(device)
                gen = torch.Generator(device=device).manual_seed(1000 + k)
                with torch.no_grad():
                    _sync(device)
                    t0 = time.perf_counter()
                    views = sampler.sample(cond, cams, gen).views.float().cpu()
                    _sync(device)
                seconds.append(time.perf_counter() - t0)
                finite &= bool(torch.isfinite(views).all())
                if dtype == "float32":
                    reference[path.name] = views
                elif path.name in reference:
                    psnrs.append(float(psnr(views, reference[path.name]).mean()))  # o3d eval's PSNR, per view
        except Exception as e:  # noqa: BLE001 - e.g. a dtype mismatch in 16-bit: the other dtypes' rows stay
            rows.append({"dtype": dtype, "error": f"{type(e).__name__}: {e}"})
            continue
        row = {"dtype": dtype, "images": len(images), "steps": cfg.diffusion.steps,
               "first_image_s": seconds[0], "s_per_image": statistics.median(seconds[1:] or seconds),
               "peak_mb": _peak_mb(device), "finite": finite}
        if psnrs:
            row["psnr_vs_float32_db"] = statistics.mean(psnrs)
        rows.append(row)
    return rows


# -- train -------------------------------------------------------------------------------

def check_train(device: str, quick: bool, data: Path | None = None) -> list[dict]:
    from o3dcli.config import load_config
    from o3dcli.train.data import load_dataset
    from o3dcli.train.trainer import Trainer

    batches = [2] if quick else [2, 16, 64]
    steps = 2 if quick else 10
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:  # rendering them needs open3d (the mesh raycaster)
            from o3dcli.synth.generate import synthesize

            data = Path(tmp) / "data"
            synthesize(data, 4 if quick else 16, seed=0, size=64, extra_views=4)
        for b in batches:
            cfg = load_config("tiny", [f"train.batch_size={b}", "train.feedback_p=0.5"])
            objects = load_dataset(data, cfg)
            # objects without mesh.obj train without the direct (surface point) loss
            with_points = all(o.points is not None for o in objects)
            try:
                trainer = Trainer(cfg, objects, Path(tmp) / f"run{b}", device)
                trainer.step()  # warm-up (allocations, kernels)
                _peak_reset(device)
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    trainer.step()
                _sync(device)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory at a large batch
                rows.append({"batch": b, "error": f"{type(e).__name__}: {e}"})
                continue
            dt = (time.perf_counter() - t0) / steps
            row = {"batch": b, "objects": len(objects), "surface_points": with_points, "steps": steps,
                   "s_per_step": dt, "objects_per_s": b / dt, "peak_mb": _peak_mb(device)}
            if b == batches[0]:
                row.update(_resume(trainer, cfg, objects, Path(tmp) / f"run{b}", device))
            rows.append(row)
    return rows


def _resume(trainer, cfg, objects, run: Path, device: str) -> dict:
    """Save the run, resume it in a new trainer on the same device, and take the next step in both:
    the step they reach, and how far their losses are apart (0 on the CPU; kernels' own
    nondeterminism on a GPU)."""
    from o3dcli.train.trainer import Trainer

    try:
        trainer.save()
        again = Trainer(cfg, objects, run, device)
        if not again.load():
            return {"resume": "no checkpoint was found to resume from"}
        a, c = trainer.step(), again.step()
    except Exception as e:  # noqa: BLE001 - reported in the row, like a section's failure
        return {"resume": f"{type(e).__name__}: {e}"}
    return {"resume": "ok" if again.step_count == trainer.step_count else f"at step {again.step_count}, "
            f"not {trainer.step_count}", "resume_loss_diff": abs(a.loss - c.loss)}


# -- report ------------------------------------------------------------------------------

def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.4f}"
    return str(v)


def print_table(title: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*(_fmt(r.get(c)) for c in cols))
    Console(width=200).print(t)


SECTIONS = {"render": check_render, "sample": check_sample, "train": check_train}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds on a CPU), for tests")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: render,sample,train")
    ap.add_argument("--json", type=Path, default=None, help="write every measurement here")
    ap.add_argument("--train-data", type=Path, default=None,
                    help="rendered objects for the train section (default: synthesise 16, which needs open3d)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available (torch {torch.__version__})")
    report = {"environment": environment(args.device), "quick": args.quick}
    print(json.dumps(report["environment"]))
    failed = False
    for name in wanted:
        t0 = time.perf_counter()
        try:
            extra = {"data": args.train_data} if name == "train" else {}
            rows = SECTIONS[name](args.device, args.quick, **extra)
        except Exception as e:  # noqa: BLE001 - one section's failure must not hide the others
            rows = [{"error": f"{type(e).__name__}: {e}"}]
        failed |= any("error" in r for r in rows)
        report[name] = rows
        print_table(f"{name} ({time.perf_counter() - t0:.0f} s)", rows)
        if args.json:  # after every section, so a run cut short keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
