"""`o3d train` through the CLI: a run, its resume, --time-limit, and the refusals."""

from __future__ import annotations

import csv
import signal

import pytest
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.commands.train import parse_duration
from o3dcli.synth.generate import synthesize

SMALL = ["preprocess.size=16", "train.batch_size=1", "train.extra_views=2", "train.warmup_steps=1",
         "train.checkpoint_every=1000", "train.log_every=1", "runtime.threads=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, 2, seed=0, size=32, extra_views=2)
    return root


def train(data, out, *args):
    sets = [a for kv in SMALL for a in ("--set", kv)]
    return CliRunner().invoke(app, ["train", "--data", str(data), "-o", str(out), "--no-progress", *sets, *map(str, args)])


def logged_steps(run):
    with open(run / "losses.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_a_run_writes_its_files_and_the_same_command_continues_it(data, tmp_path):
    res = train(data, tmp_path / "r", "--steps", 2)
    assert res.exit_code == 0, res.output
    assert "starting at step 0 of 2" in res.output
    for name in ("checkpoint.pt", "model.safetensors", "losses.csv", "config.yaml"):
        assert (tmp_path / "r" / name).is_file(), name
    res = train(data, tmp_path / "r", "--steps", 3)
    assert res.exit_code == 0, res.output
    assert "resuming at step 2 of 3" in res.output and "step 3/3" in res.output
    assert logged_steps(tmp_path / "r") == [1, 2, 3]


def test_time_limit_stops_with_a_checkpoint_and_the_run_continues(data, tmp_path):
    res = train(data, tmp_path / "t", "--steps", 100000, "--time-limit", "1s")
    assert res.exit_code == 3, res.output  # not finished: a script chaining runs must not go on
    assert "time limit 1s reached" in res.output
    assert (tmp_path / "t" / "checkpoint.pt").is_file()
    # the limit counts from the command's start: on a busy machine loading alone can take it all,
    # and the run still makes one step, so a job resubmitted on exit 3 always progresses
    done = logged_steps(tmp_path / "t")[-1]
    assert 1 <= done < 100000 and f"continue from step {done}" in res.output
    res = train(data, tmp_path / "t", "--steps", done + 1)
    assert res.exit_code == 0, res.output
    assert f"resuming at step {done} of {done + 1}" in res.output and "time limit" not in res.output
    assert logged_steps(tmp_path / "t")[-1] == done + 1


def test_a_time_limit_shorter_than_start_up_still_makes_a_step_per_run(data, tmp_path, monkeypatch):
    import o3dcli.commands.train as train_cmd

    monkeypatch.setattr(train_cmd, "parse_duration", lambda text: 1e-9)  # spent before the first step
    for want in (1, 2):
        res = train(data, tmp_path / "t", "--steps", 100, "--time-limit", "1s")
        assert res.exit_code == 3, res.output
        assert logged_steps(tmp_path / "t")[-1] == want and f"continue from step {want}" in res.output


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_with_a_checkpoint_and_a_nonzero_exit(data, tmp_path, monkeypatch, signum, code):
    # Ctrl-C (or a scheduler's SIGTERM) at step 1: the run saves and exits 128 + signal, so a script
    # chaining runs (scripts/train_tiny.sh) stops instead of going on from an unfinished one
    import o3dcli.train.trainer as trainer_mod

    real = trainer_mod.train

    def train_with_signal(trainer, steps, on_step=None, should_stop=lambda: False):
        def step_hook(step, parts, dt):
            if step == 1:
                signal.raise_signal(signum)  # to this thread: handled before the next step, under any load
            if on_step is not None:
                on_step(step, parts, dt)
        return real(trainer, steps, step_hook, should_stop=should_stop)

    monkeypatch.setattr(trainer_mod, "train", train_with_signal)
    res = train(data, tmp_path / "s", "--steps", 5)
    assert res.exit_code == code, res.output
    assert "continue from step 1" in res.output
    assert logged_steps(tmp_path / "s") == [1] and (tmp_path / "s" / "checkpoint.pt").is_file()
    monkeypatch.setattr(trainer_mod, "train", real)
    res = train(data, tmp_path / "s", "--steps", 2)
    assert res.exit_code == 0, res.output
    assert "resuming at step 1 of 2" in res.output


@pytest.mark.parametrize("text", ["90", "abc", "0s", "1h-5m", ""])
def test_time_limits_without_units_or_not_positive_are_usage_errors(data, tmp_path, text):
    res = train(data, tmp_path / "bad", "--steps", 1, "--time-limit", text)
    assert res.exit_code == 2
    assert "--time-limit" in res.output
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_a_bad_train_init_is_a_usage_error_naming_train_init(data, tmp_path):
    res = train(data, tmp_path / "r", "--steps", 1, "--set", "train.init=no-such-weights")
    assert res.exit_code == 2, res.output
    assert "train.init: no weights named 'no-such-weights'" in res.output and "model.weights" not in res.output
    assert not (tmp_path / "r").exists()
    (tmp_path / "empty-run").mkdir()
    res = train(data, tmp_path / "r", "--steps", 1, "--set", f"train.init={tmp_path / 'empty-run'}")
    assert res.exit_code == 2 and "is a folder without model.safetensors" in res.output


def test_a_precision_the_device_cannot_run_is_a_usage_error(data, tmp_path):
    """runtime.dtype=float16 on the CPU trained in float32 and was written into the run's
    config.yaml, so the run could not be used as a preset there (generate refuses it)."""
    res = train(data, tmp_path / "r", "--steps", 1, "--set", "runtime.device=cpu", "--set", "runtime.dtype=float16")
    assert res.exit_code == 2, res.output
    assert "runtime.dtype=float16 needs a CUDA device" in " ".join(res.output.split())
    assert not (tmp_path / "r").exists()


def test_a_run_folder_names_its_weights(data, tmp_path):
    assert train(data, tmp_path / "a", "--steps", 1).exit_code == 0
    res = train(data, tmp_path / "b", "--steps", 2, "--set", f"train.init={tmp_path / 'a'}")
    assert res.exit_code == 0, res.output
    from o3dcli.models.build import resolve_weights

    assert resolve_weights(str(tmp_path / "a")) == tmp_path / "a" / "model.safetensors"


def test_parse_duration():
    assert parse_duration("45s") == 45
    assert parse_duration("90m") == 5400
    assert parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400
    assert parse_duration(" 1.5H ") == 5400
    assert parse_duration("1h0m10s") == 3610
    for bad in ("90", "m", "1x", "-5m", "0m"):
        with pytest.raises(ValueError, match="duration|positive"):
            parse_duration(bad)


def test_a_missing_data_folder_is_a_usage_error_naming_it(tmp_path):
    res = train(tmp_path / "nowhere", tmp_path / "r", "--steps", 1)
    assert res.exit_code == 2
    assert "nowhere" in res.output


def test_an_output_that_is_a_file_is_a_usage_error(data, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    res = train(data, afile, "--steps", 1)
    assert res.exit_code == 2 and "not a folder" in res.output and afile.read_text() == "keep me"
    res = CliRunner().invoke(app, ["data", "synth", "-n", "1", "-o", str(afile), "--size", "16"])
    assert res.exit_code == 2 and "not a folder" in res.output and afile.read_text() == "keep me"


def test_without_a_progress_bar_each_checkpoint_prints_a_line(data, tmp_path):
    res = train(data, tmp_path / "p", "--steps", 4, "--set", "train.checkpoint_every=2")
    assert res.exit_code == 0, res.output
    assert "step 2/4: loss " in res.output and "step 4/4: loss " in res.output and "step 3/4:" not in res.output


def test_the_last_step_is_logged_between_log_every_steps(data, tmp_path):
    res = train(data, tmp_path / "l", "--steps", 3, "--set", "train.log_every=10")
    assert res.exit_code == 0, res.output
    assert logged_steps(tmp_path / "l") == [3]
    res = train(data, tmp_path / "l", "--steps", 4, "--set", "train.log_every=2")
    assert res.exit_code == 0, res.output
    assert logged_steps(tmp_path / "l") == [3, 4]


def test_under_torchrun_each_process_takes_its_own_gpu():
    from o3dcli.commands.train import rank_device

    ranks = {"WORLD_SIZE": "4", "LOCAL_RANK": "2", "RANK": "6"}
    assert rank_device("cuda", ranks) == ("cuda:2", None)
    assert rank_device("cuda:2", ranks) == ("cuda:2", None)
    dev, note = rank_device("cuda:0", ranks)  # every rank on GPU 0 would fail at the first collective
    assert dev == "cuda:2" and "--device cuda:0 under torchrun" in note and "CUDA_VISIBLE_DEVICES" in note
    assert rank_device("cpu", ranks) == ("cpu", None)  # gloo ranks share the CPU
    assert rank_device("cuda:1", {"WORLD_SIZE": "1"}) == ("cuda:1", None)  # one process: as asked
    assert rank_device("cuda:1", {}) == ("cuda:1", None)


@pytest.mark.parametrize("broken", ["loss", "gradient norm"])
def test_a_step_whose_loss_or_gradients_are_not_finite_stops_the_run_before_it_changes_the_weights(
        data, tmp_path, monkeypatch, broken):
    # a NaN from one bad object (or a learning rate too high) turned every weight into NaN, was saved
    # over the last good checkpoint, and the run exited 0
    import torch

    from o3dcli.models.checkpoints import read_metadata
    from o3dcli.train.trainer import Trainer

    run = tmp_path / "r"
    assert train(data, run, "--steps", 2).exit_code == 0
    real, calls = Trainer.losses, []

    def losses(self, batch):
        total, parts = real(self, batch)
        calls.append(1)
        if len(calls) == 2:  # the run's step 4
            if broken == "loss":
                total = total * float("nan")
            else:  # finite, with a NaN gradient: d sqrt(x) / dx at 0, times 0
                weight = next(self.model.parameters())
                total = total + torch.sqrt(weight.sum() * 0)
        return total, parts

    monkeypatch.setattr(Trainer, "losses", losses)
    res = train(data, run, "--steps", 6, "--set", "train.checkpoint_every=1")
    said = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert f"step 4: the {broken} is nan, not a finite number; the batch held synth_0000000" in said, said
    assert f"{run / 'checkpoint.pt'} (step 3) is unchanged" in said, said
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert int(state["step"]) == 3 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert read_metadata(run / "model.safetensors")["step"] == "3"
    monkeypatch.setattr(Trainer, "losses", real)
    res = train(data, run, "--steps", 4)  # the cause mended, the same command goes on from there
    assert res.exit_code == 0 and "resuming at step 3 of 4" in res.output, res.output


def test_changing_what_a_run_trains_is_refused_before_the_data_loads_pointing_at_train_init(data, tmp_path, monkeypatch):
    # it failed after loading the whole dataset, advising to delete the run
    import o3dcli.train.data as train_data

    run = tmp_path / "r"
    assert train(data, run, "--steps", 1).exit_code == 0
    real = train_data.load_dataset
    monkeypatch.setattr(train_data, "load_dataset", lambda *a, **k: pytest.fail("the data was loaded"))
    res = train(data, run, "--steps", 2, "--set", "train.modules=denoiser")
    said = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "trains train.modules=all; a run cannot change to or from train.modules=denoiser" in said, said
    assert f"give a new --output and --set train.init={run / 'model.safetensors'}" in said and "delete" not in said
    # all and recon train the same parameters: a run goes from one to the other (a curriculum)
    monkeypatch.setattr(train_data, "load_dataset", real)
    res = train(data, run, "--steps", 2, "--set", "train.modules=recon")
    assert res.exit_code == 0 and "resuming at step 1 of 2" in res.output, res.output
