"""The joint trainer: one step of Ouroboros3D's objective, EMA, checkpoints, exact resume.

One step (batch of B objects, V rig views, paper Alg. 1):
  x0 = encode(views); sigma ~ lnN(p_mean, p_std^2); x = x0 + sigma n
  F = denoiser(c_in x, c_noise, cond (dropped with cond_drop_p), cameras, zero maps)
  x0_hat = c_skip x + c_out F
  G_gt  = recon(views, sigma = 0);  L = recon loss(G_gt) + direct(G_gt)
  joint: G_hat = recon(decode(x0_hat), sigma) -> + recon loss(G_hat) + direct(G_hat)
  with p = feedback_p: maps = render(G_hat) (detached unless detach_maps=false),
      x0_hat' from a second denoiser pass on the same x with the maps; the
      diffusion loss uses x0_hat' instead of x0_hat
  L += diffusion loss
Decoupled (joint = false): the reconstructor learns from ground-truth views only
and the denoiser from the diffusion loss only, each as if trained alone.
Reconstructor only (modules = "recon"): L = recon loss(G_gt) + direct(G_gt); the
denoiser is not run (LGM-style pre-training of the reconstructor).
Denoiser only (modules = "denoiser"): L = diffusion loss; the reconstructor is frozen and
only renders the feedback maps (with p = feedback_p, from recon(decode(x0_hat), sigma)).

Every random draw comes from one torch.Generator whose state is checkpointed, so
a run stopped and resumed gives the same weights as an uninterrupted run.

A run checkpoint is read, each entry checked, by o3dcli.train.checkpoint.read_checkpoint.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from o3dcli.atomic import atomic_write_bytes, atomic_write_text
from o3dcli.config import Config, dump_config
from o3dcli.diffusion.edm import edm_coefficients, sample_schedule_sigma, sample_training_sigma
from o3dcli.geometry.cameras import Cameras
from o3dcli.models.checkpoints import CheckpointError, compare_shapes, state_dict_shapes
from o3dcli.train import losses as L
from o3dcli.train.checkpoint import START_OVER, read_checkpoint
from o3dcli.train.data import Batch, TrainObject, composite, sample_batch

CHECKPOINT = "checkpoint.pt"
EMA_WEIGHTS = "model.safetensors"
LOSS_CSV = "losses.csv"
RUN_CONFIG = "config.yaml"
LOSS_FIELDS = ("step", "loss", "diffusion", "recon_gt", "recon_pred", "direct", "feedback", "sigma", "lr", "seconds")


class NonFiniteLoss(RuntimeError):
    """A training step's loss or gradients were not finite numbers; the step was not applied (the
    weights, EMA and optimiser are as after the step before)."""


@dataclass
class StepLosses:
    loss: float
    diffusion: float
    recon_gt: float
    recon_pred: float
    direct: float
    feedback: int
    sigma: float


class Trainer:
    """Holds models, EMA, optimiser and the random state; `step()` runs one optimiser step."""

    def __init__(self, cfg: Config, objects: list[TrainObject], run_dir: Path, device: str = "cpu"):
        from o3dcli.geometry.rays import plucker_rays, relative_to
        from o3dcli.models.build import build_models, load_init_weights
        from o3dcli.stages import generation_cameras

        self.cfg, self.objects, self.run_dir, self.device = cfg, objects, Path(run_dir), device
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        # from train.init (default "none": a seeded random init), not from the preset's shipped weights
        built = build_models(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights="none")), device)
        # a run resumed from its checkpoint takes every weight from it: train.init, which may be gone by
        # now, is not read
        resuming = (self.run_dir / CHECKPOINT).is_file()
        self.new_parameters = [] if resuming else load_init_weights(built.model, cfg, cfg.train.init)
        self.model, self.codec = built.model.train(), built.codec
        if cfg.train.modules == "denoiser":  # frozen: it only renders the feedback maps
            self.model.recon.eval().requires_grad_(False)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        if self.world > 1:  # torchrun: one process per GPU/CPU group, gradients averaged over ranks
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
            self._broadcast_state()
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.runtime.seed * 1000 + self.rank)
        self.step_count = 0
        self.saved_step: int | None = None
        """The step of the run folder's checkpoint (None: none saved or resumed from yet)."""
        self.interval: list[list[float]] = []
        """Per step since the last losses.csv row: its losses, feedback (0/1), ln sigma and seconds."""
        self.repaired_weights: str | None = None
        """Set by `load` when model.safetensors was not at the checkpoint's step and was rewritten:
        what was wrong with it ("was at step 4", "was missing")."""
        size = cfg.preprocess.size
        self.rig = generation_cameras(cfg, size).to(device)
        self.plucker = plucker_rays(relative_to(self.rig, 0))[None].to(device)  # [1, V, 6, S, S]
        self.map_size = size * cfg.denoiser.adapter_unshuffle
        self.background = tuple(cfg.preprocess.background)

    # -- one step -------------------------------------------------------------------------

    def _extra_cameras(self, c2w: Tensor) -> list[Cameras | None]:
        out = []
        for m in c2w:
            if len(m) == 0:
                out.append(None)
                continue
            r = self.rig
            n = len(m)
            out.append(Cameras(m.to(self.device), r.fx[:1].expand(n), r.fy[:1].expand(n), r.cx[:1].expand(n),
                               r.cy[:1].expand(n), r.width, r.height))
        return out

    def _supervision(self, batch: Batch) -> tuple:
        """What the reconstruction losses compare against: rig views, extra cameras and views, surface points."""
        dev = self.device
        points = None
        if batch.points is not None:
            points = (batch.points.to(dev), batch.point_mask.to(dev), batch.has_points.to(dev))
        return batch.views.to(dev), self._extra_cameras(batch.extra_c2w), [e.to(dev) for e in batch.extra_views], points

    def _recon_terms(self, images: Tensor, sigma: Tensor, sup: tuple) -> tuple[dict, Tensor, Tensor]:
        """Reconstruct from `images` at noise level `sigma`: (parameters, render loss, direct loss)."""
        views, extra_cams, extra, points = sup
        t = self.cfg.train
        p = self.model.recon.forward_params(images, self.rig, sigma)
        r = L.render_loss(p, self.rig, views, extra_cams, extra, self.background, t.mask_weight)
        d = L.direct_loss(p, *points, self.cfg.recon.splat_size) if points is not None else r * 0
        return p, r, d

    def recon_losses(self, batch: Batch) -> tuple[Tensor, StepLosses]:
        """train.modules = "recon": the reconstructor alone, from the ground-truth views at sigma 0."""
        t, sup = self.cfg.train, self._supervision(batch)
        B = sup[0].shape[0]
        _, r, d = self._recon_terms(composite(sup[0], self.background), torch.zeros(B, device=self.device), sup)
        total = t.recon_weight * r + t.direct_weight * d
        return total, StepLosses(float(total.detach()), 0.0, float(r.detach()), 0.0, float(d.detach()), 0, 0.0)

    def _draw_sigma(self, n: int) -> Tensor:
        t, d = self.cfg.train, self.cfg.diffusion
        if t.sigma_sampling == "schedule":
            return sample_schedule_sigma(n, self.gen, d.sigma_min, d.sigma_max)
        return sample_training_sigma(n, self.gen, t.p_mean, t.p_std)

    def _noised(self, batch: Batch) -> dict:
        """The denoiser's inputs for one batch: clean and noisy views, condition (dropped with
        cond_drop_p), noise levels and EDM coefficients (random draws in a fixed order)."""
        t, dev = self.cfg.train, self.device
        den = self.model.denoiser
        views = batch.views.to(dev)
        B, V = views.shape[:2]
        rgb = composite(views, self.background)  # [B, V, 3, S, S]
        x0 = self.codec.encode(rgb.flatten(0, 1)).unflatten(0, (B, V))
        cond = batch.cond.to(dev)
        keep = (torch.rand(B, generator=self.gen) >= t.cond_drop_p).float().to(dev)
        cond_latent = self.codec.encode_condition(cond) * keep.reshape(B, 1, 1, 1)
        embeds = den.encode_image(cond) * keep.reshape(B, 1, 1)
        sigma = self._draw_sigma(B).to(dev)
        noise = torch.randn(x0.shape, generator=self.gen).to(dev)
        x = x0 + sigma.reshape(B, 1, 1, 1, 1) * noise
        c_skip, c_out, c_in, c_noise = (c.reshape(B, 1, 1, 1, 1) for c in edm_coefficients(sigma))
        return dict(B=B, V=V, rgb=rgb, x0=x0, x=x, sigma=sigma, c_skip=c_skip, c_out=c_out, c_in=c_in,
                    c_noise=c_noise.reshape(-1), cond_latent=cond_latent, embeds=embeds,
                    plucker=self.plucker.expand(B, -1, -1, -1, -1))

    def _denoise(self, n: dict, rgb_map: Tensor | None = None, ccm_map: Tensor | None = None) -> Tensor:
        """x0_hat from one denoiser pass on the batch `n` (from _noised); a map left None counts as zeros."""
        d = self.cfg.denoiser
        F = self.model.denoiser(n["c_in"] * n["x"], n["c_noise"], n["cond_latent"], n["plucker"],
                                image_embeds=n["embeds"], rgb_map=rgb_map if d.feedback_rgb else None,
                                ccm_map=ccm_map if d.feedback_ccm else None)
        return n["c_skip"] * n["x"] + n["c_out"] * F

    def _feedback_maps(self, params: dict) -> tuple[Tensor, Tensor]:
        return L.feedback_maps(params, self.rig, self.background, self.map_size)

    def denoiser_losses(self, batch: Batch) -> tuple[Tensor, StepLosses]:
        """train.modules = "denoiser": the diffusion loss alone; the frozen reconstructor renders the maps."""
        cfg, t = self.cfg, self.cfg.train
        n = self._noised(batch)
        uses_maps = cfg.denoiser.feedback_rgb or cfg.denoiser.feedback_ccm
        feedback = uses_maps and float(torch.rand(1, generator=self.gen)) < t.feedback_p
        maps = (None, None)
        if feedback:  # the first pass only feeds the reconstructor: no gradient needed
            with torch.no_grad():
                pred = self.codec.decode(self._denoise(n).flatten(0, 1)).unflatten(0, (n["B"], n["V"]))
                maps = self._feedback_maps(self.model.recon.forward_params(pred, self.rig, n["sigma"]))
        l_diff = L.diffusion_loss(self._denoise(n, *maps), n["x0"], n["sigma"])
        f = float(l_diff.detach())
        return l_diff, StepLosses(f, f, 0.0, 0.0, 0.0, int(feedback), float(n["sigma"].mean()))

    def losses(self, batch: Batch) -> tuple[Tensor, StepLosses]:
        cfg, t, dev = self.cfg, self.cfg.train, self.device
        if t.modules == "recon":
            return self.recon_losses(batch)
        if t.modules == "denoiser":
            return self.denoiser_losses(batch)
        n = self._noised(batch)
        B, sigma = n["B"], n["sigma"]
        x0_hat = self._denoise(n)
        sup = self._supervision(batch)
        recon_terms = lambda images, s: self._recon_terms(images, s, sup)  # noqa: E731

        _, r_gt, d_gt = recon_terms(n["rgb"], torch.zeros(B, device=dev))
        r_pred = d_pred = torch.zeros((), device=dev)
        feedback = 0
        x0_final = x0_hat
        if t.joint:
            pred_images = self.codec.decode(x0_hat.flatten(0, 1)).unflatten(0, (B, n["V"]))
            p_hat, r_pred, d_pred = recon_terms(pred_images, sigma)
            uses_maps = cfg.denoiser.feedback_rgb or cfg.denoiser.feedback_ccm
            if uses_maps and float(torch.rand(1, generator=self.gen)) < t.feedback_p:
                feedback = 1
                src = {k: v.detach() for k, v in p_hat.items()} if t.detach_maps else p_hat
                x0_final = self._denoise(n, *self._feedback_maps(src))
        l_diff = L.diffusion_loss(x0_final, n["x0"], sigma)
        total = l_diff + t.recon_weight * (r_gt + r_pred) + t.direct_weight * (d_gt + d_pred)
        f = lambda v: float(v.detach())  # noqa: E731
        return total, StepLosses(f(total), f(l_diff), f(r_gt), f(r_pred), f(d_gt + d_pred), feedback, f(sigma.mean()))

    # -- several processes (torchrun) -------------------------------------------------------
    # A step calls the denoiser up to twice and the reconstructor up to three times, on inner
    # modules, so DistributedDataParallel's forward hooks would not see them: gradients are
    # instead averaged explicitly after backward, in buckets (same result, any call pattern).

    def _broadcast_state(self) -> None:
        """Every rank starts from rank 0's weights (they are seeded alike; this makes it certain)."""
        import torch.distributed as dist

        with torch.no_grad():
            for t in list(self.model.state_dict().values()) + list(self.ema.state_dict().values()):
                dist.broadcast(t, 0)

    def _average_gradients(self, bucket: int = 1 << 24) -> None:
        import torch.distributed as dist

        params = [p for p in self.model.parameters() if p.requires_grad]
        # A parameter another rank used but this one did not contributes zeros here. One no rank
        # used keeps no gradient, as in a single process, where AdamW then leaves it alone: a zero
        # gradient would still decay its weight and give it optimiser state (the whole denoiser,
        # every step of a train.modules=recon run).
        used = torch.tensor([float(p.grad is not None) for p in params], device=self.device)
        dist.all_reduce(used)
        params = [p for p, u in zip(params, used.tolist()) if u > 0]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        i = 0
        while i < len(params):
            group, n = [], 0
            while i < len(params) and (not group or n + params[i].numel() <= bucket):
                group.append(params[i])
                n += params[i].numel()
                i += 1
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            dist.all_reduce(flat)
            flat /= self.world
            for p, g in zip(group, flat.split([p.numel() for p in group])):
                p.grad.copy_(g.view_as(p))

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when it is true on any (so all ranks stop after the same step)."""
        return bool(self.max_rank(int(flag)))

    def max_rank(self, value: int) -> int:
        """The largest of every rank's `value`, on every rank (a collective: all ranks must call it)."""
        if self.world == 1:
            return int(value)
        import torch.distributed as dist

        t = torch.tensor([int(value)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def lr_at(self, step: int) -> float:
        w = self.cfg.train.warmup_steps
        return self.cfg.train.lr * min(1.0, (step + 1) / max(1, w))

    def step(self) -> StepLosses:
        t = self.cfg.train
        batch = sample_batch(self.objects, t.batch_size, t.extra_views, self.gen)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step_count)
        self.opt.zero_grad(set_to_none=True)
        total, parts = self.losses(batch)
        total.backward()
        if self.world > 1:
            self._average_gradients()
        # the gradients' norm (clipped to train.grad_clip where set): one NaN in it would make every weight NaN
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
        self._check_finite(total.detach(), norm, batch)
        self.opt.step()
        self._update_ema()
        self.step_count += 1
        return parts

    def _check_finite(self, loss: Tensor, norm: Tensor, batch) -> None:
        """NonFiniteLoss, on every rank alike, when the loss or the gradients' norm is not finite on
        any (one reduction a step): the step stops before the weights change. The message names the
        batches of the ranks whose loss was not finite (the gradients are averaged over all ranks)."""
        finite_loss, finite_norm = bool(torch.isfinite(loss)), bool(torch.isfinite(norm))
        if not self.any_rank(not (finite_loss and finite_norm)):
            return
        what, value = ("loss", float(loss)) if not finite_loss else ("gradient norm", float(norm))
        mine = None if finite_loss and finite_norm else (what, value, sorted(set(batch.names)))
        found = [mine]
        if self.world > 1:  # every rank is here: the gather is safe
            import torch.distributed as dist

            found = [None] * self.world
            dist.all_gather_object(found, mine)
        bad = [f for f in found if f is not None]
        what, value = next(((w, v) for w, v, _ in bad if w == "loss"), bad[0][:2])
        names = sorted({n for w, _, ns in bad if w == what for n in ns})
        objects = f"; the batch held {', '.join(names)}" if names else ""
        raise NonFiniteLoss(f"step {self.step_count + 1}: the {what} is {value}, not a finite number{objects}")

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = min(self.cfg.train.ema_decay, (1 + self.step_count) / (10 + self.step_count))
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p.detach(), 1 - d)

    # -- checkpoints ------------------------------------------------------------------------

    def save(self) -> Path:
        """Write the EMA weights, the run's config.yaml and the resumable checkpoint, each atomically.
        Called on every rank: the ranks' random states are gathered (each draws its own batches),
        rank 0 writes.

        The checkpoint is written last: it is the commit point. A process killed (or a second Ctrl-C)
        before it leaves the previous checkpoint, which the next run resumes from (and `load` puts the
        EMA weights back to its step); never a checkpoint of the last step beside older weights."""
        gens = [self.gen.get_state()]
        if self.world > 1:
            import torch.distributed as dist

            gens = [None] * self.world
            dist.all_gather_object(gens, self.gen.get_state())
        if self.rank != 0:
            self.saved_step = self.step_count  # rank 0 writes it
            return self.run_dir / CHECKPOINT
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "step": torch.tensor(self.step_count),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "generator": gens[0],
            "generators": list(gens),
            "log_interval": torch.tensor(self.interval, dtype=torch.float64).reshape(-1, 8),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        self._save_ema_weights()
        atomic_write_text(self.run_dir / RUN_CONFIG, dump_config(self.cfg))
        atomic_write_bytes(self.run_dir / CHECKPOINT, buf.getvalue())  # last: the commit point
        self.saved_step = self.step_count
        return self.run_dir / CHECKPOINT

    def _save_ema_weights(self) -> None:
        from o3dcli.models.build import save_model

        save_model(self.ema, self.cfg, self.run_dir / EMA_WEIGHTS, extra={"step": self.step_count})

    def _check_ema_weights(self) -> str | None:
        """After a resume: when model.safetensors is not at the checkpoint's step (a save interrupted
        between its files, or a run of an o3d that wrote the checkpoint first), rewrite it from the
        checkpoint's EMA weights. Returns what was wrong with it, None when it was in step."""
        from o3dcli.models.checkpoints import read_metadata

        path = self.run_dir / EMA_WEIGHTS
        if not path.is_file():
            why = "was missing"
        else:
            try:
                step = read_metadata(path).get("step")
            except Exception:  # safetensors raises its own error types for a damaged header
                step, why = None, "could not be read"
            else:
                why = f"was at step {step}" if step is not None else "had no step"
            if step == str(self.step_count):
                return None
        self._save_ema_weights()
        return why

    def load(self) -> bool:
        """Resume from the run folder's checkpoint if there is one (weights_only: no pickled code).

        CheckpointError naming the file when it cannot be read (truncated, not a checkpoint) or does
        not fit this trainer (missing entries, other tensor names or shapes); nothing is loaded then.
        Without a checkpoint the run starts at step 0, and losses.csv rows of a run killed before its
        first checkpoint (or whose checkpoint was deleted) are dropped: they are re-run."""
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            if self.rank == 0:
                self._trim_log()
            return False
        state = read_checkpoint(path)
        for name, module in (("model", self.model), ("ema", self.ema)):
            diff = compare_shapes(state_dict_shapes(state[name]), state_dict_shapes(module))
            if diff:
                raise CheckpointError(f"{path}: its {name} weights do not fit this run's model ({diff.describe()}); "
                                      f"{START_OVER}")
        try:
            self.opt.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError) as e:  # other trainable parameters (train.modules changed?)
            raise CheckpointError(f"{path}: its optimizer state does not fit this run's trainable parameters "
                                  f"({e}; was train.modules changed? To go on from this run's weights training "
                                  f"other modules, give a new --output and --set train.init={self.run_dir / EMA_WEIGHTS}); "
                                  f"{START_OVER}") from None
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        gens = state["generators"]
        if self.rank < len(gens):
            self.gen.set_state(gens[self.rank])
        else:  # more ranks than the run was saved with: a fresh stream per rank and step
            self.gen.manual_seed(self.cfg.runtime.seed * 1000 + self.rank + 1_000_003 * state["step"])
        self.step_count = self.saved_step = int(state["step"])
        # the steps since the last losses.csv row (absent from checkpoints of o3d before 2026-12-06)
        self.interval = state["log_interval"].tolist() if "log_interval" in state else []
        if self.rank == 0:
            self._trim_log()
            self.repaired_weights = self._check_ema_weights()
        return True

    def _trim_log(self) -> None:
        """Drop losses.csv rows logged after the checkpoint (a kill between checkpoints): they are re-run."""
        path = self.run_dir / LOSS_CSV
        if not path.is_file():
            return
        lines = path.read_text().splitlines(keepends=True)
        step = lambda ln: ln.split(",", 1)[0]  # noqa: E731
        keep = lines[:1] + [ln for ln in lines[1:] if step(ln).isdigit() and int(step(ln)) <= self.step_count]
        if len(keep) != len(lines):
            atomic_write_bytes(path, "".join(keep).encode())

    def record(self, parts: StepLosses, seconds: float) -> None:
        """Add a step's losses to the interval the next losses.csv row averages."""
        self.interval.append([parts.loss, parts.diffusion, parts.recon_gt, parts.recon_pred, parts.direct,
                              float(parts.feedback), math.log(max(parts.sigma, 1e-12)), seconds])

    def log(self, keep: bool = False) -> None:
        """Append a losses.csv row for the steps recorded since the last one (LOSS_FIELDS: the
        interval's mean of each loss, the share of its steps that ran the feedback pass, the
        geometric mean of their noise levels, the learning rate at the row's step and the mean
        seconds per step). `keep`: go on averaging the same interval afterwards (the row written
        when a run stops between log_every steps; a resumed run's next row covers the whole
        interval, as an uninterrupted run's does)."""
        if not self.interval:
            return
        mean = [sum(column) / len(self.interval) for column in zip(*self.interval)]
        loss, diffusion, recon_gt, recon_pred, direct, feedback, log_sigma, seconds = mean
        path = self.run_dir / LOSS_CSV
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(LOSS_FIELDS)
            w.writerow([self.step_count, f"{loss:.6f}", f"{diffusion:.6f}", f"{recon_gt:.6f}", f"{recon_pred:.6f}",
                        f"{direct:.6f}", f"{feedback:.3g}", f"{math.exp(log_sigma):.4f}",
                        f"{self.lr_at(self.step_count - 1):.3g}", f"{seconds:.3f}"])
        if not keep:
            self.interval = []


def train(trainer: Trainer, steps: int, on_step=None, should_stop=lambda: False) -> int:
    """Run until `steps` total steps (or should_stop()); checkpoint every N steps and at the end."""
    t = trainer.cfg.train
    main = trainer.rank == 0
    ran = False
    while trainer.step_count < steps and not trainer.any_rank(should_stop()):
        t0 = time.perf_counter()
        parts = trainer.step()
        dt = time.perf_counter() - t0
        ran = True
        if main:  # rank 0 logs (and saves the interval with the checkpoint)
            trainer.record(parts, dt)
        if main and trainer.step_count % t.log_every == 0:
            trainer.log()
        if trainer.step_count % t.checkpoint_every == 0:
            trainer.save()
        if on_step:
            on_step(trainer.step_count, parts, dt)
    if main and ran:  # the run's last step is always in losses.csv, between log_every steps too
        trainer.log(keep=True)
    trainer.save()
    return trainer.step_count
