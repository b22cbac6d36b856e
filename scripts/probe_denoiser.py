"""How well does a denoiser predict the clean views at each noise level? Prints a table.

    python scripts/probe_denoiser.py WEIGHTS --data DIR [--preset tiny] [--objects 16] [--seed 0]

For each sigma, the x0-prediction error (mean squared, in the codec's latent space, over all
views) of one denoiser pass with the condition image, without it (the classifier-free "null"
condition), and with the feedback maps the reconstructor renders from the first pass (the
recursive step the sampler takes). The reference row is the error of always answering the
mean clean image of the objects probed: a denoiser that does not beat it at some sigma has
not learned that noise level. Same objects, noise and condition variants for every sigma.

--per-view adds the conditioned error of each view (view 0 is the input view) and the
error of copying the condition image into view 0: a denoiser that uses its condition
beats that copy in view 0 at every noise level.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from o3dcli.config import load_config
from o3dcli.diffusion.edm import edm_coefficients
from o3dcli.errors import ConfigError
from o3dcli.train.data import DatasetError, composite, load_dataset
from o3dcli.train.trainer import Trainer

SIGMAS = (0.02, 0.1, 0.5, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0)


@torch.no_grad()
def probe(weights: Path | str, data: Path, preset: str = "tiny", n_objects: int = 16, seed: int = 0,
          overrides: tuple[str, ...] = ()) -> tuple[list[tuple[float, float, float, float]], float, dict]:
    """(rows of (sigma, with condition, null, with feedback maps), mean-image error, details).

    details: "per_view" {sigma: [error of each view, with condition]}, "copy_view0" (the
    condition latent taken as view 0's prediction; None when its shape differs).
    """
    cfg = load_config(preset, [*overrides, f"train.init={weights}"])
    objects = load_dataset(data, cfg, limit=n_objects)
    with tempfile.TemporaryDirectory() as tmp:  # the trainer wants a run folder; nothing is written to it
        tr = Trainer(cfg, objects, Path(tmp), "cpu")
    tr.model.eval()  # the weights as loaded; the trainer's own passes run on it
    codec, den, gen = tr.codec, tr.model.denoiser, torch.Generator().manual_seed(seed)
    views = torch.stack([o.views for o in objects])
    cond = torch.stack([o.cond[len(o.cond) // 2] for o in objects])
    B, V = views.shape[:2]
    x0 = codec.encode(composite(views, tr.background).flatten(0, 1)).unflatten(0, (B, V))
    noise = torch.randn(x0.shape, generator=gen)
    mean_err = float(((x0 - x0.mean(0, keepdim=True)) ** 2).mean())
    cond_latent, embeds = codec.encode_condition(cond), den.encode_image(cond)
    rows, per_view = [], {}
    copy0 = float(((cond_latent - x0[:, 0]) ** 2).mean()) if cond_latent.shape == x0[:, 0].shape else None
    for s in SIGMAS:
        sigma = torch.full((B,), s)
        c_skip, c_out, c_in, c_noise = (c.reshape(B, 1, 1, 1, 1) for c in edm_coefficients(sigma))
        n = dict(B=B, V=V, x=x0 + s * noise, sigma=sigma, c_skip=c_skip, c_out=c_out, c_in=c_in,
                 c_noise=c_noise.reshape(-1), cond_latent=cond_latent, embeds=embeds,
                 plucker=tr.plucker.expand(B, -1, -1, -1, -1))
        with_cond = tr._denoise(n)
        null = tr._denoise({**n, "cond_latent": cond_latent * 0, "embeds": embeds * 0})
        pred = codec.decode(with_cond.flatten(0, 1)).unflatten(0, (B, V))
        fed = tr._denoise(n, *tr._feedback_maps(tr.model.recon.forward_params(pred, tr.rig, sigma)))
        rows.append((s, *(float(((e - x0) ** 2).mean()) for e in (with_cond, null, fed))))
        per_view[s] = [float(v) for v in ((with_cond - x0) ** 2).mean(dim=(0, 2, 3, 4))]
    return rows, mean_err, {"per_view": per_view, "copy_view0": copy0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="an `o3d data synth` folder (held-out objects are best)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--objects", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument("--per-view", action="store_true", help="also the error per view, and of copying the condition into view 0")
    a = ap.parse_args(argv)
    try:
        rows, mean_err, details = probe(a.weights, a.data, a.preset, a.objects, a.seed, tuple(a.set))
    except (ConfigError, DatasetError) as e:  # bad weights, preset, --set or data folder
        raise SystemExit(f"probe_denoiser: {e}") from None
    print(f"x0 MSE of {a.weights} on {a.objects} objects of {a.data} (mean image: {mean_err:.4f})")
    print("| sigma | with condition | null condition | with feedback maps | mean image |")
    print("|---:|---:|---:|---:|---:|")
    for s, c, u, f in rows:
        print(f"| {s:g} | {c:.4f} | {u:.4f} | {f:.4f} | {mean_err:.4f} |")


    if a.per_view:
        pv = details["per_view"]
        n_views = len(next(iter(pv.values())))
        print()
        print("x0 MSE per view, with condition (view 0 = the input view)")
        print("| sigma | " + " | ".join(f"view {v}" for v in range(n_views)) + " |")
        print("|---:|" + "---:|" * n_views)
        for s, errs in pv.items():
            print(f"| {s:g} | " + " | ".join(f"{e:.4f}" for e in errs) + " |")
        if details["copy_view0"] is not None:
            print(f"copying the condition image into view 0: {details['copy_view0']:.4f}")


if __name__ == "__main__":
    main()
