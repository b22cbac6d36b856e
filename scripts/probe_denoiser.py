"""How well does a denoiser predict the clean views at each noise level? Prints a table.

    python scripts/probe_denoiser.py WEIGHTS --data DIR [--preset tiny] [--objects 16] [--seed 0]

For each sigma, the x0-prediction error (mean squared, in the codec's latent space, over all
views) of one denoiser pass with the condition image, without it (the classifier-free "null"
condition), and with the feedback maps the reconstructor renders from the first pass (the
recursive step the sampler takes). The reference row is the error of always answering the
mean clean image of the objects probed: a denoiser that does not beat it at some sigma has
not learned that noise level. Same objects, noise and condition variants for every sigma.
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
          overrides: tuple[str, ...] = ()) -> tuple[list[tuple[float, float, float, float]], float]:
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
    rows = []
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
    return rows, mean_err


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="an `o3d data synth` folder (held-out objects are best)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--objects", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    a = ap.parse_args(argv)
    try:
        rows, mean_err = probe(a.weights, a.data, a.preset, a.objects, a.seed, tuple(a.set))
    except (ConfigError, DatasetError) as e:  # bad weights, preset, --set or data folder
        raise SystemExit(f"probe_denoiser: {e}") from None
    print(f"x0 MSE of {a.weights} on {a.objects} objects of {a.data} (mean image: {mean_err:.4f})")
    print("| sigma | with condition | null condition | with feedback maps | mean image |")
    print("|---:|---:|---:|---:|---:|")
    for s, c, u, f in rows:
        print(f"| {s:g} | {c:.4f} | {u:.4f} | {f:.4f} | {mean_err:.4f} |")


if __name__ == "__main__":
    main()
