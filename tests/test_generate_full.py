"""`o3d generate` through every stage with the tiny preset, small: outputs and mid-denoising resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from o3dcli.cli import app
from o3dcli.io.mesh import load_mesh
from o3dcli.io.ply import load_gaussians

SMALL = ["--set", "preprocess.size=16", "--no-progress"]


MESH_SMALL = ["--set", "mesh.texture_size=256", "--set", "mesh.resolution=64", "--set", "mesh.fusion_views=8",
              "--set", "mesh.fusion_size=64", "--set", "mesh.target_faces=2000"]


def test_generate_writes_every_asset(good_images, tmp_path, gltf_validator):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", str(out), "--steps", "2",
                                   "--save-intermediate", *SMALL, *MESH_SMALL])
    assert res.exit_code == 0, res.output
    assert "tiny.safetensors" in res.output  # the shipped weights, named
    a = out / "apple"
    g = load_gaussians(a / "gaussians.ply")
    assert len(g) == 1024 and torch_all_finite(g.means)
    assert Image.open(a / "views.png").size == (8 * 16, 16)
    gif = Image.open(a / "turntable.gif")
    assert gif.n_frames == 24 and gif.size == (192, 192)
    steps = sorted(p.name for p in (a / "intermediate").iterdir())
    assert steps == ["step_000.png", "step_001.png"]
    assert Image.open(a / "intermediate" / "step_000.png").size == (8 * 16, 3 * 16)  # views, RGB map, CCM map
    rep = json.loads((out / "o3d-report.json").read_text())["items"][0]
    assert rep["stages"]["diffusion"]["steps_run"] == 2 and rep["stages"]["diffusion"]["num_gaussians"] == 1024
    # the textured mesh: decimated to the target, UV-mapped, baked, valid glTF; the OBJ says the same
    glb, obj = load_mesh(a / "model.glb"), load_mesh(a / "model.obj")
    assert 0 < len(glb.faces) <= 2000 and glb.has_texture and glb.texture.shape[:2] == (256, 256)
    assert len(obj.faces) == len(glb.faces) and (a / "model.png").is_file()
    report = gltf_validator(a / "model.glb")
    assert (report["errors"], report["warnings"], report["infos"], report["hints"]) == (0, 0, 0, 0), report
    # seen from the input camera, the mesh shows the photo (a red disk), projected onto the texture
    from o3dcli.config import load_config
    from o3dcli.render.mesh import render_mesh
    from o3dcli.stages import generation_cameras

    front = render_mesh(glb, generation_cameras(load_config(a / "config.yaml"), 64)[:1])
    covered = front.alpha[0, 0] > 0.99
    assert covered.sum() > 200
    median = front.rgb[0][:, covered].median(dim=1).values.numpy()
    assert np.allclose(median, np.array([200, 40, 40]) / 255, atol=0.06), median
    assert set(rep["timings"]) == {"preprocess", "diffusion", "mesh_fusion", "mesh_simplify", "mesh_uv", "mesh_bake", "export"}


def test_changing_a_mesh_setting_reuses_the_diffusion(good_images, tmp_path):
    out = tmp_path / "out"
    args = ["generate", str(good_images / "apple.png"), "-o", str(out), "--steps", "1", *SMALL, *MESH_SMALL]
    assert CliRunner().invoke(app, args).exit_code == 0
    res = CliRunner().invoke(app, args[:-2] + ["--set", "mesh.target_faces=1000"])  # was the last override
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "o3d-report.json").read_text())["items"][0]
    assert rep["cached"] == ["preprocess", "diffusion", "mesh_fusion"]  # only simplify and later re-ran
    assert len(load_mesh(out / "apple" / "model.glb").faces) <= 1000
    # the photo's share of the texture is a bake setting: nothing before the bake re-runs
    res = CliRunner().invoke(app, args[:-2] + ["--set", "mesh.target_faces=1000", "--set", "mesh.input_weight=0.5"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "o3d-report.json").read_text())["items"][0]
    assert rep["cached"] == ["preprocess", "diffusion", "mesh_fusion", "mesh_simplify", "mesh_uv"]


def test_the_same_photo_under_two_names_gets_its_own_names_in_the_files(good_images, tmp_path):
    # the copy takes the other asset's cached stages but its export, which names the object after the asset
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    a.mkdir(), b.mkdir()
    (a / "apple.png").write_bytes((good_images / "apple.png").read_bytes())
    (b / "green apple.png").write_bytes((good_images / "apple.png").read_bytes())
    res = CliRunner().invoke(app, ["generate", str(a), str(b), "-o", str(out), "--steps", "1", "--formats",
                                   "glb,obj", *SMALL, *MESH_SMALL])
    assert res.exit_code == 0, res.output
    items = {i["name"]: i for i in json.loads((out / "o3d-report.json").read_text())["items"]}
    assert set(items["green apple"]["reused_from"]) == set(items["green apple"]["timings"]) - {"export"}
    for name, word in (("apple", "apple"), ("green apple", "green_apple")):
        assert f"o {word}" in (out / name / "model.obj").read_text().splitlines()
        raw = (out / name / "model.glb").read_bytes()
        assert f'"name":"{word}"'.encode() in raw and b"geometry_0" not in raw


def test_same_input_and_seed_give_byte_identical_files(good_images, tmp_path):
    # the meshes used to differ from run to run (open3d's marching cubes emits vertices in hash-map order)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", str(out), "--steps", "1",
                                       *SMALL, *MESH_SMALL])
        assert res.exit_code == 0, res.output
    for name in ("gaussians.ply", "model.glb", "model.obj", "model.png"):
        assert (outs[0] / "apple" / name).read_bytes() == (outs[1] / "apple" / name).read_bytes(), name


def torch_all_finite(t) -> bool:
    return bool(np.isfinite(t.numpy()).all())


def _generate(img, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "o3dcli.cli", "generate", str(img), "-o", str(out), *SMALL,
                             "--steps", "30", "--set", "diffusion.save_every=1", "--stop-after", "diffusion", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.interrupts
def test_killed_mid_denoising_resumes_to_the_same_result(good_images, tmp_path):
    img = good_images / "pear.png"
    ref = _generate(img, tmp_path / "ref")
    assert ref.wait(600) == 0, ref.stdout.read().decode()
    out = tmp_path / "out"
    p = _generate(img, out)
    deadline, step = time.time() + 300, 0
    while time.time() < deadline and step < 4:
        states = list((out / ".o3d").rglob("state.json")) if (out / ".o3d").exists() else []
        if states:
            try:
                step = json.loads(states[0].read_text())["meta"]["next_step"]
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert 4 <= step < 30, f"the kill should land mid-denoising (step {step})"
    assert not (out / "pear" / "gaussians.ply").exists()
    again = _generate(img, out)
    text = again.communicate(timeout=600)[0].decode()
    assert again.returncode == 0, text
    item = json.loads((out / "o3d-report.json").read_text())["items"][0]
    assert item["stages"]["diffusion"]["resumed_from"] >= 4
    # said where the run's output goes: its line (no terminal here) and its summary
    assert f"(denoising resumed at step {item['stages']['diffusion']['resumed_from']})" in " ".join(text.split())
    a, b = load_gaussians(tmp_path / "ref" / "pear" / "gaussians.ply"), load_gaussians(out / "pear" / "gaussians.ply")
    assert float((a.means - b.means).abs().max()) <= 1e-6
    assert float((a.colors - b.colors).abs().max()) <= 1e-6
    assert (tmp_path / "ref" / "pear" / "views.png").read_bytes() == (out / "pear" / "views.png").read_bytes()


def test_thread_count_does_not_invalidate_the_cache(good_images, tmp_path):
    out = tmp_path / "out"
    args = ["generate", str(good_images / "apple.png"), "-o", str(out), "--steps", "1", *SMALL, "--stop-after", "diffusion"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert CliRunner().invoke(app, args + ["--set", "runtime.threads=1"]).exit_code == 0
    assert json.loads((out / "o3d-report.json").read_text())["items"][0]["cached"] == ["preprocess", "diffusion"]


def test_every_setting_is_in_some_stage_key():
    """A config field that changes a result must be in that stage's key (else a stale cache hit);
    the fields left out on purpose are listed here."""
    import dataclasses

    from o3dcli.config import Config
    from o3dcli.mesh.config import MESH_FORMATS
    from o3dcli.stages import generate_stages

    keyed = set()
    every_format = Config()
    every_format.mesh.formats = MESH_FORMATS
    every_format.mesh.texture_format = "jpeg"
    every_format.mesh.draco = True
    every_format.mesh.crease_angle_deg = 30.0  # keyed when not the default
    for stage in generate_stages():
        if stage.key_extra:  # settings keyed only when they matter (e.g. for one format)
            keyed |= {f"mesh.{k}" for k in stage.key_extra(every_format) if hasattr(every_format.mesh, k)}
        for s in stage.sections:
            sec, _, field = s.partition(".")
            if field:
                keyed.add(s)
            else:
                keyed |= {f"{sec}.{f.name}" for f in dataclasses.fields(getattr(Config(), sec))}
    from o3dcli.pipeline import KEYED_AT_DEFAULT

    keyed -= set(KEYED_AT_DEFAULT)  # in the key, but always at the default
    unkeyed = {f"{sec.name}.{f.name}" for sec in dataclasses.fields(Config) if sec.name != "train"
               for f in dataclasses.fields(getattr(Config(), sec.name))} - keyed
    assert unkeyed == {"runtime.threads", "diffusion.save_every", "preprocess.max_pixels"}


def test_shipped_weights_refuse_another_architecture(good_images, tmp_path):
    res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", str(tmp_path / "o"),
                                   "--set", "denoiser.feedback_rgb=false", "--no-progress"])
    assert res.exit_code == 2
    assert "tiny.safetensors" in res.output and "denoiser.feedback_rgb" in res.output and "model.weights=none" in res.output
    assert not (tmp_path / "o" / "apple").exists()  # refused before any work


def test_unreadable_weights_file_is_a_usage_error(good_images, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", str(tmp_path / "o"),
                                   "--set", f"model.weights={bad}", "--no-progress"])
    assert res.exit_code == 2
    assert "broken.safetensors" in res.output and "not a readable safetensors file" in res.output


def test_a_cache_from_before_the_photo_was_kept_needs_no_new_diffusion(good_images, tmp_path):
    """A preprocess result cached without the 1024 px photo (o3d before the projection) keeps its
    key: the bake prepares the photo again from the source, and the texture is the same."""
    from safetensors.torch import load_file

    args = ["generate", str(good_images / "apple.png"), "--steps", "1", *SMALL, *MESH_SMALL]
    assert CliRunner().invoke(app, args + ["-o", str(tmp_path / "fresh")]).exit_code == 0
    out = tmp_path / "old"
    assert CliRunner().invoke(app, args + ["-o", str(out), "--stop-after", "diffusion"]).exit_code == 0
    (prepared,) = (out / ".o3d").rglob("prepared.safetensors")
    tensors = load_file(str(prepared))
    assert "photo" not in tensors and Image.open(prepared.parent / "input.png").size == (1024, 1024)
    # as an older o3d wrote it: input.png at the model's size,
    rgba = (tensors["rgba"].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(prepared.parent / "input.png")
    manifest = json.loads((prepared.parent / "manifest.json").read_text())  # with a manifest of names only
    (prepared.parent / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items()
                                                               if k not in ("sizes", "sha256")}))
    res = CliRunner().invoke(app, args + ["-o", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "o3d-report.json").read_text())["items"][0]
    assert rep["cached"] == ["preprocess", "diffusion"]
    assert (out / "apple" / "model.png").read_bytes() == (tmp_path / "fresh" / "apple" / "model.png").read_bytes()


def test_save_intermediate_does_not_key_the_mesh_stages(good_images, tmp_path):
    # the per-step PNGs are written beside the diffusion's result, which is the same with or without
    # them: the mesh stages made from it are shared (they were recomputed, about half a run)
    out = tmp_path / "out"

    def run(*args):
        res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", str(out), "--steps", "2",
                                       "--no-progress", *SMALL, *MESH_SMALL, *args])
        assert res.exit_code == 0, res.output
        return json.loads((out / "o3d-report.json").read_text())["items"][0]

    run("--save-intermediate")
    model = (out / "apple" / "model.glb").read_bytes()
    without = run()
    assert without["cached"] == ["preprocess", "mesh_fusion", "mesh_simplify", "mesh_uv", "mesh_bake", "export"]
    assert (out / "apple" / "model.glb").read_bytes() == model and not (out / "apple" / "intermediate").exists()
    again = run("--save-intermediate")
    assert len(again["cached"]) == 7 and (out / "apple" / "intermediate" / "step_001.png").is_file()
    # the asset records the entry it was made from (with intermediates): prune keeps it
    assert CliRunner().invoke(app, ["cache", "prune", str(out)]).exit_code == 0
    assert len(run("--save-intermediate")["cached"]) == 7
