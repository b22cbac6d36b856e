"""`o3d train` on a user's mistakes: damaged checkpoints, bad settings, a finished run, changed
settings, small renders, an object folder given as the data folder; and the run's file modes."""

from __future__ import annotations

import os
import shutil
import stat
import zipfile

import pytest
import torch
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.config import ConfigError, load_config
from o3dcli.models.checkpoints import CheckpointError
from o3dcli.synth.generate import synthesize
from o3dcli.train.data import DatasetError, load_dataset
from o3dcli.train.lock import RUN_LOCK
from o3dcli.train.trainer import CHECKPOINT, Trainer

from test_train_cli import SMALL, data, train  # noqa: E402,F401  (data: the module's fixture)


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """A run folder trained to step 2 through the CLI (tests copy it before changing it)."""
    run = tmp_path_factory.mktemp("runs") / "r"
    res = train(data, run, "--steps", 2)
    assert res.exit_code == 0, res.output
    return run


@pytest.fixture
def run(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "r")
    return tmp_path / "r"


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert "Traceback" not in output and len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    return lines[0]


# -- 1. a damaged checkpoint -------------------------------------------------------------------------

def test_a_truncated_checkpoint_is_a_one_line_usage_error_naming_it(data, run):
    ck = run / CHECKPOINT
    os.truncate(ck, ck.stat().st_size // 2)
    config = (run / "config.yaml").read_bytes()
    res = train(data, run, "--steps", 3)
    assert res.exit_code == 2, res.output
    line = _one_error_line(res.output)
    assert str(ck) in line and "truncated" in line and "delete it" in line
    assert ck.stat().st_size > 0 and (run / "config.yaml").read_bytes() == config  # nothing rewritten


def _state(run) -> dict:
    return torch.load(run / CHECKPOINT, weights_only=True)


def _save(state, path) -> None:
    torch.save(state, path)


def _damage(kind: str, run) -> None:
    ck = run / CHECKPOINT
    if kind == "truncated":
        os.truncate(ck, 1000)
    elif kind == "empty":
        os.truncate(ck, 0)
    elif kind == "not a zip":
        ck.write_text("hello\n")
    elif kind == "a zip, not a checkpoint":
        with zipfile.ZipFile(ck, "w") as z:
            z.writestr("notes.txt", "hello")
    elif kind == "damaged member":  # the first byte of the pickled index (its protocol opcode) overwritten in place
        raw = ck.read_bytes()
        at = raw.index(b"\x80\x02}q\x00(X\x04\x00\x00\x00step")
        ck.write_bytes(raw[:at] + b"\xff" + raw[at + 1:])
    elif kind == "not a dict":
        _save([1, 2], ck)
    elif kind == "missing keys":
        state = _state(run)
        del state["optimizer"], state["ema"]
        _save(state, ck)
    elif kind == "missing tensor":
        state = _state(run)
        state["model"].pop(next(iter(state["model"])))
        _save(state, ck)
    elif kind == "wrong shape":
        state = _state(run)
        name = next(k for k, v in state["ema"].items() if v.dim() >= 1 and v.shape[0] > 1)
        state["ema"][name] = state["ema"][name][:1].clone()
        _save(state, ck)
    elif kind == "bad optimizer":
        state = _state(run)
        state["optimizer"]["param_groups"][0]["params"] = state["optimizer"]["param_groups"][0]["params"][:3]
        _save(state, ck)
    elif kind == "bad step":
        state = _state(run)
        state["step"] = torch.tensor([1, 2])
        _save(state, ck)
    elif kind == "bad generators":
        state = _state(run)
        state["generators"] = [torch.zeros(3)]
        _save(state, ck)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated", "empty", "not a zip", "a zip, not a checkpoint", "damaged member",
                                  "not a dict", "missing keys", "missing tensor", "wrong shape", "bad optimizer",
                                  "bad step", "bad generators"])
def test_every_unusable_checkpoint_is_a_checkpoint_error_naming_the_file(data, run, kind):
    _damage(kind, run)
    cfg = load_config("tiny", SMALL)
    trainer = Trainer(cfg, load_dataset(data, cfg, limit=1), run)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(CheckpointError) as e:
        trainer.load()
    assert str(run / CHECKPOINT) in str(e.value) and "delete it" in str(e.value)
    assert "\n" not in str(e.value)
    assert trainer.step_count == 0 and all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_a_new_run_drops_the_loss_rows_of_a_run_without_checkpoint(data, run):
    # the checkpoint deleted (as a damaged one's message says to) or a run killed before its first
    # checkpoint: starting over at step 0 must not leave the old run's rows in losses.csv
    (run / CHECKPOINT).unlink()
    cfg = load_config("tiny", SMALL)
    trainer = Trainer(cfg, load_dataset(data, cfg, limit=1), run)
    assert not trainer.load()
    assert (run / "losses.csv").read_text().splitlines() == ["step,loss,diffusion,recon_gt,recon_pred,direct,feedback,sigma,lr,seconds"]


# -- 2. each setting blamed by its own name -------------------------------------------------------------

@pytest.mark.parametrize("key", ["steps", "batch_size", "checkpoint_every", "log_every", "extra_views",
                                 "warmup_steps", "grad_clip", "weight_decay", "p_std"])
def test_a_bad_training_setting_is_reported_under_its_own_name(key):
    value = 0 if key in ("steps", "batch_size", "checkpoint_every", "log_every", "p_std") else -1
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [f"train.{key}={value}"])
    assert str(e.value).startswith(f"bad value for 'train.{key}': {value}"), str(e.value)


# -- 3. file modes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_saved_weights_honour_the_umask_like_other_files(tmp_path, umask):
    from o3dcli.models.checkpoints import convert_weights, save_weights

    old = os.umask(umask)
    try:
        save_weights(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")
        convert_weights(tmp_path / "w.safetensors", tmp_path / "w16.safetensors", torch.float16)
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("plain.txt") == 0o666 & ~umask
    assert mode("w.safetensors") == 0o666 & ~umask and mode("w16.safetensors") == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "w.safetensors", "w16.safetensors"]  # no temporaries


def test_a_runs_files_all_have_the_same_mode(finished_run):
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in finished_run.iterdir()}
    assert len(set(modes.values())) == 1, modes


# -- 4. resuming a finished run, resuming with other settings ------------------------------------------

def _run_files(run) -> dict:
    """The run's files, bytes and times, but its lock file (which holds the pid of its holder)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir() if p.name != RUN_LOCK}


def test_fewer_steps_than_the_run_has_is_nothing_to_do_and_rewrites_nothing(data, run):
    files = _run_files(run)
    for steps in (1, 2):
        res = train(data, run, "--steps", steps, "--set", "train.lr=0.01")
        assert res.exit_code == 0, res.output
        assert f"already has 2 steps (>= {steps}); nothing to do" in res.output
        assert "resuming" not in res.output
        assert "settings changed since the run's" in res.output and "not applied" in res.output
        assert "train.lr" in res.output
        assert "rewritten" not in res.output  # the weights are the checkpoint's step
    assert _run_files(run) == files


def test_a_finished_run_says_so_before_loading_the_training_data(data, run, monkeypatch):
    # loading a large data set (ray-cast surface points per object) took minutes before "nothing to do"
    import o3dcli.train.data as data_module

    def no_loading(*a, **k):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(data_module, "load_dataset", no_loading)
    res = train(data, run, "--steps", 2)
    assert res.exit_code == 0 and "already has 2 steps (>= 2); nothing to do" in res.output, res.output
    assert "not applied" not in res.output  # nothing changed
    # weights behind the checkpoint (a save cut short): the trainer loads the run, and repairs them
    monkeypatch.undo()
    (run / "model.safetensors").unlink()
    res = train(data, run, "--steps", 2)
    assert res.exit_code == 0 and "rewritten from the checkpoint" in " ".join(res.output.split()), res.output
    assert (run / "model.safetensors").is_file()


def test_resuming_a_fine_tune_does_not_need_the_weights_it_started_from(data, run, tmp_path):
    # train.init is read when a run starts; resuming takes every weight from the checkpoint
    base = tmp_path / "base"
    shutil.copytree(run, base)
    tuned = tmp_path / "tuned"
    res = train(data, tuned, "--steps", 1, "--set", f"train.init={base}")
    assert res.exit_code == 0, res.output
    shutil.rmtree(base)
    res = train(data, tuned, "--steps", 2, "--set", f"train.init={base}")
    assert res.exit_code == 0 and "resuming at step 1 of 2" in res.output, res.output
    assert "settings changed" not in res.output
    assert f"init: {base}" in (tuned / "config.yaml").read_text()  # the record of what it started from stays
    res = train(data, tmp_path / "new", "--steps", 1, "--set", f"train.init={base}")  # a new run needs them
    assert res.exit_code == 2 and "train.init" in _one_error_line(res.output)


@pytest.mark.parametrize("args", [["--preset", "ouroboros3d-svd-lgm"], ["--set", "denoiser.image_encoder=clip"]])
def test_model_files_that_are_not_there_are_a_usage_error_before_anything_is_written(data, tmp_path, args):
    # the published preset's VAE, CLIP's folder: a traceback after the data had loaded, or at step 1
    res = CliRunner().invoke(app, ["train", "--data", str(data), "-o", str(tmp_path / "big"), "--no-progress",
                                   "--steps", "1", *args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "local files are not usable" in res.output, res.output
    assert not (tmp_path / "big").exists()


def test_a_run_stripped_of_its_checkpoint_and_weights_starts_again_as_a_run(data, run):
    (run / CHECKPOINT).unlink()
    (run / "model.safetensors").unlink()
    res = train(data, run, "--steps", 1)
    assert res.exit_code == 0 and "starting at step 0" in res.output, res.output


@pytest.mark.parametrize("kind", ["preset", "asset"])
def test_a_config_yaml_that_is_not_a_runs_is_never_replaced(data, tmp_path, kind):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "config.yaml").write_text("base: tiny\nmesh:\n  target_faces: 5000\n")
    if kind == "asset":
        (folder / "o3d-asset.json").write_text("{}")
    res = train(data, folder, "--steps", 1)
    assert res.exit_code == 2, res.output
    line = _one_error_line(res.output)
    assert "not an o3d train run's" in line and "another --output" in line, line
    assert (folder / "config.yaml").read_text() == "base: tiny\nmesh:\n  target_faces: 5000\n"
    assert not (folder / CHECKPOINT).exists() and not (folder / "model.safetensors").exists()


def test_resuming_on_other_data_is_said(data, run, tmp_path):
    import json

    assert json.loads((run / "data.json").read_text()) == {"data": str(data.resolve()), "limit": None, "objects": 2}
    res = train(data, run, "--steps", 3, "--limit", 1)
    assert res.exit_code == 0, res.output
    note = " ".join(res.output.split())
    assert "training data changed since this run's last start" in note and "limit None -> 1; objects 2 -> 1" in note
    res = train(data, run, "--steps", 4, "--limit", 1)  # the same again: nothing to say
    assert res.exit_code == 0 and "training data changed" not in res.output
    other = tmp_path / "copy"
    shutil.copytree(data, other)
    res = train(other, run, "--steps", 5, "--limit", 1)
    assert res.exit_code == 0 and f"data {data.resolve()} -> {other.resolve()}" in " ".join(res.output.split())


def test_each_start_is_kept_in_the_runs_history_and_a_new_seed_is_said_to_change_nothing(data, run):
    # config.yaml and data.json are rewritten at each start: that steps 0-2 ran at another learning
    # rate was lost, and "runtime.seed 0 -> 5" read as if the new seed were used
    import json

    (first,) = [json.loads(ln) for ln in (run / "starts.jsonl").read_text().splitlines()]
    assert first["step"] == 0 and first["settings_changed"] == {} and first["device"] == "cpu"
    res = train(data, run, "--steps", 3, "--set", "train.lr=0.01", "--seed", 5)
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "(runtime.seed changes nothing in a resumed run: its random state is the checkpoint's)" in said, said
    assert f"each start's changes are kept in {run / 'starts.jsonl'}" in said
    lines = [json.loads(ln) for ln in (run / "starts.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["step"] == 2
    assert lines[1]["settings_changed"]["train.lr"][1] == "0.01" and lines[1]["settings_changed"]["runtime.seed"][1] == "5"
    assert lines[1]["data_changed"] == {} and lines[1]["time"] >= first["time"]


def test_resuming_with_other_settings_names_each_change(data, run):
    lr = load_config("tiny", SMALL).train.lr
    res = train(data, run, "--steps", 3, "--set", "train.lr=0.01", "--set", "train.feedback_p=0.25")
    assert res.exit_code == 0, res.output
    assert "resuming at step 2 of 3" in res.output
    changes = next(ln for ln in res.output.splitlines() if ln.startswith("settings changed"))
    assert f"train.lr {lr:g} -> 0.01" in changes and "train.feedback_p 0.5 -> 0.25" in changes
    assert "train.steps" not in changes  # the run's total is what a resume changes
    assert "lr: 0.01" in (run / "config.yaml").read_text()
    res = train(data, run, "--steps", 4, "--set", "train.lr=0.01", "--set", "train.feedback_p=0.25")
    assert res.exit_code == 0, res.output
    assert "settings changed" not in res.output  # the same settings again: nothing to report



def test_resuming_with_another_architecture_names_the_settings_and_the_way_back(data, run):
    config = (run / "config.yaml").read_bytes()
    res = train(data, run, "--steps", 3, "--set", "denoiser.feedback_rgb=false")
    assert res.exit_code == 2, res.output
    line = _one_error_line(res.output)
    assert "another model architecture" in line and "denoiser.feedback_rgb: the run true, now false" in line, line
    assert f"--preset {run / 'config.yaml'}" in line, line
    assert (run / "config.yaml").read_bytes() == config  # nothing rewritten
    res = CliRunner().invoke(app, ["train", "--data", str(data), "-o", str(run), "--no-progress", "--steps", "3",
                                   "--preset", str(run / "config.yaml")])  # the way the message gives
    assert res.exit_code == 0 and "resuming at step 2 of 3" in res.output, res.output

# -- 5. renders smaller than the model -----------------------------------------------------------------

def test_renders_smaller_than_the_model_warn_once(tmp_path):
    synthesize(tmp_path / "d8", 2, seed=0, size=8, extra_views=2)
    res = train(tmp_path / "d8", tmp_path / "r", "--steps", 1)
    assert res.exit_code == 0, res.output
    assert res.output.count("smaller than the model's resolution") == 1, res.output
    assert "2 of 2 objects" in res.output and "8 px" in res.output and "upsampled" in res.output


def test_renders_at_the_models_size_or_larger_do_not_warn(data):
    cfg = load_config("tiny", SMALL)
    objs = load_dataset(data, cfg)
    assert [o.render_size for o in objs] == [32, 32]  # > preprocess.size 16: no warning (the CLI runs above)


# -- 6. an object's folder given as the data folder ---------------------------------------------------

def test_an_object_folder_given_as_the_data_folder_says_to_give_its_parent(data, tmp_path):
    one = data / "synth_00000000"
    with pytest.raises(DatasetError, match="looks like one object's folder: give its parent") as e:
        load_dataset(one, load_config("tiny", SMALL))
    assert str(data) in str(e.value)
    res = train(one, tmp_path / "r", "--steps", 1)
    assert res.exit_code == 2 and "give its parent" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as e:  # a folder that is no object's: no such hint
        load_dataset(empty, load_config("tiny", SMALL))
    assert "no object folders" in str(e.value) and "parent" not in str(e.value)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device", "r/checkpoint.pt.tmp"),
                                   RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")])
def test_a_full_disk_while_saving_is_one_error_line_and_the_last_checkpoint_is_kept(data, run, monkeypatch, error):
    # the run trained, then ended in a traceback from safetensors or torch.save
    before = _run_files(run)

    def full(self):
        raise error

    monkeypatch.setattr(Trainer, "save", full)
    res = train(data, run, "--steps", 3)
    assert res.exit_code == 1, res.output
    line = " ".join(res.output.split())
    assert "Traceback" not in res.output and f"error: cannot write the run in {run}" in line
    assert "No space left on device" in line and f"the last complete checkpoint is in {run / CHECKPOINT}" in line
    after = _run_files(run)
    assert all(after[name] == before[name] for name in (CHECKPOINT, "model.safetensors"))


def test_a_second_ctrl_c_before_any_checkpoint_says_nothing_was_saved(data, tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("o3dcli.train.trainer.train", interrupted)
    res = train(data, tmp_path / "new", "--steps", 3)
    assert res.exit_code == 130, res.output
    assert "no checkpoint had been saved yet: the next run starts at step 0" in " ".join(res.output.split())


@pytest.mark.parametrize("inside", ["", "runs/r"])
def test_a_run_folder_in_the_data_folder_is_refused(data, inside):
    # -o equal to -d wrote 85 MB of checkpoints among the training objects
    res = train(data, data / inside if inside else data, "--steps", 1)
    assert res.exit_code == 2 and "is the data folder" in " ".join(res.output.split()), res.output
    assert not (data / "runs").exists() and not (data / CHECKPOINT).exists()


def test_a_run_folder_is_a_preset_with_its_own_weights(data, run, tmp_path, monkeypatch):
    # `--preset RUN` or `--preset RUN/config.yaml`: the run's settings and weights; its config.yaml
    # alone records model.weights as the run started (none), which gave an untrained model
    from o3dcli.config import read_preset
    from o3dcli.models.build import describe_weights

    for ref in (run, run / "config.yaml"):
        cfg = load_config(str(ref))
        assert cfg.model.weights == str(run.resolve())
        assert describe_weights(cfg).startswith(str(run.resolve() / "model.safetensors")) and "training step 2" in describe_weights(cfg)
    shared = tmp_path / "shared"  # a run passed on without its checkpoint
    shared.mkdir()
    for name in ("config.yaml", "model.safetensors"):
        shutil.copy(run / name, shared / name)
    assert load_config(str(shared)).model.weights == load_config(str(shared / "config.yaml")).model.weights == str(shared.resolve())
    monkeypatch.chdir(run.parent)
    assert load_config(run.name).model.weights == str(run.resolve())  # a bare name that is no preset
    assert read_preset("tiny")[0][0] == "tiny.yaml"  # a preset's name still wins
    res = train(data, run, "--steps", 3)  # resuming reads the same config.yaml: no change reported
    assert res.exit_code == 0 and "settings changed" not in res.output, res.output


def test_eval_variants_take_run_folders_and_are_named_after_their_weights(run, tmp_path, monkeypatch):
    import o3dcli.eval.runner as runner_module
    from o3dcli.eval.runner import EvalUsageError

    seen = []

    def fake_run_eval(benchmark, data, objs, chosen, *a, **k):
        seen.append([(v.name, v.config.model.weights) for v in chosen])
        raise EvalUsageError("stop here")  # the variants are what this test is about

    monkeypatch.setattr(runner_module, "run_eval", fake_run_eval)
    base = ["eval", "--benchmark", "synthetic", "--limit", "1", "-o", str(tmp_path / "ev"), "--no-progress"]
    CliRunner().invoke(app, [*base, "--variants", f"tiny,{run}"])
    CliRunner().invoke(app, [*base, "--set", f"model.weights={run}"])
    assert seen == [[("tiny", "tiny"), ("r", str(run.resolve()))], [(f"tiny-r", str(run))]]


def test_a_run_folder_without_its_weights_or_any_folder_says_what_a_preset_folder_needs(run, tmp_path):
    from o3dcli.config import RUN_TRACES
    from o3dcli.train.trainer import LOSS_CSV

    assert RUN_TRACES == (CHECKPOINT, LOSS_CSV)  # written out in config, which imports no torch
    (run / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="an o3d train run folder without config.yaml or model.safetensors"):
        load_config(str(run))
    (tmp_path / "photos").mkdir()
    with pytest.raises(ConfigError, match="a folder, but neither an o3d train run .* nor an asset folder"):
        load_config(str(tmp_path / "photos"))


def test_a_run_named_like_shipped_weights_is_warned_about(run, tmp_path, monkeypatch):
    # `o3d train -o tiny`, then --set model.weights=tiny or --preset tiny: o3d's, silently
    shutil.copytree(run, tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    for option, args in (("--setmodel.weightstiny", ["--set", "model.weights=tiny"]), ("--presettiny", ["--preset", "tiny"])):
        res = CliRunner().invoke(app, ["info", *args])
        said = "".join(res.output.split())
        assert said.count(f"{option}takeso3d'stiny,notthefoldertinyhere;write./tinyforthefolder") == 1, res.output
        assert "tiny.safetensors" in res.output  # o3d's, as documented
    res = CliRunner().invoke(app, ["info"])  # the default preset: nothing the user named
    assert res.exit_code == 0 and "notthefolder" not in "".join(res.output.split()), res.output
    # ./tiny is the folder, as --preset and as weights ("weights:" names what loads; the table above
    # lists the weights o3d has, tiny.safetensors among them)
    res = CliRunner().invoke(app, ["info", "--preset", "./tiny"])
    said = "".join(res.output.split())
    assert res.exit_code == 0 and "notthefolder" not in said, res.output
    assert f"weights:{tmp_path / 'tiny' / 'model.safetensors'}(trainingstep2)" in said, res.output
    res = CliRunner().invoke(app, ["info", "--set", "model.weights=./tiny"])
    said = "".join(res.output.split())
    assert "weights:tiny/model.safetensors(trainingstep2)" in said and "notthefolder" not in said, res.output
    assert "--preset./tinyrunsit" in said  # the run trained at 16 px: pointed to as ./tiny, not o3d's tiny


def test_a_runs_weights_at_other_settings_than_it_trained_with_are_warned_about(run):
    # the run trained at 16 px (SMALL); --set model.weights=RUN takes tiny's 32 px
    res = CliRunner().invoke(app, ["info", "--set", f"model.weights={run}"])
    said = "".join(res.output.split())  # rich wraps the log line within the path
    assert "wastrainedatpreprocess.size=16" in said and f"--preset{run}runsit" in said, res.output
    res = CliRunner().invoke(app, ["info", "--preset", str(run)])
    assert res.exit_code == 0 and "was trained at" not in res.output, res.output


def test_a_runs_checkpoint_given_as_weights_points_to_the_run(run):
    from o3dcli.models.build import check_weights_fit

    with pytest.raises(ConfigError, match=rf"checkpoint.pt is the training run's checkpoint.*--set model.weights={run}$"):
        check_weights_fit(run / CHECKPOINT, load_config("tiny"))


def test_the_shipped_model_at_other_settings_than_it_trained_with_is_warned_about():
    res = CliRunner().invoke(app, ["info", "--set", "preprocess.size=40"])
    said = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "the tiny model (shipped with o3d) was trained at preprocess.size=32 (its preset's) and runs here at 40" in said
    res = CliRunner().invoke(app, ["info", "--set", "mesh.target_faces=20000"])
    assert res.exit_code == 0 and "was trained at" not in res.output, res.output
