"""Joint training: losses are finite and fall, variants switch the right terms, resume is exact."""

from __future__ import annotations

import pytest
import torch

from o3dcli.config import load_config
from o3dcli.synth.generate import synthesize
from o3dcli.train.data import composite, load_dataset, match_rig, sample_batch
from o3dcli.train.trainer import Trainer, train

SMALL = ["preprocess.size=16", "train.batch_size=1", "train.extra_views=2", "train.warmup_steps=1",
         "train.checkpoint_every=1000", "train.log_every=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, 2, seed=0, size=32, extra_views=2)
    return root


def objects(dataset, *extra):
    cfg = load_config("tiny", SMALL + list(extra))
    return cfg, load_dataset(dataset, cfg)


def test_dataset_shapes_and_supervision(dataset):
    cfg, objs = objects(dataset)
    o = objs[0]
    assert o.views.shape == (8, 4, 16, 16) and o.extra_views.shape == (2, 4, 16, 16)
    assert o.cond[0].shape == (3, 16, 16) and len(o.cond) == 3
    s = cfg.recon.splat_size
    assert o.points.shape == (4, 3, s, s) and o.point_mask.shape == (4, 1, s, s)
    # the surface points lie in the unit box, and the hit mask agrees with the rendered alpha
    hit = o.point_mask[:, 0] > 0
    assert hit.any() and o.points.permute(0, 2, 3, 1)[hit].abs().max() <= 0.5 + 1e-4


def test_condition_images_are_recentred_around_the_presets_foreground_ratio(dataset):
    from o3dcli.train.data import cond_ratios

    cfg = load_config("tiny", SMALL + ["preprocess.foreground_ratio=0.6", "preprocess.size=32"])
    assert cfg.train.cond_image == "recentred"
    assert cond_ratios(cfg) == pytest.approx((0.55, 0.6, 0.65))
    o = load_dataset(dataset, cfg, limit=1)[0]
    # the object's extent (non-white pixels) in each condition image follows its ratio
    extent = []
    for c in o.cond:
        fg = (c < 0.98).any(0)
        rows, cols = fg.any(1).nonzero(), fg.any(0).nonzero()
        extent.append(max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) + 1)
    assert extent[0] < extent[1] < extent[2]
    assert abs(extent[1] - 0.6 * 32) <= 2


def test_condition_image_is_the_input_view_aligned_with_view_0(dataset):
    from o3dcli.train.data import composite

    cfg, objs = objects(dataset, "train.cond_image=view")
    for o in objs:
        assert len(o.cond) == 1
        assert torch.equal(o.cond[0], composite(o.views[0], cfg.preprocess.background))


def test_rig_matching_finds_the_input_view():
    cfg = load_config("tiny")
    from o3dcli.stages import generation_cameras

    cams = generation_cameras(cfg, 16)
    perm = [3, 0, 5, 1, 7, 2, 4, 6]  # the rig views shuffled
    assert match_rig(cams.c2w[perm], cfg)[0] == [perm.index(i) for i in range(8)]
    assert match_rig(cams.c2w[1:], cfg) == []  # the input view is missing


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_resumes_exactly(dataset, tmp_path):
    torch.set_num_threads(1)
    cfg, objs = objects(dataset)
    straight = Trainer(cfg, objs, tmp_path / "a")
    train(straight, 4)
    first = Trainer(cfg, objs, tmp_path / "b")
    train(first, 2)  # stops and checkpoints at step 2, as after Ctrl-C
    resumed = Trainer(cfg, objs, tmp_path / "b")
    assert resumed.load() and resumed.step_count == 2
    train(resumed, 4)
    assert torch.equal(_params(straight.model), _params(resumed.model))
    assert torch.equal(_params(straight.ema), _params(resumed.ema))
    rows = (tmp_path / "b" / "losses.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 5
    # killed between checkpoints: rows logged after the last checkpoint are dropped on resume, not repeated
    killed = Trainer(cfg, objs, tmp_path / "b")
    assert killed.load()
    train(killed, 6, should_stop=lambda: killed.step_count >= 5)  # stops (and saves) at 5
    with open(tmp_path / "b" / "losses.csv", "a") as f:
        f.write("6,9.9,0,0,0,0,0,0,0,0\n")  # as if step 6 was logged, then the process was killed
    again = Trainer(cfg, objs, tmp_path / "b")
    assert again.load() and again.step_count == 5
    steps = [int(r.split(",")[0]) for r in (tmp_path / "b" / "losses.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5]


def test_variants_switch_their_terms(dataset, tmp_path):
    torch.set_num_threads(1)
    cfg, objs = objects(dataset, "train.joint=false")
    t = Trainer(cfg, objs, tmp_path / "dec")
    parts = t.step()
    assert parts.recon_pred == 0 and parts.feedback == 0  # decoupled: no reconstruction of predictions
    cfg, objs = objects(dataset, "train.feedback_p=1.0")
    parts = Trainer(cfg, objs, tmp_path / "fb").step()
    assert parts.feedback == 1 and parts.recon_pred > 0
    cfg, objs = objects(dataset, "train.feedback_p=1.0", "denoiser.feedback_rgb=false", "denoiser.feedback_ccm=false")
    assert Trainer(cfg, objs, tmp_path / "nofb").step().feedback == 0  # no adapters: no feedback pass


def test_recon_only_training_leaves_the_denoiser_alone(dataset, tmp_path):
    torch.set_num_threads(1)
    cfg, objs = objects(dataset, "train.modules=recon", "train.lr=1e-3")
    t = Trainer(cfg, objs[:1], tmp_path / "rec")
    den0, rec0 = _params(t.model.denoiser), _params(t.model.recon)
    parts = [t.step() for _ in range(31)]
    assert all(p.diffusion == 0 and p.recon_pred == 0 and p.feedback == 0 for p in parts)
    assert torch.equal(_params(t.model.denoiser), den0)  # not run, not decayed
    assert not torch.equal(_params(t.model.recon), rec0)
    assert sum(p.loss for p in parts[-3:]) < 0.8 * sum(p.loss for p in parts[:3])


def test_denoiser_only_training_keeps_the_reconstructor_and_still_uses_feedback(dataset, tmp_path):
    torch.set_num_threads(1)
    cfg, objs = objects(dataset, "train.modules=denoiser", "train.feedback_p=0.5", "train.sigma_sampling=schedule")
    t = Trainer(cfg, objs, tmp_path / "den")
    den0, rec0 = _params(t.model.denoiser), _params(t.model.recon)
    parts = [t.step() for _ in range(6)]
    assert all(p.recon_gt == 0 and p.recon_pred == 0 and p.loss == p.diffusion > 0 for p in parts)
    assert {p.feedback for p in parts} == {0, 1}  # both the plain and the self-conditioned pass ran
    assert torch.equal(_params(t.model.recon), rec0)  # frozen: no gradient, no weight decay
    assert torch.equal(_params(t.ema.recon), rec0)
    assert not torch.equal(_params(t.model.denoiser), den0)
    # the self-conditioned pass sees maps rendered from the reconstruction: they change its output
    b = sample_batch(objs, 1, 0, torch.Generator().manual_seed(0))
    n = t._noised(b)
    with torch.no_grad():
        pred = t.codec.decode(t._denoise(n).flatten(0, 1)).unflatten(0, (1, 8))
        maps = t._feedback_maps(t.model.recon.forward_params(pred, t.rig, n["sigma"]))
        assert not torch.allclose(t._denoise(n, *maps), t._denoise(n))


def test_losses_fall_when_overfitting_one_object(dataset, tmp_path):
    torch.set_num_threads(1)
    cfg, objs = objects(dataset, "train.lr=1e-3")
    t = Trainer(cfg, objs[:1], tmp_path / "fit")
    first = [t.step() for _ in range(3)]
    for _ in range(25):
        t.step()
    last = [t.step() for _ in range(3)]
    mean = lambda xs, k: sum(getattr(x, k) for x in xs) / len(xs)  # noqa: E731
    assert mean(last, "recon_gt") < 0.8 * mean(first, "recon_gt")
    assert mean(last, "direct") < 0.8 * mean(first, "direct")


def _ddp_worker(rank, world, dataset, run, init_file):
    import os

    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg, objs = objects(dataset, "train.lr=1e-3")
        t = Trainer(cfg, objs, run)
        train(t, 2)
        signal = t.max_rank(15 if rank == 1 else 0)  # only rank 1 got SIGTERM: both exit 143
        torch.save({"params": _params(t.model), "ema": _params(t.ema), "gen": t.gen.get_state(), "signal": signal},
                   f"{run}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_torchrun_ranks_stay_in_sync(dataset, tmp_path):
    """Two gloo processes (as torchrun starts them): each draws its own batches, gradients are
    averaged, so both replicas end identical; the checkpoint keeps every rank's random state."""
    import torch.multiprocessing as mp

    run = tmp_path / "ddp"
    run.mkdir()
    mp.spawn(_ddp_worker, args=(2, dataset, run, tmp_path / "init"), nprocs=2, join=True)
    r0, r1 = (torch.load(run / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(r0["params"], r1["params"]) and torch.equal(r0["ema"], r1["ema"])
    assert not torch.equal(r0["gen"], r1["gen"])  # different data on each rank
    assert r0["signal"] == r1["signal"] == 15
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert int(ckpt["step"]) == 2 and len(ckpt["generators"]) == 2
    assert torch.equal(ckpt["generators"][1], r1["gen"])
    # the same two steps in one process (rank 0's batches only) end elsewhere: the gradients were shared
    cfg, objs = objects(dataset, "train.lr=1e-3")
    alone = Trainer(cfg, objs, tmp_path / "alone")
    train(alone, 2)
    assert not torch.allclose(_params(alone.model), r0["params"])


def test_parameters_no_rank_used_are_left_alone_under_torchrun(dataset, tmp_path):
    """train.modules=recon never runs the denoiser: in one process AdamW skips its parameters (no
    gradient); averaged over ranks they must stay without one, not get zeros that weight decay and
    Adam state then act on. One gloo process stands for the ranks (an all-reduce over one)."""
    import torch.distributed as dist

    cfg, objs = objects(dataset, "train.modules=recon", "train.lr=1e-3")
    assert cfg.train.weight_decay > 0
    t = Trainer(cfg, objs, tmp_path / "r")
    denoiser = _params(t.model.denoiser)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        t.world = 2  # as under torchrun: step() averages the gradients over the ranks
        t.step()
    finally:
        dist.destroy_process_group()
    assert torch.equal(_params(t.model.denoiser), denoiser)
    assert all(p.grad is None and p not in t.opt.state for p in t.model.denoiser.parameters())
    assert any(p in t.opt.state for p in t.model.recon.parameters())  # the reconstructor did train


def test_a_background_is_composited_on_the_images_device():
    from o3dcli.train.data import composite

    rgba = torch.rand(2, 4, 8, 8, device="meta")  # any device but the CPU: a CUDA batch in training
    assert composite(rgba, (1.0, 1.0, 1.0)).device == rgba.device


def test_a_new_run_starts_from_scratch_not_from_the_shipped_weights(dataset, tmp_path):
    import dataclasses

    from o3dcli.models.build import build_models

    cfg, objs = objects(dataset)
    assert cfg.model.weights == "tiny"  # the preset generates with the shipped weights...
    t = Trainer(cfg, objs, tmp_path / "r")
    scratch = build_models(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights="none"))).model
    shipped = build_models(cfg).model
    assert torch.equal(_params(t.model), _params(scratch))  # ...but training starts from train.init = none
    assert not torch.equal(_params(t.model), _params(shipped))
    cfg, objs = objects(dataset, "train.init=tiny")  # fine-tuning is asked for explicitly
    assert torch.equal(_params(Trainer(cfg, objs, tmp_path / "ft").model), _params(shipped))


def test_fine_tuning_can_add_modules_the_weights_lack(dataset, tmp_path):
    from o3dcli.models.build import build_models
    from o3dcli.models.checkpoints import CheckpointError

    shipped = build_models(load_config("tiny", SMALL)).model
    cfg, objs = objects(dataset, "train.init=tiny", "denoiser.conv_encoder_grid=4")
    t = Trainer(cfg, objs, tmp_path / "grow")
    assert t.new_parameters == ["denoiser.image_encoder.pos"]
    grown = dict(t.model.named_parameters())
    for name, p in shipped.named_parameters():  # everything the file has is loaded...
        assert torch.equal(grown[name], p), name
    assert t.model.denoiser.encode_image(torch.rand(1, 3, 16, 16)).shape == (1, 5, 64)  # ...plus 2x2 cells
    # a file that does not fit (a tensor of another shape) is refused, naming the file
    cfg, objs = objects(dataset, "train.init=tiny", "denoiser.cross_attention_dim=32")
    with pytest.raises(CheckpointError, match="tiny.safetensors"):
        Trainer(cfg, objs, tmp_path / "bad")


def test_an_object_without_mesh_or_extra_views_does_not_take_them_from_the_others(dataset, tmp_path):
    # an Objaverse-style object (no mesh, no extra renders) batched with a full one: the full one
    # keeps its surface points and extra views, and its direct loss weighs as in a full batch
    import dataclasses

    from o3dcli.train import losses as L

    cfg, (full, other) = objects(dataset)
    bare = dataclasses.replace(other, points=None, point_mask=None, extra_views=other.extra_views[:0],
                               extra_c2w=other.extra_c2w[:0])
    gen = torch.Generator().manual_seed(0)
    batches = [sample_batch([full, bare], 4, 2, gen) for _ in range(8)]
    mixed = next(b for b in batches if 0 < int(b.has_points.sum()) < 4)
    chosen = [full if h else bare for h in mixed.has_points.tolist()]
    for o, ev, ec in zip(chosen, mixed.extra_views, mixed.extra_c2w):
        assert len(ev) == len(ec) == len(o.extra_views)  # 2 for the full object, 0 for the bare one
    assert all(torch.equal(p, full.points) for p in mixed.points[mixed.has_points])
    t = Trainer(cfg, [full, bare], tmp_path / "run")
    sup = t._supervision(mixed)
    params = t.model.recon.forward_params(composite(sup[0], t.background), t.rig, torch.zeros(4))
    d = L.direct_loss(params, *sup[3], cfg.recon.splat_size)
    keep = mixed.has_points
    alone = L.direct_loss({k: v[keep] for k, v in params.items()}, mixed.points[keep], mixed.point_mask[keep],
                          keep[keep], cfg.recon.splat_size)
    assert float(d.detach()) > 0 and torch.allclose(d.detach(), alone.detach() * keep.float().mean())


def test_loss_rows_are_interval_means_and_a_resumed_run_writes_the_same_rows(dataset, tmp_path):
    import csv

    torch.set_num_threads(1)
    cfg, objs = objects(dataset, "train.log_every=3")
    steps = {}
    straight = Trainer(cfg, objs, tmp_path / "a")
    train(straight, 7, on_step=lambda n, parts, dt: steps.setdefault(n, parts))

    def rows(run):
        with open(run / "losses.csv") as f:
            return {int(r["step"]): r for r in csv.DictReader(f)}

    a = rows(tmp_path / "a")
    assert sorted(a) == [3, 6, 7]
    for row, span in ((3, (1, 2, 3)), (6, (4, 5, 6)), (7, (7,))):
        for field in ("loss", "diffusion", "recon_gt", "recon_pred", "direct"):
            want = sum(getattr(steps[n], field) for n in span) / len(span)
            assert float(a[row][field]) == pytest.approx(want, abs=2e-6), (row, field)
        assert float(a[row]["feedback"]) == pytest.approx(sum(steps[n].feedback for n in span) / len(span), abs=1e-3)
    first = Trainer(cfg, objs, tmp_path / "b")
    train(first, 7, should_stop=lambda: first.step_count >= 5)  # stopped between rows: a row for 4-5
    idle = Trainer(cfg, objs, tmp_path / "b")
    assert idle.load()
    train(idle, 7, should_stop=lambda: True)  # stopped again before a step: no second row for 4-5
    assert sorted(rows(tmp_path / "b")) == [3, 5] and len((tmp_path / "b" / "losses.csv").read_text().splitlines()) == 3
    resumed = Trainer(cfg, objs, tmp_path / "b")
    assert resumed.load() and resumed.step_count == 5
    train(resumed, 7)
    b = rows(tmp_path / "b")
    assert sorted(b) == [3, 5, 6, 7]
    assert float(b[5]["loss"]) == pytest.approx((steps[4].loss + steps[5].loss) / 2, abs=2e-6)
    for n in (3, 6, 7):  # step 6's row covers 4-6 across the stop, as without it
        assert {k: v for k, v in b[n].items() if k != "seconds"} == {k: v for k, v in a[n].items() if k != "seconds"}
