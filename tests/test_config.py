import dataclasses
import json

import pytest
import yaml

from o3dcli.config import (
    Config,
    ConfigError,
    available_presets,
    dump_config,
    field_docs,
    load_config,
    valid_keys,
)
from o3dcli.config_view import describe


def test_defaults_and_preset_and_overrides():
    base = Config()
    assert base.preprocess.size == 256
    cfg = load_config("tiny")
    assert cfg.preprocess.size == 32  # the tiny preset overrides the default
    cfg = load_config("tiny", ["preprocess.size=128", "runtime.seed=7", "preprocess.background=[0, 0.5, 1]"])
    assert cfg.preprocess.size == 128 and cfg.runtime.seed == 7
    assert cfg.preprocess.background == (0.0, 0.5, 1.0)
    assert isinstance(cfg.preprocess.background[0], float)


def test_exponent_without_dot_is_a_float():
    assert load_config("tiny", ["train.lr=1e-3"]).train.lr == 1e-3  # YAML 1.1 would read a string


def test_int_accepted_for_float_but_not_the_reverse():
    assert load_config("tiny", ["preprocess.foreground_ratio=1"]).preprocess.foreground_ratio == 1.0
    with pytest.raises(ConfigError, match="preprocess.size"):
        load_config("tiny", ["preprocess.size=64.5"])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("preprocess.sise=3", "did you mean 'preprocess.size'"),
        ("preproces.size=3", "did you mean 'preprocess.size'"),
        ("size=3", "did you mean 'preprocess.size'"),
        ("meshh.target_faces=3", "did you mean 'mesh.target_faces'"),  # the section fixed first, not 'mesh.remesh'
        ("preprocess.size=abc", "'abc' is not int"),
        ("preprocess.matting=rembgg", "did you mean 'rembg'"),
        ("preprocess.background=[1, 1]", "exactly 3"),
        ("preprocess.foreground_ratio=1.5", "in [0.05, 1]"),
        ("cameras.azimuths=[0, 90]", "cameras.elevations"),
        ("runtime.device=gpu", "runtime.device"),
        ("train.sigma_sampling=uniform", "'uniform' is not 'lognormal' | 'schedule'"),
        ("train.sigma_sampling=schedul", "did you mean 'schedule'"),
        ("train.modules=unet", "'unet' is not 'all' | 'recon' | 'denoiser'"),
        ("preprocess.size", "expected section.key=value"),
    ],
)
def test_override_errors_name_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [override])
    assert needle in str(e.value)


def test_unknown_key_with_nothing_close_lists_what_there_is():
    with pytest.raises(ConfigError) as e:  # no such section: the sections, not every key
        load_config("tiny", ["foo.bar=1"])
    assert "sections: runtime, preprocess" in str(e.value) and "mesh.target_faces" not in str(e.value)
    with pytest.raises(ConfigError) as e:  # a known section: its own keys only
        load_config("tiny", ["mesh.zzzzqq=1"])
    assert "keys of 'mesh'" in str(e.value) and "mesh.target_faces" in str(e.value)
    assert "preprocess.size" not in str(e.value)


def _runner():
    """A CliRunner that keeps stderr apart from stdout: click 8.2 and later always do; before, only
    when asked (typer's floor, 0.15.4, allows click 8.1)."""
    import inspect

    from typer.testing import CliRunner

    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)
    return CliRunner()


def test_info_and_presets_answer_on_stdout():
    # what these commands are asked for can be piped; errors and progress go to stderr
    from o3dcli.cli import app

    for args, needle in ((["info"], "torch"), (["presets", "list"], "tiny"), (["presets", "show", "tiny"], "target_faces: 20000")):
        res = _runner().invoke(app, args)
        assert res.exit_code == 0 and needle in res.stdout and res.stderr == "", (args, res.stderr)
    res = _runner().invoke(app, ["info", "--preset", "nope"])
    assert res.exit_code == 2 and "unknown preset" in res.stderr and res.stdout == ""  # refused before any table


def test_unknown_preset_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        load_config("tiyn")


@pytest.mark.parametrize("name, meant", [("TINY", "tiny"), ("Tiny", "tiny"), ("tnyi", "tiny"),
                                         ("OUROBOROS3D-SVD-LGM", "ouroboros3d-svd-lgm"), ("svd-lgm", "ouroboros3d-svd-lgm")])
def test_unknown_preset_in_another_case_or_misspelt_names_the_preset(name, meant):
    from o3dcli.cli import app

    with pytest.raises(ConfigError, match=f"did you mean '{meant}'"):
        load_config(name)
    res = _runner().invoke(app, ["info", "-p", name])
    assert res.exit_code == 2 and f"did you mean '{meant}'" in res.stderr and res.stdout == ""
    assert "did you mean" not in str(pytest.raises(ConfigError, load_config, "zzzzzz").value)


def test_choices_and_formats_are_read_in_any_case():
    # what --formats already did for `--formats GLB,usdz`, --set and presets do too
    cfg = load_config("tiny", ["mesh.formats=GLB, stl,glb", "mesh.method=Carve", "mesh.texture_format=PNG"])
    assert cfg.mesh.formats == ("glb", "stl") and cfg.mesh.method == "carve" and cfg.mesh.texture_format == "png"
    # one choice in one order (the export is keyed by it): `obj,glb` is what `glb,obj` makes
    assert load_config("tiny", ["mesh.formats=stl,OBJ,usdz,glb"]).mesh.formats == ("glb", "obj", "usdz", "stl")
    assert load_config("tiny", ["mesh.formats=obj,glb"]).mesh.formats == load_config("tiny", []).mesh.formats
    with pytest.raises(ConfigError, match="did you mean 'carve'"):
        load_config("tiny", ["mesh.method=Carv"])
    cfg = load_config("tiny", ["train.modules=Recon", "train.sigma_sampling=Schedule", "train.cond_image=View"])
    assert (cfg.train.modules, cfg.train.sigma_sampling, cfg.train.cond_image) == ("recon", "schedule", "view")
    with pytest.raises(ConfigError, match=r"'mesh.formats': fbx; give one or more of glb, obj, usdz, stl$"):
        load_config("tiny", ["mesh.formats=GLB,fbx"])  # the bad one named, no Python list
    with pytest.raises(ConfigError, match=r"'mesh.formats': glbb; .*\(did you mean glb\?\)"):
        load_config("tiny", ["mesh.formats=glbb,obj"])
    from o3dcli.mesh.config import MeshConfig

    with pytest.raises(ConfigError, match="'mesh.formats'"):  # from Python, not only through a preset
        MeshConfig(formats=(["glb"],)).check()


def test_list_fields_take_comma_separated_values():
    # `--set mesh.formats=glb,stl` is one YAML string: a list field reads it as its items, each checked
    cfg = load_config("tiny", ["mesh.formats=glb,stl", "preprocess.background=1, 0.5,0", "recon.down_attention=true,false,true",
                               "recon.input_views=0", "denoiser.added_time_ids=6,127,2e-2"])
    assert cfg.mesh.formats == ("glb", "stl")
    assert cfg.preprocess.background == (1.0, 0.5, 0.0) and isinstance(cfg.preprocess.background[0], float)
    assert cfg.recon.down_attention == (True, False, True)
    assert cfg.recon.input_views == (0,)
    assert cfg.denoiser.added_time_ids == (6.0, 127.0, 0.02)
    assert load_config("tiny", ["mesh.formats=[glb, stl]"]) == load_config("tiny", ["mesh.formats=glb,stl"])
    with pytest.raises(ConfigError) as e:  # a bad item is named, with its place
        load_config("tiny", ["recon.down_channels=16,abc,64"])
    assert "'recon.down_channels'" in str(e.value) and "'abc' is not int (item 2 of 3)" in str(e.value)
    with pytest.raises(ConfigError, match=r"'mesh.formats'.*stll"):
        load_config("tiny", ["mesh.formats=glb,stll"])
    with pytest.raises(ConfigError, match="exactly 3"):
        load_config("tiny", ["preprocess.background=1,1"])
    with pytest.raises(ConfigError) as e:  # what is still not a list says how to write one
        load_config("tiny", ["mesh.formats=null"])
    assert "[glb, stl] or a,b,c" in str(e.value) and "--formats glb,stl" in str(e.value)


def _invoke(*args):
    from o3dcli.cli import app

    return _runner().invoke(app, list(args))


def test_presets_show_is_yaml_one_line_a_key_at_any_width():
    from o3dcli.config_view import compact_lines
    from o3dcli.console import out

    cfg = load_config("tiny")
    n_keys, n_sections = len(valid_keys()), len(dataclasses.fields(Config))
    for width in (40, 80, 200):
        lines = [code + comment for code, comment in compact_lines(cfg, width, ["preset tiny: " + "a description " * 20])]
        assert max(len(line) for line in lines) <= width, width
        # one line a key (was 1,773 lines at 80 columns); at 40 columns a comment may take its own line
        assert len(lines) <= (n_keys + 2 * n_sections + 2) * (2 if width < 80 else 1) + 10
        assert yaml.safe_load("\n".join(lines)) == cfg.to_dict()  # the comments are YAML comments: it loads as the preset
    res = _invoke("presets", "show", "tiny", "--set", "mesh.target_faces=5000")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= out.width and len(lines) < n_keys + 2 * n_sections + 20
    assert yaml.safe_load(res.stdout) == load_config("tiny", ["mesh.target_faces=5000"]).to_dict()
    texture = next(line for line in lines if line.lstrip().startswith("texture_format:"))
    assert texture.split("#")[0].strip() == "texture_format: png" and "# Image format of the texture" in texture
    assert "o3d presets show tiny KEY" in lines[1]


def test_presets_show_says_which_values_a_set_gave():
    flat = lambda text: " ".join(text.split())  # noqa: E731
    res = _invoke("presets", "show", "tiny", "--set", "mesh.texture_size=512", "mesh.texture_size")
    assert res.exit_code == 0, res.stderr  # tiny keeps o3d's 1024: the 512 is the --set's, not the preset's
    assert "type: int; default: 1024; set by --set (the preset keeps the default)" in flat(res.stdout)
    res = _invoke("presets", "show", "tiny", "--set", "train.p_mean=0.5", "train.p_mean")
    assert "type: float; default without a preset: 1.0; set by --set (the preset has 0.0)" in flat(res.stdout)
    assert "set by --set" not in _invoke("presets", "show", "tiny", "--set", "train.p_mean=0.5", "mesh.texture_size").stdout


def test_presets_show_keys_and_long_give_the_full_text():
    rows = {key: (value, tname, doc) for key, value, tname, doc in describe(load_config("tiny"))}
    flat = lambda text: " ".join(text.split())  # noqa: E731
    res = _invoke("presets", "show", "tiny", "mesh.texture_format")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith("mesh.texture_format: png\n") and "type: 'png' | 'jpeg'; default: png" in res.stdout
    p_mean = _invoke("presets", "show", "tiny", "train.p_mean")  # tiny sets 0.0, o3d's default is 1.0
    assert p_mean.stdout.startswith("train.p_mean: 0.0\n") and "type: float; default without a preset: 1.0" in p_mean.stdout
    assert flat(rows["mesh.texture_format"][2]) in flat(res.stdout)  # the whole text, to its last sentence
    assert "mesh.target_faces" not in res.stdout
    assert _invoke("presets", "show", "mesh.texture_format").stdout == res.stdout  # a key alone: the default preset's
    res = _invoke("presets", "show", "tiny", "runtime")  # a section: its meaning, then each key's full text
    assert res.stdout.startswith("[runtime] Device, seed, threads.") and all(
        f"{key}: " in res.stdout for key in rows if key.startswith("runtime."))
    res = _invoke("presets", "show", "--long")
    assert res.exit_code == 0 and all(flat(doc) in flat(res.stdout) for _, _, doc in rows.values())
    res = _invoke("presets", "show", "tiny", "mesh.textur")
    assert res.exit_code == 2 and "unknown key 'mesh.textur'; did you mean" in res.stderr and res.stdout == ""
    res = _invoke("presets", "show", "--long", "--yaml")
    assert res.exit_code == 2 and "choose one" in res.stderr


def test_presets_show_yaml_of_some_keys_is_a_preset(tmp_path):
    res = _invoke("presets", "show", "tiny", "mesh.formats", "runtime", "--yaml", "--set", "mesh.formats=glb,stl")
    assert res.exit_code == 0, res.stderr
    assert yaml.safe_load(res.stdout) == {"base": "tiny", "mesh": {"formats": ["glb", "stl"]},
                                          "runtime": load_config("tiny").to_dict()["runtime"]}
    (tmp_path / "p.yaml").write_text(res.stdout)
    assert load_config(tmp_path / "p.yaml").mesh.formats == ("glb", "stl")


def test_folder_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    # e.g. a training run called "tiny" in the working directory
    (tmp_path / "tiny").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny").preprocess.size == 32
    with pytest.raises(ConfigError, match="preset file not found"):
        load_config("missing.yaml")


def test_preset_file_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("meshh:\n  target_faces: 3\n  formats: [glb]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'meshh'; did you mean 'mesh'\?"):
        load_config(p)
    p.write_text("preprocess:\n  sizee: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*preprocess.sizee.*preprocess.size"):
        load_config(p)
    p.write_text("preprocess: [1, 2]\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(p)
    p.write_text("a: [\n")
    with pytest.raises(ConfigError, match="cannot read preset"):
        load_config(p)
    # a key given twice: YAML keeps the last silently, o3d says so
    p.write_text("mesh:\n  target_faces: 5000\n  texture_size: 512\n  target_faces: 8000\nmesh:\n  formats: [glb]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: 'mesh.target_faces' is set twice \(lines 2 and 4\); "
                                          r"'mesh' is set twice \(lines 1 and 5\)"):
        load_config(p)


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("runtime:\n  device: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="cannot read preset"):
        load_config(p)


def test_base_chain_and_loop(tmp_path):
    (tmp_path / "a.yaml").write_text("base: tiny\nruntime:\n  seed: 5\n")
    cfg = load_config(tmp_path / "a.yaml")
    assert cfg.runtime.seed == 5 and cfg.preprocess.size == 32
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "b.yaml")


def test_a_preset_file_without_base_or_weights_is_warned_about(tmp_path, caplog):
    # a file with only a mesh section starts from the built-in defaults: the untrained published
    # architecture, not the shipped model with a new face count
    (tmp_path / "mine.yaml").write_text("mesh:\n  target_faces: 5000\n")
    with caplog.at_level("WARNING", logger="o3d"):
        cfg = load_config(tmp_path / "mine.yaml")
    assert cfg.model.weights == "none" and cfg.mesh.target_faces == 5000
    assert [r.getMessage() for r in caplog.records if "has no 'base:'" in r.getMessage()] and "base: tiny" in caplog.text
    # with a base, with the weights chosen (a full config such as an asset's config.yaml), or a
    # shipped preset: nothing to say
    (tmp_path / "based.yaml").write_text("base: tiny\nmesh:\n  target_faces: 5000\n")
    (tmp_path / "full.yaml").write_text(dump_config(load_config("tiny")))
    caplog.clear()
    with caplog.at_level("WARNING", logger="o3d"):
        assert load_config(tmp_path / "based.yaml").model.weights == "tiny"
        assert load_config(tmp_path / "full.yaml").model.weights == "tiny"
        load_config("tiny"), load_config("ouroboros3d-svd-lgm")
    assert "has no 'base:'" not in caplog.text
    # o3d mesh uses only the mesh section: no model to warn about
    load_config(tmp_path / "mine.yaml", warn_rootless=False)
    assert "has no 'base:'" not in caplog.text


def test_dump_round_trip(tmp_path):
    cfg = load_config("tiny", ["runtime.seed=11", "preprocess.matting=builtin"])
    p = tmp_path / "config.yaml"
    p.write_text(dump_config(cfg, header="# test\n"))
    assert yaml.safe_load(p.read_text())["runtime"]["seed"] == 11
    again = load_config(p)
    assert again == cfg


def test_every_field_is_documented():
    rows = describe(Config())
    assert {r[0] for r in rows} == set(valid_keys())
    undocumented = [r[0] for r in rows if not r[3]]
    assert undocumented == []
    for f in dataclasses.fields(Config):
        assert f.name in field_docs(Config)


def test_every_shipped_preset_loads():
    presets = available_presets()
    assert "tiny" in presets
    for name in presets:
        load_config(name)


def test_the_extra_weights_folder_takes_a_tilde_and_info_says_when_it_is_not_a_folder(monkeypatch, tmp_path):
    from o3dcli import sysinfo

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mine.safetensors").write_bytes(b"")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("O3D_WEIGHTS_DIR", "~/w")  # in quotes, the shell leaves the ~ to o3d
    assert sysinfo.named_weights("mine") == tmp_path / "w" / "mine.safetensors"
    assert sysinfo.collect_info()["O3D_WEIGHTS_DIR"] == str(tmp_path / "w")
    monkeypatch.setenv("O3D_WEIGHTS_DIR", str(tmp_path / "nowhere"))
    assert sysinfo.collect_info()["O3D_WEIGHTS_DIR"].endswith("nowhere (not a folder: no weights are looked up there)")


def test_info_lists_the_weights_files_names_take_and_only_those(monkeypatch, tmp_path):
    from o3dcli import sysinfo

    w = tmp_path / "w"
    w.mkdir()
    (w / "mine.safetensors").write_bytes(b"")
    (w / "tiny.safetensors").write_bytes(b"")  # its name is the shipped weights'
    (w / "sub.safetensors").mkdir()  # a folder, and a broken link: no weights
    (w / "broken.safetensors").symlink_to(tmp_path / "nowhere")
    monkeypatch.setenv("O3D_WEIGHTS_DIR", str(w))
    shadowed = []
    names = [p.name for p in sysinfo.available_weights(shadowed)]
    assert sorted(names) == ["mine.safetensors", "tiny.safetensors"] and shadowed == [w / "tiny.safetensors"]
    assert sysinfo.named_weights("tiny") != w / "tiny.safetensors"  # what info says is what a name takes
    line = sysinfo.collect_info()["model weights"]
    assert "sub.safetensors" not in line and "broken" not in line
    assert line.endswith("; not used by name (a file before has that name; give the full path to use them): "
                         f"{w / 'tiny.safetensors'}")


def test_info_says_which_optional_packages_are_missing_and_how_to_get_them(monkeypatch):
    from o3dcli import sysinfo

    real = sysinfo.library_version
    monkeypatch.setattr(sysinfo, "library_version", lambda d: "not installed" if d == "transformers" else real(d))
    info = sysinfo.collect_info()
    assert 'pip install "o3dcli[clip]"' in info["transformers (optional)"]
    monkeypatch.setattr(sysinfo, "library_version", lambda d: "9.9" if d == "transformers" else real(d))
    assert sysinfo.collect_info()["transformers (optional)"] == "9.9"


def test_info_says_which_image_formats_are_read_and_how_to_add_heic_and_avif(monkeypatch):
    from o3dcli import sysinfo
    from o3dcli.io import images

    monkeypatch.setattr(images, "_heif_plugin", lambda: True)
    monkeypatch.setattr(images, "pillow_reads_avif", lambda: True)
    assert sysinfo.collect_info()["input formats"] == "PNG, JPEG, WEBP, BMP, TIFF, GIF, AVIF, HEIF"
    monkeypatch.setattr(images, "_heif_plugin", lambda: False)
    monkeypatch.setattr(images, "pillow_reads_avif", lambda: False)
    assert sysinfo.collect_info()["input formats"] == ('PNG, JPEG, WEBP, BMP, TIFF, GIF (not HEIC: pip install '
                                                       f'"o3dcli[heif]"; not AVIF: {images.avif_hint()})')


def test_a_shortcut_option_contradicting_a_set_is_a_usage_error():
    import typer

    from o3dcli.cli import _load_config

    assert _load_config("tiny", ["diffusion.steps=4"], ["diffusion.steps=4"]).diffusion.steps == 4  # agree: fine
    assert _load_config("tiny", ["diffusion.guidance_max=3"], ["diffusion.guidance_max=3.0"]).diffusion.guidance_max == 3
    assert _load_config("tiny", ["mesh.formats=[obj,glb]"], ["mesh.formats=[glb,obj]"])  # one choice in two orders
    with pytest.raises(typer.Exit):
        _load_config("tiny", ["diffusion.steps=4"], ["diffusion.steps=3"])


def test_shortcut_conflicts_are_named_by_generate_and_mesh(tmp_path, monkeypatch):
    from o3dcli.cli import app

    monkeypatch.chdir(tmp_path)

    res = _runner().invoke(app, ["generate", str(tmp_path), "--steps", "3", "--set", "diffusion.steps=4"])
    assert res.exit_code == 2 and "diffusion.steps is given twice, 4 by --set and 3 by its shortcut" in res.stderr
    from o3dcli.commands.mesh import _mesh_config

    assert _mesh_config("tiny", ["mesh.formats=obj,glb"], None, None, "glb,obj")[1].formats == ("glb", "obj")
    res = _runner().invoke(app, ["mesh", str(tmp_path), "--decimate", "500", "--set", "mesh.target_faces=800"])
    assert res.exit_code == 2 and "mesh.target_faces is given twice, 800 by --set and 500" in " ".join(res.stderr.split())
    assert not (tmp_path / "o3d-output").exists() and not (tmp_path / "o3d-meshes").exists()


def test_an_assets_config_reproduces_it_from_any_folder_with_relative_weights(good_images, tmp_path, monkeypatch):
    # `--set model.weights=w/mine.safetensors` (relative to where the command ran): the asset's
    # config.yaml names the file absolutely, so it loads from another folder; a weights name stays a name
    import shutil

    from typer.testing import CliRunner

    from o3dcli.cli import app
    from o3dcli.models.build import resolve_weights

    work = tmp_path / "work"
    (work / "w").mkdir(parents=True)
    shutil.copy(resolve_weights("tiny"), work / "w" / "mine.safetensors")
    monkeypatch.chdir(work)
    res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", "out", "--stop-after", "diffusion",
                                   "--steps", "1", "--set", "preprocess.size=16",
                                   "--set", "model.weights=w/mine.safetensors", "--no-progress"])
    assert res.exit_code == 0, res.output
    saved = work / "out" / "apple" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["model"]["weights"] == str((work / "w" / "mine.safetensors").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(saved).model.weights == str((work / "w" / "mine.safetensors").resolve())
    # ...and finds the cache entries of the command that made the asset (keyed by the absolute path)
    res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", str(work / "out"), "--stop-after",
                                   "diffusion", "--preset", str(saved), "--no-progress"])
    assert res.exit_code == 0, res.output
    item = json.loads((work / "out" / "o3d-report.json").read_text())["items"][0]
    assert item["cached"] == ["preprocess", "diffusion"], item
    res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", "out", "--stop-after", "preprocess",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((elsewhere / "out" / "apple" / "config.yaml").read_text())["model"]["weights"] == "tiny"


def test_a_relative_path_in_a_preset_file_is_taken_from_the_presets_folder(tmp_path, monkeypatch):
    from o3dcli.models.build import resolve_weights

    presets = tmp_path / "presets"
    (presets / "runs" / "mine").mkdir(parents=True)
    (presets / "runs" / "mine" / "model.safetensors").write_bytes(resolve_weights("tiny").read_bytes())
    (presets / "mine.yaml").write_text("base: tiny\nmodel:\n  weights: runs/mine\ntrain:\n  init: tiny\n")
    (presets / "gone.yaml").write_text("base: tiny\nmodel:\n  weights: runs/other\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(presets / "mine.yaml")
    assert cfg.model.weights == str((presets / "runs" / "mine").resolve())
    assert cfg.train.init == "tiny"  # a weights name, not a path
    assert load_config(presets / "gone.yaml").model.weights == "runs/other"  # not there: as given (the working folder)


def _run_folder(folder):
    """An `o3d train` run folder: its config.yaml and weights (the shipped ones)."""
    from o3dcli.models.build import resolve_weights

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_config(load_config("tiny")))
    (folder / "model.safetensors").write_bytes(resolve_weights("tiny").read_bytes())
    return folder


def test_a_text_setting_keeps_the_text_as_typed(tmp_path, monkeypatch):
    # YAML reads 2024-06-01 as a date, 0 as a number, off as false: each was refused as "not str"
    from o3dcli.cli import app

    _run_folder(tmp_path / "2024-06-01")
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny", ["model.weights=2024-06-01"]).model.weights == "2024-06-01"
    assert load_config("tiny", ["model.weights=off"]).model.weights == "off"
    with pytest.raises(ConfigError, match="'0' is not a torch device|runtime.device"):
        load_config("tiny", ["runtime.device=0"])  # refused for what it says, as text
    assert load_config("tiny", ["preprocess.size=48"]).preprocess.size == 48  # numbers stay numbers
    res = _runner().invoke(app, ["info", "--set", "model.weights=2024-06-01"])
    assert res.exit_code == 0 and "2024-06-01" in res.stdout, res.stdout + res.stderr


def test_a_base_is_found_from_the_presets_folder_and_must_be_text(tmp_path, monkeypatch):
    _run_folder(tmp_path / "runs" / "mine")
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "onrun.yaml").write_text("base: ../runs/mine\nmesh:\n  target_faces: 5000\n")
    (tmp_path / "q" / "int.yaml").write_text("base: 1\n")
    (tmp_path / "q" / "list.yaml").write_text("base: [tiny]\n")
    for cwd in (tmp_path, tmp_path / "q", tmp_path / "runs"):
        monkeypatch.chdir(cwd)
        cfg = load_config(tmp_path / "q" / "onrun.yaml")
        assert cfg.model.weights == str((tmp_path / "runs" / "mine").resolve()) and cfg.mesh.target_faces == 5000
    for name in ("int.yaml", "list.yaml"):
        with pytest.raises(ConfigError, match="'base' must be a preset's name, a preset file or an o3d train run"):
            load_config(tmp_path / "q" / name)


def test_the_keys_of_a_preset_printed_as_yaml_load_as_that_preset_changed(tmp_path, monkeypatch):
    from o3dcli.cli import app

    monkeypatch.chdir(tmp_path)
    res = _runner().invoke(app, ["presets", "show", "tiny", "mesh.target_faces", "--yaml", "--set", "mesh.target_faces=5000"])
    assert res.exit_code == 0 and res.stdout.startswith("base: tiny\n"), res.stdout
    (tmp_path / "k.yaml").write_text(res.stdout)
    cfg = load_config(tmp_path / "k.yaml")
    assert cfg == load_config("tiny", ["mesh.target_faces=5000"])  # was: the built-in defaults, untrained
    run = _run_folder(tmp_path / "runs" / "mine")
    res = _runner().invoke(app, ["presets", "show", "runs/mine", "mesh", "--yaml"])
    assert res.exit_code == 0 and yaml.safe_load(res.stdout)["base"] == str((run / "config.yaml").resolve())
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "m.yaml").write_text(res.stdout)
    assert load_config(tmp_path / "elsewhere" / "m.yaml").model.weights == str(run.resolve())


def test_a_home_folder_tilde_the_shell_left_is_expanded(tmp_path, monkeypatch, good_images):
    from typer.testing import CliRunner

    from o3dcli.cli import app

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (home / "mine.yaml").write_text("base: tiny\nmesh:\n  target_faces: 5000\n")
    assert load_config("~/mine.yaml").mesh.target_faces == 5000
    res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "--output=~/assets", "--stop-after",
                                   "preprocess", "--no-progress", "--preset=~/mine.yaml"])
    assert res.exit_code == 0, res.output
    assert (home / "assets" / "apple" / "input.png").is_file() and not (tmp_path / "~").exists()


@pytest.mark.parametrize("override", ["diffusion.sigma_max=.inf", "diffusion.sigma_max=nan", "diffusion.sigma_max=1e309",
                                      "diffusion.guidance_max=-.inf", "runtime.seed=99999999999999999999999",
                                      "runtime.seed=-1", "runtime.threads=4096"])
def test_values_that_fail_late_are_refused_up_front(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config("tiny", [override])


def test_weights_found_through_the_weights_folder_variable_are_written_whole(tmp_path, monkeypatch):
    # another shell (or a later day) may not have $O3D_WEIGHTS_DIR: the asset's config.yaml names the file
    from o3dcli.config import absolute_paths
    from o3dcli.models.build import resolve_weights

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mine.safetensors").write_bytes(resolve_weights("tiny").read_bytes())
    monkeypatch.setenv("O3D_WEIGHTS_DIR", str(tmp_path / "w"))
    cfg = absolute_paths(load_config("tiny", ["model.weights=mine"]))
    assert cfg.model.weights == str((tmp_path / "w" / "mine.safetensors").resolve())
    assert absolute_paths(load_config("tiny")).model.weights == "tiny"  # the shipped weights keep their name


def test_info_exits_2_when_the_weights_a_setting_names_cannot_be_used():
    from o3dcli.cli import app

    res = _runner().invoke(app, ["info", "--set", "model.weights=nonexistent"])
    assert res.exit_code == 2 and "no weights named 'nonexistent'" in " ".join(res.stdout.split())
    assert _runner().invoke(app, ["info", "--preset", "tiny"]).exit_code == 0


def test_info_as_json_says_the_same_for_scripts(monkeypatch):
    import json

    import torch

    from o3dcli import __version__
    from o3dcli.cli import app
    from o3dcli.sysinfo import collect_info

    res = _runner().invoke(app, ["info", "--json"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data == {"o3d": __version__, **collect_info()}  # what the table shows, torch's version included
    assert data["torch"] != "not installed" and "settings" not in data
    res = _runner().invoke(app, ["info", "--json", "--preset", "tiny"])
    settings = json.loads(res.stdout)["settings"]
    assert res.exit_code == 0 and settings["runs_on"] == {"device": "cpu", "dtype": "float32"}
    assert "tiny.safetensors (training step " in settings["weights"] and settings["parameters"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = _runner().invoke(app, ["info", "--json", "--set", "runtime.device=cuda", "--set", "model.weights=nope"])
    settings = json.loads(res.stdout)["settings"]
    assert res.exit_code == 2 and "CUDA is not available" in settings["runs_on_problem"]
    assert "no weights named 'nope'" in settings["weights_problem"] and "runs_on" not in settings


def test_info_exits_2_when_a_setting_names_a_device_or_precision_a_run_would_refuse(monkeypatch):
    import torch

    from o3dcli.cli import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this CPU-only machine
    res = _runner().invoke(app, ["info", "--set", "runtime.device=cuda"])
    assert res.exit_code == 2 and "runs on: runtime.device=cuda but CUDA is not available" in " ".join(res.stdout.split())
    res = _runner().invoke(app, ["info", "--set", "runtime.dtype=float16"])
    assert res.exit_code == 2 and "runtime.dtype=float16 needs a CUDA device (device is cpu)" in " ".join(res.stdout.split())
    res = _runner().invoke(app, ["info", "--preset", "tiny"])
    assert res.exit_code == 0 and "runs on: cpu, float32" in res.stdout


@pytest.mark.parametrize("override, needle", [
    ("mesh=5", "'mesh' is a section: give one of its keys, mesh.KEY"),
    ("mesh.TARGET_FACES=5", "did you mean 'mesh.target_faces'?"),
    ("mesh.nope=1", "keys of 'mesh': mesh.method"),
    ("mesh.target_face=1", "did you mean 'mesh.target_faces'?"),
])
def test_suggestions_for_a_section_a_key_in_capitals_and_a_key_far_from_any(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [override])
    assert needle in str(e.value) and ("did you mean" not in str(e.value) or "did you mean" in needle)


def test_an_asset_folder_is_a_preset_of_the_settings_that_made_it(tmp_path, good_images, monkeypatch):
    from typer.testing import CliRunner

    from o3dcli.cli import app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["generate", str(good_images / "apple.png"), "-o", "out", "--stop-after", "preprocess",
                                   "--no-progress", "--set", "mesh.target_faces=4321"])
    assert res.exit_code == 0, res.output
    assert load_config("out/apple").mesh.target_faces == 4321
